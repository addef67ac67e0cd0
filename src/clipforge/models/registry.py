"""Architecture registry: JSON configs shipped in `models/configs/` plus any the user registers.

A config's top-level ``"kind"`` says which model it builds: ``"clip"`` (the default, so every
two-tower JSON without the key keeps its meaning), ``"dvae"`` or ``"generator"``. The CLIP-typed
functions (`get_model_config`, `create_model`, `list_models()`) see CLIP architectures only;
`get_any_config` and `create_any_model` take every kind.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from clipforge.errors import ConfigError
from clipforge.fileio import read_json
from clipforge.models.base import ContrastiveModel, Model
from clipforge.models.clip import CLIP
from clipforge.models.config import EfficientNetConfig, ModelConfig
from clipforge.models.dvae import DVAE, DVAEConfig
from clipforge.models.generator import Generator, GeneratorConfig
from clipforge.models.size import check_model_size
from clipforge.models.towers import TowerCLIP
from clipforge.typed import parse_dataclass

AnyModelConfig = ModelConfig | DVAEConfig | GeneratorConfig
KINDS = ("clip", "dvae", "generator")
_USER_CONFIGS: dict[str, AnyModelConfig] = {}


def model_kind(config: AnyModelConfig) -> str:
    """``clip``, ``dvae`` or ``generator``."""
    return "clip" if isinstance(config, ModelConfig) else config.kind


def parse_model_config(data: Any, where: str = "model config") -> AnyModelConfig:
    """Parses a config dict of any model kind (its ``"kind"`` key, default ``"clip"``).

    Raises:
        ConfigError: unknown kind, unknown key or wrong type (the message names it).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the model config must be a JSON object, not {type(data).__name__}")
    kind = data.get("kind", "clip")
    if kind == "dvae":
        return parse_dataclass(DVAEConfig, data, where)
    if kind == "generator":
        return parse_dataclass(GeneratorConfig, data, where)
    if kind != "clip":
        raise ConfigError(f"{where}: unknown model kind {kind!r} (known: {', '.join(KINDS)})")
    return ModelConfig.from_dict({k: v for k, v in data.items() if k != "kind"}, where)


def _builtin_names() -> dict[str, Any]:
    folder = resources.files("clipforge.models") / "configs"
    return {entry.name[: -len(".json")]: entry for entry in folder.iterdir() if entry.name.endswith(".json")}


def list_models(kind: str | None = "clip") -> list[str]:
    """Names of the registered architectures of one `kind` (None: every kind), built-in and user, sorted."""
    names = sorted(set(_builtin_names()) | set(_USER_CONFIGS), key=str.lower)
    return names if kind is None else [n for n in names if model_kind(get_any_config(n)) == kind]


def get_any_config(name: str) -> AnyModelConfig:
    """The parsed config of a registered architecture of any kind.

    Raises:
        ConfigError: no architecture has that name.
    """
    if name in _USER_CONFIGS:
        return _USER_CONFIGS[name]
    builtin = _builtin_names()
    if name not in builtin:
        raise ConfigError(f"unknown model '{name}' (see `clipforge models`)")
    return parse_model_config(json.loads(builtin[name].read_text()), where=f"{name}.json")


def get_model_config(name: str) -> ModelConfig:
    """The parsed config of a registered CLIP architecture.

    Raises:
        ConfigError: no architecture has that name, or it is not a CLIP model.
    """
    config = get_any_config(name)
    if not isinstance(config, ModelConfig):
        raise ConfigError(f"model '{name}' is a {config.kind}, not a CLIP model")
    return config


def register_model(name: str, config: AnyModelConfig | dict[str, Any] | str | Path) -> AnyModelConfig:
    """Registers an architecture under `name` from a config, a dict or a JSON file path."""
    if isinstance(config, str | Path):
        path = Path(config)
        config = parse_model_config(read_json(path, ConfigError), where=str(path))
    elif isinstance(config, dict):
        config = parse_model_config(config, where=name)
    _USER_CONFIGS[name] = config
    return config


def create_model(config: str | ModelConfig, max_params: int | None = None) -> ContrastiveModel:
    """Builds a randomly initialized model (tower models: pretrained backbones) from a name or a config.

    Args:
        config: a registry name or an architecture.
        max_params: refuse architectures with more parameters (default: `models.size.max_params()`).

    Raises:
        ConfigError: an unknown name, a name of another kind, or a model over the parameter ceiling
            (checked before allocating).
    """
    if isinstance(config, str):
        config = get_model_config(config)
    check_model_size(config, max_params)
    if isinstance(config.vision, EfficientNetConfig):
        return TowerCLIP(config)
    return CLIP(config)


def create_any_model(config: str | AnyModelConfig) -> Model:
    """Builds a randomly initialized model of any kind from a registry name or a config."""
    if isinstance(config, str):
        config = get_any_config(config)
    if isinstance(config, DVAEConfig):
        return DVAE(config)
    if isinstance(config, GeneratorConfig):
        return Generator(config)
    return create_model(config)


def describe_models() -> list[str]:
    """One line per architecture of every kind: name, towers (or kind), size, input size, and what weights
    a name gives (random, or pretrained backbones with random projection heads: never a trained CLIP)."""
    return [f"{name:<20} {_describe(get_any_config(name))}" for name in list_models(kind=None)]


def _describe(config: AnyModelConfig) -> str:
    if isinstance(config, DVAEConfig):
        grid = f"{config.grid}x{config.grid}"
        codes = f"{config.codebook_size}@{grid}"
        return f"{'dvae':<26} codes={codes:<10} image={config.image_size}px weights=random"
    if isinstance(config, GeneratorConfig):
        shape = f"{config.layers}x{config.width}"
        return f"{'generator':<26} layers={shape:<7} image={config.dvae.image_size}px weights=random"
    towers = f"{config.vision.type}+{config.text.type}"
    weights = "backbones-only" if isinstance(config.vision, EfficientNetConfig) else "random"
    size = f"{config.vision.image_size}px"
    return f"{towers:<26} embed={config.embed_dim:<5} image={size:<6} weights={weights}"
