"""Parameter counts from configs (exact, checked against built models) and the ceiling checked before
allocating (issue 9, item 4); convert never leaves a model load rejects (item 5)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

import clipforge
from clipforge.checkpoint import load_model
from clipforge.checkpoint.convert import convert
from clipforge.checkpoint.native import without_pretrained_init
from clipforge.errors import CheckpointError, ConfigError
from clipforge.models import create_model, get_model_config, list_models
from clipforge.models.config import ModelConfig
from clipforge.models.size import MAX_PARAMS_ENV, check_model_size, count_parameters

SMALL = [name for name in list_models() if name.startswith(("tiny", "ConvNet", "ViT-T", "effnet"))]


@pytest.mark.parametrize("name", SMALL)
def test_count_is_exact(name: str) -> None:
    config = without_pretrained_init(get_model_config(name))
    model = create_model(config)
    assert count_parameters(config) == sum(p.numel() for p in model.parameters())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["RN50", "ViT-B-32"])
def test_count_is_exact_for_full_size(name: str) -> None:
    assert count_parameters(get_model_config(name)) == sum(p.numel() for p in create_model(name).parameters())


def test_ceiling_refuses_before_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    """Main: a text width of 1e7 went to the allocator (~2 TB) and died with a raw RuntimeError."""
    huge = dataclasses.replace(get_model_config("tiny-vit"), embed_dim=100_000_000)
    with pytest.raises(ConfigError, match=r"model too large: .* over the limit of 3,000,000,000"):
        create_model(huge)
    monkeypatch.setenv(MAX_PARAMS_ENV, "1000")
    with pytest.raises(ConfigError, match="limit of 1,000; set CLIPFORGE_MAX_PARAMS"):
        create_model("tiny-vit")
    assert check_model_size(get_model_config("tiny-vit"), limit=10**7) == 1_640_321
    monkeypatch.setenv(MAX_PARAMS_ENV, "lots")
    with pytest.raises(ConfigError, match="CLIPFORGE_MAX_PARAMS='lots' must be a positive number"):
        create_model("tiny-vit")


def test_semantic_validation_names_the_value() -> None:
    """Main accepted these and failed later (ZeroDivisionError, NaN probabilities, IndexError)."""
    base = get_model_config("tiny-vit").to_dict()
    cases = [
        ("vision", "heads", 0, "heads=0 must be >= 1"),
        ("text", "heads", 3, "heads=3 must divide the width 32"),
        ("preprocess", "std", [0, 0, 0], "std=.* must hold three finite numbers > 0"),
        ("preprocess", "mean", [0.5], "mean=.* must hold three finite numbers"),
        ("tokenizer", "type", "spm", "type='spm' is not one of clip-bpe, wordpiece"),
    ]
    for section, key, value, message in cases:
        data = {**base, section: {**base[section], key: value}}
        with pytest.raises(ConfigError, match=message):
            ModelConfig.from_dict(data, where="cfg.json")


def test_convert_loads_what_it_wrote(tmp_path: Path) -> None:
    """A ViT-bigG-like MLP ratio (4.9231) survives `convert --to hf` and back, checked before DST appears."""
    config = get_model_config("tiny-vit")
    vision = dataclasses.replace(config.vision, width=48, heads=3, mlp_ratio=4.9231)
    model = create_model(dataclasses.replace(config, vision=vision))
    clipforge.save(model, tmp_path / "src")
    convert(tmp_path / "src", tmp_path / "hf", to="hf")
    assert round(48 * load_model(tmp_path / "hf").config.vision.mlp_ratio) == 236
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf", "src"]  # no staging folder left behind


def test_convert_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Main wrote straight into DST and never read it back, so a model `load` rejects could be left there."""
    import clipforge.checkpoint.convert as convert_module

    clipforge.save(create_model("tiny-vit"), tmp_path / "src")
    real = convert_module.load_model
    calls = iter([real, lambda _path: (_ for _ in ()).throw(CheckpointError("cannot read it back"))])
    monkeypatch.setattr(convert_module, "load_model", lambda path: next(calls)(path))
    with pytest.raises(CheckpointError, match="does not load back"):
        convert(tmp_path / "src", tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
