"""Hugging Face CLIP folders: our outputs against `transformers.CLIPModel`, and bit-exact round trips."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import clipforge
from clipforge.checkpoint import detect_format, load_model
from clipforge.checkpoint.hf import hf_config_to_model_config, save_hf
from clipforge.errors import CheckpointError, ConfigError
from clipforge.models import create_model

transformers = pytest.importorskip("transformers")

TINY_TEXT = {"hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
             "max_position_embeddings": 16}
TINY_VISION = {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 3,
               "image_size": 32, "patch_size": 8}
ATOL = 1e-5


def make_tokens(batch: int, length: int) -> torch.Tensor:
    """Start token, a few random ids, end-of-text (the largest id), zero padding, as our tokenizer makes."""
    gen = torch.Generator().manual_seed(2)
    tokens = torch.zeros(batch, length, dtype=torch.long)
    for row in range(batch):
        n = 1 + 3 * row % (length - 3)
        tokens[row, 0] = 49406
        tokens[row, 1 : n + 1] = torch.randint(1, 49000, (n,), generator=gen)
        tokens[row, n + 1] = 49407
    return tokens


def hf_model(folder: Path, text: dict, vision: dict, projection_dim: int = 16) -> nn.Module:
    """A random-weight transformers.CLIPModel, saved with save_pretrained into `folder`."""
    config = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
    model = transformers.CLIPModel(config).eval()
    model.save_pretrained(folder)
    return model


def assert_parity(ours: nn.Module, theirs: nn.Module, images: int = 2) -> None:
    size = ours.config.vision.image_size
    pixels = torch.randn(images, 3, size, size, generator=torch.Generator().manual_seed(1))
    tokens = make_tokens(3, ours.config.text.context_length)
    with torch.no_grad():
        image_diff = ours.encode_image(pixels) - theirs.get_image_features(pixel_values=pixels).pooler_output
        text_diff = ours.encode_text(tokens) - theirs.get_text_features(input_ids=tokens).pooler_output
    assert image_diff.abs().max().item() <= ATOL
    assert text_diff.abs().max().item() <= ATOL
    assert torch.equal(ours.logit_scale, theirs.logit_scale)


def assert_bit_exact(a: nn.Module, b: nn.Module) -> None:
    assert a.config == b.config
    state_b = b.state_dict()
    assert set(a.state_dict()) == set(state_b)
    for key, value in a.state_dict().items():
        assert torch.equal(value, state_b[key]), key


# The settings real checkpoints use (issue 9, item 12): both activations, MLP ratios other than 4 (ViT-bigG's
# is 8192 / 1664 = 4.9231), LayerNorm eps other than 1e-5, a projection_dim unlike either width.
HF_VARIANTS = {
    "quick_gelu": ({"hidden_act": "quick_gelu"}, {"hidden_act": "quick_gelu"}, 16),
    "gelu": ({"hidden_act": "gelu"}, {"hidden_act": "gelu"}, 16),
    "mlp-ratio": ({"intermediate_size": 100, "hidden_act": "gelu"}, {"intermediate_size": 236}, 16),
    "layer-norm-eps": ({"layer_norm_eps": 1e-3}, {"layer_norm_eps": 1e-6}, 16),
    "projection-dim": ({}, {}, 24),
}


@pytest.mark.parametrize("variant", sorted(HF_VARIANTS))
def test_hf_folder_matches_transformers(tmp_path: Path, variant: str) -> None:
    """Fails on main for mlp-ratio (ConfigError: must be 4 x hidden_size) and layer-norm-eps (only 1e-5)."""
    text, vision, projection_dim = HF_VARIANTS[variant]
    theirs = hf_model(tmp_path / "hf", {**TINY_TEXT, **text}, {**TINY_VISION, **vision}, projection_dim)
    assert detect_format(tmp_path / "hf") == "hf"
    ours, preprocess, tokenizer = clipforge.load(tmp_path / "hf")
    assert ours.config.vision.heads == 3 and ours.config.embed_dim == projection_dim
    assert ours.config.text.act == text.get("hidden_act", "quick_gelu")
    assert ours.config.text.eps == text.get("layer_norm_eps", 1e-5)
    assert ours.config.vision.eps == vision.get("layer_norm_eps", 1e-5)
    assert round(32 * ours.config.text.mlp_ratio) == text.get("intermediate_size", 128)
    assert round(48 * ours.config.vision.mlp_ratio) == vision.get("intermediate_size", 96)
    assert tokenizer.context_length == 16 and preprocess.config.image_size == 32
    assert_parity(ours, theirs)
    save_hf(ours, tmp_path / "back")  # and back: the exported config reproduces the same settings
    assert_bit_exact(ours, load_model(tmp_path / "back"))


def test_round_trip_ours_hf_ours_is_bit_exact(tmp_path: Path) -> None:
    ours = create_model("tiny-vit").eval()
    save_hf(ours, tmp_path / "hf")
    theirs = transformers.CLIPModel.from_pretrained(tmp_path / "hf").eval()
    assert_parity(ours, theirs)
    assert_bit_exact(ours, load_model(tmp_path / "hf"))


def test_preprocessor_config_travels(tmp_path: Path) -> None:
    ours = create_model("tiny-vit").eval()
    save_hf(ours, tmp_path / "hf")
    processor = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert processor["crop_size"] == {"height": 32, "width": 32} and processor["resample"] == 3
    processor.update(image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25], resample=2)
    (tmp_path / "hf" / "preprocessor_config.json").write_text(json.dumps(processor))
    config = load_model(tmp_path / "hf").config
    assert config.preprocess.mean == (0.5, 0.5, 0.5) and config.preprocess.std == (0.25, 0.25, 0.25)
    assert config.preprocess.interpolation == "bilinear"


def test_hf_config_our_model_cannot_express() -> None:
    meta = {"text_config": {**TINY_TEXT, "hidden_act": "gelu_new"}, "vision_config": TINY_VISION}
    with pytest.raises(ConfigError, match="text_config.hidden_act='gelu_new'"):
        hf_config_to_model_config(meta, where="cfg.json")
    meta = {"text_config": {**TINY_TEXT, "intermediate_size": 0}, "vision_config": TINY_VISION}
    with pytest.raises(ConfigError, match="text_config.intermediate_size=0"):
        hf_config_to_model_config(meta, where="cfg.json")
    meta = {"text_config": {**TINY_TEXT, "layer_norm_eps": 0.0}, "vision_config": TINY_VISION}
    with pytest.raises(ConfigError, match="eps=0.0 must be between 0 and 1"):
        hf_config_to_model_config(meta, where="cfg.json")
    meta = {"projection_dim": "16", "text_config": TINY_TEXT, "vision_config": TINY_VISION}
    with pytest.raises(ConfigError, match="'embed_dim' must be int"):
        hf_config_to_model_config(meta, where="cfg.json")


def test_hf_weights_missing_or_foreign(tmp_path: Path) -> None:
    save_hf(create_model("tiny-vit"), tmp_path / "hf")
    weights = tmp_path / "hf" / "model.safetensors"
    from safetensors.torch import load_file, save_file

    state = load_file(weights)
    save_file({**state, "vision_model.extra.weight": torch.zeros(1)}, weights)
    with pytest.raises(CheckpointError, match="unexpected tensor 'vision_model.extra.weight'"):
        load_model(tmp_path / "hf")
    name = "text_model.encoder.layers.1.self_attn.k_proj.bias"
    del state[name]
    save_file(state, weights)
    with pytest.raises(CheckpointError, match=f"missing tensor '{name}'"):
        load_model(tmp_path / "hf")
    weights.unlink()
    with pytest.raises(CheckpointError, match="weights file not found"):
        load_model(tmp_path / "hf")


def test_legacy_pytorch_model_bin(tmp_path: Path) -> None:
    theirs = hf_model(tmp_path / "hf", TINY_TEXT, TINY_VISION)
    (tmp_path / "hf" / "model.safetensors").unlink()
    torch.save(theirs.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
    assert_parity(load_model(tmp_path / "hf"), theirs)


@pytest.mark.slow
def test_vit_b_32_shape_matches_transformers(tmp_path: Path) -> None:
    theirs = hf_model(tmp_path / "hf", {}, {}, projection_dim=512)  # CLIPConfig defaults are ViT-B/32
    ours = load_model(tmp_path / "hf")
    assert ours.config.vision == clipforge.get_model_config("ViT-B-32").vision
    assert_parity(ours, theirs, images=1)
    del theirs
    save_hf(ours, tmp_path / "back")
    assert_bit_exact(ours, load_model(tmp_path / "back"))
