"""Typed configs from JSON-like data: dataclasses that reject unknown keys and wrong types.

Every config in clipforge (architectures, training runs, the quickstart) is a frozen dataclass built by
`parse_dataclass`, and written back with `to_dict`, so a config file round-trips exactly.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

from clipforge.errors import ConfigError

T = TypeVar("T")


def check_value(name: str, value: Any, hint: Any, where: str) -> Any:
    """Checks one field against its annotation; lists become tuples so configs stay hashable."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(hint):
            try:
                return check_value(name, value, arm, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: '{name}' has the wrong type ({type(value).__name__}: {value!r})")
    if hint is type(None):
        if value is not None:
            raise ConfigError(f"{where}: '{name}' must be null")
        return None
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: '{name}' must be a list, got {value!r}")
        arm = typing.get_args(hint)[0]
        return tuple(check_value(name, v, arm, where) for v in value)
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else parse_dataclass(hint, value, f"{where}.{name}")  # type: ignore[arg-type]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and (type(value) is not hint):
        raise ConfigError(f"{where}: '{name}' must be {hint.__name__}, got {value!r}")
    return value


def parse_dataclass(cls: type[T], data: Any, where: str) -> T:
    """Builds dataclass `cls` from a dict, rejecting unknown keys and wrong types.

    Args:
        cls: the dataclass to build.
        data: a mapping of field names to values.
        where: where the data came from, used in error messages (e.g. ``ViT-B-32.json:vision``).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown config key '{unknown[0]}' (allowed: {', '.join(sorted(names))})")
    values = {k: check_value(k, v, hints[k], where) for k, v in data.items()}
    try:
        return cls(**values)
    except (TypeError, ConfigError) as err:  # a missing field, or a value its __post_init__ rejects
        raise ConfigError(f"{where}: {err}") from err


def to_dict(config: Any) -> dict[str, Any]:
    """Turns a config dataclass back into JSON-ready data (tuples become lists)."""
    return typing.cast(dict[str, Any], _jsonable(dataclasses.asdict(config)))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
