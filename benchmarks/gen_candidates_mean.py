"""The expected first sample of a generator: every saved candidate scored (mean pass fraction per prompt).

A first-sample accuracy is one draw per prompt; scoring all N candidates that `gen_rerank.py --candidates DIR`
saved averages that draw's noise out, so two generators' first samples can be told apart from sampling luck.

    python benchmarks/gen_candidates_mean.py --skills runs/skills32-100 s0=runs/cand/final s1=runs/cand-s1/s1
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gen_rerank import SKILLS, _cell, _heldout, _pair  # the script's folder is on sys.path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skills", type=Path, required=True, help="the skill set they were drawn for")
    parser.add_argument("--split", default="val")
    parser.add_argument("candidates", type=_pair, nargs="+", help="NAME=DIR of saved candidates")
    args = parser.parse_args(argv)
    from clipforge.skills import ScoreConfig, evaluate, load_skill_set, read_images

    records = load_skill_set(args.skills, args.split)
    truth = read_images(args.skills, records)
    print("| candidates | " + " | ".join(SKILLS) + " | color held-out | spatial held-out |")
    print("|" + "---|" * (len(SKILLS) + 3))
    for name, folder in args.candidates:
        images = read_images(Path(folder), records)
        report = evaluate(records, images, truth, ScoreConfig(seed=0)).report["skills"]
        held = [_cell(_heldout(report[s])) for s in ("color", "spatial")]
        cells = [_cell(report[s]) for s in SKILLS] + held
        print(f"| {name}, mean of all | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
