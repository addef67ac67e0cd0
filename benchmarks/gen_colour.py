"""Why a generator's colour prompts fail: what its samples draw, what its dVAE can draw, and whether a
held-out (colour, shape) pair needs image-token patterns that the training tokens never contain.

Run it on a TUNING skill set only (diagnosis choices are never made on the held-out prompts). For every
colour prompt of the split, `n` samples are drawn at one fixed setting and read by the skill parser;
each is put in one outcome class (`outcome`), split by seen vs held-out pair. The same classes are given
for the ground-truth renders and their dVAE round trips (the dVAE's own ceiling). Then the token level:
the share of image-token n-grams (single codes, horizontal and vertical pairs, 2x2 patches) of ground-truth
renders and of samples that never occur in the generator's training tokens, and how colour-specific the
codes on an object are in the training scenes with a single object.

    python benchmarks/gen_colour.py --generator runs/gen/final --skills runs/skills-tune \
        --train-tokens runs/token-cache/pairs-KEY.safetensors --n 8 --temperature 0.2 --cond-scale 1.5 \
        --json runs/colour.json
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

OUTCOMES = ("right", "shape right, wrong colour", "shape right, no colour", "other shape in the asked colour",
            "other shape, other colour", "no object")
PATTERNS = ("code", "pair across", "pair down", "2x2 patch")
Read = list[tuple[str | None, str | None]]  # (shape, colour) of each object the parser read
Box = tuple[int, int, int, int]


def outcome(shape: str, color: str, objects: Read) -> tuple[str, str | None]:
    """The outcome class of one picture for "a `color` `shape`", and the colour or shape drawn instead.

    Args:
        shape: the asked shape.
        color: the asked colour.
        objects: (shape, colour) of each object the parser read, most confident first.
    """
    if not objects:
        return "no object", None
    match = next((o for o in objects if o[0] == shape), None)  # the colour rule's object
    if match is not None:
        if match[1] == color:
            return "right", None
        if match[1] is None:
            return "shape right, no colour", None
        return "shape right, wrong colour", match[1]
    if any(o[1] == color for o in objects):
        return "other shape in the asked colour", next(o[0] for o in objects if o[1] == color)
    return "other shape, other colour", objects[0][0]


def pattern_ids(tokens: np.ndarray, grid: int, codes: int) -> dict[str, np.ndarray]:
    """Every n-gram of image tokens [N, G*G] (row-major) as one integer per position, per `PATTERNS`."""
    t = tokens.reshape(-1, grid, grid).astype(np.int64)  # [N, G, G]
    flat = t.shape[0], -1
    return {"code": t.reshape(flat),
            "pair across": (t[:, :, :-1] * codes + t[:, :, 1:]).reshape(flat),
            "pair down": (t[:, :-1] * codes + t[:, 1:]).reshape(flat),
            "2x2 patch": (((t[:, :-1, :-1] * codes + t[:, :-1, 1:]) * codes + t[:, 1:, :-1]) * codes
                          + t[:, 1:, 1:]).reshape(flat)}


def unseen_shares(ids: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Per row of n-gram ids [N, M]: the share of positions whose n-gram is not in `seen` (sorted unique)."""
    return 1.0 - np.isin(ids, seen, assume_unique=False).mean(axis=1)


def cell_codes(tokens: np.ndarray, box: tuple[int, int, int, int], cell: int, grid: int) -> np.ndarray:
    """The codes of the grid cells a pixel box ``(x0, y0, x1, y1)`` (x1, y1 exclusive) overlaps."""
    x0, y0, x1, y1 = box
    rows = range(y0 // cell, (y1 - 1) // cell + 1)
    cols = range(x0 // cell, (x1 - 1) // cell + 1)
    return np.array([tokens[r * grid + c] for r in rows for c in cols])


def code_colour_table(tokens: np.ndarray, objects: list[tuple[str, Box]], colours: list[str], cell: int,
                      grid: int, codes: int) -> np.ndarray:
    """Counts [K, C]: how often code k lies on an object of colour c, over single-object scenes."""
    table = np.zeros((codes, len(colours)), dtype=np.int64)
    for row, (colour, box) in zip(tokens, objects, strict=True):
        np.add.at(table[:, colours.index(colour)], cell_codes(row, box, cell, grid), 1)
    return table


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def right_ci(results: list[tuple[str, str | None]], per: int) -> tuple[float, float]:
    """95% CI of the share of right pictures, bootstrapped over prompts (`per` consecutive pictures each)."""
    from clipforge.probe.stats import bootstrap_ci, wilson_ci

    flags = np.array([o == "right" for o, _ in results], dtype=np.float64).reshape(-1, per)  # [P, per]
    if per == 1:
        return wilson_ci(int(flags.sum()), len(flags))
    return bootstrap_ci(flags.mean(axis=1))


def outcome_table(groups: dict[str, list[tuple[str, str | None]]], per: int) -> list[str]:
    """Markdown rows: share of each outcome per group (columns), with the group's picture count."""
    names = list(groups)
    rows = ["| outcome | " + " | ".join(f"{g} (n={len(groups[g])})" for g in names) + " |",
            "|" + "---|" * (len(names) + 1)]
    for kind in OUTCOMES:
        cells = [f"{sum(o == kind for o, _ in groups[g]) / max(len(groups[g]), 1):.2f}" for g in names]
        rows.append(f"| {kind} | " + " | ".join(cells) + " |")
    cis = ["[{:.2f}, {:.2f}]".format(*right_ci(groups[g], per)) for g in names]
    return [*rows, "| right, 95% CI | " + " | ".join(cis) + " |"]


def _readings(images: list[Any]) -> list[Read]:
    from clipforge.skills.parser import parse_image

    return [[(o.shape, o.color) for o in parse_image(image).objects] for image in images]


def _training_scenes(n: int) -> tuple[list[Any], list[str]]:
    from clipforge.dalle.scenes import skill_scene
    from clipforge.train.dalle_tasks import skill_scenes

    config = skill_scenes(32)
    return [skill_scene(config, 0, i) for i in range(n)], list(config.scene.colors)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", required=True, help="generator folder")
    parser.add_argument("--skills", type=Path, required=True, help="a TUNING skill set")
    parser.add_argument("--split", default="val")
    parser.add_argument("--train-tokens", type=Path, required=True,
                        help="the generator's training token cache file (pairs-KEY.safetensors; data seed 0)")
    parser.add_argument("--n", type=int, default=8, help="samples per prompt")
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--cond-scale", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    import torch
    from PIL import Image
    from safetensors.torch import load_file

    from clipforge.dalle.batches import image_pixels, round_trip, to_pil
    from clipforge.dalle.sampling import SamplingConfig, image_seed, sample_tokens
    from clipforge.data.transforms import load_image
    from clipforge.fileio import write_json
    from clipforge.generate.job import load_generator
    from clipforge.skills import load_skill_set
    from clipforge.synthetic.render import BACKGROUND
    from clipforge.tokenizer import get_tokenizer

    torch.set_num_threads(args.threads)
    model = load_generator(args.generator)
    dvae, size = model.dvae.eval(), model.config.dvae.image_size
    records = load_skill_set(args.skills, args.split)["color"]
    truth = [load_image(args.skills / "color" / "images" / r.image_name) for r in records]
    texts = get_tokenizer(model.config.tokenizer)([r.text for r in records for _ in range(args.n)])
    seeds = [image_seed(args.seed, p, k) for p in range(len(records)) for k in range(args.n)]
    sampling = SamplingConfig(args.temperature, cond_scale=args.cond_scale)
    with torch.no_grad():
        sample = torch.cat([sample_tokens(model, texts[i:i + 64], seeds[i:i + 64], sampling)
                            for i in range(0, len(seeds), 64)])  # [P * n, G*G]
        drawn = to_pil(model.decode(sample))
        blank = set(dvae.encode(image_pixels([Image.new("RGB", (size, size), BACKGROUND)]))[0].tolist())
    reads = {"samples": (_readings(drawn), args.n), "ground truth": (_readings(truth), 1),
             "dVAE round trip": (_readings(round_trip(dvae, truth)), 1)}
    record: dict[str, Any] = {"args": argv or sys.argv[1:], "outcomes": {}, "instead": {}, "tokens": {}}
    lines = [f"Command: `python benchmarks/gen_colour.py {' '.join(argv or sys.argv[1:])}`", ""]
    lines += _outcome_lines(reads, records, record, f"{args.skills} {args.split}")
    train = load_file(str(args.train_tokens))["image"].numpy()  # [N, G*G]
    scenes, colours = _training_scenes(train.shape[0])
    lines += _colour_prior_lines(scenes, records)
    truth_tokens = dvae.encode(image_pixels(truth)).numpy()  # [P, G*G]
    tokens = {"ground truth": (truth_tokens, 1), "samples": (sample.numpy(), args.n)}
    lines += _token_lines(train, tokens, records, record, model.config.dvae.codebook_size)
    lines += _purity_lines(train, scenes, colours, records, tokens["ground truth"][0], size, blank,
                           model.config.dvae.codebook_size)
    if args.json is not None:
        write_json(record, args.json)
    print("\n".join(lines))


def _group(record: Any) -> str:
    return "held-out" if record.heldout else "seen"


def _outcome_lines(reads: dict[str, tuple[list[Read], int]], records: list[Any], out: dict[str, Any],
                   where: str) -> list[str]:
    """Outcome tables of samples, ground truth and round trips, and what held-out samples drew instead."""
    lines = []
    for name, (readings, per) in reads.items():
        groups: dict[str, list[tuple[str, str | None]]] = {"seen": [], "held-out": []}
        instead: dict[str, Counter[str]] = {}
        for i, reading in enumerate(readings):
            record = records[i // per]
            shape, color = record.objects[0].shape, record.objects[0].color
            result = outcome(shape, color, reading)
            groups[_group(record)].append(result)
            if record.heldout and result[1] is not None:
                instead.setdefault(f"{color} {shape}", Counter())[f"{result[0]}: {result[1]}"] += 1
        out["outcomes"][name] = {g: Counter(o for o, _ in v) for g, v in groups.items()}
        out["instead"][name] = instead
        lines += [f"**{name}** (colour prompts of {where}):", "", *outcome_table(groups, per), ""]
    return lines + _instead_lines(out["instead"]["samples"])


def _token_lines(train: np.ndarray, sets: dict[str, tuple[np.ndarray, int]], records: list[Any],
                 out: dict[str, Any], codes: int) -> list[str]:
    """The unseen-n-gram table, and how many of the held-out renders' unseen 2x2 patches samples draw."""
    grid = int(round(train.shape[1] ** 0.5))
    seen = {k: np.unique(v) for k, v in pattern_ids(train, grid, codes).items()}
    head = "| tokens | " + " | ".join(f"{p} unseen" for p in PATTERNS) + " | pictures with an unseen 2x2 |"
    lines = ["Share of image-token n-grams never in the training tokens "
             f"({train.shape[0]} pictures, {len(seen['2x2 patch'])} distinct 2x2 patches):", "", head,
             "|" + "---|" * (len(PATTERNS) + 2)]
    novel: dict[str, set[int]] = {}
    for name, (tokens, per) in sets.items():
        ids = pattern_ids(tokens, grid, codes)
        for group in ("seen", "held-out"):
            rows = [i for i in range(tokens.shape[0]) if _group(records[i // per]) == group]
            shares = {p: unseen_shares(ids[p][rows], seen[p]) for p in PATTERNS}
            out["tokens"][f"{name} {group}"] = {p: float(v.mean()) for p, v in shares.items()}
            any_unseen = (shares["2x2 patch"] > 0).mean()
            cells = [f"{shares[p].mean():.4f}" for p in PATTERNS] + [f"{any_unseen:.2f}"]
            lines.append(f"| {name}, {group} pairs (n={len(rows)}) | " + " | ".join(cells) + " |")
            patches = ids["2x2 patch"][rows].ravel()
            novel[f"{name} {group}"] = set(patches[~np.isin(patches, seen["2x2 patch"])].tolist())
    needed, drawn = novel["ground truth held-out"], novel["samples held-out"]
    out["tokens"]["novel reached"] = [len(needed & drawn), len(needed)]
    reached = len(needed & drawn)
    return [*lines, "", f"Of the {len(needed)} distinct unseen 2x2 patches the held-out renders need, the "
            f"samples of held-out prompts draw {reached} (they draw {len(drawn)} unseen ones in all).", ""]


def _instead_lines(instead: dict[str, Counter[str]]) -> list[str]:
    lines = ["What the samples of held-out pairs drew instead (outcome: colour or shape drawn, count):", ""]
    for pair, counts in sorted(instead.items()):
        lines.append(f"- {pair}: " + ", ".join(f"{k} x{v}" for k, v in counts.most_common(6)))
    return [*lines, ""]


def _colour_prior_lines(scenes: list[Any], records: list[Any]) -> list[str]:
    """How often each colour is drawn on the held-out pairs' shapes in all the training scenes."""
    counts = Counter((o.shape, o.color) for s in scenes for o in s.scene.objects)
    lines = ["Colours of the held-out pairs' shapes in the training scenes (all objects):", ""]
    for shape in sorted({r.objects[0].shape for r in records if r.heldout}):
        row = sorted(((c, n) for (s, c), n in counts.items() if s == shape), key=lambda x: -x[1])
        lines.append(f"- {shape}: " + ", ".join(f"{c} {n}" for c, n in row))
    return [*lines, ""]


def _purity_lines(train: np.ndarray, scenes: list[Any], colours: list[str], records: list[Any],
                  truth_tokens: np.ndarray, size: int, blank: set[int], codes: int) -> list[str]:
    """How colour-specific the codes on an object are (background codes left out), and whether a render's
    object codes were ever seen on an object of the asked colour / shape in training single-object scenes."""
    grid = int(round(train.shape[1] ** 0.5))
    cell = size // grid
    single = [i for i, s in enumerate(scenes) if len(s.scene.objects) == 1]
    objects = [scenes[i].scene.objects[0] for i in single]
    table = code_colour_table(train[single], [(o.color, o.bbox) for o in objects], colours, cell, grid, codes)
    on_shape = {(o.shape, int(k)) for i, o in zip(single, objects, strict=True)
                for k in cell_codes(train[i], o.bbox, cell, grid)}
    out: dict[str, tuple[list[float], ...]] = {"seen": ([], [], []), "held-out": ([], [], [])}
    for record, tokens in zip(records, truth_tokens, strict=True):
        obj = record.objects[0]
        on = np.array([k for k in cell_codes(tokens, obj.bbox, cell, grid) if int(k) not in blank], np.int64)
        if not len(on):  # an object drawn by background codes only
            continue
        purity, with_colour, with_shape = out[_group(record)]
        purity.append(float((table[on].max(axis=1) / table[on].sum(axis=1).clip(min=1)).mean()))
        with_colour.append(float((table[on, colours.index(obj.color)] > 0).mean()))
        with_shape.append(float(np.mean([(obj.shape, int(k)) in on_shape for k in on])))
    lines = ["Codes on the ground-truth object (cells its box overlaps, background codes left out), against "
             "the training scenes with one object:", "",
             "| pairs | colour purity of its codes | share of codes seen on the asked colour "
             "| share of codes seen on the asked shape |", "|---|---|---|---|"]
    for group, columns in out.items():
        lines.append(f"| {group} | " + " | ".join(f"{_mean(c):.3f}" for c in columns) + " |")
    return [*lines, ""]


if __name__ == "__main__":
    main()
