"""The quickstart's numbers in `RESULTS.md`, read from the report.json of a finished run.

Run: time clipforge quickstart --out runs/quickstart
     python benchmarks/bench_quickstart.py runs/quickstart --wall 8m03s --load "nothing else running"
Writes the ``quickstart`` block: each model in each test split (in-style, held-out style, held-out
combinations), with the 95% bootstrap intervals of the probe accuracies, the relation-swap accuracy per
relation and its pair-balanced mean (left/right and above/below: the mean of the two directions, then of
the two pairs, so a model that prefers one word of a pair scores 0.5 on it), the relation-swap accuracy on
the items whose two objects share a colour (the control that knowing where each colour lies cannot pass),
and on held-out combinations the relation-swap accuracy on the items whose true caption names one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from _results import write_section

from clipforge.quickstart.config import negative_images_phrase
from clipforge.quickstart.report import columns

PAIRS = (("left of", "right of"), ("above", "below"))
PROBE_ROWS = ("relation_swap", "argument_swap", "attribute_swap", "object_swap", "count")


def _negative_images(config: dict[str, Any]) -> str:
    images = negative_images_phrase(config.get("negative_images", 0.0))
    return f" and, {images}" if images else ""


def pair_balanced(per_relation: dict[str, float]) -> float | None:
    """Mean over the antonym pairs of the mean of both directions; None when a direction is missing."""
    if any(r not in per_relation for pair in PAIRS for r in pair):
        return None
    return sum((per_relation[a] + per_relation[b]) / 2 for a, b in PAIRS) / len(PAIRS)


def _balanced(block: dict[str, Any]) -> str:
    """The probe library's pair-balanced score with its interval when the report has it, else computed."""
    if block.get("pair_balanced", {}).get("accuracy") is not None:
        return _cell(block["pair_balanced"])
    value = pair_balanced(block["per_relation"])
    return "-" if value is None else f"{value:.3f}"


def _cell(block: dict[str, Any]) -> str:
    low, high = block["ci95"]
    return f"{block['accuracy']:.3f} [{low:.3f}, {high:.3f}]"


def _row(label: str, cells: list[str]) -> str:
    return f"| {label} | " + " | ".join(cells) + " |"


def table(report: dict[str, Any]) -> str:
    """Markdown table: one row per metric, one column per model and style split."""
    found = columns(report)
    blocks = list(found.values())
    lines = [_row("metric", list(found)), "|---" * (len(found) + 1) + "|"]
    swaps = [m["probe"]["relation_swap"] for m in blocks]
    lines.append(_row("relation_swap pair-balanced", [_balanced(swap) for swap in swaps]))
    if all(swap.get("same_color") for swap in swaps):  # reports before the same-colour control lack it
        cells = [f"{_cell(swap['same_color'])} n={swap['same_color']['n']}" for swap in swaps]
        lines.append(_row("relation_swap, same-colour pairs", cells))
    if any(swap.get("names_heldout") for swap in swaps):  # only the held-out combinations have such items
        cells = [f"{_cell(swap['names_heldout'])} n={swap['names_heldout']['n']}" if swap.get("names_heldout")
                 else "-" for swap in swaps]
        lines.append(_row("relation_swap, true caption names a held-out combination", cells))
    for tag in PROBE_ROWS:
        cells = [f"{_cell(m['probe'][tag])} n={m['probe'][tag]['n']}" for m in blocks]
        lines.append(_row(f"probe {tag}", cells))
    for section, label, keys in (("retrieval", "retrieval", ("t2i_r1", "i2t_r1")),
                                 ("zeroshot", "zero-shot", ("shape", "color"))):
        lines += [_row(f"{label} {key}", [f"{m[section][key]:.3f}" for m in blocks]) for key in keys]
    per_relation = "; ".join(
        f"{label}: " + ", ".join(f"{r} {v:.2f}" for r, v in swap["per_relation"].items())
        for label, swap in zip(found, swaps, strict=True))
    return "\n".join(lines) + f"\n\nRelation swap per relation — {per_relation}."


def _combinations_note(data: dict[str, Any]) -> str:
    if "test_heldout" not in data.get("style_splits", {}).values():
        return ""
    return (f", and {data['n_test']} with held-out combinations (split `test_heldout`, training style: each "
            "shows a (colour, shape) or (shape, relation) combination that no training scene shows)")


@click.command()
@click.argument("out", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--wall", required=True, help="Wall time of the run as `time` printed it, e.g. 8m03s.")
@click.option("--load", required=True, help="What else ran on the machine meanwhile.")
def main(out: Path, wall: str, load: str) -> None:
    """Writes the quickstart block of RESULTS.md from OUT/report.json."""
    report = json.loads((out / "report.json").read_text())
    training = ", ".join(f"{name} {run['seconds']:.0f} s" for name, run in report["training"].items())
    config, data = report["config"], report["dataset"]
    head = (
        "## Main job: `clipforge quickstart` (synthetic spatial scenes, randomized styles)\n\n"
        f"`time clipforge quickstart --out {out}`: **{wall}** wall ({load}); report.json "
        f"\"seconds\": {report['seconds']:.0f}, training {training}. Seed {data['seed']}; both models "
        f"train side by side for {config['steps']} steps of {config['batch_size']} {data['image_size']}-px "
        f"scenes drawn in randomized styles; `hardneg` adds {' and '.join(config['negative_kinds'])} "
        f"negative captions{_negative_images(config)}. Test sets: {data['n_test']} scenes in the training "
        "style (in-style) and "
        f"{data['n_test']} in the held-out style (a background kind, colour shades, noise levels and blur "
        "radii that no training scene uses)" + _combinations_note(data) + "; 95% intervals are seeded "
        "bootstraps. `object_swap` is the object-recognition control.\n"
    )
    write_section("quickstart", head + "\n" + table(report))
    click.echo(table(report))


if __name__ == "__main__":
    main()
