"""Backends and precisions: `clipforge.load(..., backend, precision)`, the bf16 fallback, fingerprints that
follow the weights across runtimes, and `--backend/--precision` on the commands."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

import clipforge.checkpoint.runtime as runtime_module
from clipforge import create_model
from clipforge.checkpoint import load, save, weights_fingerprint
from clipforge.checkpoint.precision import PrecisionModel
from clipforge.cli.main import main
from clipforge.device import Runtime, bf16_supported
from clipforge.errors import ConfigError, RuntimeNotice
from clipforge.models.base import ContrastiveModel
from clipforge.probe.run import ClipEncoder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save(create_model("tiny-vit"), tmp_path_factory.mktemp("runtime") / "model")


def _probe(model: ContrastiveModel) -> tuple[torch.Tensor, torch.Tensor]:
    """Four seeded images and two CLIP-BPE rows (start, words, end, padding) for tiny-vit."""
    size = model.config.preprocess.image_size
    pixels = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(3))
    return pixels, torch.tensor([[49406, 320, 1929, 49407, 0], [49406, 539, 49407, 0, 0]])


def _cosines(a: ContrastiveModel, b: ContrastiveModel) -> float:
    pixels, tokens = _probe(a)
    with torch.inference_mode():
        images = F.cosine_similarity(a.encode_image(pixels), b.encode_image(pixels))
        texts = F.cosine_similarity(a.encode_text(tokens), b.encode_text(tokens))
    return float(torch.cat([images, texts]).min())


def test_runtime_choices_are_checked() -> None:
    with pytest.raises(ConfigError, match="backend 'tflite'"):
        Runtime(backend="tflite")
    with pytest.raises(ConfigError, match="precision 'fp16'"):
        Runtime(precision="fp16")
    with pytest.raises(ConfigError, match="fp32 or int8"):
        Runtime(backend="onnx", precision="bf16")


@pytest.mark.parametrize(("flags", "expected"), [
    ("flags\t\t: fpu sse avx512f avx512_bf16 avx512_vnni", True),
    ("flags\t\t: fpu sse avx2 fma", False),
    ("Features\t: fp asimd bf16 i8mm", True),  # ARM
])
def test_bf16_detection(tmp_path: Path, flags: str, expected: bool) -> None:
    (tmp_path / "cpuinfo").write_text(f"processor\t: 0\n{flags}\n")
    assert bf16_supported(tmp_path / "cpuinfo") is expected
    assert bf16_supported(tmp_path / "missing") is False


def test_bf16_falls_back_with_a_notice(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime_module, "bf16_supported", lambda: False)
    with pytest.warns(RuntimeNotice, match="no bf16 units"):
        model, _, _ = load(tiny, precision="bf16")
    assert not isinstance(model, PrecisionModel)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_torch_precisions_match_fp32(tiny: Path, precision: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime_module, "bf16_supported", lambda: True)
    fp32, _, _ = load(tiny)
    model, _, _ = load(tiny, precision=precision)
    assert isinstance(model, PrecisionModel) and model.precision == precision
    assert _cosines(model, fp32) >= 0.99
    pixels, _ = _probe(model)
    assert model.encode_image(pixels, normalize=True).dtype == torch.float32
    assert weights_fingerprint(model) == weights_fingerprint(fp32)
    with pytest.raises(ConfigError, match="only encodes"):
        model.train()


def test_onnx_backend_exports_a_torch_model_for_the_run(tiny: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    fp32, _, _ = load(tiny)
    with pytest.warns(RuntimeNotice, match="exporting"):
        model, _, _ = load(tiny, backend="onnx", precision="int8")
    assert type(model).__name__ == "OnnxModel" and _cosines(model, fp32) >= 0.99
    assert weights_fingerprint(model) == weights_fingerprint(fp32)
    with pytest.raises(ConfigError, match="(?i)cpu"):  # onnxruntime runs here on the CPU only
        load(tiny, device="cuda", backend="onnx")


def _images(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_index_built_by_torch_answers_onnx_and_bf16_queries(tiny: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    monkeypatch.setattr(runtime_module, "bf16_supported", lambda: False)
    runner, index = CliRunner(), str(tmp_path / "index")
    images = _images(tmp_path / "images")
    result = runner.invoke(main, ["embed", "--model", str(tiny), "--images", str(images), "--out", index,
                                  "--workers", "0"])
    assert result.exit_code == 0, result.output
    results = {}
    for options in (["--backend", "torch"], ["--backend", "onnx"], ["--precision", "bf16"]):
        result = runner.invoke(main, ["search", "--index", index, "a photo", "--json", *options])
        assert result.exit_code == 0, result.output
        results[options[1]] = [hit["path"] for hit in json.loads(result.stdout)["results"]]
    assert results["onnx"] == results["torch"] == results["bf16"]  # bf16 fell back to fp32 here
    assert "notice: bf16 requested" in result.stderr
    result = runner.invoke(main, ["classify", "--model", str(tiny), "--labels", "a,b", "--precision", "int8",
                                  "--json", str(images)])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["results"]) == 5


@pytest.mark.parametrize("command", [["classify"], ["eval", "retrieval"], ["eval", "zeroshot"], ["embed"],
                                     ["search"], ["serve"], ["skills", "score"]])
def test_every_command_that_encodes_takes_the_runtime_options(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"])
    assert result.exit_code == 0, result.output
    for option in ("--device [auto|cpu|cuda]", "--threads", "--backend [torch|onnx]",
                   "--precision [fp32|bf16|int8]"):
        assert option in result.output, (command, option)


def test_skill_scorer_clip_runs_the_requested_runtime(tiny: Path) -> None:
    encoder = ClipEncoder.load(str(tiny), runtime=Runtime(precision="int8"))
    assert isinstance(encoder.model, PrecisionModel) and encoder.model.precision == "int8"
    fp32 = ClipEncoder.load(str(tiny))
    texts = ["a red circle", "two blue squares"]
    cosines = (encoder.encode_texts(texts) * fp32.encode_texts(texts)).sum(axis=1)  # row-wise: same text
    assert cosines.min() > 0.99
