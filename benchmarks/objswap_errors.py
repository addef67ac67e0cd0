"""Where do the quickstart models' object-swap errors come from? (issue 17; validation scenes only)

Scores the object-swap probe items of the first N seed-0 ``val`` and ``val_style`` scenes (the default
quickstart's scenes and style, as the lead's validation runs score them) with each model, and breaks the
errors down by what the swapped phrase names and how its object was drawn: true and swapped-in shape,
which phrase of the caption was swapped, size, drawn scale, stretch, rotation, blur, noise, JPEG,
background, colour, hue position, number of objects, distance to the border, and the counterfactual pixel
distance (the item's image against the same scene and style with the object drawn as the swapped-in shape,
noise and JPEG off: how different the two sentences' pictures are). Error rates carry 95% Wilson
intervals. Then the same items are re-rendered cleanly (no stretch or rotation, no blur, noise or JPEG,
solid background) and plainly (the palette's exact colours on the plain dark background) and scored
again: what the style explains.

``--shapes``: how well each model's image embedding holds the shape at all, on single-object validation
scenes: a linear probe (`clipforge.eval.linear_probe`, C from a short search on validation scenes) beside the
quickstart's zero-shot prompts, on the same scored scenes. ``--supervised-steps N``: the default image tower
trained directly to name the shape of styled single-object training scenes, scored on the same scenes:
whether the tower can learn the shapes under the style at all.

    nice -n 10 python benchmarks/objswap_errors.py --n 1000 --model hardneg-s0=QS/hardneg/final \\
        --model hardneg-s1=RUN/final --model plain-s0=QS/plain/final --shapes --supervised-steps 1000 \\
        --write
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import click
import numpy as np
import torch
from _results import write_section
from PIL import Image
from torch import nn

from clipforge.data.transforms import Preprocess
from clipforge.eval.frozen import FeatureSet
from clipforge.eval.linear_probe import fit, predict, search_c
from clipforge.eval.zeroshot import zero_shot_classifier
from clipforge.models.registry import get_model_config
from clipforge.models.vision import build_vision_tower
from clipforge.probe import ClipEncoder, run_probe
from clipforge.probe.formats import items_from_synthetic
from clipforge.probe.stats import wilson_ci
from clipforge.quickstart.config import QuickstartConfig
from clipforge.quickstart.pipeline import scene_config
from clipforge.synthetic.dataset import single_object_scenes
from clipforge.synthetic.render import rgb_array
from clipforge.synthetic.scene import (
    SHAPES,
    Scene,
    SceneConfig,
    generate_scene,
    render_scene,
    render_styled,
    scene_style,
)
from clipforge.synthetic.style import ROTATABLE, STRETCHABLE, Style, StyleConfig
from clipforge.synthetic.text import ProbeItem, probe_items
from clipforge.synthetic.zeroshot import attribute_prompts

SPLITS = ("val", "val_style")
SIZE_WORDS = ("small", "large")
CONFUSABLE = ("cross", "diamond", "star")  # the shapes the analysis found confused with each other
CONFUSABLE_IDS = [SHAPES.index(s) for s in CONFUSABLE]
SHAPE_FIT, SHAPE_C, SHAPE_SCORED = 2000, 500, 1000  # single-object val scenes: fit, C search, scored
C_EXPONENTS = (0, 2)  # log10 C tried (then one binary-search step): a full search takes minutes per model
PAIR_BIN = "confusable pair (both shapes cross, diamond or star)"


@dataclass(frozen=True)
class Swap:
    """What an object-swap item changed: phrase `which` (0 first) names `color` `shape`, swapped for `new`."""

    shape: str
    new: str
    color: str
    size: str | None
    which: int


@dataclass(frozen=True)
class Record:
    """One object-swap item with its scene, style draw, swap and image."""

    item: ProbeItem
    scene: Scene
    style: Style
    swap: Swap
    image: Image.Image


def read_swap(true: str, false: str) -> Swap:
    """The swap between a true caption and its object-swap negative (they differ in one shape word)."""
    old, new = true.split(), false.split()
    k = next(i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b)
    size = old[k - 2] if old[k - 2] in SIZE_WORDS else None
    which = sum(word in SHAPES for word in old[:k])
    return Swap(old[k], new[k], old[k - 1], size, which)


def named_object(scene: Scene, swap: Swap) -> int:
    """Index of the (first) object the swapped phrase names."""
    return next(i for i, o in enumerate(scene.objects)
                if (o.shape, o.color) == (swap.shape, swap.color) and swap.size in (None, o.size))


def swapped_geometry(style: Style, index: int, shape: str) -> Style:
    """`style` with object `index`'s geometry as `shape` may take it (stretch and turn only where allowed)."""
    scale, aspect, angle = style.geometry[index]
    geometry = list(style.geometry)
    geometry[index] = (scale, aspect if shape in STRETCHABLE else 1.0, angle if shape in ROTATABLE else 0.0)
    return dataclasses.replace(style, geometry=tuple(geometry))


def counterfactual_distance(scene: Scene, style: Style, swap: Swap) -> float:
    """L2 distance (0-255 scale, all pixels and channels) between the scene and the scene with the named
    object drawn as the swapped-in shape; noise and JPEG off, everything else as drawn."""
    quiet = dataclasses.replace(style, noise=0.0, jpeg_quality=None)
    index = named_object(scene, swap)
    objects = list(scene.objects)
    objects[index] = dataclasses.replace(objects[index], shape=swap.new)
    other = dataclasses.replace(scene, objects=tuple(objects))
    a = rgb_array(render_styled(scene, quiet)).astype(np.float64)
    b = rgb_array(render_styled(other, swapped_geometry(quiet, index, swap.new))).astype(np.float64)
    return float(np.sqrt(((a - b) ** 2).sum()))


def records(config: SceneConfig, style: StyleConfig, n: int) -> Iterator[Record]:
    """The object-swap items of the first `n` scenes of each validation split."""
    styled = dataclasses.replace(config, style=style)
    for split in SPLITS:
        for index in range(n):
            scene = generate_scene(styled, 0, split, index)
            for item in probe_items(scene, index):
                if item.tag == "object_swap":
                    drawn = scene_style(scene, style)
                    yield Record(item, scene, drawn, read_swap(item.true, item.false[0]),
                                 render_styled(scene, drawn))


def _band(value: float, edges: tuple[float, ...]) -> str:
    """Which of the bands cut at `edges` holds `value`, as text sorted in band order."""
    below = [e for e in edges if value < e]
    return f"< {below[0]:g}" if below else f">= {edges[-1]:g}"


def features(record: Record, image_size: int) -> dict[str, str]:
    """The bins of one item (one entry per breakdown)."""
    swap, style, scene = record.swap, record.style, record.scene
    index = named_object(scene, swap)
    obj = scene.objects[index]
    scale, aspect, angle = style.geometry[index]
    others = [o for i, o in enumerate(scene.objects) if i != index]
    return {
        "split": scene.split, "true shape": swap.shape, "swapped-in shape": swap.new,
        "shape pair (unordered)": " / ".join(sorted((swap.shape, swap.new))),
        PAIR_BIN: str({swap.shape, swap.new} <= set(CONFUSABLE)),
        "swapped phrase": ("lone phrase" if record.item.relation is None else
                           ("first" if swap.which == 0 else "second") + " of a relation caption"),
        "size word": obj.size, "drawn scale": _band(scale, (0.9, 0.95)),
        "stretch (stretchable shapes)": _band(max(aspect, 1 / aspect), (1.05, 1.15))
        if swap.shape in STRETCHABLE else "not stretchable",
        "|rotation| deg (rotatable shapes)": _band(abs(angle), (5, 10))
        if swap.shape in ROTATABLE else "not rotatable",
        "blur radius px": _band(style.blur, (0.25, 0.5, 0.75)), "noise sd": _band(style.noise, (3, 6.5)),
        "JPEG quality": "none" if style.jpeg_quality is None else _band(style.jpeg_quality, (70,)),
        "supersample": str(style.supersample), "background": style.background, "colour": swap.color,
        "hue position": _band(style.hue_positions[index], (0.2, 0.4, 0.6, 0.8)),
        "objects in scene": str(len(scene.objects)),
        "distance to border px": _band(min(*obj.bbox[:2], image_size - obj.bbox[2], image_size - obj.bbox[3]),
                                       (3, 8)),
        "swapped-in shape elsewhere in scene": str(any(o.shape == swap.new for o in others)),
        "counterfactual L2": _band(counterfactual_distance(scene, style, swap), (500, 800, 1200, 1800)),
    }


def error_rows(bins: list[dict[str, str]], errors: dict[str, np.ndarray], breakdown: str) -> list[str]:
    """Markdown rows of one breakdown: per bin, n and each model's error rate, interval and count."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(bins):
        groups[row[breakdown]].append(i)
    return [f"| {breakdown}: {value} | {len(idx)} | "
            + " | ".join(_rate(int(err[idx].sum()), len(idx)) for err in errors.values()) + " |"
            for value, idx in sorted(groups.items(), key=lambda kv: _order(kv[0]))]


def _order(label: str) -> tuple[float, str]:
    """Bands in numeric order (``< 500`` before ``< 1200``), other labels alphabetically after them."""
    cut, _, number = label.partition(" ")
    if cut in ("<", ">=") and number.replace(".", "", 1).isdigit():
        return float(number) + (0.5 if cut == ">=" else 0.0), ""
    return float("inf"), label


def _rate(k: int, n: int) -> str:
    low, high = wilson_ci(k, n)
    return f"{k / n:.3f} [{low:.2f}, {high:.2f}] ({k})"


def clean(style: Style) -> Style:
    """The style with plain geometry (its scale kept), clean pixels and a solid background."""
    return dataclasses.replace(style, geometry=tuple((s, 1.0, 0.0) for s, _, _ in style.geometry), blur=0.0,
                               noise=0.0, jpeg_quality=None, supersample=3, background="solid",
                               background_param=())


Pairs = list[tuple[ProbeItem, Image.Image]]


def rerender(found: list[Record], how: Callable[[Record], Image.Image]) -> Pairs:
    """(item, image) pairs with each item's image drawn by `how`."""
    return [(r.item, how(r)) for r in found]


def model_errors(pairs: Pairs, models: dict[str, ClipEncoder]
                 ) -> dict[str, np.ndarray]:
    """Per model, whether each item failed (a tie fails, as in the probe)."""
    items = items_from_synthetic(pairs)[0]
    return {name: run_probe(items, encoder).margins <= 0 for name, encoder in models.items()}


def _header(models: dict[str, Any]) -> list[str]:
    return ["| bin | n | " + " | ".join(f"{m} error [95% CI] (count)" for m in models) + " |",
            "|---|---|" + "---|" * len(models)]


def variant_rows(found: list[Record], models: dict[str, ClipEncoder], confusable: np.ndarray) -> list[str]:
    """Error rates with the same items re-rendered: as drawn, clean, plain (all / confusable / other)."""
    variants = {"as drawn": lambda r: r.image, "clean (plain geometry, no blur/noise/JPEG, solid bg)":
                lambda r: render_styled(r.scene, clean(r.style)), "plain renderer (palette, dark bg)":
                lambda r: render_scene(r.scene, None)}
    lines = []
    for name, how in variants.items():
        errors = model_errors(rerender(found, how), models)
        for part, mask in (("all", np.ones_like(confusable)), ("confusable pairs", confusable),
                           ("other pairs", ~confusable)):
            cells = " | ".join(_rate(int(e[mask].sum()), int(mask.sum())) for e in errors.values())
            lines.append(f"| {name}: {part} | {int(mask.sum())} | {cells} |")
    return lines


def _lone(config: SceneConfig, style: StyleConfig) -> SceneConfig:
    return dataclasses.replace(config, style=style, count_weights=(1.0,))


Labelled = tuple[list[Image.Image], torch.Tensor]


def lone_scenes(config: SceneConfig, style: StyleConfig, split: str) -> Labelled:
    """Images and shape labels of the single-object scenes of `split` that the shape read-outs use."""
    scenes = single_object_scenes(_lone(config, style), split, SHAPE_FIT + SHAPE_C + SHAPE_SCORED)
    labels = torch.tensor([SHAPES.index(s.objects[0].shape) for s in scenes])
    return [render_scene(s, style) for s in scenes], labels


def accuracy_cells(predicted: torch.Tensor, labels: torch.Tensor) -> str:
    """Accuracy with its Wilson interval on all scenes, on the confusable shapes and on the others."""
    hit, confusable = predicted == labels, torch.isin(labels, torch.tensor(CONFUSABLE_IDS))
    cells = []
    for mask in (torch.ones_like(hit), confusable, ~confusable):
        k, n = int(hit[mask].sum()), int(mask.sum())
        low, high = wilson_ci(k, n)
        cells.append(f"{k / n:.3f} [{low:.2f}, {high:.2f}]")
    return " | ".join(cells)


def shape_readout(encoder: ClipEncoder, images: list[Image.Image], labels: torch.Tensor) -> tuple[str, str]:
    """(linear probe, zero-shot) accuracy cells on the scored scenes; the probe's C is searched on the
    scenes before them."""
    features = torch.from_numpy(encoder.encode_images(images))  # [N, E], unit rows
    data = FeatureSet(tuple(str(i) for i in range(len(labels))), features, labels)
    cuts = np.cumsum([0, SHAPE_FIT, SHAPE_C, SHAPE_SCORED])
    train, val, scored = (data.subset(np.arange(a, b)) for a, b in zip(cuts[:-1], cuts[1:], strict=True))
    probe = fit(train, search_c(train, val, coarse=C_EXPONENTS, steps=1).c)
    classifier = zero_shot_classifier(encoder.model, encoder.tokenizer, *attribute_prompts("shape"))  # [E, C]
    zero_shot = (scored.features @ classifier).argmax(dim=1)
    return (accuracy_cells(torch.from_numpy(predict(probe, scored)), scored.labels),
            accuracy_cells(zero_shot, scored.labels))


def shape_rows(models: dict[str, ClipEncoder], config: SceneConfig, style: StyleConfig) -> list[str]:
    """Markdown rows: per split and model, linear-probe and zero-shot shape accuracy."""
    lines = ["| split | model | linear probe: all | confusable shapes | other shapes | zero-shot: all | "
             "confusable shapes | other shapes |", "|---" * 8 + "|"]
    for split in SPLITS:
        images, labels = lone_scenes(config, style, split)
        for name, encoder in models.items():
            probe, zero_shot = shape_readout(encoder, images, labels)
            lines.append(f"| {split} | {name} | {probe} | {zero_shot} |")
    return lines


def train_shape_tower(config: SceneConfig, style: StyleConfig, steps: int, batch: int = 128
                      ) -> tuple[nn.Module, Preprocess]:
    """The quickstart's image tower plus a linear head, trained with cross-entropy to name the shape of
    styled single-object ``train`` scenes (AdamW 2e-3, one-cycle, seed 0)."""
    torch.manual_seed(0)
    spec = get_model_config(QuickstartConfig().model)
    head = nn.Linear(spec.embed_dim, len(SHAPES))
    net = nn.Sequential(build_vision_tower(spec.vision, spec.embed_dim), head)
    preprocess, lone = Preprocess(spec.preprocess), _lone(config, style)
    optimizer = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.1)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=steps, pct_start=0.05)
    for step in range(steps):
        scenes = [generate_scene(lone, 0, "train", i) for i in range(step * batch, (step + 1) * batch)]
        pixels = torch.stack([preprocess(render_scene(s, style)) for s in scenes])  # [B, 3, S, S]
        labels = torch.tensor([SHAPES.index(s.objects[0].shape) for s in scenes])
        loss = nn.functional.cross_entropy(net(pixels), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return net.eval(), preprocess


def supervised_rows(config: SceneConfig, style: StyleConfig, steps: int) -> list[str]:
    """Markdown rows: the supervised tower's shape accuracy on the shape read-outs' scored scenes."""
    net, preprocess = train_shape_tower(config, style, steps)
    lines = ["| split | supervised tower: all | confusable shapes | other shapes |", "|---|---|---|---|"]
    start = SHAPE_FIT + SHAPE_C
    for split in SPLITS:
        images, labels = lone_scenes(config, style, split)
        with torch.no_grad():
            predicted = net(torch.stack([preprocess(im) for im in images[start:]])).argmax(dim=1)  # [N]
        lines.append(f"| {split} | {accuracy_cells(predicted, labels[start:])} |")
    return lines


@click.command()
@click.option("--n", default=1000, show_default=True, help="scenes per validation split")
@click.option("--model", "specs", multiple=True, required=True, help="NAME=PATH of a quickstart model")
@click.option("--shapes", is_flag=True, help="also read the shape out of each model's image embedding")
@click.option("--supervised-steps", default=0, show_default=True, help="train the tower on shapes this long")
@click.option("--write", is_flag=True, help="write the quickstart-objerr block of RESULTS.md")
def main(n: int, specs: tuple[str, ...], shapes: bool, supervised_steps: int, write: bool) -> None:
    torch.set_num_threads(1)
    config = QuickstartConfig()
    scenes, style = scene_config(config), config.style or StyleConfig()
    found = list(records(scenes, style, n))
    models = {name: ClipEncoder.load(path) for name, path in (s.split("=", 1) for s in specs)}
    errors = model_errors(rerender(found, lambda r: r.image), models)
    bins = [features(r, scenes.image_size) for r in found]
    lines = _header(models)
    for breakdown in bins[0]:
        lines += error_rows(bins, errors, breakdown)
    confusable = np.array([b[PAIR_BIN] == "True" for b in bins])
    lines += ["", *_header(models), *variant_rows(found, models, confusable)]
    if shapes:
        lines += ["", *shape_rows(models, scenes, style)]
    if supervised_steps:
        lines += ["", *supervised_rows(scenes, style, supervised_steps)]
    text = "\n".join(lines)
    print(text)
    if write:
        write_section("quickstart-objerr-tables", text, container="quickstart-objerr")


if __name__ == "__main__":
    main()
