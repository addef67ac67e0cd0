"""`clipforge probe` as one library call: load a suite, score it with each model, write the reports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipforge.errors import ConfigError
from clipforge.probe.report import write_probe_report
from clipforge.probe.run import ClipEncoder, ProbeResult, run_probe
from clipforge.probe.scorers import check_scorer
from clipforge.probe.stats import N_RESAMPLES
from clipforge.probe.suites import load_suite


@dataclass(frozen=True)
class ProbeConfig:
    """What to probe, with which models, and where the reports go.

    Attributes:
        suite: a suite spec, e.g. ``synthetic:DIR`` (see `clipforge.probe.suites`).
        models: ``(name, spec)`` pairs; a spec is anything `clipforge.checkpoint.load` takes.
        out: folder for probe.json and probe.html.
        images: folder the suite's image paths are relative to (default: the suite file's folder).
        scorer: ``cosine`` or ``compositional``.
        limit: probe only the first items.
        batch_size: images or texts encoded at once.
        n_resamples: bootstrap resamples for the intervals.
        seed: bootstrap seed.
    """

    suite: str
    models: tuple[tuple[str, str], ...]
    out: Path
    images: Path | None = None
    scorer: str = "cosine"
    limit: int | None = None
    batch_size: int = 64
    n_resamples: int = N_RESAMPLES
    seed: int = 0

    def __post_init__(self) -> None:
        check_scorer(self.scorer)
        if not self.models:
            raise ConfigError("probe needs at least one --model NAME=SPEC")
        names = [name for name, _ in self.models]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise ConfigError(f"model name '{duplicate}' is given twice")


def parse_model_option(option: str) -> tuple[str, str]:
    """Splits ``NAME=SPEC``; a bare ``SPEC`` is named after itself.

    Raises:
        ConfigError: the name or the spec is empty.
    """
    name, equals, spec = option.partition("=")
    if not equals:
        name, spec = option, option
    if not name.strip() or not spec.strip():
        raise ConfigError(f"--model must look like NAME=SPEC, got '{option}'")
    return name.strip(), spec.strip()


def probe(config: ProbeConfig) -> dict[str, Any]:
    """Scores the suite with every model and writes ``out/probe.json`` and ``out/probe.html``.

    Returns:
        The content of probe.json.
    """
    suite = load_suite(config.suite, config.images, config.limit)
    results: dict[str, ProbeResult] = {}
    for name, spec in config.models:
        encoder = ClipEncoder.load(spec, config.batch_size)
        results[name] = run_probe(suite.items, encoder, config.scorer)
    return write_probe_report(suite, config.scorer, results, config.out, config.n_resamples, config.seed)
