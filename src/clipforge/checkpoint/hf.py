"""Hugging Face CLIP folders, in and out of our layout.

HF's CLIPModel differs from OpenAI's layout by names, split q/k/v projections and transposed output
projections; one name table (ours -> theirs) drives both directions, so a round trip is a pure
permutation of the same numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as save_safetensors

from clipforge.checkpoint.files import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_plain_state_dict,
    load_safetensors,
    load_state_dict_strict,
    read_config,
    read_json_if_any,
)
from clipforge.errors import CheckpointError, ConfigError
from clipforge.fileio import write_bytes_atomic, write_json
from clipforge.models.base import ContrastiveModel
from clipforge.models.config import ModelConfig, PreprocessConfig, TextTransformerConfig, ViTConfig
from clipforge.models.registry import create_model

PREPROCESSOR_NAME = "preprocessor_config.json"

# Our name -> theirs, for names that map whole.
_HF_EXACT = {
    "logit_scale": "logit_scale",
    "text_projection": "text_projection.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "visual.proj": "visual_projection.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
}
# Our prefix -> theirs; the rest of the name carries over ("pre_layrnorm" is HF's own spelling).
_HF_PREFIXES = (
    ("token_embedding.", "text_model.embeddings.token_embedding."),
    ("transformer.resblocks.", "text_model.encoder.layers."),
    ("ln_final.", "text_model.final_layer_norm."),
    ("visual.conv1.", "vision_model.embeddings.patch_embedding."),
    ("visual.ln_pre.", "vision_model.pre_layrnorm."),
    ("visual.transformer.resblocks.", "vision_model.encoder.layers."),
    ("visual.ln_post.", "vision_model.post_layernorm."),
)
# Inside one transformer block.
_HF_BLOCK = (
    ("attn.out_proj.", "self_attn.out_proj."),
    ("ln_1.", "layer_norm1."),
    ("ln_2.", "layer_norm2."),
    ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."),
)
# We multiply `x @ proj` ([D, E]); HF stores nn.Linear weights ([E, D]).
_HF_TRANSPOSED = ("text_projection", "visual.proj")

_HF_TEXT_DEFAULTS = {
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "vocab_size": 49408,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
_HF_VISION_DEFAULTS = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 224,
    "patch_size": 32,
    "num_channels": 3,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
}
_HF_ACTS = ("quick_gelu", "gelu")  # HF's "gelu" is the exact erf GELU, like nn.GELU()
_HF_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def hf_names(key: str) -> list[str]:
    """The Hugging Face names of one of our tensors: three for a packed q/k/v projection, else one."""
    if key in _HF_EXACT:
        return [_HF_EXACT[key]]
    match = next(((ours, theirs) for ours, theirs in _HF_PREFIXES if key.startswith(ours)), None)
    if match is None:
        raise ConfigError(f"tensor '{key}' has no Hugging Face CLIP counterpart")
    ours, theirs = match
    rest = key[len(ours) :]
    if not ours.endswith("resblocks."):
        return [theirs + rest]
    index, _, leaf = rest.partition(".")
    if leaf.startswith("attn.in_proj_"):
        kind = leaf.removeprefix("attn.in_proj_")  # weight | bias
        return [f"{theirs}{index}.self_attn.{p}_proj.{kind}" for p in "qkv"]
    for old, new in _HF_BLOCK:
        if leaf.startswith(old):
            leaf = new + leaf[len(old) :]
    return [f"{theirs}{index}.{leaf}"]


def to_hf_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames and reshapes our state dict into `transformers.CLIPModel`'s."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        names = hf_names(key)
        parts = tensor.chunk(3) if len(names) == 3 else [tensor.t() if key in _HF_TRANSPOSED else tensor]
        out.update((name, part.detach().contiguous().cpu()) for name, part in zip(names, parts, strict=True))
    return out


def from_hf_state(keys: list[str], hf_state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Gathers our tensors `keys` from a `transformers.CLIPModel` state dict.

    Raises:
        CheckpointError: a tensor is missing, or the file holds one we have no place for.
    """
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key in keys:
        names = hf_names(key)
        missing = [n for n in names if n not in hf_state]
        if missing:
            raise CheckpointError(f"{source}: missing tensor '{missing[0]}'")
        try:
            tensor = torch.cat([hf_state[n] for n in names]) if len(names) == 3 else hf_state[names[0]]
            state[key] = tensor.t() if key in _HF_TRANSPOSED else tensor
        except RuntimeError as err:  # q/k/v of different shapes, a projection that is not a matrix
            raise CheckpointError(f"{source}: tensor '{names[0]}' has the wrong shape ({err})") from err
        used.update(names)
    # position_ids are index buffers older transformers versions saved; they hold no weights.
    extra = sorted(k for k in set(hf_state) - used if not k.endswith("position_ids"))
    if extra:
        raise CheckpointError(f"{source}: unexpected tensor '{extra[0]}' (not a ViT CLIPModel checkpoint?)")
    return state


def load_hf_folder(folder: Path) -> ContrastiveModel:
    """Loads a Hugging Face CLIP folder (`config.json` + `model.safetensors` or `pytorch_model.bin`).

    Raises:
        ConfigError: the config describes something our CLIP cannot express.
        CheckpointError: the weights are missing, damaged or do not match the config.
    """
    preprocessor = read_json_if_any(folder / PREPROCESSOR_NAME)
    config = hf_config_to_model_config(read_config(folder), preprocessor, where=str(folder / CONFIG_NAME))
    model = create_model(config)
    state = from_hf_state(list(model.state_dict()), _read_hf_weights(folder), str(folder))
    load_state_dict_strict(model, state, str(folder))
    return model


def _read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """`model.safetensors`, its shards (via the index), or a legacy `pytorch_model.bin`."""
    index = read_json_if_any(folder / f"{WEIGHTS_NAME}.index.json")
    if index is not None:
        shards = sorted(set(index.get("weight_map", {}).values()))
        return {k: v for shard in shards for k, v in load_safetensors(folder / shard).items()}
    legacy = folder / "pytorch_model.bin"
    if legacy.is_file() and not (folder / WEIGHTS_NAME).is_file():
        return load_plain_state_dict(legacy)
    return load_safetensors(folder / WEIGHTS_NAME)


def hf_config_to_model_config(
    meta: dict[str, Any], preprocessor: dict[str, Any] | None = None, where: str = "config.json"
) -> ModelConfig:
    """Translates a `CLIPConfig` dict (and optionally a `CLIPImageProcessor` dict) into ours.

    Raises:
        ConfigError: an HF setting our model cannot reproduce (activation, LayerNorm eps, MLP ratio...).
    """
    text = {**_HF_TEXT_DEFAULTS, **_hf_section(meta, "text_config", where)}
    vision = {**_HF_VISION_DEFAULTS, **_hf_section(meta, "vision_config", where)}
    _check_hf_tower(text, "text_config", where)
    _check_hf_tower(vision, "vision_config", where)
    if vision["num_channels"] != 3:
        raise ConfigError(f"{where}: vision_config.num_channels={vision['num_channels']} (only RGB works)")
    data = {
        "embed_dim": meta.get("projection_dim", 512),
        "init_logit_scale": meta.get("logit_scale_init_value", 2.6592),
        "vision": _hf_vision_to_dict(vision),
        "text": _hf_text_to_dict(text),
        "preprocess": _hf_preprocess_to_dict(preprocessor, where) if preprocessor else {},
    }
    return ModelConfig.from_dict(data, where=where)


def _hf_section(meta: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    section = meta.get(key) or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: '{key}' must be an object, got {type(section).__name__}")
    return section


def _check_hf_tower(tower: dict[str, Any], name: str, where: str) -> None:
    """Refuses what our towers cannot reproduce (other activations) and sizes a ratio cannot be taken of."""
    act = tower["hidden_act"]
    if not isinstance(act, str) or act not in _HF_ACTS:
        raise ConfigError(f"{where}: {name}.hidden_act={act!r} (supported: {', '.join(_HF_ACTS)})")
    for key in ("hidden_size", "intermediate_size"):
        value = tower[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{where}: {name}.{key}={value!r} must be an int >= 1")


def _hf_vision_to_dict(vision: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "vit",
        "image_size": vision["image_size"],
        "patch_size": vision["patch_size"],
        "width": vision["hidden_size"],
        "layers": vision["num_hidden_layers"],
        "heads": vision["num_attention_heads"],
        "mlp_ratio": vision["intermediate_size"] / vision["hidden_size"],
        "act": vision["hidden_act"],
        "eps": vision["layer_norm_eps"],
    }


def _hf_text_to_dict(text: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "transformer",
        "context_length": text["max_position_embeddings"],
        "vocab_size": text["vocab_size"],
        "width": text["hidden_size"],
        "heads": text["num_attention_heads"],
        "layers": text["num_hidden_layers"],
        "mlp_ratio": text["intermediate_size"] / text["hidden_size"],
        "act": text["hidden_act"],
        "eps": text["layer_norm_eps"],
    }


def _hf_preprocess_to_dict(processor: dict[str, Any], where: str) -> dict[str, Any]:
    """Keeps what our pipeline models: crop size, mean, std and the resampling filter."""
    crop = processor.get("crop_size", processor.get("size", 224))
    size = crop.get("height", crop.get("shortest_edge")) if isinstance(crop, dict) else crop
    resample = processor.get("resample", 3)
    if not isinstance(resample, int) or resample not in _HF_RESAMPLE:
        raise ConfigError(f"{where}: preprocessor resample={resample!r} (supported: {sorted(_HF_RESAMPLE)})")
    return {
        "image_size": size,
        "mean": processor.get("image_mean", list(PreprocessConfig.mean)),
        "std": processor.get("image_std", list(PreprocessConfig.std)),
        "interpolation": _HF_RESAMPLE[resample],
    }


def save_hf(model: ContrastiveModel, path: str | Path) -> Path:
    """Writes `model` as a folder `transformers.CLIPModel.from_pretrained` loads.

    Raises:
        ConfigError: the model is not a ViT + text-transformer CLIP (HF's CLIP vision tower is a ViT).
    """
    config = model.config
    if not isinstance(config.vision, ViTConfig) or not isinstance(config.text, TextTransformerConfig):
        raise ConfigError(
            f"cannot export a '{config.vision.type}' + '{config.text.type}' model to Hugging Face: "
            "transformers' CLIPModel needs a 'vit' image tower and a 'transformer' text tower"
        )
    folder = Path(path)
    weights = save_safetensors(to_hf_state(model.state_dict()), metadata={"format": "pt"})
    write_bytes_atomic(folder / WEIGHTS_NAME, weights)
    write_json(preprocess_to_hf(config.preprocess), folder / PREPROCESSOR_NAME)
    write_json(model_config_to_hf(config), folder / CONFIG_NAME)
    return folder


def model_config_to_hf(config: ModelConfig) -> dict[str, Any]:
    """A `CLIPConfig.to_dict()`-style dict for a ViT CLIP."""
    vision, text = config.vision, config.text
    assert isinstance(vision, ViTConfig) and isinstance(text, TextTransformerConfig)
    shared = {"projection_dim": config.embed_dim, "initializer_factor": 1.0}
    return {
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "dtype": "float32",
        "projection_dim": config.embed_dim,
        "logit_scale_init_value": config.init_logit_scale,
        "initializer_factor": 1.0,
        "text_config": {
            "model_type": "clip_text_model",
            "hidden_size": text.width,
            "intermediate_size": round(text.width * text.mlp_ratio),
            "num_hidden_layers": text.layers,
            "num_attention_heads": text.heads,
            "max_position_embeddings": text.context_length,
            "vocab_size": text.vocab_size,
            "hidden_act": text.act,
            "layer_norm_eps": text.eps,
            # Our tokenizer's ids: HF pools the first end-of-text token, we pool the largest id, the same one.
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 0,
            **shared,
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": vision.width,
            "intermediate_size": round(vision.width * vision.mlp_ratio),
            "num_hidden_layers": vision.layers,
            "num_attention_heads": vision.heads,
            "image_size": vision.image_size,
            "patch_size": vision.patch_size,
            "num_channels": 3,
            "hidden_act": vision.act,
            "layer_norm_eps": vision.eps,
            **shared,
        },
    }


def preprocess_to_hf(preprocess: PreprocessConfig) -> dict[str, Any]:
    """A `CLIPImageProcessor` config: shortest-side resize, center crop, normalize."""
    resample = {name: code for code, name in _HF_RESAMPLE.items()}[preprocess.interpolation]
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": preprocess.image_size},
        "resample": resample,
        "do_center_crop": True,
        "crop_size": {"height": preprocess.image_size, "width": preprocess.image_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(preprocess.mean),
        "image_std": list(preprocess.std),
        "do_convert_rgb": True,
    }
