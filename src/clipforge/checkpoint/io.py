"""Loading any model spec: the format is detected, then the reader of that format is called.

A spec is a registry name (random weights), a clipforge folder, a Hugging Face CLIP folder, an open_clip
folder (`open_clip_config.json` + weights) or an OpenAI `.pt` file (or any `torch.save`d CLIP state dict).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from clipforge.checkpoint.files import CONFIG_NAME, read_config
from clipforge.checkpoint.hf import load_hf_folder
from clipforge.checkpoint.native import FORMAT_NAME, load_any_folder, load_clipforge_folder
from clipforge.checkpoint.onnx import FORMAT_NAME as ONNX_FORMAT
from clipforge.checkpoint.onnx import load_onnx_folder
from clipforge.checkpoint.open_clip import OPEN_CLIP_CONFIG, load_open_clip_folder
from clipforge.checkpoint.openai import load_openai_checkpoint
from clipforge.device import resolve_device
from clipforge.errors import CheckpointError, ConfigError, RandomWeightsWarning
from clipforge.models.base import ContrastiveModel, Model
from clipforge.models.registry import create_model, list_models


def detect_format(spec: str | Path) -> str:
    """One of `registry`, `clipforge`, `onnx`, `hf`, `open_clip`, `openai` for a load spec."""
    path = Path(spec)
    if path.is_dir():
        if not os.path.lexists(path / CONFIG_NAME) and os.path.lexists(path / OPEN_CLIP_CONFIG):
            return "open_clip"
        meta = read_config(path)
        if meta.get("format") == FORMAT_NAME:
            return "clipforge"
        if meta.get("format") == ONNX_FORMAT:
            return "onnx"
        if "text_config" in meta and "vision_config" in meta:
            return "hf"
        raise CheckpointError(f"{path / CONFIG_NAME}: neither a clipforge nor a Hugging Face CLIP config")
    if path.exists():  # a file, or something that is not one (a FIFO...): the reader names the problem
        return "openai"
    if isinstance(spec, str) and spec in list_models():
        return "registry"
    raise CheckpointError(
        f"no such model: '{spec}' is not a file, a folder or a registered architecture "
        "(see `clipforge models`)"
    )


def load_model(spec: str | Path, device: str = "cpu") -> ContrastiveModel:
    """Loads only the model (weights in eval mode, on `device`) from any supported spec.

    A registry name gives random weights: a RandomWeightsWarning says so, since its outputs mean nothing.

    Args:
        spec: see `clipforge.checkpoint.runtime.load`; an exported ONNX folder gives its fp32 graphs.
        device: ``cpu`` (default), ``cuda`` or ``auto`` (see `clipforge.device.resolve_device`).
    """
    target = resolve_device(device)
    kind = detect_format(spec)
    if kind == "registry":
        warnings.warn(
            f"'{spec}' is a registry architecture with RANDOM weights: its outputs mean nothing. "
            "Pass a trained model (a model folder or a .pt file) for real predictions.",
            RandomWeightsWarning,
            stacklevel=2,
        )
        model = create_model(str(spec))
    elif kind == "clipforge":
        model = load_clipforge_folder(Path(spec))
    elif kind == "onnx":
        if target.type != "cpu":
            raise ConfigError(f"{spec} is an ONNX export, which runs on the CPU: use --device cpu")
        return load_onnx_folder(Path(spec))
    elif kind == "hf":
        model = load_hf_folder(Path(spec))
    elif kind == "open_clip":
        model = load_open_clip_folder(Path(spec))
    else:
        model = load_openai_checkpoint(Path(spec))
    return model.eval().to(target)


def load_folder(path: str | Path, device: str = "cpu") -> Model:
    """Loads a clipforge model folder of any kind (CLIP, dVAE, generator) in eval mode on `device`.

    Raises:
        CheckpointError: `path` is not a clipforge model folder.
    """
    if detect_format(path) != "clipforge":
        raise CheckpointError(f"{path}: not a clipforge model folder (config.json with format 'clipforge')")
    return load_any_folder(Path(path)).eval().to(resolve_device(device))
