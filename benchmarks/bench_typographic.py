"""Typographic attacks (`typographic:`) on the Flickr8k LiT models (flickr8k-tags test) and the quickstart
models (synthetic shapes), zero-shot and linear probe, written as tables into `benchmarks/RESULTS.md`.

Run (from the repository root):

    python benchmarks/bench_typographic.py --data ../shared/data/flickr8k \\
        --lit plain=runs/flickr8k-lit/final --lit hardneg=runs/flickr8k-lit-hardneg/final \\
        --quickstart qs-plain=runs/quickstart/plain/final \\
        --quickstart qs-hardneg=runs/quickstart/hardneg/final \\
        --out runs/typographic --write

Each setup is one `clipforge probe` call (its probe.json/probe.html stay under ``--out``); the timing rows are
one model on 1000 images, zero-shot only (``--no-timing`` skips them). ``--reuse`` renders the tables from the
setups' probe.json files already under ``--out`` instead of probing again. ``--write`` replaces only the
``typographic-tables`` block.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click
import torch
from _results import write_section

from clipforge.probe import ProbeConfig, parse_model_option, probe
from clipforge.probe.typographic import per_target

Models = tuple[tuple[str, str], ...]
COLUMNS = ("clean_accuracy", "attacked_accuracy", "control_accuracy", "drop_beyond_control", "attack_success",
           "control_success", "success_beyond_control")


def _ci(block: dict[str, Any]) -> str:
    low, high = block["ci95"]
    return f"{block['value']:.3f} [{low:.3f}, {high:.3f}]"


def table(report: dict[str, Any]) -> str:
    """One row per model and classifier."""
    head = "| model | classifier | n | " + " | ".join(c.replace("_", " ") for c in COLUMNS) + " |"
    lines = [head, "|---|---|---:|" + "---|" * len(COLUMNS)]
    for name, summary in report["models"].items():
        for classifier, scores in summary["scores"].items():
            cells = " | ".join(_ci(scores[c]) for c in COLUMNS)
            lines.append(f"| {name} | {classifier.replace('_', '-')} | {summary['n']} | {cells} |")
    fits = [f"{name}: C={s['linear_probe']['C']:.3g}, val acc {s['linear_probe']['val_accuracy']:.3f} "
            f"({s['linear_probe']['n_train']} train / {s['linear_probe']['n_val']} val images)"
            for name, s in report["models"].items() if s["linear_probe"]]
    return "\n".join(lines) + ("\n\nLinear probes: " + "; ".join(fits) + "." if fits else "")


def target_lines(report: dict[str, Any]) -> str:
    """Per model and classifier: for each written class, attacked / control rate of predicting it."""
    lines = []
    for name, summary in report["models"].items():
        for head in summary["scores"]:
            table = per_target(summary["images"], summary["classes"], head, report["ci"]["resamples"],
                               report["ci"]["seed"])
            cells = ", ".join(f"{c} {t['attacked']['accuracy']:.2f}/{t['control']['accuracy']:.2f}"
                              for c, t in table.items() if t["attacked"]["n"])
            lines.append(f"- {name} {head.replace('_', '-')}: {cells}")
    return "Predicted as the written class, attacked/control, per written class:\n\n" + "\n".join(lines)


def _timed(config: ProbeConfig) -> tuple[dict[str, Any], float, float]:
    """The report, its wall seconds and its process CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    report = probe(config)
    return report, time.perf_counter() - wall, time.process_time() - cpu


@click.command()
@click.option("--data", "root", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Flickr8k root.")
@click.option("--lit", multiple=True, required=True, help="NAME=MODEL of a model trained on photos.")
@click.option("--quickstart", multiple=True, required=True, help="NAME=MODEL of a quickstart model.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--threads", default=2, show_default=True)
@click.option("--timing/--no-timing", default=True, show_default=True)
@click.option("--reuse", is_flag=True, help="Render from the probe.json files already under --out.")
@click.option("--write", is_flag=True, help="Write the tables into benchmarks/RESULTS.md.")
def main(root: Path, lit: tuple[str, ...], quickstart: tuple[str, ...], out: Path, threads: int,
         timing: bool, reuse: bool, write: bool) -> None:
    """Runs the setups and the timings and prints (or writes) their tables."""
    torch.set_num_threads(threads)
    lit_models = tuple(parse_model_option(m) for m in lit)
    qs_models = tuple(parse_model_option(m) for m in quickstart)
    tags = f"flickr8k-tags:{root}"
    setups = [
        ("flickr8k-tags test, LiT models", f"typographic:{tags}:test", lit_models,
         (f"linear_probe={tags}:train", f"linear_probe_val={tags}:val"), "lit"),
        ("synthetic shapes (64 px test scenes), quickstart models", "typographic:synth:shape", qs_models,
         ("linear_probe=synth:shape:64:train", "linear_probe_val=synth:shape:64:val"), "quickstart"),
    ]
    parts = []
    for title, suite, models, options, name in setups:
        if reuse:
            report = json.loads((out / name / "probe.json").read_text())
            took = "Rendered from an earlier run's probe.json."
        else:
            report, wall, cpu = _timed(ProbeConfig(suite, models, out / name, options=options))
            took = f"Wall time {wall:.0f} s, CPU {cpu:.0f} s ({len(models)} models, with the linear probes)."
        parts.append(f"**{title}** (`{suite}`)\n\n{table(report)}\n\n{target_lines(report)}\n\n{took}")
    timings = ["| model | suite | images | wall s | CPU s |", "|---|---|---:|---:|---:|"]
    timed = [(lit_models[0], f"typographic:{tags}:train"), (qs_models[0], "typographic:synth:shape")]
    for (name, spec), suite in timed if timing else []:
        report, wall, cpu = _timed(ProbeConfig(suite, ((name, spec),), out / f"timing-{name}", limit=1000))
        timings.append(f"| {name} | `{suite}` | {report['models'][name]['n']} | {wall:.0f} | {cpu:.0f} |")
    text = "\n\n".join(parts)
    if timing:
        text += "\n\n**Speed** (one model, zero-shot only, clean + attacked + control = 3 encodings per " \
            f"image, {threads} torch threads)\n\n" + "\n".join(timings)
    click.echo(text)
    if write:
        write_section("typographic-tables", text, container="typographic")


if __name__ == "__main__":
    main()
