"""open_clip checkpoints: a folder with `open_clip_config.json` (its `model_cfg` and `preprocess_cfg`) and
the weights (`open_clip_model.safetensors`, `open_clip_pytorch_model.bin`, or a training checkpoint).

open_clip's parameter names are OpenAI's for the ViT and ModifiedResNet CLIPs, so its state dicts load
as they are once the config is translated. Training checkpoints wrap the weights as ``{"state_dict": ...}``
with DDP's ``module.`` prefix; `CustomTextCLIP` keeps the text tower under ``text.``. What our model
cannot reproduce (timm or HF towers, layer scale, attentional pooling, SigLIP's logit bias...) is a
`ConfigError` naming the open_clip setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from clipforge.checkpoint.files import load_plain_state_dict, load_safetensors, load_state_dict_strict
from clipforge.errors import CheckpointError, ConfigError
from clipforge.fileio import read_json_object
from clipforge.models.base import ContrastiveModel
from clipforge.models.config import ModelConfig
from clipforge.models.registry import create_model

OPEN_CLIP_CONFIG = "open_clip_config.json"
# open_clip's own preference when a folder holds several weight files.
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")

# Settings that change the computation: accepted only at open_clip's default (which is what we compute).
_VISION_DEFAULTS: dict[str, Any] = {
    "ls_init_value": None, "attentional_pool": False, "no_ln_pre": False, "pos_embed_type": "learnable",
    "final_ln_after_pool": False, "pool_type": "tok", "act_kwargs": None, "block_type": None,
    "qk_norm": False, "scaled_cosine_attn": False, "scale_heads": False, "scale_attn_inner": False,
    "scale_attn": False, "scale_fc": False, "timm_model_name": None,
}
_TEXT_DEFAULTS: dict[str, Any] = {
    "hf_model_name": None, "hf_tokenizer_name": None, "tokenizer_mode": None, "tokenizer_kwargs": None,
    "ls_init_value": None, "embed_cls": False, "pad_id": 0, "no_causal_mask": False,
    "final_ln_after_pool": False, "pool_type": "argmax", "proj_bias": False, "proj_type": "linear",
    "act_kwargs": None, "block_type": None, "qk_norm": False, "scaled_cosine_attn": False,
    "scale_heads": False, "scale_attn_inner": False, "scale_attn": False, "scale_fc": False,
}
_MODEL_DEFAULTS: dict[str, Any] = {"init_logit_bias": None, "multimodal_cfg": None}
# Settings that only matter for training or for towers we refuse anyway.
_IGNORED = {
    "patch_dropout", "output_tokens", "attn_pooler_queries", "attn_pooler_heads", "timm_model_pretrained",
    "timm_pool", "timm_proj", "timm_proj_bias", "timm_drop", "timm_drop_path", "eos_id",
    "hf_model_pretrained", "hf_proj_type", "hf_pooler_type", "cast_dtype", "output_dict", "custom_text",
    "init_logit_scale", "nonscalar_logit_scale", "quick_gelu", "embed_dim", "vision_cfg", "text_cfg",
    "layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size", "norm_kwargs",
    "context_length", "vocab_size", "heads",
}


def load_open_clip_folder(folder: Path) -> ContrastiveModel:
    """Builds the architecture of `folder/open_clip_config.json` and loads its weights strictly.

    Raises:
        ConfigError: the config describes something our CLIP cannot reproduce.
        CheckpointError: the weights are missing, ambiguous, damaged or do not fit the config.
    """
    meta = read_json_object(folder / OPEN_CLIP_CONFIG, CheckpointError)
    where = str(folder / OPEN_CLIP_CONFIG)
    model_cfg = meta.get("model_cfg", meta)
    preprocess_cfg = meta.get("preprocess_cfg") or {}
    if not isinstance(model_cfg, dict) or not isinstance(preprocess_cfg, dict):
        raise ConfigError(f"{where}: 'model_cfg' and 'preprocess_cfg' must be objects")
    model = create_model(open_clip_to_model_config(model_cfg, preprocess_cfg, where))
    weights = find_weights(folder)
    raw = load_safetensors(weights) if weights.suffix == ".safetensors" else load_plain_state_dict(weights)
    state = open_clip_state(raw, model, str(weights))
    load_state_dict_strict(model, state, str(weights))
    return model


def find_weights(folder: Path) -> Path:
    """The weights file of an open_clip folder: open_clip's preferred names first, else the only one."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    if len(found) != 1:
        names = ", ".join(p.name for p in found)
        what = f"several weights files ({names})" if found else "no weights file"
        raise CheckpointError(f"{folder}: {what}; expected {WEIGHT_FILES[0]} or {WEIGHT_FILES[2]}")
    return found[0]


def open_clip_state(state: dict[str, Any], model: ContrastiveModel, source: str) -> dict[str, torch.Tensor]:
    """Our state dict from an open_clip one: `text.` (CustomTextCLIP) dropped, a [1] logit scale squeezed."""
    if "logit_bias" in state:
        raise ConfigError(f"{source}: has a SigLIP 'logit_bias', which our CLIP does not have")
    out = {k.removeprefix("text."): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if "logit_scale" in out and out["logit_scale"].numel() == 1:
        out["logit_scale"] = out["logit_scale"].reshape(())
    # Checkpoints saved before BatchNorm counted its batches lack the counters; they do not affect eval.
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            out.setdefault(key, value)
    return out


def open_clip_to_model_config(
    model_cfg: dict[str, Any], preprocess_cfg: dict[str, Any], where: str
) -> ModelConfig:
    """Translates open_clip's `model_cfg` (and `preprocess_cfg`) into our config.

    Raises:
        ConfigError: a setting our model cannot reproduce, named by its open_clip key.
    """
    vision_cfg, text_cfg = model_cfg.get("vision_cfg"), model_cfg.get("text_cfg")
    if not isinstance(vision_cfg, dict) or not isinstance(text_cfg, dict):
        raise ConfigError(f"{where}: model_cfg needs 'vision_cfg' and 'text_cfg' objects")
    _check_defaults(model_cfg, _MODEL_DEFAULTS, "model_cfg", where)
    _check_defaults(vision_cfg, _VISION_DEFAULTS, "vision_cfg", where)
    _check_defaults(text_cfg, _TEXT_DEFAULTS, "text_cfg", where)
    act = "quick_gelu" if model_cfg.get("quick_gelu", False) else "gelu"  # open_clip's default is nn.GELU
    data = {
        "embed_dim": model_cfg.get("embed_dim"),
        "vision": _vision(vision_cfg, act, where),
        "text": _text(text_cfg, act, where),
        "preprocess": _preprocess(preprocess_cfg, where),
    }
    return ModelConfig.from_dict(data, where=where)


def _check_defaults(cfg: dict[str, Any], defaults: dict[str, Any], name: str, where: str) -> None:
    for key, value in cfg.items():
        if key in defaults and value != defaults[key] and not (key == "block_type" and value == "default"):
            raise ConfigError(f"{where}: {name}.{key}={value!r} is not supported (only {defaults[key]!r})")
        if key not in defaults and key not in _IGNORED:
            raise ConfigError(f"{where}: unknown open_clip setting {name}.{key}")


def _eps(cfg: dict[str, Any], where: str) -> Any:
    norm = cfg.get("norm_kwargs") or {}
    if not isinstance(norm, dict) or set(norm) - {"eps"}:
        raise ConfigError(f"{where}: norm_kwargs={norm!r} is not supported (only 'eps')")
    return norm.get("eps", 1e-5)


def _square(size: Any, where: str) -> Any:
    if isinstance(size, list | tuple):
        if len(size) != 2 or size[0] != size[1]:
            raise ConfigError(f"{where}: image_size={list(size)} is not square")
        return size[0]
    return size


def _heads(width: Any, head_width: Any, where: str) -> int:
    if not isinstance(width, int) or not isinstance(head_width, int) or head_width < 1 or width % head_width:
        raise ConfigError(f"{where}: vision_cfg.head_width={head_width!r} must divide width={width!r}")
    return width // head_width


def _vision(cfg: dict[str, Any], act: str, where: str) -> dict[str, Any]:
    width, layers = cfg.get("width", 768), cfg.get("layers", 12)
    image_size = _square(cfg.get("image_size", 224), where)
    head_width = cfg.get("head_width", 64)
    if isinstance(layers, list | tuple):  # open_clip's ModifiedResNet: pooling runs at width * 32
        heads = _heads(width * 32 if isinstance(width, int) else width, head_width, where)
        return {"type": "resnet", "image_size": image_size, "layers": list(layers), "width": width,
                "heads": heads}
    return {
        "type": "vit",
        "image_size": image_size,
        "patch_size": cfg.get("patch_size", 16),
        "width": width,
        "layers": layers,
        "heads": _heads(width, head_width, where),
        "mlp_ratio": cfg.get("mlp_ratio", 4.0),
        "act": act,
        "eps": _eps(cfg, where),
    }


def _text(cfg: dict[str, Any], act: str, where: str) -> dict[str, Any]:
    return {
        "type": "transformer",
        "context_length": cfg.get("context_length", 77),
        "vocab_size": cfg.get("vocab_size", 49408),
        "width": cfg.get("width", 512),
        "heads": cfg.get("heads", 8),
        "layers": cfg.get("layers", 12),
        "mlp_ratio": cfg.get("mlp_ratio", 4.0),
        "act": act,
        "eps": _eps(cfg, where),
    }


def _preprocess(cfg: dict[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for ours, theirs in (("mean", "mean"), ("std", "std"), ("interpolation", "interpolation"),
                         ("resize_mode", "resize_mode")):
        if theirs in cfg:
            out[ours] = cfg[theirs]
    if "size" in cfg:
        out["image_size"] = _square(cfg["size"], where)
    return out
