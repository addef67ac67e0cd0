"""ONNX export: each tower kind's fp32 and int8 graphs match torch; an exported folder is a model spec."""

import builtins
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

import clipforge
from clipforge.checkpoint import onnx_export
from clipforge.checkpoint.onnx import OnnxModel, load_onnx_folder
from clipforge.checkpoint.onnx_export import ExportConfig, export_onnx
from clipforge.cli.main import main
from clipforge.errors import CheckpointError, ConfigError, MissingExtraError, ModelInputError
from clipforge.models import create_model
from clipforge.models.config import ModelConfig
from clipforge.models.towers import TowerCLIP
from clipforge.train.config import LossSection, ModelSection
from clipforge.train.contrastive import build_model

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
onnx = pytest.importorskip("onnx")

TEXTS = ["a dog!", "two children play football in a park near an old stone church", "x", "red square"]


def _saved(name_or_model: str | torch.nn.Module, folder: Path) -> Path:
    torch.manual_seed(0)
    model = create_model(name_or_model) if isinstance(name_or_model, str) else name_or_model
    return clipforge.save(model, folder)


def _compare(source: Path, exported: Path, precision: str = "fp32") -> tuple[float, float]:
    """(image, text) agreement of an exported folder with its source on new inputs: fp32 max abs
    difference of unit-norm embeddings, int8 lowest cosine."""
    model, preprocess, tokenizer = clipforge.load(source)
    onnx_model = load_onnx_folder(exported, precision)
    size = model.config.preprocess.image_size
    pixels = torch.randn(5, 3, size, size, generator=torch.Generator().manual_seed(7))
    tokens = tokenizer(TEXTS)
    with torch.inference_mode():
        ours = model.encode_image(pixels, normalize=True), model.encode_text(tokens, normalize=True)
    theirs = onnx_model.encode_image(pixels, normalize=True), onnx_model.encode_text(tokens, normalize=True)
    if precision == "fp32":
        return tuple(float((a - b).abs().max()) for a, b in zip(ours, theirs, strict=True))  # type: ignore[return-value]
    return tuple(float(F.cosine_similarity(a, b).min()) for a, b in zip(ours, theirs, strict=True))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A tiny ViT, its export by `clipforge export onnx --int8` (one export for the module), the output."""
    work = tmp_path_factory.mktemp("onnx-vit")
    source = _saved("tiny-vit", work / "model")
    result = CliRunner().invoke(main, ["export", "onnx", str(source), str(work / "onnx"), "--int8"])
    assert result.exit_code == 0, result.output
    return source, work / "onnx", result.output


def test_vit_export_matches_torch(tiny_vit: tuple[Path, Path, str]) -> None:
    source, exported, _ = tiny_vit
    assert max(_compare(source, exported, "fp32")) <= 1e-4
    assert min(_compare(source, exported, "int8")) >= 0.99
    meta = json.loads((exported / "config.json").read_text())
    assert meta["format"] == "clipforge-onnx" and meta["precisions"] == ["fp32", "int8"]
    assert {p.name for p in exported.iterdir()} == {"config.json", "image.onnx", "text.onnx",
                                                     "image.int8.onnx", "text.int8.onnx"}
    # one MLP down-projection per text layer (after QuickGELU) stays fp32 in the int8 text graph
    kept = onnx_export.mlp_down_projections(exported / "text.onnx")
    int8_ops = {n.name: n.op_type for n in onnx.load(str(exported / "text.int8.onnx")).graph.node}
    assert len(kept) == 2 and all(int8_ops.get(name) == "MatMul" for name in kept)
    assert "DynamicQuantizeMatMul" in int8_ops.values() or "MatMulInteger" in int8_ops.values()


def test_exported_folder_is_a_model_spec(tiny_vit: tuple[Path, Path, str]) -> None:
    source, exported, _ = tiny_vit
    model, preprocess, tokenizer = clipforge.load(exported)
    assert isinstance(model, OnnxModel) and model.config == clipforge.load(source)[0].config
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8))
    classifier = clipforge.zero_shot_classifier(model, tokenizer, ["cat", "dog"], ["a photo of a {}."])
    probs = clipforge.classify(model, preprocess(image).unsqueeze(0), classifier)
    assert probs.shape == (1, 2) and abs(float(probs.sum()) - 1) < 1e-5
    assert model.encode_text(tokenizer([]), normalize=True).shape == (0, model.config.embed_dim)
    with pytest.raises(ConfigError, match="only encodes"):
        model.train()
    for loss in (LossSection(), LossSection(kind="siglip")):  # `clipforge train` from an exported folder
        with pytest.raises(ConfigError, match="only encodes"):
            build_model(ModelSection(name=str(exported), lock_image=True), loss)
    with pytest.raises(ModelInputError, match="99 long"):
        model.encode_text(torch.zeros(1, 99, dtype=torch.long))


def test_resnet_export_matches_torch(tmp_path: Path) -> None:
    source = _saved("tiny-rn", tmp_path / "model")
    report = export_onnx(source, tmp_path / "onnx", ExportConfig(int8=True))
    assert all(p.passed for p in report.parity)
    assert max(_compare(source, tmp_path / "onnx", "fp32")) <= 1e-4
    assert min(_compare(source, tmp_path / "onnx", "int8")) >= 0.99


@pytest.mark.slow
def test_tower_model_export_matches_torch(tmp_path: Path) -> None:
    """EfficientNet-Lite0 + MiniLM (full size, random weights), the int8 image tower statically calibrated."""
    config = ModelConfig.from_dict({
        "embed_dim": 32,
        "vision": {"type": "efficientnet_lite0", "weights": "none", "head": "linear"},
        "text": {"type": "minilm", "context_length": 24, "weights": "none", "head": "linear"},
        "tokenizer": {"type": "wordpiece", "context_length": 24},
    })
    pytest.importorskip("tokenizers")
    source = _saved(TowerCLIP(config).eval(), tmp_path / "model")
    images = _image_folder(tmp_path / "calib", 6)
    report = export_onnx(source, tmp_path / "onnx", ExportConfig(int8=True, calibration=f"folder:{images}",
                                                                  calibration_images=4))
    assert report.int8_method is not None and "4 images" in report.int8_method
    assert max(_compare(source, tmp_path / "onnx", "fp32")) <= 1e-4
    assert min(_compare(source, tmp_path / "onnx", "int8")) >= 0.99


@pytest.mark.slow
def test_vit_b32_export_matches_torch(tmp_path: Path) -> None:
    source = _saved("ViT-B-32", tmp_path / "model")
    report = export_onnx(source, tmp_path / "onnx", ExportConfig(int8=True))
    assert [p.precision for p in report.parity] == ["fp32", "int8"] and all(p.passed for p in report.parity)


def _image_folder(folder: Path, count: int) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"caption {i}")
    return folder


def test_failed_parity_writes_nothing(tiny_vit: tuple[Path, Path, str], tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    source, exported, _ = tiny_vit

    def reuse_graphs(model: object, folder: Path, opset: int | None) -> int:  # the module's export, copied
        for tower in ("image", "text"):
            shutil.copy(exported / f"{tower}.onnx", folder)
        return 18

    monkeypatch.setattr(onnx_export, "export_towers", reuse_graphs)
    monkeypatch.setattr(onnx_export, "FP32_MAX_ABS", -1.0)  # no graph can pass
    with pytest.raises(CheckpointError, match="does not match torch"):
        export_onnx(source, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()
    assert list(tmp_path.iterdir()) == []  # no staging folder left behind


def test_missing_extra_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_onnx(name: str, *args: object, **kwargs: object) -> object:
        if name == "onnxscript":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(MissingExtraError, match=r"pip install 'clipforge\[onnx\]'"):
        export_onnx("tiny-vit", tmp_path / "onnx")


def test_export_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="--int8"):
        ExportConfig(calibration="folder:x")
    with pytest.raises(ConfigError, match="opset"):
        ExportConfig(opset=11)


def test_cli_export(tiny_vit: tuple[Path, Path, str], tmp_path: Path) -> None:
    _, exported, output = tiny_vit
    assert "parity fp32" in output and "int8" in output and (exported / "image.onnx").is_file()
    result = CliRunner().invoke(main, ["classify", "--model", str(exported), "--labels", "a,b",
                                       str(tmp_path / "missing.png")])
    assert result.exit_code == 1 and "missing.png" in result.output
