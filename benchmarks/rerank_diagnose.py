"""Can the re-rankers read relations in generated-looking images? (`clipforge.generate.diagnose`)

For each re-ranker: relation accuracy (true vs relation-swapped prompt, chance 0.5) on the spatial
prompts' ground-truth renders and on their dVAE reconstructions; then, for each generator, the pairwise
accuracy of its scores on the candidates the skill parser says are right vs wrong (chance 0.5), with
95% bootstrap CIs. Writes the `rerank-diagnose` section of benchmarks/RESULTS.md with --write.

    python benchmarks/rerank_diagnose.py --skills runs/stage/skills --dvae runs/stage/dvae/final \
        --generator final=runs/stage/generator/final --rerank plain=... --rerank hardneg=... --write

With --candidates DIR (a folder `gen_rerank.py --candidates DIR` filled) the candidates are read, not drawn.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_rerank import _pair  # noqa: E402

CONVERSE = {"to the left of": "to the right of", "to the right of": "to the left of", "above": "below",
            "below": "above"}


def _cell(values: list[float]) -> str:
    from clipforge.probe.stats import bootstrap_ci

    if not values:
        return "-"
    low, high = bootstrap_ci(values)
    return f"{np.mean(values):.2f} [{low:.2f}, {high:.2f}] (n={len(values)})"


def with_colours(record: Any) -> str:
    """The prompt naming its ground-truth objects' colours: "a blue square to the left of a red cross"."""
    text = record.text
    for obj in record.objects:
        article = "an" if obj.color[0] in "aeiou" else "a"
        text = re.sub(rf"\ban? {obj.shape}\b", f"{article} {obj.color} {obj.shape}", text, count=1)
    return text


def relation_rows(args: argparse.Namespace, rerankers: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Relation accuracy of each re-ranker on ground truth and on dVAE reconstructions."""
    from clipforge.checkpoint import load_folder
    from clipforge.dalle.batches import round_trip
    from clipforge.generate.diagnose import relation_accuracy
    from clipforge.skills import load_skill_set, read_images

    records = load_skill_set(args.skills, args.split)["spatial"]
    truth = read_images(args.skills, {"spatial": records}).images["spatial"]
    images = [truth[r.id][0] for r in records]
    texts = [r.text for r in records]
    sets = {"ground truth": images}
    if args.dvae is not None:
        dvae = load_folder(args.dvae)
        sets["dVAE reconstruction"] = round_trip(dvae, images)
    # the same images scored with prompts that name the objects' colours, as the synthetic captions do
    coloured = {f"{kind}, prompt with colours": shown for kind, shown in sets.items()}
    heads = [*sets, *coloured]
    rows = ["| re-ranker | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    record: dict[str, Any] = {}
    for name, reranker in rerankers.items():
        accs = {kind: relation_accuracy(reranker, shown, texts).tolist() for kind, shown in sets.items()}
        accs |= {kind: relation_accuracy(reranker, shown, [with_colours(r) for r in records]).tolist()
                 for kind, shown in coloured.items()}
        record[name] = accs
        rows.append(f"| {name} | " + " | ".join(_cell(a) for a in accs.values()) + " |")
    return rows + ["", *heldout_rows(rerankers, records, sets)], record


def converse(prompt: str) -> str:
    """The same claim from the other object: "a circle above a star" -> "a star below a circle"."""
    words = next(w for w in CONVERSE if f" {w} " in prompt)
    first, second = prompt.split(f" {words} ")
    return f"{second} {CONVERSE[words]} {first}"


def heldout_rows(rerankers: dict[str, Any], records: list[Any], sets: dict[str, Any]) -> list[str]:
    """Relation accuracy by whether the prompt is a held-out (shape, relation) combination (no training
    scene of the generator or of its skill-scene re-rankers shows it) or a seen one, with each prompt as
    written and averaged with its converse, which cancels a preference for a relation word."""
    from clipforge.generate.diagnose import relation_accuracy

    held = np.array([bool(r.heldout) for r in records])
    texts = [r.text for r in records]
    heads = [f"{kind}, {phrasing}: {part}" for kind in sets for phrasing in ("as written", "both phrasings")
             for part in ("held-out", "seen")]
    rows = [f"By combination ({int(held.sum())} held-out, {int((~held).sum())} seen prompts):", "",
            "| re-ranker | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for name, reranker in rerankers.items():
        cells = []
        for shown in sets.values():
            written = relation_accuracy(reranker, shown, texts)
            both = (written + relation_accuracy(reranker, shown, [converse(t) for t in texts])) / 2
            cells += [_cell(list(acc[mask])) for acc in (written, both) for mask in (held, ~held)]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return rows


def candidate_rows(args: argparse.Namespace, rerankers: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Pairwise accuracy of each re-ranker on parser-right vs parser-wrong candidates of each generator."""
    from clipforge.dalle.sampling import SamplingConfig
    from clipforge.generate.diagnose import pairwise_accuracy
    from clipforge.generate.experiment import RerankExperiment, obtain_candidates
    from clipforge.generate.job import candidate_scores
    from clipforge.generate.prompts import read_skill_prompts
    from clipforge.skills import judge, load_skill_set, parse_image

    records = load_skill_set(args.skills, args.split)["spatial"]
    prompts = [p for p in read_skill_prompts(args.skills, args.split) if p.skill == "spatial"]
    sampling = SamplingConfig(args.temperature, cond_scale=args.cond_scale)
    rows = ["| generator: candidates | parser-right | prompts with both | " + " | ".join(rerankers) + " |",
            "|---|---|---|" + "---|" * len(rerankers)]
    record: dict[str, Any] = {}
    for gen_name, folder in args.generator:
        saved = None if args.candidates is None else args.candidates / gen_name
        drawn = RerankExperiment(folder, args.skills, n=args.n, split=args.split, seed=args.seed,
                                 sampling=sampling, candidates=saved)
        candidates = obtain_candidates(drawn, {"spatial": records}, prompts)
        verdicts = [[judge(r, parse_image(im)) for im in group]
                    for r, group in zip(records, candidates, strict=True)]
        right = [np.array([v.passed for v in group]) for group in verdicts]
        # both asked shapes read: the parser could judge the relation ("ok" or "<shape> is <where>")
        shaped = [np.array([not v.reason.startswith("read") for v in group]) for group in verdicts]
        record[gen_name] = {"reasons": [[v.reason for v in group] for group in verdicts]}
        for name, reranker in rerankers.items():
            scores = [s for s in candidate_scores(reranker, prompts, candidates) if s is not None]
            pairs = [pairwise_accuracy(s, r) for s, r in zip(scores, right, strict=True)]
            among = [pairwise_accuracy(s[m], r[m]) for s, r, m in zip(scores, right, shaped, strict=True)]
            record[gen_name][name] = {"all": pairs, "shapes_right": among}
        rows += _pairwise_rows(gen_name, record[gen_name], rerankers, right, shaped, records)
    return rows, record


def _pairwise_rows(gen_name: str, record: dict[str, Any], rerankers: dict[str, Any], right: list[Any],
                   shaped: list[Any], records: list[Any]) -> list[str]:
    """One generator's pairwise-accuracy rows: all candidates, those with both shapes read, and all
    candidates of the held-out / seen combinations' prompts (per prompt; None: no right-wrong pair)."""
    held = [bool(r.heldout) for r in records]

    def cells(kind: str, keep: list[bool]) -> str:
        kept = {n: [p for p, k in zip(record[n][kind], keep, strict=True) if k] for n in rerankers}
        return " | ".join(_cell([p for p in kept[n] if p is not None]) for n in rerankers)

    def both(keep: list[bool]) -> str:
        return f"{sum(0 < r.sum() < len(r) for r, k in zip(right, keep, strict=True) if k)} of {sum(keep)}"

    rate, shape_rate = float(np.mean(np.concatenate(right))), float(np.mean(np.concatenate(shaped)))
    everyone = [True] * len(records)
    return [f"| {gen_name}: all candidates | {rate:.2f} | {both(everyone)} | {cells('all', everyone)} |",
            f"| {gen_name}: both asked shapes read ({shape_rate:.2f} of candidates) | "
            f"{rate / max(shape_rate, 1e-9):.2f} | - | {cells('shapes_right', everyone)} |",
            f"| {gen_name}: held-out combinations | - | {both(held)} | {cells('all', held)} |",
            f"| {gen_name}: seen combinations | - | {both([not h for h in held])} | "
            f"{cells('all', [not h for h in held])} |"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skills", type=Path, required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--dvae", type=Path, default=None)
    parser.add_argument("--generator", type=_pair, action="append", default=[])
    parser.add_argument("--rerank", type=_pair, action="append", default=[])
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=0.3)
    parser.add_argument("--cond-scale", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--candidates", type=Path, default=None,
                        help="read each generator's candidates from DIR/NAME (saved by gen_rerank.py "
                             "--candidates) instead of sampling them")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    import torch

    from clipforge.generate.rerank import ClipReranker

    torch.set_num_threads(args.threads)
    began = time.perf_counter()
    rerankers = {name: ClipReranker(spec) for name, spec in args.rerank}
    relation, rel_record = relation_rows(args, rerankers)
    candidates, cand_record = candidate_rows(args, rerankers)
    command = f"python benchmarks/rerank_diagnose.py {' '.join(argv or sys.argv[1:])}"
    lines = ["## Re-ranker diagnosis: can it read relations in generated-looking images?", "",
             f"Command: `{command}` ({time.perf_counter() - began:.0f} s wall, shared loaded machine)", "",
             f"Relation accuracy (true vs relation-swapped prompt; chance 0.50) on the {args.split} spatial "
             "prompts' images, mean [95% bootstrap CI]:", "", *relation, "",
             f"Pairwise accuracy on generated candidates ({args.n} per {args.split} spatial prompt; parser-"
             "right vs parser-wrong pairs, averaged over prompts with both; chance 0.50), over all "
             "candidates and over those where the parser reads both asked shapes (the relation decides):",
             "",
             *candidates]
    if args.json is not None:
        args.json.write_text(json.dumps({"relation": rel_record, "candidates": cand_record}))
    if args.write:
        from _results import write_section

        write_section("rerank-diagnose", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
