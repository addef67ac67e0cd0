"""Saving and loading models: clipforge folders, registry names, OpenAI `.pt` files and HF CLIP folders.

Our format is a folder with `config.json` (the architecture, preprocessing and tokenizer) and
`model.safetensors`, so the input pipeline always travels with the weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from clipforge.data.transforms import Preprocess
from clipforge.errors import CheckpointError
from clipforge.models.config import EfficientNetConfig, MiniLMConfig, ModelConfig
from clipforge.models.registry import create_model, list_models

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_NAME = "clipforge"


def save(model: nn.Module, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Writes `model` as a clipforge folder (`config.json` + `model.safetensors`).

    Args:
        model: a model built by `create_model` (it carries its `config`).
        path: the folder to write; created if needed.
        extra: JSON-ready provenance stored under `"extra"` in config.json.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    config: ModelConfig = model.config  # type: ignore[assignment]
    from clipforge import __version__

    meta = {"format": FORMAT_NAME, "version": __version__, "model": config.to_dict(), "extra": extra or {}}
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS_NAME))
    (folder / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    return folder


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


def _load_clipforge_folder(folder: Path) -> nn.Module:
    meta = read_config(folder)
    config = ModelConfig.from_dict(meta.get("model"), where=str(folder / CONFIG_NAME))
    model = create_model(_without_pretrained_init(config))
    load_state_dict_strict(model, load_safetensors(folder / WEIGHTS_NAME), str(folder))
    return model


def _without_pretrained_init(config: ModelConfig) -> ModelConfig:
    """Tower models would read their package weights first; our checkpoint overwrites them anyway."""
    import dataclasses

    vision, text = config.vision, config.text
    if isinstance(vision, EfficientNetConfig):
        vision = dataclasses.replace(vision, weights="none")
    if isinstance(text, MiniLMConfig):
        text = dataclasses.replace(text, weights="none")
    return dataclasses.replace(config, vision=vision, text=text)


def detect_format(spec: str | Path) -> str:
    """One of `registry`, `clipforge`, `hf`, `openai` for a load spec."""
    path = Path(spec)
    if path.is_dir():
        meta = read_config(path)
        if meta.get("format") == FORMAT_NAME:
            return "clipforge"
        if "text_config" in meta and "vision_config" in meta:
            return "hf"
        raise CheckpointError(f"{path / CONFIG_NAME}: neither a clipforge nor a Hugging Face CLIP config")
    if path.is_file():
        return "openai"
    if isinstance(spec, str) and spec in list_models():
        return "registry"
    raise CheckpointError(f"no such model: '{spec}' is not a file, a folder or a registered architecture")


def load_model(spec: str | Path) -> nn.Module:
    """Loads only the model (weights in eval mode) from any supported spec."""
    kind = detect_format(spec)
    if kind == "registry":
        model = create_model(str(spec))
    elif kind == "clipforge":
        model = _load_clipforge_folder(Path(spec))
    elif kind == "hf":
        from clipforge.checkpoint.convert import load_hf_folder

        model = load_hf_folder(Path(spec))
    else:
        from clipforge.checkpoint.convert import load_openai_checkpoint

        model = load_openai_checkpoint(Path(spec))
    return model.eval()


def load(spec: str | Path) -> tuple[nn.Module, Preprocess, Any]:
    """Loads `(model, preprocess, tokenizer)`; the format is detected from `spec`.

    Args:
        spec: a registry name (random init), a clipforge folder, a Hugging Face CLIP folder, or an OpenAI
            `.pt` file (TorchScript archive or plain state dict).
    """
    from clipforge.tokenizer import get_tokenizer

    model = load_model(spec)
    config: ModelConfig = model.config  # type: ignore[assignment]
    return model, Preprocess(config.preprocess), get_tokenizer(config.tokenizer)
