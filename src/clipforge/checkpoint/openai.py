"""OpenAI `.pt` checkpoints: TorchScript archives and plain state dicts, architecture read off the shapes.

Our parameter names are OpenAI's, so an OpenAI state dict loads as is once the architecture has been
read off the tensor shapes. TorchScript archives are read without `torch.jit.load`, which would run the
archive's code: a restricted unpickler rebuilds only tensors and inert module stand-ins.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clipforge.checkpoint.files import (
    check_tensor_count,
    check_torch_archive,
    load_plain_state_dict,
    load_state_dict_strict,
)
from clipforge.errors import CheckpointError, ClipforgeError
from clipforge.models.base import ContrastiveModel
from clipforge.models.config import (
    ModelConfig,
    PreprocessConfig,
    ResNetConfig,
    TextTransformerConfig,
    TokenizerConfig,
    ViTConfig,
)
from clipforge.models.registry import create_model

# OpenAI's JIT archives carry these scalars next to the weights; the shapes already say the same.
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
# Module trees deeper than this are not CLIP models (OpenAI's is 6 levels deep).
MAX_MODULE_DEPTH = 32


def load_openai_checkpoint(path: Path) -> ContrastiveModel:
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
    check_torch_archive(path)  # a regular file, and a zip only of entries the file can back
    state = read_torchscript_tensors(path) if _is_torchscript(path) else load_plain_state_dict(path)
    return {k: v for k, v in state.items() if k not in OPENAI_EXTRA_KEYS and isinstance(v, torch.Tensor)}


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips with `constants.pkl` (and `code/`); `torch.save` zips have neither."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("/constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise CheckpointError(f"cannot read checkpoint (truncated or corrupt?): {path}: {err}") from err


def read_torchscript_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Reads the weights of a TorchScript archive as a flat state dict, never executing archive code.

    Raises:
        CheckpointError: the archive is damaged or pickles something other than modules and tensors.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            root = _ScriptUnpickler(archive, path).load()
    except CheckpointError:
        raise
    except Exception as err:  # hostile bytes can make the unpickler raise anything; all mean "unreadable"
        detail = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        why = f"cannot read TorchScript file (truncated or corrupt?): {path}: {detail}"
        raise CheckpointError(why) from err
    if not isinstance(root, _ScriptObject):
        raise CheckpointError(f"{path}: the TorchScript archive does not hold a module")
    state = _flatten_module(root, path)
    check_tensor_count(sum(t.numel() for t in state.values()), path)
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
    """Stands in for `torch._utils._rebuild_tensor_v2`: a strided view of a flat storage, inside it."""
    numbers = (offset, *size, *stride)
    if not isinstance(storage, torch.Tensor) or not all(isinstance(n, int) and n >= 0 for n in numbers):
        raise CheckpointError("malformed tensor record (not a storage, or negative sizes)")
    if len(size) != len(stride):
        raise CheckpointError(f"malformed tensor record (size {list(size)} and stride {list(stride)} differ)")
    last = offset + sum((n - 1) * st for n, st in zip(size, stride, strict=True))
    if 0 not in size and last >= storage.numel():
        raise CheckpointError(f"tensor of size {list(size)} reaches past its storage of {storage.numel()}")
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
        if not isinstance(pid, tuple) or len(pid) != 5:
            raise CheckpointError(f"{self.path}: unexpected persistent id {str(pid)[:80]}")
        kind, storage_type, key, _location, _numel = pid
        if kind != "storage" or not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise CheckpointError(f"{self.path}: unexpected persistent id {str(pid)[:80]}")
        if key not in self.storages:
            self.storages[key] = self._read_storage(f"{self.prefix}data/{key}", storage_type.dtype)
        return self.storages[key]

    def _read_storage(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """One storage entry, read once into its own buffer (its size is capped by `check_torch_archive`)."""
        info = self.archive.getinfo(name)
        raw = bytearray(info.file_size)
        with self.archive.open(info) as handle:
            view, filled = memoryview(raw), 0
            while filled < len(raw) and (chunk := handle.read(min(len(raw) - filled, 2**24))):
                view[filled : filled + len(chunk)] = chunk
                filled += len(chunk)
        if filled != len(raw):
            raise CheckpointError(f"{self.path}: storage '{name}' is cut short")
        itemsize = torch.empty(0, dtype=dtype).element_size()
        if len(raw) % itemsize:
            raise CheckpointError(f"{self.path}: storage '{name}' is not a whole number of {dtype} values")
        return torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)


def _flatten_module(root: _ScriptObject, path: Path) -> dict[str, torch.Tensor]:
    """Walks the module tree into dotted names, the way `state_dict()` would (depth-bounded, cycle-safe)."""
    state: dict[str, torch.Tensor] = {}
    stack: list[tuple[_ScriptObject, str, int]] = [(root, "", 0)]
    seen: set[int] = set()
    while stack:
        module, prefix, depth = stack.pop()
        if id(module) in seen or depth > MAX_MODULE_DEPTH:
            raise CheckpointError(f"{path}: module tree cyclic or deeper than {MAX_MODULE_DEPTH} levels")
        seen.add(id(module))
        for name, value in module.attributes.items():
            if isinstance(value, torch.Tensor):
                state[f"{prefix}{name}"] = value
            elif isinstance(value, _ScriptObject):
                stack.append((value, f"{prefix}{name}.", depth + 1))
    return state


def _shape(state: dict[str, torch.Tensor], key: str, source: str) -> torch.Size:
    if key not in state:
        raise CheckpointError(f"{source}: not an OpenAI CLIP state dict (missing '{key}')")
    return state[key].shape


def _count_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    """How many numbered children (`prefix0.`, `prefix1.`, ...) the state dict holds."""
    return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})


def infer_openai_config(state: dict[str, torch.Tensor], source: str = "checkpoint") -> ModelConfig:
    """Reads the architecture off an OpenAI-layout state dict (OpenAI's convention: 64-wide heads).

    Raises:
        CheckpointError: a tensor the architecture is read from is missing or has the wrong number of axes.
    """
    try:
        return _infer_config(state, source)
    except (IndexError, ValueError, TypeError, ZeroDivisionError) as err:
        if isinstance(err, ClipforgeError):
            raise
        why = f"{source}: not an OpenAI CLIP state dict (tensor shapes do not fit: {err})"
        raise CheckpointError(why) from err


def _infer_config(state: dict[str, torch.Tensor], source: str) -> ModelConfig:
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
