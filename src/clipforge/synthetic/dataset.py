"""Exact-truth synthetic spatial scenes: an in-memory training dataset, probe items and an on-disk layout.

Scenes of 1-4 coloured shapes are drawn with PIL from exact metadata (`scene`); captions, hard
negatives and probe items are built from that metadata and checked against it (`text`).
Everything is a pure function of ``(config, seed, split, index)``.

Splits: ``train``, ``val`` and ``test`` never show the held-out (colour, shape) objects nor the held-out
(shape, relation) combinations of the `SceneConfig`; every ``test_heldout`` scene shows at least one.
With a style, ``val_style`` and ``test_style`` are val- and test-like scenes in the held-out style.

On disk (`write_synthetic`, ``clipforge synth``)::

    DIR/images/000000.png   one RGB PNG per scene, numbered across splits
    DIR/captions.csv        filepath,caption,split   (filepath relative to DIR; the scene's own caption)
    DIR/scenes.jsonl        one `Scene.to_json` object per line, plus "id", "image", "caption", "heldout"
                            and, with a style, the scene's "style" (`Style.to_json`)
    DIR/probes.jsonl        `ProbeItem.to_json` lines for the test, test_heldout and test_style scenes
    DIR/config.json         the SceneConfig and seed that made it
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from clipforge.errors import ConfigError, DataError
from clipforge.synthetic.render import rgb_array
from clipforge.synthetic.scene import (
    COLORS,
    SHAPES,
    SPLITS,
    Scene,
    SceneConfig,
    SceneObject,
    generate_scene,
    heldout_combinations,
    render_scene,
    scene_rng,
    scene_style,
)
from clipforge.synthetic.text import (
    NEGATIVE_KINDS,
    Caption,
    ProbeItem,
    caption_names_heldout,
    counterfactual_scene,
    hard_negatives,
    image_name,
    is_false,
    is_true,
    padded_negatives,
    probe_captions,
    probe_items,
    scene_caption,
)

__all__ = [
    "COLORS",
    "NEGATIVE_KINDS",
    "SHAPES",
    "SPLITS",
    "SPLIT_FRACTIONS",
    "Caption",
    "ProbeItem",
    "Scene",
    "SceneConfig",
    "SceneObject",
    "SynthSummary",
    "SyntheticScenes",
    "generate_scene",
    "hard_negatives",
    "heldout_combinations",
    "image_tensor",
    "is_false",
    "is_true",
    "load_probe_items",
    "load_scenes",
    "padded_negatives",
    "probe_items",
    "probes_naming_heldout",
    "render_scene",
    "scene_caption",
    "single_object_scenes",
    "split_counts",
    "synthetic_probe_items",
    "write_synthetic",
]

SPLIT_FRACTIONS = {"train": 0.8, "val": 0.05, "test": 0.1, "test_heldout": 0.05}
PROBE_SPLITS = ("test", "test_heldout", "test_style")  # splits whose probe items probes.jsonl lists


def image_tensor(image: Image.Image) -> torch.Tensor:
    """uint8 tensor [3, H, W] of an RGB PIL image."""
    channels_first = rgb_array(image).transpose(2, 0, 1)  # [H, W, 3] -> [3, H, W]
    return torch.from_numpy(np.ascontiguousarray(channels_first))


class SyntheticScenes(Dataset[dict[str, Any]]):
    """Map-style dataset of `length` scenes rendered on the fly; item `i` depends only on
    ``(config, seed, split, i)``, so DataLoader workers and resuming from any position are safe.

    Item contract (a dict):
        image: uint8 tensor [3, H, W], RGB, H = W = ``config.image_size``.
        caption: str, the scene's own caption (`scene_caption`, the same as in ``captions.csv``).
        negatives: list[str] of exactly ``len(negative_kinds)`` captions, each definitely false for the
            scene; slot k is of kind ``negative_kinds[k]`` when that kind applies to the caption, otherwise
            another false caption (see `padded_negatives`). Empty when `negative_kinds` is empty.
        index: int, the item's index.
        negative_image, negative_image_mask: only with ``negative_images > 0``: a uint8 [3, H, W] image of
            the scene with the two objects of its spatial caption in each other's places
            (`counterfactual_scene`, drawn in the scene's own style draw) and True, for a seeded
            `negative_images` share of the scenes where one exists; otherwise zeros and False.

    The default DataLoader collate turns `negatives` into ``len(negative_kinds)`` lists of B strings.
    """

    def __init__(self, config: SceneConfig, split: str, length: int, seed: int = 0,
                 negative_kinds: Sequence[str] = NEGATIVE_KINDS, negative_images: float = 0.0) -> None:
        if length <= 0:
            raise ConfigError(f"synthetic dataset length must be positive, got {length}")
        unknown = [k for k in negative_kinds if k not in NEGATIVE_KINDS]
        if unknown:
            known = ", ".join(NEGATIVE_KINDS)
            raise ConfigError(f"unknown hard-negative kind {unknown[0]!r} (known: {known})")
        generate_scene(config, seed, split, 0)  # fails early on a bad split or config
        self.config, self.split, self.length, self.seed = config, split, length, seed
        self.negative_kinds = tuple(negative_kinds)
        self.negative_images = negative_images

    def __len__(self) -> int:
        return self.length

    def scene(self, index: int) -> Scene:
        """Metadata of item `index`."""
        if not 0 <= index < self.length:
            raise IndexError(f"scene index {index} out of range [0, {self.length})")
        return generate_scene(self.config, self.seed, self.split, index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene = self.scene(index)
        caption = scene_caption(scene, self.config)
        rng = scene_rng(self.seed, self.split, index, "negatives")
        negatives = (padded_negatives(scene, caption, self.negative_kinds, rng, self.config)
                     if self.negative_kinds else [])
        item = {"image": image_tensor(render_scene(scene, self.config.style)), "caption": caption.text,
                "negatives": negatives, "index": index}
        if self.negative_images:
            item.update(self._negative_image(scene, caption, index))
        return item

    def _negative_image(self, scene: Scene, caption: Caption, index: int) -> dict[str, Any]:
        drawn = scene_rng(self.seed, self.split, index, "negative_image").random() < self.negative_images
        swapped = counterfactual_scene(scene, caption, self.config) if drawn else None
        if swapped is None:
            size = self.config.image_size
            blank = torch.zeros(3, size, size, dtype=torch.uint8)
            return {"negative_image": blank, "negative_image_mask": False}
        return {"negative_image": image_tensor(render_scene(swapped, self.config.style)),
                "negative_image_mask": True}


def single_object_scenes(config: SceneConfig, split: str, n: int, seed: int = 0) -> list[Scene]:
    """`n` one-object scenes of `split` for zero-shot evaluation; labels are ``scene.objects[0].shape``
    and ``.color`` (class lists: ``config.shapes``, ``config.colors``)."""
    lone = replace(config, count_weights=(1.0,))
    return [generate_scene(lone, seed, split, i) for i in range(n)]


def synthetic_probe_items(config: SceneConfig, split: str, n: int, seed: int = 0,
                          first_id: int = 0) -> Iterator[tuple[ProbeItem, Image.Image]]:
    """Probe items of the first `n` scenes of `split` with their rendered images, in memory.

    These are the items that `write_synthetic` stores in ``probes.jsonl`` for the same arguments, where
    `first_id` is the id of the split's first scene on disk (0 when only this split was written).
    """
    for index in range(n):
        scene = generate_scene(config, seed, split, index)
        items = probe_items(scene, first_id + index)
        if items:
            image = render_scene(scene, config.style)
            yield from ((item, image) for item in items)


@dataclass(frozen=True)
class SynthSummary:
    """What `write_synthetic` wrote."""

    out: Path
    scenes: dict[str, int]
    probes: int


def split_counts(n: int, split: str | Sequence[str]) -> dict[str, int]:
    """Scenes per split: `n` in each split named, or for ``"all"`` `SPLIT_FRACTIONS` of `n` (rest: train)."""
    if n <= 0:
        raise ConfigError(f"number of scenes must be positive, got {n}")
    if split != "all":
        names = (split,) if isinstance(split, str) else tuple(split)
        unknown = [name for name in names if name not in SPLITS]
        if unknown or not names or len(set(names)) != len(names):
            raise ConfigError(f"unknown or repeated split in {names} (known: all, {', '.join(SPLITS)})")
        return {name: n for name in names}
    counts = {name: int(n * fraction) for name, fraction in SPLIT_FRACTIONS.items()}
    counts["train"] += n - sum(counts.values())
    return counts


def write_synthetic(out: Path, n: int, *, seed: int = 0, config: SceneConfig | None = None,
                    split: str | Sequence[str] = "all") -> SynthSummary:
    """Writes `n` scenes in the on-disk layout described in the module docstring.

    Args:
        out: target folder; created if needed, and must not already hold a dataset.
        n: number of scenes (of each split, when splits are named).
        seed: dataset seed.
        config: scene config (defaults to ``SceneConfig()``).
        split: a split or splits to write `n` scenes each of, or ``"all"`` for `SPLIT_FRACTIONS` of `n`
            (the four splits without style: ``val_style`` and ``test_style`` must be named).

    Raises:
        ConfigError: n <= 0 or an unknown split.
        DataError: `out` cannot be written or already holds a dataset.
    """
    config = config or SceneConfig()
    counts = split_counts(n, split)
    for name in counts:
        generate_scene(config, seed, name, 0)  # a split the config cannot make fails before any writing
    _prepare(out)
    probes = 0
    try:
        with _Writer(out) as writer:
            for name, count in counts.items():
                probes += writer.add_split(config, seed, name, count)
        (out / "config.json").write_text(json.dumps({"seed": seed, "scene_config": asdict(config)}, indent=2))
    except OSError as err:
        raise DataError(f"cannot write synthetic data to {out}: {err.strerror or err}") from err
    return SynthSummary(out, counts, probes)


def _prepare(out: Path) -> None:
    if (out / "scenes.jsonl").exists():
        raise DataError(f"{out} already holds a synthetic dataset (scenes.jsonl); remove it or pick another")
    try:
        (out / "images").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create {out / 'images'}: {err.strerror or err}") from err


class _Writer:
    """Appends scenes to the three index files and numbers them across splits."""

    def __init__(self, out: Path) -> None:
        self.out, self.next_id = out, 0

    def __enter__(self) -> _Writer:
        self.captions = (self.out / "captions.csv").open("w", newline="")
        self.scenes = (self.out / "scenes.jsonl").open("w")
        self.probes = (self.out / "probes.jsonl").open("w")
        self.csv = csv.writer(self.captions)
        self.csv.writerow(["filepath", "caption", "split"])
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in (self.captions, self.scenes, self.probes):
            handle.close()

    def add_split(self, config: SceneConfig, seed: int, split: str, count: int) -> int:
        """Writes `count` scenes of `split`; returns how many probe items they gave."""
        probes = 0
        for index in range(count):
            scene_id, scene = self.next_id, generate_scene(config, seed, split, index)
            self.next_id += 1
            render_scene(scene, config.style).save(self.out / image_name(scene_id))
            caption = scene_caption(scene, config).text
            self.csv.writerow([image_name(scene_id), caption, split])
            record = {"id": scene_id, "image": image_name(scene_id), "caption": caption,
                      "heldout": heldout_combinations(scene, config), **scene.to_json()}
            if config.style is not None:
                record["style"] = scene_style(scene, config.style).to_json()
            self.scenes.write(json.dumps(record) + "\n")
            if split in PROBE_SPLITS:
                for item in probe_items(scene, scene_id):
                    self.probes.write(json.dumps(item.to_json()) + "\n")
                    probes += 1
        return probes


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"synthetic dataset file not found: {path}")
    with path.open() as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{path}:{number}: not JSON ({err.msg})") from err


def load_scenes(root: Path) -> list[Scene]:
    """Scenes of a `write_synthetic` folder, in id order."""
    return [Scene.from_json(record) for record in _read_jsonl(Path(root) / "scenes.jsonl")]


def probes_naming_heldout(root: Path, config: SceneConfig) -> set[tuple[int, str]]:
    """``(scene id, kind)`` of the probe items of a `write_synthetic` folder whose true caption names a
    held-out (colour, shape) or (shape, relation) combination of `config` (only ``test_heldout`` items can).

    The items' captions are made again from the scenes' metadata, as `write_synthetic` made them.
    """
    scenes = enumerate(load_scenes(root))
    return {(scene_id, kind) for scene_id, scene in scenes if scene.split in PROBE_SPLITS
            for kind, true, _ in probe_captions(scene) if caption_names_heldout(true, config)}


def load_probe_items(root: Path) -> list[ProbeItem]:
    """Probe items of a `write_synthetic` folder; `ProbeItem.image` is relative to `root`."""
    return [ProbeItem.from_json(record) for record in _read_jsonl(Path(root) / "probes.jsonl")]
