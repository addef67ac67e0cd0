"""open_clip checkpoints load through `clipforge.load`, and our towers equal open_clip's own code.

The reference is open_clip's `model.py` / `modified_resnet.py` (fixture `open_clip_ref`), an implementation
written independently of ours: same weights in, outputs equal to 1e-5 out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import clipforge
from clipforge.checkpoint import detect_format, load_model
from clipforge.errors import CheckpointError, ConfigError
from clipforge.models.config import ResNetConfig
from clipforge.models.registry import create_model
from clipforge.models.vision import AttentionPool2d, ModifiedResNet

ATOL = 1e-5
TINY_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}
CONFIGS: dict[str, dict[str, Any]] = {
    # ViT-bigG-14's MLP ratio (8192 / 1664 written as 4.9231) and head width other than 64.
    "vit-gelu": {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 48, "head_width": 16,
                                                 "mlp_ratio": 4.9231, "patch_size": 8},
                 "text_cfg": {**TINY_TEXT, "mlp_ratio": 3.0}},
    "vit-quickgelu": {"embed_dim": 24, "quick_gelu": True,
                      "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 16,
                                     "head_width": 8},
                      "text_cfg": TINY_TEXT},
    "resnet": {"embed_dim": 16, "vision_cfg": {"image_size": 64, "layers": [1, 2, 1, 1], "width": 8,
                                               "head_width": 32},
               "text_cfg": TINY_TEXT},
}
PREPROCESS = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bilinear"}


def perturb(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere, BatchNorm statistics included, kept O(1) so differences would show."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            norm_scale = param.ndim == 1 and name.endswith("weight")  # BatchNorm / LayerNorm scales
            param.copy_(1 + 0.1 * noise if norm_scale else param + 0.02 * noise)
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(0.1 * torch.randn(buffer.shape, generator=gen))
            elif name.endswith("running_var"):
                buffer.copy_(0.5 + torch.rand(buffer.shape, generator=gen))
    return model.eval()


def reference_clip(open_clip_ref: Any, cfg: dict[str, Any]) -> nn.Module:
    torch.manual_seed(0)
    model = open_clip_ref.model.CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"],
                                     quick_gelu=cfg.get("quick_gelu", False))
    return perturb(model)


def write_open_clip_folder(folder: Path, cfg: dict[str, Any], state: dict[str, torch.Tensor],
                           weights: str = "epoch_3.pt") -> Path:
    """open_clip's layout: open_clip_config.json and a training checkpoint with DDP's `module.` names."""
    folder.mkdir(parents=True)
    meta = {"model_cfg": cfg, "preprocess_cfg": PREPROCESS}
    (folder / "open_clip_config.json").write_text(json.dumps(meta))
    if weights.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state.items()}, folder / weights)
    else:
        wrapped = {"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in state.items()}}
        torch.save(wrapped, folder / weights)
    return folder


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_open_clip_checkpoint_matches_open_clip(tmp_path: Path, open_clip_ref: Any, name: str) -> None:
    """Fails on main: a folder with open_clip_config.json is 'no config.json in model folder'."""
    cfg = CONFIGS[name]
    theirs = reference_clip(open_clip_ref, cfg)
    folder = write_open_clip_folder(tmp_path / "oc", cfg, theirs.state_dict())
    assert detect_format(folder) == "open_clip"
    ours, preprocess, tokenizer = clipforge.load(folder)
    assert ours.config.text.act == ("quick_gelu" if cfg.get("quick_gelu") else "gelu")
    assert preprocess.config.mean == (0.5, 0.5, 0.5) and preprocess.config.interpolation == "bilinear"
    size = cfg["vision_cfg"]["image_size"]
    pixels = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    tokens = tokenizer(["a photo of a cat", "two dogs playing in the snow", ""])
    with torch.no_grad():
        image_diff = ours.encode_image(pixels) - theirs.encode_image(pixels)
        text_diff = ours.encode_text(tokens) - theirs.encode_text(tokens)
    assert image_diff.abs().max().item() <= ATOL
    assert text_diff.abs().max().item() <= ATOL
    assert torch.equal(ours.logit_scale, theirs.logit_scale)


def test_open_clip_layouts_without_the_reference(tmp_path: Path) -> None:
    """safetensors weights, a bare model config, CustomTextCLIP's `text.` names, a [1]-shaped logit scale."""
    model = create_model("tiny-vit").eval()
    cfg = {"embed_dim": 16, "quick_gelu": True, "custom_text": True, "nonscalar_logit_scale": True,
           "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": TINY_TEXT}
    vision_keys = ("visual.", "logit_scale")
    state = {k if k.startswith(vision_keys) else f"text.{k}": v for k, v in model.state_dict().items()}
    state["logit_scale"] = state["logit_scale"].reshape(1)
    folder = write_open_clip_folder(tmp_path / "oc", cfg, state, "open_clip_model.safetensors")
    (folder / "open_clip_config.json").write_text(json.dumps(cfg))  # open_clip also accepts a bare model_cfg
    loaded = load_model(folder)
    assert loaded.config.vision == model.config.vision and loaded.config.text == model.config.text
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key


def test_open_clip_settings_we_cannot_reproduce(tmp_path: Path) -> None:
    model = create_model("tiny-vit")
    cfg = {**CONFIGS["vit-quickgelu"], "vision_cfg": {**CONFIGS["vit-quickgelu"]["vision_cfg"],
                                                      "ls_init_value": 1e-5}}
    folder = write_open_clip_folder(tmp_path / "layer-scale", cfg, model.state_dict())
    with pytest.raises(ConfigError, match=r"vision_cfg.ls_init_value=1e-05 is not supported"):
        load_model(folder)
    cfg = {**CONFIGS["vit-quickgelu"], "text_cfg": {**TINY_TEXT, "hf_model_name": "roberta-base"}}
    folder = write_open_clip_folder(tmp_path / "hf-text", cfg, model.state_dict())
    with pytest.raises(ConfigError, match="text_cfg.hf_model_name='roberta-base' is not supported"):
        load_model(folder)
    folder = write_open_clip_folder(tmp_path / "no-weights", CONFIGS["vit-quickgelu"], {})
    (folder / "epoch_3.pt").unlink()
    with pytest.raises(CheckpointError, match="no weights file"):
        load_model(folder)


def reference_resnet(open_clip_ref: Any, config: ResNetConfig, output_dim: int) -> nn.Module:
    theirs = open_clip_ref.modified_resnet.ModifiedResNet(
        layers=config.layers, output_dim=output_dim, heads=config.heads, image_size=config.image_size,
        width=config.width,
    )
    return perturb(theirs)


def assert_resnet_matches(open_clip_ref: Any, config: ResNetConfig, output_dim: int, images: int) -> None:
    theirs = reference_resnet(open_clip_ref, config, output_dim)
    ours = ModifiedResNet(config, output_dim).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    size = config.image_size
    pixels = torch.randn(images, 3, size, size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected, got = theirs(pixels), ours(pixels)
    assert expected.abs().max().item() > 1e-2  # not a degenerate all-zero output
    assert (got - expected).abs().max().item() <= ATOL


def test_tiny_modified_resnet_matches_open_clip(open_clip_ref: Any) -> None:
    config = ResNetConfig(image_size=64, layers=(1, 2, 1, 1), width=8, heads=4)
    assert_resnet_matches(open_clip_ref, config, 16, 2)


def test_attention_pool_matches_open_clip(open_clip_ref: Any) -> None:
    theirs = perturb(open_clip_ref.modified_resnet.AttentionPool2d(3, 64, 4, 24))
    ours = AttentionPool2d(3, 64, 4, 24).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    features = torch.randn(2, 64, 3, 3, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert (ours(features) - theirs(features)).abs().max().item() <= ATOL


@pytest.mark.slow
def test_rn50_matches_open_clip(open_clip_ref: Any) -> None:
    """RN50's shape (224 px, layers 3-4-6-3, width 64, 32 heads, 1024-d output), one image."""
    assert_resnet_matches(open_clip_ref, clipforge.get_model_config("RN50").vision, 1024, 1)
