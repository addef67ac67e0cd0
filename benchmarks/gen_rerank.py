"""Re-ranking experiment for the DALL-E-style generator, and the skill check of its dVAE.

For each generator (e.g. an early checkpoint and the final model), draws N candidates per held-out skill
prompt once and scores four pickers with the skill evaluator: none (first drawn), each CLIP re-ranker,
and the oracle (best of N by the parser). With --dvae, also the skill parser on the dVAE's
reconstructions of the ground-truth renders. Writes a JSON record and, with --write, the `gen-rerank`
section of benchmarks/RESULTS.md.

    python benchmarks/gen_rerank.py --skills runs/skills32 --dvae runs/dvae/final \
        --generator early=runs/gen/checkpoints/step_000100/model --generator final=runs/gen/final \
        --rerank plain=/work/baselines/quickstart/plain/final \
        --rerank hardneg=/work/baselines/quickstart/hardneg/final --n 16 --json runs/rerank.json --write

With --candidates DIR each generator's candidates are saved in DIR/NAME; a later run with the same
generator, skill set, seed and sampling re-scores those (e.g. with new --rerank models) without sampling.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

SKILLS = ("object", "count", "color", "spatial")


def _pair(text: str) -> tuple[str, str]:
    name, eq, value = text.partition("=")
    if not eq:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, value


def _cell(block: dict[str, Any] | None) -> str:
    if not block or block.get("accuracy") is None:
        return "-"
    low, high = block["ci95"]
    return f"{block['accuracy']:.2f} [{low:.2f}, {high:.2f}]"


def _heldout(block: dict[str, Any]) -> dict[str, Any] | None:
    return block.get("per_case", {}).get("combination", {}).get("held-out")


def rerank_table(name: str, result: dict[str, Any]) -> list[str]:
    """Markdown rows: one per picker, then the controls (ground truth, shuffled prompts, chance)."""
    head = "| generator | picker | " + " | ".join(SKILLS) + " | color held-out | spatial held-out |"
    rows = [head, "|" + "---|" * (len(SKILLS) + 4)]
    for picker, skills in result["pickers"].items():
        cells = [_cell(skills.get(s)) for s in SKILLS]
        held = [_cell(_heldout(skills[s])) if s in skills else "-" for s in ("color", "spatial")]
        rows.append(f"| {name} | {picker} | " + " | ".join(cells + held) + " |")
    for control in ("upper_bound", "shuffle"):
        cells = [_cell(result[control].get(s)) for s in SKILLS]
        rows.append(f"| (control) | {control.replace('_', ' ')} | " + " | ".join(cells) + " | | |")
    chance = [f"{result['chance'][s]:.2f}" if result["chance"].get(s) is not None else "-" for s in SKILLS]
    rows.append("| (control) | chance | " + " | ".join(chance) + " | | |")
    return rows


def _gain_cell(block: dict[str, Any]) -> str:
    if block["gain"] is None:
        return "-"
    low, high = block["ci95"]
    return f"{block['gain']:+.2f} [{low:+.2f}, {high:+.2f}] (n={block['n_prompts']})"


def paired_table(name: str, result: dict[str, Any], pairs: list[tuple[str, str]],
                 heldout: dict[str, set[str]]) -> list[str]:
    """Markdown rows: per (picker, baseline) pair, the per-prompt gain with its paired bootstrap CI per
    skill, and on the held-out / seen combinations (`heldout`: their prompt ids per skill)."""
    from clipforge.generate.experiment import paired_gain

    head = ("| generator | picker - baseline | " + " | ".join(SKILLS)
            + " | color held-out | spatial held-out | spatial seen |")
    rows = [head, "|" + "---|" * (len(SKILLS) + 5)]
    for picker, baseline in pairs:
        cells = [_gain_cell(paired_gain(result, picker, baseline, s)) for s in SKILLS]
        seen = set(result["pickers"][picker]["spatial"]["passed"]) - heldout["spatial"]
        cells += [_gain_cell(paired_gain(result, picker, baseline, s, ids)) for s, ids in
                  (("color", heldout["color"]), ("spatial", heldout["spatial"]), ("spatial", seen))]
        rows.append(f"| {name} | {picker} - {baseline} | " + " | ".join(cells) + " |")
    return rows


def dvae_table(report: dict[str, Any]) -> list[str]:
    rows = ["| " + " | ".join(SKILLS) + " | perplexity | dead codes |", "|" + "---|" * (len(SKILLS) + 2)]
    cells = [_cell(report["skills"].get(s)) for s in SKILLS]
    rows.append("| " + " | ".join(cells) + f" | {report['perplexity']:.1f} | {report['dead_codes']} |")
    return rows


def dvae_lines(report: dict[str, Any]) -> list[str]:
    head = "Skill parser on dVAE reconstructions of the val ground-truth renders:"
    return [head, "", *dvae_table(report), ""]


def generator_lines(name: str, result: dict[str, Any]) -> list[str]:
    return rerank_table(name, result) + ["", f"({name}: {result['seconds']} s wall incl. sampling)", ""]


def combine(paths: list[Path], write: bool, section: str) -> None:
    """The RESULTS.md section of several runs' JSON records (their commands, dVAE check and generators)."""
    lines = []
    for path in paths:
        record = json.loads(path.read_text())
        lines += [f"Command: `python benchmarks/gen_rerank.py {' '.join(record['args'])}`", ""]
        if "dvae" in record:
            lines += dvae_lines(record["dvae"])
        for name, result in record["generators"].items():
            lines += generator_lines(name, result)
    _emit(lines, write, section)


def _emit(lines: list[str], write: bool, section: str = "gen-rerank") -> None:
    if write:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _results import write_section

        write_section(section, "## Text to image: dVAE skill check and the re-ranking experiment\n\n"
                      + "\n".join(lines))
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skills", type=Path, required=True, help="skill set (made here if missing)")
    parser.add_argument("--n-per-skill", type=int, default=50)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--dvae", type=Path, default=None)
    parser.add_argument("--generator", type=_pair, action="append", default=[])
    parser.add_argument("--rerank", type=_pair, action="append", default=[])
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--split", default="val", help="val (held-out) or train (dev, to choose settings on)")
    parser.add_argument("--cond-scale", type=float, default=1.0, help="classifier-free guidance scale")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--candidates", type=Path, default=None,
                        help="save each generator's candidates in DIR/NAME, or re-score those saved there")
    parser.add_argument("--paired", type=_pair, action="append", default=[],
                        help="PICKER=BASELINE: also report PICKER's per-prompt gain over BASELINE with a "
                             "paired bootstrap CI (e.g. hardneg-skill=plain-skill)")
    parser.add_argument("--write", action="store_true", help="write the RESULTS.md section")
    parser.add_argument("--section", default="gen-rerank", help="the RESULTS.md section --combine writes")
    parser.add_argument("--combine", type=Path, action="append", default=[],
                        help="report the --json records of earlier runs (e.g. one per generator, run in "
                             "parallel) instead of running")
    args = parser.parse_args(argv)
    if args.combine:
        return combine(args.combine, args.write, args.section)
    import torch

    from clipforge.checkpoint import load_folder
    from clipforge.dalle.sampling import SamplingConfig
    from clipforge.generate.experiment import RerankExperiment, reconstruction_report, run_rerank_experiment
    from clipforge.models.dvae import DVAE
    from clipforge.skills import SkillSetConfig, load_skill_set, make_skill_set

    torch.set_num_threads(args.threads)
    if not (args.skills / "metadata.json").is_file():
        make_skill_set(args.skills, SkillSetConfig(args.n_per_skill, args.seed, args.size))
    record: dict[str, Any] = {"args": [str(a) for a in (argv or sys.argv[1:])], "generators": {}}
    lines = [f"Command: `python benchmarks/gen_rerank.py {' '.join(argv or sys.argv[1:])}`", ""]
    if args.dvae is not None:
        dvae = load_folder(args.dvae)
        assert isinstance(dvae, DVAE), f"{args.dvae} is not a dVAE"
        record["dvae"] = reconstruction_report(dvae, args.skills)
        lines += dvae_lines(record["dvae"])
    for name, folder in args.generator:
        start = time.perf_counter()
        sampling = SamplingConfig(args.temperature, args.top_k, cond_scale=args.cond_scale)
        saved = None if args.candidates is None else args.candidates / name
        config = RerankExperiment(folder, args.skills, tuple(args.rerank), n=args.n, split=args.split,
                                  seed=args.seed, sampling=sampling, candidates=saved)
        result = run_rerank_experiment(config)
        result["seconds"] = round(time.perf_counter() - start, 1)
        record["generators"][name] = result
        lines += generator_lines(name, result)
        print("\n".join(rerank_table(name, result)), flush=True)
        if args.paired:
            records = load_skill_set(args.skills, args.split)
            heldout = {skill: {r.id for r in records.get(skill, []) if r.heldout} for skill in SKILLS}
            paired = paired_table(name, result, args.paired, heldout)
            lines += [*paired, ""]
            print("\n".join(paired), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(record, indent=1))
    _emit(lines, args.write)


if __name__ == "__main__":
    main()
