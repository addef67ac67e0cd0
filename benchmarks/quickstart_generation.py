"""The quickstart's generation stage on its own, re-ranking with given CLIP models (e.g. a finished
quickstart's), with its CPU time; writes the `quickstart-generation` section of benchmarks/RESULTS.md.

    nice -n 10 /usr/bin/time -v python benchmarks/quickstart_generation.py --out runs/stage \
        --clips /work/baselines/quickstart --write
    python benchmarks/quickstart_generation.py --out runs/stage --report-only --write   # from generation.json

The stage is the library code `clipforge quickstart` runs (`clipforge.quickstart.generation`), with its
default `GenerationConfig` and seed 0; OUT/plain and OUT/hardneg are links to the re-rankers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_rerank import dvae_table, rerank_table  # noqa: E402


def print_line(line: str) -> None:
    print(line, flush=True)


def run_stage(out: Path, clips: Path) -> dict[str, Any]:
    """Writes the skill set, trains the dVAE and the transformer, runs the experiment; returns the section."""
    from clipforge.fileio import write_json
    from clipforge.quickstart.generation import (
        RERANKERS,
        GenerationConfig,
        evaluate_generation,
        generation_conclusion,
        train_dvae_reranker,
        train_generation,
        write_skill_set,
    )

    config = GenerationConfig()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("plain", "hardneg"):
        if not (out / name).exists():
            os.symlink(clips / name, out / name)
    write_skill_set(config, 0, out)
    training = train_generation(config, 0, out, print_line, resume=(out / "dvae").exists())
    if config.reranker_steps:  # the quickstart trains the two side by side; here one after the other
        training["rerankers"] = {name: train_dvae_reranker(config, out, name, print_line, resume=True)
                                 for name in RERANKERS}
    section, _ = evaluate_generation(config, 0, out, print_line)
    section["training"] = training
    section["conclusion"] = generation_conclusion(section, config.steps, GenerationConfig.steps)
    write_json(section, out / "generation.json")
    return section


def results_text(section: dict[str, Any], command: str) -> str:
    training = section["training"]
    lines = ["## Quickstart generation stage (dVAE + transformer on the skill scenes, re-ranked by the "
             "quickstart CLIPs)", "", f"Command: `{command}`", "",
             f"{section['n_prompts']} held-out (val) prompts per skill, {section['candidates']} candidates "
             f"each, temperature {section['sampling']['temperature']}, guidance "
             f"{section['sampling']['cond_scale']}; "
             f"early = step {section['early_step']} of {section['steps']} (fixed before evaluating).", "",
             "Skill parser on dVAE reconstructions of the val ground-truth renders:", "",
             *dvae_table(section["reconstruction"]), ""]
    for checkpoint, result in section["checkpoints"].items():
        lines += rerank_table(checkpoint, result) + [""]
    lines += [f"Training (dVAE then transformer, one process, 1 thread): {training['seconds']:.0f} s wall, "
              f"{training['cpu_seconds']:.0f} s CPU; sampling, re-ranking and scoring: "
              f"{section['seconds']:.0f} s wall, {section['cpu_seconds']:.0f} s CPU (on the shared, loaded "
              "machine).", "",
              f"Conclusion (generated): {section['conclusion']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--clips", type=Path, default=Path("/work/baselines/quickstart"),
                        help="a quickstart folder whose plain/ and hardneg/ re-rank")
    parser.add_argument("--report-only", action="store_true", help="read OUT/generation.json")
    parser.add_argument("--write", action="store_true", help="write the RESULTS.md section")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    if args.report_only:
        section = json.loads((args.out / "generation.json").read_text())
    else:
        section = run_stage(args.out, args.clips)
        print(f"stage: {time.perf_counter() - began:.0f} s wall")
    command = f"python benchmarks/quickstart_generation.py --out {args.out} --clips {args.clips} --write"
    text = results_text(section, command)
    if args.write:
        from _results import write_section

        write_section("quickstart-generation", text)
    print(text)


if __name__ == "__main__":
    main()
