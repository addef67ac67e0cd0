"""Do the quickstart's training negatives name held-out combinations, and how do the CLIPs read them?

1. ``--count N``: of the first N default quickstart training scenes, how many hard negatives of each kind
   name a held-out (colour, shape) or (shape, relation) of the scene config, drawn as before the fix
   (no filter) and as training draws them now (`hard_negative` with ``heldout``).
2. ``--reports BEFORE AFTER``: the headline numbers of two quickstart ``report.json`` side by side.
3. ``--probe NAME=probe.json``: per model, the probe items of a ``test_heldout`` suite grouped by what
   they name: the true caption names a held-out combination, the false one does, or neither (chance 0.5).

    clipforge synth --out runs/heldout48 --n 1000 --split test_heldout --image-size 48 --style
    clipforge probe --suite synthetic:runs/heldout48 --model plain=QS/plain/final \\
        --model hardneg=QS/hardneg/final --out runs/probe-heldout
    python benchmarks/heldout_negatives.py --count 20000 --probe after=runs/probe-heldout/probe.json \\
        --reports QS_BEFORE/report.json QS_AFTER/report.json
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from bench_quickstart import _balanced, _cell

from clipforge.probe.stats import bootstrap_ci
from clipforge.quickstart.config import QuickstartConfig, scene_config
from clipforge.quickstart.report import columns
from clipforge.synthetic.scene import COLORS, SHAPES, SceneConfig, generate_scene, names_heldout, scene_rng
from clipforge.synthetic.text import RELATION_WORDS, caption_names_heldout, hard_negative, scene_caption

_RELATION = re.compile("|".join(sorted(RELATION_WORDS.values(), key=len, reverse=True)))


def count_rows(config: SceneConfig, n: int, kinds: tuple[str, ...]) -> list[str]:
    """Markdown rows: per kind and draw, negatives naming a held-out combination / negatives drawn."""
    rows = []
    for label, heldout in (("before the fix (no filter)", None), ("as training draws them", config)):
        named, drawn = Counter[str](), Counter[str]()
        for index in range(n):
            scene = generate_scene(config, 0, "train", index)
            caption, rng = scene_caption(scene, config), scene_rng(0, "train", index, "negatives")
            for kind in kinds:
                negative = hard_negative(scene, caption, kind, rng, heldout)
                if negative is not None:
                    drawn[kind] += 1
                    named[kind] += caption_names_heldout(negative, config)
        rows += [f"| {label} | {kind} | {named[kind]} / {drawn[kind]} ({named[kind] / drawn[kind]:.1%}) |"
                 for kind in kinds]
    return rows


def _singular(noun: str) -> str:
    return noun[:-2] if noun.endswith("sses") else noun[:-1] if noun[:-1] in SHAPES else noun


def heldout_claims(sentence: str, config: SceneConfig) -> tuple[bool, bool]:
    """Whether a rendered template-0 caption names a held-out (colour, shape), and a held-out (shape,
    relation): `caption_names_heldout` read from the words."""
    words = [_singular(word) for word in re.findall(r"\w+", sentence)]
    kinds = [(color, shape) for color, shape in zip(words, words[1:], strict=False) if color in COLORS]
    relation, shapes = _RELATION.search(sentence), [word for word in words if word in SHAPES]
    if relation is None or len(shapes) != 2:
        return names_heldout(config, kinds), False
    word = next(key for key, value in RELATION_WORDS.items() if value == relation.group())
    return names_heldout(config, kinds), names_heldout(config, (), (shapes[0], word, shapes[1]))


GROUPS = ("true caption names a held-out relation", "true caption names a held-out object (only)",
          "only a false caption names one", "none names one")


def _group(item: dict[str, Any], config: SceneConfig) -> int:
    """Index into `GROUPS`."""
    pair, relation = heldout_claims(item["true"], config)
    if relation or pair:
        return 0 if relation else 1
    return 2 if any(any(heldout_claims(false, config)) for false in item["false"]) else 3


def probe_rows(name: str, path: Path, config: SceneConfig, tags: list[str]) -> list[str]:
    """Markdown rows: per model and tag, accuracy [95% bootstrap CI] (n) per group of items."""
    items = json.loads(path.read_text())["items"]
    groups, item_tags = np.array([_group(it, config) for it in items]), np.array([it["tag"] for it in items])
    rows = []
    for model in items[0]["scores"]:
        right = np.array([max(it["scores"][model][1:]) < it["scores"][model][0] for it in items], dtype=float)
        for tag in tags:
            cells = [_accuracy(right[(groups == g) & (item_tags == tag)]) for g in range(len(GROUPS))]
            rows.append(f"| {name} {model} | {tag} | " + " | ".join(cells) + " |")
    return rows


def _accuracy(right: np.ndarray) -> str:
    if not len(right):
        return "-"
    low, high = bootstrap_ci(right)
    return f"{right.mean():.3f} [{low:.3f}, {high:.3f}] (n={len(right)})"


def _headlines(block: dict[str, Any]) -> dict[str, str]:
    probe = block["probe"]
    cells = {"relation_swap pair-balanced": _balanced(probe["relation_swap"])}
    if probe["relation_swap"].get("same_color"):
        cells["relation_swap, same-colour pairs"] = _cell(probe["relation_swap"]["same_color"])
    cells |= {tag: _cell(probe[tag]) for tag in ("object_swap", "attribute_swap", "count")}
    cells |= {f"retrieval {key}": f"{block['retrieval'][key]:.3f}" for key in ("t2i_r1", "i2t_r1")}
    return cells | {f"zero-shot {key}": f"{block['zeroshot'][key]:.3f}" for key in ("shape", "color")}


def report_rows(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Markdown rows: per model and metric, before / after in each style split."""
    old, new = columns(before), columns(after)
    rows = []
    for model in before["models"]:
        labels = [label for label in old if label.startswith(f"{model},")]
        metrics = [_headlines(old[label]) for label in labels]
        updated = [_headlines(new[label]) for label in labels]
        for metric in metrics[0]:
            cells = [f"{m[metric]} -> {u[metric]}" for m, u in zip(metrics, updated, strict=True)]
            rows.append(f"| {model} | {metric} | " + " | ".join(cells) + " |")
    return rows


def _heldout_accuracy(skills: dict[str, Any], skill: str) -> str:
    combination = skills[skill]["per_case"].get("combination")
    return f"{combination['held-out']['accuracy']:.2f}" if combination else "-"


def generation_rows(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Markdown rows: per generator checkpoint and picker, skill accuracy before -> after."""
    rows = []
    for checkpoint, block in after["generation"]["checkpoints"].items():
        for picker, skills in block["pickers"].items():
            old = before["generation"]["checkpoints"][checkpoint]["pickers"][picker]
            cells = [f"{old[skill]['accuracy']:.2f} -> {skills[skill]['accuracy']:.2f}" for skill in skills]
            cells += [f"{_heldout_accuracy(old, skill)} -> {_heldout_accuracy(skills, skill)}"
                      for skill in ("color", "spatial")]
            rows.append(f"| {checkpoint} | {picker} | " + " | ".join(cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=0, help="training scenes to count negatives of")
    parser.add_argument("--probe", action="append", default=[], help="NAME=probe.json (test_heldout suite)")
    parser.add_argument("--reports", nargs=2, type=Path, help="BEFORE AFTER report.json of two quickstarts")
    parser.add_argument("--tags", nargs="+", default=["relation_swap", "attribute_swap", "object_swap"])
    args = parser.parse_args()
    quickstart = QuickstartConfig()
    config = scene_config(quickstart)
    if args.count:
        print(f"First {args.count} default quickstart training scenes, seed 0\n")
        print("| negatives | kind | naming a held-out combination |\n|---|---|---|")
        print("\n".join(count_rows(config, args.count, quickstart.negative_kinds)))
    if args.reports:
        before, after = (json.loads(path.read_text()) for path in args.reports)
        splits = list(before["dataset"]["style_splits"])  # the columns `report_rows` compares
        print(f"\n| model | metric | {' | '.join(splits)} |\n" + "|---" * (len(splits) + 2) + "|")
        print("\n".join(report_rows(before, after)))
        skills = "object | count | color | spatial | color held-out | spatial held-out"
        print(f"\n| generator | picker | {skills} |\n|---|---|---|---|---|---|---|---|")
        print("\n".join(generation_rows(before, after)))
    if args.probe:
        print("\n| model | probe | " + " | ".join(GROUPS) + " |\n|---|---|" + "---|" * len(GROUPS))
        for spec in args.probe:
            name, path = spec.split("=", 1)
            print("\n".join(probe_rows(name, Path(path), config, args.tags)))


if __name__ == "__main__":
    main()
