"""`clipforge probe` as one library call: load a suite, score it with each model, write the reports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipforge.device import Runtime, resolve_device
from clipforge.errors import ConfigError
from clipforge.probe.analysis import Analysis
from clipforge.probe.formats import write_pairs
from clipforge.probe.report import write_analysis_report, write_probe_report
from clipforge.probe.run import ClipEncoder, ProbeResult, run_probe
from clipforge.probe.scorers import check_scorer
from clipforge.probe.stats import N_RESAMPLES
from clipforge.probe.suites import Suite, open_suite


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
        options: ``KEY=VALUE`` options of the suite kind (e.g. ``top_k=20`` for ``bias:``).
        write_suite: also write the items as a pairs suite, images included, under ``out/suite``.
        device: where the models run: ``cpu``, ``cuda`` or ``auto``.
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
    options: tuple[str, ...] = ()
    write_suite: bool = False
    device: str = "cpu"

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
    resolve_device(config.device)  # a missing GPU fails before the suite is read
    suite = open_suite(config.suite, config.images, config.limit, config.options)
    if isinstance(suite, Suite):
        return _probe_items(suite, config)
    if config.write_suite:
        raise ConfigError(f"--write-suite needs an item suite; '{suite.kind}:' is an analysis")
    return _probe_analysis(suite, config)


def _probe_items(suite: Suite, config: ProbeConfig) -> dict[str, Any]:
    if config.write_suite:
        write_pairs(suite.items, config.out / "suite")
    results: dict[str, ProbeResult] = {}
    for name, spec in config.models:
        encoder = ClipEncoder.load(spec, config.batch_size, Runtime(config.device))
        results[name] = run_probe(suite.items, encoder, config.scorer)
    return write_probe_report(suite, config.scorer, results, config.out, config.n_resamples, config.seed)


def _probe_analysis(suite: Analysis, config: ProbeConfig) -> dict[str, Any]:
    resamples, seed = config.n_resamples, config.seed
    runtime = Runtime(config.device)
    summaries = {
        name: suite.analyze(ClipEncoder.load(spec, config.batch_size, runtime), resamples, seed)
        for name, spec in config.models
    }
    return write_analysis_report(suite, summaries, config.out, resamples, seed)


def headline(summary: dict[str, Any]) -> str:
    """A terminal line: an item suite's accuracy, pair-balanced and blind, or an analysis's headline."""
    if "headline" in summary:
        block = summary["headline"]
        return f"{block['metric']} {_pct(block['value'])}{_interval(block['ci95'])} over {block['n']}"
    line = f"{_pct(summary['accuracy'])}{_interval(summary['ci95'])} on {summary['n']} items"
    balanced, blind = summary["pair_balanced"], summary["blind"]
    if balanced["accuracy"] is not None:
        line += f"; pair-balanced {_pct(balanced['accuracy'])}{_interval(balanced['ci95'])}"
    if blind is not None and blind["accuracy"] is not None:
        line += f"; blind {_pct(blind['accuracy'])}{_interval(blind['ci95'])}"
    return line


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _interval(ci95: list[float | None]) -> str:
    low, high = ci95
    return "" if low is None or high is None else f" [{100 * low:.1f}, {100 * high:.1f}]"
