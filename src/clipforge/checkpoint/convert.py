"""Foreign checkpoints: OpenAI `.pt` files and Hugging Face CLIP folders, in and out of our layout.

Our parameter names are OpenAI's, so an OpenAI state dict loads as is once the architecture has been
read off the tensor shapes. TorchScript archives are read without `torch.jit.load`, which would run the
archive's code: a restricted unpickler rebuilds only tensors and inert module stand-ins. Hugging Face's
CLIPModel differs by names, split q/k/v projections and transposed output projections; one name table
(ours -> theirs) drives both directions, so a round trip is a pure permutation of the same numbers.
"""

from __future__ import annotations

import collections
import io
import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from clipforge.checkpoint.io import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_model,
    load_safetensors,
    load_state_dict_strict,
    read_config,
    save,
)
from clipforge.errors import CheckpointError, ConfigError
from clipforge.models.config import (
    ModelConfig,
    PreprocessConfig,
    ResNetConfig,
    TextTransformerConfig,
    TokenizerConfig,
    ViTConfig,
)
from clipforge.models.registry import create_model

CONVERT_TARGETS = ("clipforge", "hf")
PREPROCESSOR_NAME = "preprocessor_config.json"

# --------------------------------------------------------------------------------------------- OpenAI


# OpenAI's JIT archives carry these scalars next to the weights; the shapes already say the same.
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def load_openai_checkpoint(path: Path) -> nn.Module:
    """Loads an OpenAI `.pt` file (TorchScript archive or plain state dict), inferring the architecture.

    Raises:
        CheckpointError: the file is unreadable, truncated, or not a CLIP state dict.
    """
    state = read_openai_state_dict(path)
    model = create_model(infer_openai_config(state, str(path)))
    # Checkpoints saved before BatchNorm counted its batches lack the counters; they do not affect eval.
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state.setdefault(key, value)
    load_state_dict_strict(model, state, str(path))
    return model


def read_openai_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The flat state dict of an OpenAI `.pt` file, without the scalar extras of JIT archives."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    state = read_torchscript_tensors(path) if _is_torchscript(path) else _load_plain_state_dict(path)
    return {k: v for k, v in state.items() if k not in OPENAI_EXTRA_KEYS and isinstance(v, torch.Tensor)}


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips with `constants.pkl` (and `code/`); `torch.save` zips have neither."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def _load_plain_state_dict(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read checkpoint (truncated or corrupt?): {path}: {err}") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, found a {type(state).__name__}")
    # DataParallel / DDP training scripts save every name behind "module.".
    return {k.removeprefix("module."): v for k, v in state.items()}


def read_torchscript_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Reads the weights of a TorchScript archive as a flat state dict, never executing archive code.

    Raises:
        CheckpointError: the archive is damaged or pickles something other than modules and tensors.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            root = _ScriptUnpickler(archive, path).load()
    except (zipfile.BadZipFile, KeyError, EOFError, pickle.UnpicklingError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read TorchScript file (truncated or corrupt?): {path}: {err}") from err
    if not isinstance(root, _ScriptObject):
        raise CheckpointError(f"{path}: the TorchScript archive does not hold a module")
    state: dict[str, torch.Tensor] = {}
    _flatten_module(root, "", state)
    return state


class _ScriptObject:
    """Inert stand-in for a pickled `__torch__.*` module: it only keeps the attributes it is given."""

    def __init__(self) -> None:
        self.attributes: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        self.attributes = dict(state) if isinstance(state, dict) else {}


@dataclass(frozen=True)
class _StorageType:
    """What a pickled `torch.FloatStorage` (etc.) global resolves to: just its dtype."""

    dtype: torch.dtype


_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


def _rebuild_tensor(
    storage: torch.Tensor, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_unused: Any
) -> torch.Tensor:
    """Stands in for `torch._utils._rebuild_tensor_v2`: a strided view of a flat storage."""
    return storage.as_strided(size, stride, offset)


def _first_argument(value: Any, *_unused: Any) -> Any:
    """Stands in for `torch.jit._pickle` helpers, which only re-tag lists and values."""
    return value


class _ScriptUnpickler(pickle.Unpickler):
    """Unpickles a TorchScript `data.pkl`: tensors come from `data/N` entries, modules become stand-ins."""

    def __init__(self, archive: zipfile.ZipFile, path: Path) -> None:
        names = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if not names:
            raise CheckpointError(f"{path}: no data.pkl in the TorchScript archive")
        self.prefix = names[0].removesuffix("data.pkl")
        byteorder = self.prefix + "byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder).strip() != b"little":
            raise CheckpointError(f"{path}: big-endian archives are not supported")
        super().__init__(io.BytesIO(archive.read(names[0])))
        self.archive = archive
        self.path = path
        self.storages: dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__."):
            return _ScriptObject
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch.jit._pickle" and (name.startswith("build_") or name == "restore_type_tag"):
            return _first_argument
        raise CheckpointError(f"{self.path}: refusing to unpickle '{module}.{name}' (not a module or tensor)")

    def persistent_load(self, pid: Any) -> torch.Tensor:
        kind, storage_type, key, _location, _numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise CheckpointError(f"{self.path}: unexpected persistent id {pid!r}")
        if key not in self.storages:
            raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))
            dtype = storage_type.dtype
            self.storages[key] = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        return self.storages[key]


def _flatten_module(module: _ScriptObject, prefix: str, state: dict[str, torch.Tensor]) -> None:
    """Walks the module tree into dotted names, the way `state_dict()` would."""
    for name, value in module.attributes.items():
        if isinstance(value, torch.Tensor):
            state[prefix + name] = value
        elif isinstance(value, _ScriptObject):
            _flatten_module(value, f"{prefix}{name}.", state)


def _shape(state: dict[str, torch.Tensor], key: str, source: str) -> torch.Size:
    if key not in state:
        raise CheckpointError(f"{source}: not an OpenAI CLIP state dict (missing '{key}')")
    return state[key].shape


def _count_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    """How many numbered children (`prefix0.`, `prefix1.`, ...) the state dict holds."""
    return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})


def infer_openai_config(state: dict[str, torch.Tensor], source: str = "checkpoint") -> ModelConfig:
    """Reads the architecture off an OpenAI-layout state dict (OpenAI's convention: 64-wide heads)."""
    vision = _infer_vit(state, source) if "visual.proj" in state else _infer_resnet(state, source)
    width = _shape(state, "ln_final.weight", source)[0]
    text = TextTransformerConfig(
        context_length=_shape(state, "positional_embedding", source)[0],
        vocab_size=_shape(state, "token_embedding.weight", source)[0],
        width=width,
        heads=max(1, width // 64),
        layers=_count_blocks(state, "transformer.resblocks."),
    )
    return ModelConfig(
        embed_dim=_shape(state, "text_projection", source)[1],
        vision=vision,
        text=text,
        preprocess=PreprocessConfig(image_size=vision.image_size),
        tokenizer=TokenizerConfig(context_length=text.context_length),
    )


def _infer_vit(state: dict[str, torch.Tensor], source: str) -> ViTConfig:
    width, _, patch, _ = _shape(state, "visual.conv1.weight", source)  # [D, 3, P, P]
    grid = round((_shape(state, "visual.positional_embedding", source)[0] - 1) ** 0.5)
    hidden = _shape(state, "visual.transformer.resblocks.0.mlp.c_fc.weight", source)[0]
    return ViTConfig(
        image_size=patch * grid,
        patch_size=patch,
        width=width,
        layers=_count_blocks(state, "visual.transformer.resblocks."),
        heads=max(1, width // 64),
        mlp_ratio=hidden / width,
    )


def _infer_resnet(state: dict[str, torch.Tensor], source: str) -> ResNetConfig:
    width = _shape(state, "visual.layer1.0.conv1.weight", source)[0]
    grid = round((_shape(state, "visual.attnpool.positional_embedding", source)[0] - 1) ** 0.5)
    return ResNetConfig(
        image_size=grid * 32,  # the tower downsamples by 32
        layers=tuple(_count_blocks(state, f"visual.layer{i}.") for i in range(1, 5)),
        width=width,
        heads=width * 32 // 64,  # attention pooling runs at width * 32 channels
    )


# ----------------------------------------------------------------------------------------- Hugging Face

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
        tensor = torch.cat([hf_state[n] for n in names]) if len(names) == 3 else hf_state[names[0]]
        state[key] = tensor.t() if key in _HF_TRANSPOSED else tensor
        used.update(names)
    # position_ids are index buffers older transformers versions saved; they hold no weights.
    extra = sorted(k for k in set(hf_state) - used if not k.endswith("position_ids"))
    if extra:
        raise CheckpointError(f"{source}: unexpected tensor '{extra[0]}' (not a ViT CLIPModel checkpoint?)")
    return state


def load_hf_folder(folder: Path) -> nn.Module:
    """Loads a Hugging Face CLIP folder (`config.json` + `model.safetensors` or `pytorch_model.bin`).

    Raises:
        ConfigError: the config describes something our CLIP cannot express.
        CheckpointError: the weights are missing, damaged or do not match the config.
    """
    preprocessor = _read_json_if_any(folder / PREPROCESSOR_NAME)
    config = hf_config_to_model_config(read_config(folder), preprocessor, where=str(folder / CONFIG_NAME))
    model = create_model(config)
    state = from_hf_state(list(model.state_dict()), _read_hf_weights(folder), str(folder))
    load_state_dict_strict(model, state, str(folder))
    return model


def _read_json_if_any(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: not a JSON object ({err})") from err


def _read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    """`model.safetensors`, its shards (via the index), or a legacy `pytorch_model.bin`."""
    index = _read_json_if_any(folder / f"{WEIGHTS_NAME}.index.json")
    if index is not None:
        shards = sorted(set(index.get("weight_map", {}).values()))
        return {k: v for shard in shards for k, v in load_safetensors(folder / shard).items()}
    legacy = folder / "pytorch_model.bin"
    if legacy.is_file() and not (folder / WEIGHTS_NAME).is_file():
        return _load_plain_state_dict(legacy)
    return load_safetensors(folder / WEIGHTS_NAME)


def hf_config_to_model_config(
    meta: dict[str, Any], preprocessor: dict[str, Any] | None = None, where: str = "config.json"
) -> ModelConfig:
    """Translates a `CLIPConfig` dict (and optionally a `CLIPImageProcessor` dict) into ours.

    Raises:
        ConfigError: an HF setting our model cannot reproduce (activation, LayerNorm eps, MLP ratio...).
    """
    text = {**_HF_TEXT_DEFAULTS, **(meta.get("text_config") or {})}
    vision = {**_HF_VISION_DEFAULTS, **(meta.get("vision_config") or {})}
    _check_hf_tower(text, "text_config", where)
    _check_hf_tower(vision, "vision_config", where)
    if text["intermediate_size"] != 4 * text["hidden_size"]:
        size = text["intermediate_size"]
        raise ConfigError(f"{where}: text_config.intermediate_size={size} must be 4 x hidden_size")
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


def _check_hf_tower(tower: dict[str, Any], name: str, where: str) -> None:
    if tower["hidden_act"] not in _HF_ACTS:
        act = tower["hidden_act"]
        raise ConfigError(f"{where}: {name}.hidden_act={act!r} (supported: {', '.join(_HF_ACTS)})")
    if abs(float(tower["layer_norm_eps"]) - 1e-5) > 1e-12:
        raise ConfigError(f"{where}: {name}.layer_norm_eps={tower['layer_norm_eps']} (only 1e-5 works)")


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
    }


def _hf_text_to_dict(text: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "transformer",
        "context_length": text["max_position_embeddings"],
        "vocab_size": text["vocab_size"],
        "width": text["hidden_size"],
        "heads": text["num_attention_heads"],
        "layers": text["num_hidden_layers"],
        "act": text["hidden_act"],
    }


def _hf_preprocess_to_dict(processor: dict[str, Any], where: str) -> dict[str, Any]:
    """Keeps what our pipeline models: crop size, mean, std and the resampling filter."""
    crop = processor.get("crop_size", processor.get("size", 224))
    size = crop.get("height", crop.get("shortest_edge")) if isinstance(crop, dict) else crop
    resample = processor.get("resample", 3)
    if resample not in _HF_RESAMPLE:
        raise ConfigError(f"{where}: preprocessor resample={resample!r} (supported: {sorted(_HF_RESAMPLE)})")
    return {
        "image_size": size,
        "mean": processor.get("image_mean", list(PreprocessConfig.mean)),
        "std": processor.get("image_std", list(PreprocessConfig.std)),
        "interpolation": _HF_RESAMPLE[resample],
    }


def save_hf(model: nn.Module, path: str | Path) -> Path:
    """Writes `model` as a folder `transformers.CLIPModel.from_pretrained` loads.

    Raises:
        ConfigError: the model is not a ViT + text-transformer CLIP (HF's CLIP vision tower is a ViT).
    """
    config: ModelConfig = model.config  # type: ignore[assignment]
    if not isinstance(config.vision, ViTConfig) or not isinstance(config.text, TextTransformerConfig):
        raise ConfigError(
            f"cannot export a '{config.vision.type}' + '{config.text.type}' model to Hugging Face: "
            "transformers' CLIPModel needs a 'vit' image tower and a 'transformer' text tower"
        )
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(to_hf_state(model.state_dict()), str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    (folder / CONFIG_NAME).write_text(json.dumps(model_config_to_hf(config), indent=2) + "\n")
    (folder / PREPROCESSOR_NAME).write_text(json.dumps(preprocess_to_hf(config.preprocess), indent=2) + "\n")
    return folder


def model_config_to_hf(config: ModelConfig) -> dict[str, Any]:
    """A `CLIPConfig.to_dict()`-style dict for a ViT CLIP."""
    vision, text = config.vision, config.text
    assert isinstance(vision, ViTConfig) and isinstance(text, TextTransformerConfig)
    shared = {"layer_norm_eps": 1e-5, "projection_dim": config.embed_dim, "initializer_factor": 1.0}
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
            "intermediate_size": 4 * text.width,
            "num_hidden_layers": text.layers,
            "num_attention_heads": text.heads,
            "max_position_embeddings": text.context_length,
            "vocab_size": text.vocab_size,
            "hidden_act": text.act,
            # Our tokenizer's ids: HF pools the first end-of-text token, we pool the largest id, the same one.
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 0,
            **shared,
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": vision.width,
            "intermediate_size": int(vision.width * vision.mlp_ratio),
            "num_hidden_layers": vision.layers,
            "num_attention_heads": vision.heads,
            "image_size": vision.image_size,
            "patch_size": vision.patch_size,
            "num_channels": 3,
            "hidden_act": vision.act,
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


# ---------------------------------------------------------------------------------------------- convert


def convert(src: str | Path, dst: str | Path, to: str = "clipforge") -> Path:
    """Loads any supported checkpoint and writes it as a clipforge folder or an HF CLIP folder.

    Args:
        src: a registry name, a clipforge or HF folder, or an OpenAI `.pt` file.
        dst: the folder to write.
        to: `clipforge` or `hf`.

    Raises:
        ConfigError: an unknown target, or a model the target format cannot hold.
    """
    if to not in CONVERT_TARGETS:
        raise ConfigError(f"unknown conversion target '{to}' (known: {', '.join(CONVERT_TARGETS)})")
    model = load_model(src)
    if to == "hf":
        return save_hf(model, dst)
    return save(model, dst, extra={"converted_from": str(src)})
