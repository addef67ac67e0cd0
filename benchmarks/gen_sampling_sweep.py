"""Sampling settings for a generator's FIRST sample: temperature, top-k, top-p and guidance, swept on a
tuning skill set (never the held-out one).

For every setting, `n` candidates per prompt are drawn with the same seeds and ALL of them are scored by
the skill evaluator, so the accuracy is the mean pass rate of one sample (the `none` picker's expectation,
with less variance than the first sample alone), per skill with bootstrap CIs; the held-out compositional
prompts of the set are reported apart. Best-of-n is printed beside it.

    python benchmarks/gen_sampling_sweep.py --generator runs/gen/final --skills runs/skills-tune \
        --setting T0.3,cs3 --setting T1,cs3,p0.8 --n 2 --json runs/sweep.json

A setting is comma-separated ``T<temperature>``, ``k<top-k>``, ``p<top-p>``, ``cs<cond_scale>``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from gen_rerank import SKILLS, _cell, _heldout  # the script's folder is on sys.path

KEYS = {"T": "temperature", "k": "top_k", "p": "top_p", "cs": "cond_scale"}


def parse_setting(text: str) -> dict[str, float | int]:
    """``"T0.3,cs3"`` -> ``{"temperature": 0.3, "cond_scale": 3.0}``."""
    out = {}
    for part in text.split(","):
        key = part.rstrip("0123456789.")
        if key not in KEYS:
            raise argparse.ArgumentTypeError(f"unknown setting {part!r} (use T, k, p, cs)")
        value = float(part[len(key):])
        out[KEYS[key]] = int(value) if key == "k" else value
    return out


def row(name: str, report: dict[str, Any]) -> str:
    """One markdown row: mean accuracy per skill, held-out colour/spatial, best-of-n spatial, mean."""
    skills = report["skills"]
    cells = [_cell(skills.get(s)) for s in SKILLS]
    held = [_cell(_heldout(skills[s])) for s in ("color", "spatial")]
    best = [f"{skills[s].get('best_of_k', skills[s])['accuracy']:.2f}" for s in SKILLS]  # n = 1: itself
    mean = sum(skills[s]["accuracy"] for s in SKILLS) / len(SKILLS)
    return f"| {name} | " + " | ".join(cells + held + ["/".join(best), f"{mean:.3f}"]) + " |"


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """Per skill: mean accuracy and CI, best-of-n accuracy, and the held-out compositional block."""
    out = {}
    for skill, block in report["skills"].items():
        held = _heldout(block)
        out[skill] = {"accuracy": block["accuracy"], "ci95": block["ci95"],
                      "best_of_n": block.get("best_of_k", block)["accuracy"],
                      "heldout": None if held is None else {k: held[k] for k in ("accuracy", "ci95")}}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", required=True, help="generator folder")
    parser.add_argument("--skills", type=Path, required=True, help="a TUNING skill set")
    parser.add_argument("--split", default="val")
    parser.add_argument("--setting", type=parse_setting, action="append", required=True)
    parser.add_argument("--n", type=int, default=2, help="candidates per prompt, all scored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    import torch

    from clipforge.dalle.sampling import SamplingConfig
    from clipforge.fileio import write_json
    from clipforge.generate.experiment import picked
    from clipforge.generate.job import draw_candidates, load_generator
    from clipforge.generate.prompts import read_skill_prompts
    from clipforge.skills import ScoreConfig, evaluate, load_skill_set, read_images

    torch.set_num_threads(args.threads)
    records = load_skill_set(args.skills, args.split)
    truth = read_images(args.skills, records)
    prompts = read_skill_prompts(args.skills, args.split)
    model = load_generator(args.generator)
    head = "| setting | " + " | ".join(SKILLS) + " | color held-out | spatial held-out | best-of-n | mean |"
    lines = [f"Command: `python benchmarks/gen_sampling_sweep.py {' '.join(argv or sys.argv[1:])}`", "",
             head, "|" + "---|" * (len(SKILLS) + 5)]
    print("\n".join(lines), flush=True)
    record: dict[str, Any] = {"args": argv or sys.argv[1:], "settings": []}
    for setting in args.setting:
        start = time.perf_counter()
        candidates = draw_candidates(model, prompts, args.n, args.seed, SamplingConfig(**setting))
        images = picked(prompts, candidates, [list(range(args.n))] * len(prompts))
        report = evaluate(records, images, truth, ScoreConfig(seed=args.seed)).report
        name = ", ".join(f"{k} {v:g}" for k, v in setting.items())
        lines.append(row(name, report) + f" {time.perf_counter() - start:.0f} s")
        print(lines[-1], flush=True)
        record["settings"].append({"setting": setting, "skills": summary(report)})
        if args.json is not None:
            write_json(record, args.json)


if __name__ == "__main__":
    main()
