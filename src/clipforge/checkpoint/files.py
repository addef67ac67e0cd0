"""File primitives shared by every checkpoint format: names, JSON configs, safetensors, torch pickles.

Each reader turns a missing, truncated or malformed file into a one-line `CheckpointError` naming it.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from clipforge.errors import CheckpointError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


def read_config(folder: Path) -> dict[str, Any]:
    """The parsed `config.json` of a model folder."""
    path = folder / CONFIG_NAME
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError as err:
        raise CheckpointError(f"no {CONFIG_NAME} in model folder: {folder}") from err
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err.msg})") from err


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Reads a safetensors file, naming it when it is missing or damaged."""
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read weights (truncated or corrupt?): {path}: {err}") from err


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Loads with strict=True and turns key or shape mismatches into a one-line error."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise CheckpointError(f"weights do not fit the architecture in {source}: {first}") from err


def read_json_if_any(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when there is no such file."""
    if not path.is_file():
        return None
    try:
        return dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: not a JSON object ({err})") from err


def load_plain_state_dict(path: Path) -> dict[str, Any]:
    """A `torch.save`d state dict, read with `weights_only=True` (no pickled code runs), without `module.`."""
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
