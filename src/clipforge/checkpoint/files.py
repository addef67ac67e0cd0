"""File primitives shared by every checkpoint format: names, JSON configs, safetensors, torch pickles.

Each reader turns a missing, truncated or malformed file into a one-line `CheckpointError` naming it, and
bounds memory before reading: JSON files are size-capped, a safetensors file may not hold more numbers
than the parameter ceiling (`models.size.max_params`), and a torch zip archive may only hold stored
(uncompressed) entries whose sizes the file can back, so a zip bomb is refused from its directory.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from clipforge.errors import CheckpointError
from clipforge.fileio import check_regular_file, read_json_object
from clipforge.models.size import MAX_PARAMS_ENV, max_params

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MAX_SIDE_ENTRY_BYTES = 64 * 2**20  # compressed TorchScript code and debug files are kilobytes


def read_config(folder: Path) -> dict[str, Any]:
    """The parsed `config.json` of a model folder (a JSON object)."""
    path = folder / CONFIG_NAME
    if not os.path.lexists(path):
        raise CheckpointError(f"no {CONFIG_NAME} in model folder: {folder}")
    return read_json_object(path, CheckpointError)


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Reads a safetensors file, naming it when it is missing, damaged or larger than any allowed model."""
    check_regular_file(path, CheckpointError, "weights file")
    try:
        with safe_open(str(path), "pt") as handle:
            numel = sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())  # noqa: SIM118
        check_tensor_count(numel, path)
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read weights (truncated or corrupt?): {path}: {err}") from err


def check_tensor_count(numel: int, path: Path) -> None:
    """Refuses a weights file holding more numbers than the parameter ceiling allows in a model."""
    limit = max_params()
    if numel > limit:
        raise CheckpointError(
            f"{path}: holds {numel:,} numbers, more than the limit of {limit:,} parameters "
            f"(set {MAX_PARAMS_ENV} to raise it)"
        )


def check_torch_archive(path: Path) -> None:
    """Refuses a torch zip archive whose entries claim more bytes than a real checkpoint's could.

    torch stores tensor data and pickles uncompressed, so their sizes are bounded by the file's; only small
    side files (TorchScript code, debug info) are compressed. Checking the central directory before
    reading bounds the memory any entry can take, so a zip bomb is refused before it is inflated.
    """
    size = check_regular_file(path, CheckpointError, "checkpoint")
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise CheckpointError(f"cannot read checkpoint (truncated or corrupt?): {path}: {err}") from err
    for info in entries:
        stored = info.compress_type == zipfile.ZIP_STORED and info.file_size == info.compress_size
        if stored and info.header_offset + info.compress_size <= size:
            continue
        if not stored and not _is_tensor_entry(info.filename) and info.file_size <= MAX_SIDE_ENTRY_BYTES:
            continue
        raise CheckpointError(
            f"{path}: archive entry '{info.filename}' claims {info.file_size:,} bytes "
            f"({'compressed' if not stored else 'beyond the end of the file'}); a torch checkpoint never does"
        )


def _is_tensor_entry(name: str) -> bool:
    return name.endswith(".pkl") or "/data/" in name


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Loads with strict=True and turns key or shape mismatches into a one-line error."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise CheckpointError(f"weights do not fit the architecture in {source}: {first}") from err


def read_json_if_any(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when there is no such file (a directory there is an error)."""
    if not os.path.lexists(path):
        return None
    return read_json_object(path, CheckpointError)


def load_plain_state_dict(path: Path) -> dict[str, Any]:
    """A `torch.save`d state dict, read with `weights_only=True` (no pickled code runs), without `module.`.

    Training scripts (open_clip's among them) wrap the weights as ``{"state_dict": ...}`` next to the
    optimizer state, and DataParallel / DDP put every name behind ``module.``; both are undone.
    """
    check_torch_archive(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # hostile bytes can make the unpickler raise anything; all mean "unreadable"
        detail = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        raise CheckpointError(f"cannot read checkpoint (truncated or corrupt?): {path}: {detail}") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, found a {type(state).__name__}")
    tensors = {k.removeprefix("module."): v for k, v in state.items() if isinstance(k, str)}
    check_tensor_count(sum(v.numel() for v in tensors.values() if isinstance(v, torch.Tensor)), path)
    return tensors
