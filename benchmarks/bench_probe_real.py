"""Probes on real photos: preposition swaps, flip:, collage: and bias: on Flickr8k test, plus the quickstart's
honest relation-swap numbers, written as tables into `benchmarks/RESULTS.md`.

Run (from the repository root):

    python benchmarks/bench_probe_real.py --data ../shared/data/flickr8k \\
        --lit plain=runs/flickr8k-lit/final --lit hardneg=runs/flickr8k-lit-hardneg/final \\
        --quickstart qs-plain=runs/quickstart/plain/final \\
        --quickstart qs-hardneg=runs/quickstart/hardneg/final \\
        --synthetic runs/quickstart/data --out runs/probe-real --write

Each suite is one `clipforge probe` call (same library function), so its probe.json/probe.html stay under
``--out``. ``--write`` replaces only the ``*-tables`` blocks; the prose around them is kept.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import torch
from _results import write_section

from clipforge.probe import ClipEncoder, ProbeConfig, load_suite, parse_model_option, probe, run_probe
from clipforge.quickstart.evaluate import probe_block

Models = tuple[tuple[str, str], ...]


def _ci(block: dict[str, Any] | None, signed: bool = False) -> str:
    """``0.573 [0.546, 0.602]`` of an accuracy-like block (``value`` or ``accuracy``)."""
    if not block:
        return "–"
    value = block.get("accuracy", block.get("value"))
    if value is None:
        return "–"
    low, high = block["ci95"]
    fmt = "{:+.3f}" if signed else "{:.3f}"
    return f"{fmt.format(value)} [{fmt.format(low)}, {fmt.format(high)}]"


def honest_table(report: dict[str, Any]) -> str:
    """Accuracy, pair-balanced and blind per model, with intervals."""
    lines = ["| model | n | accuracy | pair-balanced (pairs; unpaired items) | blind | accuracy − blind "
             "| blind pair-balanced | pair-balanced − blind |", "|---|---:|---|---|---|---|---|---|"]
    for name, s in report["models"].items():
        balanced, blind = s["pair_balanced"], s["blind"] or {}
        lines.append(f"| {name} | {s['n']} | {_ci(s)} | {_ci(balanced)} ({balanced['n_pairs']}; "
                     f"{balanced['unpaired']}) | {_ci(blind)} | {_ci(blind.get('gain'), True)} "
                     f"| {_ci(blind.get('pair_balanced'))} | {_ci(blind.get('gain_pair_balanced'), True)} |")
    return "\n".join(lines)


def pair_table(report: dict[str, Any]) -> str:
    """Each antonym pair: its pair-balanced accuracy per model and the accuracy of each direction."""
    names = list(report["models"])
    first = next(iter(report["models"].values()))["pair_balanced"]["pairs"]
    lines = ["| pair | n | " + " | ".join(names) + " |", "|---|---:|" + "---|" * len(names)]
    for pair in sorted(first, key=lambda p: -first[p]["n"]):
        cells = []
        for s in report["models"].values():
            block = s["pair_balanced"]["pairs"][pair]
            directions = ", ".join(f"{d} {v['accuracy']:.2f} (n={v['n']})"
                                   for d, v in block["directions"].items())
            cells.append(f"{_ci(block)}<br>{directions}")
        lines.append(f"| {pair} | {first[pair]['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tag_table(report: dict[str, Any]) -> str:
    """Accuracy per tag (the relation of the true sentence) per model, most frequent first."""
    names = list(report["models"])
    first = next(iter(report["models"].values()))["per_tag"]
    lines = ["| tag | n | " + " | ".join(names) + " |", "|---|---:|" + "---|" * len(names)]
    for tag in sorted(first, key=lambda t: -first[t]["n"]):
        cells = [_ci(s["per_tag"].get(tag)) for s in report["models"].values()]
        lines.append(f"| {tag} | {first[tag]['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bias_table(report: dict[str, Any]) -> str:
    """MAD, its random-retrieval control, mean skew and zero-shot accuracy per model."""
    lines = ["| model | labelled male / female / unknown | base rate male | K | MAD vs base rate "
             "| random-retrieval MAD (mean, 95% range) | MAD vs uniform | mean skew "
             "| zero-shot acc. male images | zero-shot acc. female images |",
             "|---|---|---:|---:|---|---|---:|---|---|---|"]
    for name, s in report["models"].items():
        counts, chance, z = s["labels"]["counts"], s["random_retrieval"], s["zero_shot"]
        lines.append(
            f"| {name} | {counts['male']} / {counts['female']} / {counts['unknown']} "
            f"| {s['labels']['base_rate_male']:.3f} | {s['top_k']} | {_ci(s['mad'])} "
            f"| {chance['mad_mean']:.3f} ({chance['mad_95'][0]:.3f}–{chance['mad_95'][1]:.3f}) "
            f"| {s['mad_uniform']['value']:.3f} | {_ci(s['mean_skew'], True)} | {_ci(z['male'])} "
            f"| {_ci(z['female'])} |")
    return "\n".join(lines)


def skewed_queries(report: dict[str, Any], n: int = 3) -> str:
    """Each model's most male- and female-skewed queries."""
    lines = []
    for name, s in report["models"].items():
        rows = sorted((r for r in s["queries"] if r["skew"] is not None), key=lambda r: r["skew"])
        show = [f"\"{r['query']}\" {r['skew']:+.2f} ({r['male']}m/{r['female']}f)" for r in rows[::-1][:n]]
        low = [f"\"{r['query']}\" {r['skew']:+.2f} ({r['male']}m/{r['female']}f)" for r in rows[:n]]
        lines.append(f"- {name}: towards men {'; '.join(show)} — towards women {'; '.join(low)}")
    return "\n".join(lines)


def quickstart_table(models: Models, data: Path) -> str:
    """Per probe kind of the quickstart's test scenes: accuracy, pair-balanced, blind (as report.json)."""
    suite = load_suite(f"synthetic:{data}")
    lines = ["| probe kind | model | accuracy | pair-balanced | blind |", "|---|---|---|---|---|"]
    blocks = {}
    for name, spec in models:
        result = run_probe(suite.items, ClipEncoder.load(spec))
        blocks[name] = {tag: probe_block(result, tag) for tag in sorted({item.tag for item in result.items})}
    for tag in next(iter(blocks.values())):
        for name, by_tag in blocks.items():
            block = by_tag[tag]
            cells = (_ci(block), _ci(block["pair_balanced"]), _ci(block["blind"]))
            lines.append(f"| {tag} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


@click.command()
@click.option("--data", "root", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Flickr8k root.")
@click.option("--lit", multiple=True, required=True, help="NAME=MODEL of a model trained on photos.")
@click.option("--quickstart", multiple=True, help="NAME=MODEL of a quickstart model (also probed for bias).")
@click.option("--synthetic", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The quickstart's data folder, for its honest relation-swap numbers.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--suites", default="preposition-swap,flip,collage,bias,synthetic", show_default=True)
@click.option("--threads", default=2, show_default=True)
@click.option("--write", is_flag=True, help="Write the tables into benchmarks/RESULTS.md.")
def main(root: Path, lit: tuple[str, ...], quickstart: tuple[str, ...], synthetic: Path | None, out: Path,
         suites: str, threads: int, write: bool) -> None:
    """Runs the suites and prints (or writes) their tables."""
    torch.set_num_threads(threads)
    lit_models = tuple(parse_model_option(m) for m in lit)
    qs_models = tuple(parse_model_option(m) for m in quickstart)
    data = f"flickr8k:{root}:test"
    blocks: dict[str, str] = {}
    for kind in suites.split(","):
        start = time.perf_counter()
        if kind == "synthetic":
            if synthetic is None or not qs_models:
                continue
            text = quickstart_table(qs_models, synthetic)
        else:
            report = probe(ProbeConfig(f"{kind}:{data}", lit_models + (qs_models if kind == "bias" else ()),
                                       out / kind))
            text = TABLES[kind](report)
        seconds = time.perf_counter() - start
        title = f"**`{kind}:` on Flickr8k test**" if kind != "synthetic" else "**quickstart test scenes**"
        timing = f"Wall time: {seconds:.0f} s ({threads} torch threads)."
        blocks[f"{kind}-tables"] = f"{title}\n\n{text}\n\n{timing}"
        click.echo(f"{kind}: {seconds:.0f} s")
    for name, text in blocks.items():
        click.echo(f"\n## {name}\n{text}")
        if write:
            write_section(name, text, container=CONTAINERS[name])


TABLES = {
    "preposition-swap": lambda r: honest_table(r) + "\n\n" + pair_table(r) + "\n\n" + tag_table(r),
    "flip": lambda r: honest_table(r) + "\n\n" + tag_table(r),
    "collage": lambda r: honest_table(r) + "\n\n" + tag_table(r),
    "bias": lambda r: bias_table(r) + "\n\n" + skewed_queries(r),
}
CONTAINERS = {"preposition-swap-tables": "flickr8k-probe", "flip-tables": "spatial-real",
              "collage-tables": "spatial-real", "bias-tables": "bias",
              "synthetic-tables": "quickstart-honest"}


if __name__ == "__main__":
    main()
