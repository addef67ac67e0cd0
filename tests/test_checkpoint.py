"""Checkpoint formats: clipforge folders, OpenAI `.pt` files (state dicts, TorchScript archives), convert."""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import clipforge
from clipforge.checkpoint import detect_format, load_model, save
from clipforge.checkpoint.convert import convert
from clipforge.checkpoint.hf import save_hf
from clipforge.checkpoint.openai import infer_openai_config
from clipforge.cli.main import main
from clipforge.errors import CheckpointError, ConfigError
from clipforge.models import ModelConfig, create_model
from clipforge.models.vision import ModifiedResNet

# torch deprecates tracing, but OpenAI's released archives are traced, so that is what these tests must make.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.trace_method` is deprecated:DeprecationWarning")

# Tiny models that follow OpenAI's head convention (64-wide heads, RN pooling heads = width / 2),
# since heads are not recorded in a state dict and have to be inferred.
TINY_VIT = {
    "embed_dim": 16,
    "vision": {"type": "vit", "image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "heads": 1},
    "text": {"type": "transformer", "context_length": 16, "width": 64, "heads": 1, "layers": 2},
}
TINY_RN = {
    "embed_dim": 16,
    "vision": {"type": "resnet", "image_size": 64, "layers": [1, 2, 1, 1], "width": 8, "heads": 4},
    "text": {"type": "transformer", "context_length": 16, "width": 64, "heads": 1, "layers": 1},
}


def make_model(config: ModelConfig | str) -> nn.Module:
    model = create_model(config).eval()
    if isinstance(model.visual, ModifiedResNet):
        # Fresh BatchNorm stats are 0/1 and zero-init bn3 hides each block: randomize so outputs use them all.
        for name, tensor in model.state_dict().items():
            if "running_var" in name or "bn3.weight" in name:
                tensor.uniform_(0.5, 1.5)
            elif "running_mean" in name:
                tensor.normal_(0, 0.1)
    return model


def make_tokens(batch: int, length: int) -> torch.Tensor:
    """Start token, a few random ids, end-of-text (the largest id), zero padding."""
    gen = torch.Generator().manual_seed(2)
    tokens = torch.zeros(batch, length, dtype=torch.long)
    for row in range(batch):
        n = 2 + row % (length - 3)
        tokens[row, 0] = 49406
        tokens[row, 1 : n + 1] = torch.randint(1, 49000, (n,), generator=gen)
        tokens[row, n + 1] = 49407
    return tokens


def features(model: nn.Module, images: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    size = model.config.vision.image_size
    gen = torch.Generator().manual_seed(1)
    pixels = torch.randn(images, 3, size, size, generator=gen)
    with torch.no_grad():
        return model.encode_image(pixels), model.encode_text(make_tokens(3, model.config.text.context_length))


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    assert a.config == b.config
    state_b = b.state_dict()
    assert set(a.state_dict()) == set(state_b)
    for key, value in a.state_dict().items():
        assert torch.equal(value, state_b[key]), key


def assert_same_model(a: nn.Module, b: nn.Module) -> None:
    assert_same_weights(a, b)
    for x, y in zip(features(a), features(b), strict=True):
        assert torch.equal(x, y)


def trace(model: nn.Module, path: Path, image: bool = True) -> None:
    """Saves a TorchScript archive; tracing one method still archives every submodule's weights."""
    size = model.config.vision.image_size
    inputs = {"encode_text": (make_tokens(1, model.config.text.context_length),)}
    if image:
        inputs["encode_image"] = (torch.randn(1, 3, size, size),)
    with torch.no_grad():
        torch.jit.trace_module(model, inputs, check_trace=False).save(str(path))


@pytest.fixture
def no_jit_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a TorchScript archive must never execute it."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("torch.jit.load was called")

    monkeypatch.setattr(torch.jit, "load", refuse)


# ------------------------------------------------------------------------------------------ clipforge


def test_clipforge_folder_round_trip(tmp_path: Path) -> None:
    model = make_model("tiny-vit")
    save(model, tmp_path / "m")
    assert detect_format(tmp_path / "m") == "clipforge"
    loaded, preprocess, tokenizer = clipforge.load(tmp_path / "m")
    assert_same_model(model, loaded)
    assert preprocess.config.image_size == 32
    assert tokenizer.context_length == 16
    assert not loaded.training


# ---------------------------------------------------------------------------------------------- OpenAI


@pytest.mark.parametrize("config", [TINY_VIT, TINY_RN], ids=["vit", "rn"])
def test_openai_state_dict_infers_architecture(tmp_path: Path, config: dict) -> None:
    model = make_model(ModelConfig.from_dict(config))
    state = dict(model.state_dict())
    # What OpenAI's JIT state dicts carry besides the weights.
    resolution = torch.tensor(config["vision"]["image_size"])
    state.update(input_resolution=resolution, context_length=16, vocab_size=49408)
    torch.save(state, tmp_path / "openai.pt")
    assert detect_format(tmp_path / "openai.pt") == "openai"
    assert_same_model(model, load_model(tmp_path / "openai.pt"))


def test_openai_state_dict_wrapped_and_prefixed(tmp_path: Path) -> None:
    model = make_model(ModelConfig.from_dict(TINY_VIT))
    wrapped = {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}
    torch.save(wrapped, tmp_path / "ddp.pt")
    assert_same_model(model, load_model(tmp_path / "ddp.pt"))


def test_openai_state_dict_without_batchnorm_counters(tmp_path: Path) -> None:
    model = make_model(ModelConfig.from_dict(TINY_RN))
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.pt")
    for x, y in zip(features(model), features(load_model(tmp_path / "old.pt")), strict=True):
        assert torch.equal(x, y)


def test_infer_mlp_ratio_and_heads() -> None:
    config = ModelConfig.from_dict(
        {**TINY_VIT, "vision": {**TINY_VIT["vision"], "width": 128, "heads": 2, "mlp_ratio": 2.0}}
    )
    inferred = infer_openai_config(create_model(config).state_dict())
    assert inferred.vision == config.vision
    assert inferred.text == config.text
    assert inferred.embed_dim == 16


@pytest.mark.parametrize("config", [TINY_VIT, TINY_RN], ids=["vit", "rn"])
def test_torchscript_archive_reloads(tmp_path: Path, config: dict, no_jit_load: None) -> None:
    model = make_model(ModelConfig.from_dict(config))
    trace(model, tmp_path / "jit.pt")
    assert_same_model(model, load_model(tmp_path / "jit.pt"))


def test_torchscript_fp16_archive(tmp_path: Path, no_jit_load: None) -> None:
    """OpenAI's released archives are fp16; they load into an fp32 model."""
    model = make_model(ModelConfig.from_dict(TINY_VIT))
    half = make_model(ModelConfig.from_dict(TINY_VIT)).half()
    half.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.jit.trace_module(half, {"encode_text": (make_tokens(1, 16),)}, check_trace=False).save(
            str(tmp_path / "half.pt")
        )
    loaded = load_model(tmp_path / "half.pt")
    assert loaded.dtype == torch.float32
    expected = model.state_dict()["visual.proj"].half().float()
    assert torch.equal(loaded.state_dict()["visual.proj"], expected)


def test_torchscript_reader_refuses_foreign_globals(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {marker}",))

    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps(Evil(), protocol=2))
        archive.writestr("evil/constants.pkl", pickle.dumps((), protocol=2))
    with pytest.raises(CheckpointError, match="refusing to unpickle '(posix|nt).system'"):
        load_model(tmp_path / "evil.pt")
    assert not marker.exists()


# ------------------------------------------------------------------------------------------- bad input


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such model: .*nope.pt"):
        clipforge.load(tmp_path / "nope.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        clipforge.load(tmp_path / "empty")


@pytest.mark.parametrize("kind", ["state_dict", "torchscript", "safetensors"])
def test_truncated_checkpoint(tmp_path: Path, kind: str) -> None:
    model = make_model(ModelConfig.from_dict(TINY_VIT))
    if kind == "state_dict":
        torch.save(model.state_dict(), tmp_path / "m.pt")
        target = tmp_path / "m.pt"
    elif kind == "torchscript":
        trace(model, tmp_path / "m.pt")
        target = tmp_path / "m.pt"
    else:
        save(model, tmp_path / "m")
        target = tmp_path / "m" / "model.safetensors"
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        clipforge.load(target if kind != "safetensors" else tmp_path / "m")


def test_unknown_config_key(tmp_path: Path) -> None:
    save(make_model("tiny-vit"), tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    meta["model"]["vision"]["dropout_rate"] = 0.1
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="unknown config key 'dropout_rate'"):
        clipforge.load(tmp_path / "m")


def test_not_a_clip_state_dict(tmp_path: Path) -> None:
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="missing 'visual.layer1.0.conv1.weight'"):
        load_model(tmp_path / "other.pt")


def test_resnet_cannot_export_to_hf(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'resnet'.*'vit' image tower"):
        save_hf(make_model("tiny-rn"), tmp_path / "hf")


# -------------------------------------------------------------------------------------------- convert


def test_convert_between_formats(tmp_path: Path) -> None:
    model = make_model(ModelConfig.from_dict(TINY_RN))
    torch.save(model.state_dict(), tmp_path / "rn.pt")
    convert(tmp_path / "rn.pt", tmp_path / "ours")
    assert_same_model(model, load_model(tmp_path / "ours"))
    meta = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert meta["extra"]["converted_from"].endswith("rn.pt")
    with pytest.raises(ConfigError, match="unknown conversion target 'onnx'"):
        convert(tmp_path / "ours", tmp_path / "x", to="onnx")


def test_convert_cli(tmp_path: Path) -> None:
    runner = CliRunner()
    saved = tmp_path / "ours"
    save(make_model("tiny-vit"), saved)
    result = runner.invoke(main, ["convert", str(saved), str(tmp_path / "hf"), "--to", "hf"])
    assert result.exit_code == 0, result.output
    assert detect_format(tmp_path / "hf") == "hf"
    result = runner.invoke(main, ["convert", str(tmp_path / "hf"), str(tmp_path / "back")])
    assert result.exit_code == 0, result.output
    assert_same_model(load_model(saved), load_model(tmp_path / "back"))
    result = runner.invoke(main, ["convert", str(tmp_path / "missing.pt"), str(tmp_path / "x")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: no such model")


# ------------------------------------------------------------------------------------ full-size shapes


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ViT-B-32", "RN50"])
def test_openai_full_size_round_trip(tmp_path: Path, name: str, no_jit_load: None) -> None:
    model = make_model(name)
    expected = features(model, images=1)
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    trace(model, tmp_path / "jit.pt", image=False)  # tracing the image tower too would only cost time
    for path in (tmp_path / "sd.pt", tmp_path / "jit.pt"):
        loaded = load_model(path)
        assert_same_weights(model, loaded)
        for x, y in zip(expected, features(loaded, images=1), strict=True):
            assert torch.equal(x, y)
        del loaded
