"""Suites that are not lists of (image, true, false) items: each computes its own analysis per model.

An `Analysis` (e.g. ``bias:``) is opened from its spec like an item suite, then `analyze` is called once per
``--model`` with that model's `Encoder`; it returns a JSON-ready summary holding a ``headline`` (what the CLI
prints and the overview table shows). `html` renders the models' summaries side by side as probe.html
sections. A new kind implements the protocol, declares its options as a frozen dataclass read by
`parse_options` (``--option KEY=VALUE``), and is registered in `clipforge.probe.suites.ANALYSES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from clipforge.probe.items import BadItem
from clipforge.probe.run import Encoder
from clipforge.train.config import parse_override
from clipforge.typed import parse_dataclass

T = TypeVar("T")


class Analysis(Protocol):
    """A suite that scores each model its own way.

    Attributes:
        spec: the suite spec it was opened from.
        kind: its kind (``bias``, ...).
        bad: entries that could not be read (images that fail later are reported by `analyze`).
    """

    spec: str
    kind: str
    bad: list[BadItem]

    def analyze(self, encoder: Encoder, n_resamples: int, seed: int) -> dict[str, Any]:
        """One model's JSON-ready summary, with a `headline` entry and seeded bootstrap intervals."""
        ...

    def html(self, models: dict[str, dict[str, Any]]) -> str:
        """probe.html sections comparing the models' summaries."""
        ...


def headline(metric: str, value: float | None, ci95: Sequence[float | None], n: int) -> dict[str, Any]:
    """The one number a summary leads with: ``{"metric", "value", "ci95", "n"}``."""
    return {"metric": metric, "value": value, "ci95": list(ci95), "n": n}


def parse_options(cls: type[T], options: Sequence[str], where: str) -> T:
    """Builds a suite's options dataclass from ``KEY=VALUE`` strings (values read as TOML, else text).

    Raises:
        ConfigError: a malformed assignment, an unknown key or a value of the wrong type.
    """
    data: dict[str, Any] = {}
    for item in options:
        path, value = parse_override(item)
        data[".".join(path)] = value
    return parse_dataclass(cls, data, where)
