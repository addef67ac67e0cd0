"""clipforge's own format: a folder with `config.json` (architecture, preprocessing, tokenizer) and
`model.safetensors`, so the input pipeline always travels with the weights."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from safetensors.torch import save as save_safetensors

from clipforge.checkpoint.files import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    load_safetensors,
    load_state_dict_strict,
    read_config,
)
from clipforge.errors import CheckpointError
from clipforge.fileio import write_bytes_atomic, write_text_atomic
from clipforge.models.base import ContrastiveModel, Model
from clipforge.models.config import EfficientNetConfig, MiniLMConfig, ModelConfig
from clipforge.models.registry import create_any_model, parse_model_config
from clipforge.version import __version__

FORMAT_NAME = "clipforge"


def save(model: Model, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Writes `model` as a clipforge folder (`config.json` + `model.safetensors`).

    Args:
        model: a model built by `create_model` (it carries its `config`).
        path: the folder to write; created if needed.
        extra: JSON-ready provenance stored under `"extra"` in config.json.
    """
    folder = Path(path)
    config = model.config.to_dict()
    meta = {"format": FORMAT_NAME, "version": __version__, "model": config, "extra": extra or {}}
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # Weights first, config last: a folder whose config.json exists holds complete weights.
    write_bytes_atomic(folder / WEIGHTS_NAME, save_safetensors(tensors))
    write_text_atomic(folder / CONFIG_NAME, json.dumps(meta, indent=2) + "\n")
    return folder


def load_clipforge_folder(folder: Path) -> ContrastiveModel:
    """Builds the CLIP architecture in `folder/config.json` and loads its weights strictly.

    Raises:
        CheckpointError: the folder holds another kind of model (a dVAE, a generator).
    """
    model = load_any_folder(folder)
    if not isinstance(model, ContrastiveModel):
        raise CheckpointError(f"{folder}: holds a {type(model).__name__}, not a CLIP model "
                              "(load it with clipforge.load_folder)")
    return model


def load_any_folder(folder: Path) -> Model:
    """Builds the architecture of any kind in `folder/config.json` and loads its weights strictly."""
    meta = read_config(folder)
    config = parse_model_config(meta.get("model"), where=str(folder / CONFIG_NAME))
    model = create_any_model(without_pretrained_init(config) if isinstance(config, ModelConfig) else config)
    load_state_dict_strict(model, load_safetensors(folder / WEIGHTS_NAME), str(folder))
    return model


def without_pretrained_init(config: ModelConfig) -> ModelConfig:
    """Tower models would read their package weights first; our checkpoint overwrites them anyway."""
    vision, text = config.vision, config.text
    if isinstance(vision, EfficientNetConfig):
        vision = dataclasses.replace(vision, weights="none")
    if isinstance(text, MiniLMConfig):
        text = dataclasses.replace(text, weights="none")
    return dataclasses.replace(config, vision=vision, text=text)
