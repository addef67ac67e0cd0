"""Why InfoNCE alone teaches `plain` relations under styles (issue 17): counts over training captions.

Run: python benchmarks/caption_layout.py [--n 6400] [--batch 128]

1. Caption side: how often a relation caption names the left (upper) object first, and how often each
   spatial word is used. About half and about equal means the text tells the layout by its words only.
2. Batch side: for each relation caption of a random training batch, the batch-mates that a reader who
   ignores the relation words would also accept, (a) seeing only colours, (b) seeing colours and shapes,
   and how many of those the relation rules out. The relation words matter to the InfoNCE loss in
   proportion to the mates they rule out. Scene metadata only (exact truth); nothing is rendered or trained.
"""

from __future__ import annotations

import random
from collections import Counter

import click

from clipforge.synthetic.scene import Relation, Scene, SceneConfig, generate_scene
from clipforge.synthetic.style import StyleConfig
from clipforge.synthetic.text import Caption, is_true, scene_caption


def colour_reading(scene: Scene, caption: Caption, with_relation: bool) -> bool:
    """Whether the caption fits the scene for a reader who sees colours but not shapes."""
    a, b = caption.phrases
    pairs = [(i, j) for i, p in enumerate(scene.objects) for j, q in enumerate(scene.objects)
             if i != j and p.color == a.color and q.color == b.color]
    if not with_relation:
        return bool(pairs)
    return any(Relation(i, str(caption.relation), j) in scene.relations for i, j in pairs)


def phrase_order(rows: list[tuple[Scene, Caption]]) -> str:
    """How often the first-named object is the left (upper) one, and the spatial words' counts."""
    first: Counter[str] = Counter()
    words: Counter[str] = Counter()
    for scene, caption in rows:
        if caption.kind != "relation" or caption.relation in ("in front of", "behind"):
            continue
        a, b = (next(o for o in scene.objects if p.matches(o)) for p in caption.phrases)
        axis = 0 if caption.relation in ("left of", "right of") else 1
        words[str(caption.relation)] += 1
        first[f"{axis}n"] += 1
        first[f"{axis}first"] += a.centre[axis] < b.centre[axis]
    return (f"first-named object left of the second {first['0first'] / first['0n']:.3f} "
            f"(n={first['0n']}), above it {first['1first'] / first['1n']:.3f} (n={first['1n']}); "
            f"spatial words {dict(words)}")


def batch_mates(rows: list[tuple[Scene, Caption]], batch: int) -> str:
    """Mean batch-mates per relation caption that fit it without / with the relation, per reader."""
    order = list(range(len(rows)))
    random.Random(0).shuffle(order)
    counts: Counter[str] = Counter()
    for start in range(0, len(rows) - batch + 1, batch):
        members = [rows[k] for k in order[start:start + batch]]
        for k, (_, caption) in enumerate(members):
            if caption.kind != "relation":
                continue
            mates = [scene for j, (scene, _) in enumerate(members) if j != k]
            words_only = Caption("attribute", caption.phrases)
            counts["captions"] += 1
            counts["colour"] += sum(colour_reading(m, caption, False) for m in mates)
            counts["colour+rel"] += sum(colour_reading(m, caption, True) for m in mates)
            counts["shape"] += sum(is_true(m, words_only) for m in mates)
            counts["shape+rel"] += sum(is_true(m, caption) for m in mates)
    n = counts["captions"]
    return (f"{n} relation captions in batches of {batch}; batch-mates that also fit, without -> with the "
            f"relation: colours only {counts['colour'] / n:.2f} -> {counts['colour+rel'] / n:.2f}; "
            f"colours and shapes {counts['shape'] / n:.3f} -> {counts['shape+rel'] / n:.3f}")


@click.command()
@click.option("--n", default=6400, show_default=True, help="training scenes")
@click.option("--batch", default=128, show_default=True, help="scenes per batch (the quickstart's)")
def main(n: int, batch: int) -> None:
    config = SceneConfig(image_size=48, style=StyleConfig())
    rows = [(scene, scene_caption(scene, config)) for scene in
            (generate_scene(config, 0, "train", i) for i in range(n))]
    click.echo(phrase_order(rows))
    click.echo(batch_mates(rows, batch))


if __name__ == "__main__":
    main()
