"""Where a spatial LiT model's `collage:` errors are (issue 13): by category pair, and by whether its frozen
pooled start tells the two photos' categories apart.

Run (dev split: this is a diagnostic for tuning; the model's cache folder must hold its collage features):

    python benchmarks/collage_categories.py --model runs/fine-hn-b1024/final --data ../shared/data/flickr8k \\
        --cache runs/cache/features

Scores the probe's own statements (`train.spatial.paired_collages`, seed 0) like the training run's dev
evaluation, then groups them: person-person pairs (man / woman / child) vs the rest, each category pair, and
"pooled separates": the mean heads alone (the pooled start, branches off) put "a photo of a C" above "a photo
of a D" on the C photo and the other way round on the D photo (only the two categories of the pair compete).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import click
import torch
import torch.nn.functional as F

from clipforge.checkpoint import load_model
from clipforge.data.spatial_aug import CollageStatement, photo_category
from clipforge.data.specs import open_data
from clipforge.models.towers import TowerCLIP
from clipforge.progress import quiet
from clipforge.train.features import image_feature_table, stack_texts, text_feature_table
from clipforge.train.spatial import RenderedImages, paired_collages

PEOPLE = {"man", "woman", "child"}


def statement_scores(model: TowerCLIP, statements: list[CollageStatement], cache: Path) -> list[bool]:
    """Whether each statement's true sentence is closer to its collage than its relation-swapped one."""
    captions = {s.collage.key: (s.true,) for s in statements}
    rendered = RenderedImages("collages", [s.collage for s in statements], captions)
    images = image_feature_table(model, rendered, cache, 512, 0, quiet)
    texts = sorted({t for s in statements for t in (s.true, s.false)})
    table = text_feature_table(model, texts, cache, 512, quiet)
    with torch.no_grad():
        sentences = model.project_text_features(stack_texts([table[t] for t in texts]), True)  # [T, E]
        keys = sorted(images)
        collages = model.project_image_features(torch.stack([images[k] for k in keys]), True)  # [N, E]
    text, image = dict(zip(texts, sentences, strict=True)), dict(zip(keys, collages, strict=True))
    return [bool(image[s.collage.key] @ (text[s.true] - text[s.false]) > 0) for s in statements]


def pooled_scores(model: TowerCLIP, data_spec: str, names: list[str], cache: Path) -> dict[str, torch.Tensor]:
    """Each photo's cosine [C] to "a photo of a <name>" for every category name, by the mean heads alone."""
    photos = image_feature_table(model, open_data(data_spec), cache, 512, 0, quiet)
    prompts, keys = [f"a photo of a {name}" for name in names], sorted(photos)
    table = text_feature_table(model, prompts, cache, 512, quiet)
    with torch.no_grad():
        image = F.normalize(model.visual.head.base(torch.stack([photos[k] for k in keys])), dim=-1)  # [N, E]
        text = F.normalize(model.text.head.base(stack_texts([table[p] for p in prompts])), dim=-1)  # [C, E]
    return dict(zip(keys, image @ text.t(), strict=True))


@click.command()
@click.option("--model", "model_dir", required=True)
@click.option("--data", "root", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--split", default="dev", show_default=True)
def main(model_dir: str, root: Path, cache: Path, split: str) -> None:
    """Prints collage accuracy per group of statements."""
    torch.set_num_threads(1)
    model = load_model(model_dir).eval()
    assert isinstance(model, TowerCLIP), "a spatial LiT model (TowerCLIP) is needed"
    spec = f"flickr8k:{root}:{split}"
    category = {r.key: photo_category(r.captions) or "" for r in open_data(spec).records()}
    statements = paired_collages(open_data(spec).records(), 0)
    names = sorted(set(filter(None, category.values())))
    scores = pooled_scores(model, spec, names, cache)
    groups: dict[str, list[bool]] = defaultdict(list)
    for statement, ok in zip(statements, statement_scores(model, statements, cache), strict=True):
        a, b = statement.collage.first.key, statement.collage.second.key
        pair = tuple(sorted((category[a], category[b])))
        groups["all"].append(ok)
        groups["person-person" if set(pair) <= PEOPLE else "other"].append(ok)
        x, y = names.index(category[a]), names.index(category[b])
        separates = bool(scores[a][x] > scores[a][y] and scores[b][y] > scores[b][x])
        groups[f"pooled separates: {separates}"].append(ok)
        groups["pair " + "/".join(pair)].append(ok)
    click.echo("| statements | n | collage accuracy |\n|---|---:|---:|")
    for name, oks in sorted(groups.items(), key=lambda item: -len(item[1])):
        click.echo(f"| {name} | {len(oks)} | {sum(oks) / len(oks):.3f} |")


if __name__ == "__main__":
    main()
