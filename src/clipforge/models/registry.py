"""Architecture registry: JSON configs shipped in `models/configs/` plus any the user registers."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from clipforge.errors import ConfigError
from clipforge.fileio import read_json
from clipforge.models.base import ContrastiveModel
from clipforge.models.clip import CLIP
from clipforge.models.config import EfficientNetConfig, ModelConfig
from clipforge.models.size import check_model_size
from clipforge.models.towers import TowerCLIP

_USER_CONFIGS: dict[str, ModelConfig] = {}


def _builtin_names() -> dict[str, Any]:
    folder = resources.files("clipforge.models") / "configs"
    return {entry.name[: -len(".json")]: entry for entry in folder.iterdir() if entry.name.endswith(".json")}


def list_models() -> list[str]:
    """Names of every registered architecture, built-in and user-registered, sorted."""
    return sorted(set(_builtin_names()) | set(_USER_CONFIGS), key=str.lower)


def get_model_config(name: str) -> ModelConfig:
    """The parsed config of a registered architecture.

    Raises:
        ConfigError: no architecture has that name.
    """
    if name in _USER_CONFIGS:
        return _USER_CONFIGS[name]
    builtin = _builtin_names()
    if name not in builtin:
        raise ConfigError(f"unknown model '{name}' (see `clipforge models`)")
    return ModelConfig.from_dict(json.loads(builtin[name].read_text()), where=f"{name}.json")


def register_model(name: str, config: ModelConfig | dict[str, Any] | str | Path) -> ModelConfig:
    """Registers an architecture under `name` from a config, a dict or a JSON file path."""
    if isinstance(config, str | Path):
        path = Path(config)
        config = ModelConfig.from_dict(read_json(path, ConfigError), where=str(path))
    elif isinstance(config, dict):
        config = ModelConfig.from_dict(config, where=name)
    _USER_CONFIGS[name] = config
    return config


def create_model(config: str | ModelConfig, max_params: int | None = None) -> ContrastiveModel:
    """Builds a randomly initialized model (tower models: pretrained backbones) from a name or a config.

    Args:
        config: a registry name or an architecture.
        max_params: refuse architectures with more parameters (default: `models.size.max_params()`).

    Raises:
        ConfigError: an unknown name, or a model over the parameter ceiling (checked before allocating).
    """
    if isinstance(config, str):
        config = get_model_config(config)
    check_model_size(config, max_params)
    if isinstance(config.vision, EfficientNetConfig):
        return TowerCLIP(config)
    return CLIP(config)


def describe_models() -> list[str]:
    """One line per architecture: name, towers, embedding size, input size, and what weights a name gives
    (random, or pretrained backbones with random projection heads: never a trained CLIP)."""
    lines = []
    for name in list_models():
        config = get_model_config(name)
        towers = f"{config.vision.type}+{config.text.type}"
        weights = "backbones-only" if isinstance(config.vision, EfficientNetConfig) else "random"
        size = f"{config.vision.image_size}px"
        lines.append(f"{name:<20} {towers:<26} embed={config.embed_dim:<5} image={size:<6} weights={weights}")
    return lines
