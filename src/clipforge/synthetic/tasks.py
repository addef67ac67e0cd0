"""Classification tasks on synthetic scenes, rendered in memory: shape, colour, count and relation.

Every task is a pure function of (task, image size, split): `TASK_SEED` scenes of the `SPLIT_SIZES`
split, drawn by `generate_scene` with no held-out combinations, so the classes stay balanced.

    shape      one object; the class is its shape (6); prompts name a colour: "a red {}", ...
    color      one object; the class is its colour (6); prompts name a shape: "a {} circle", ...
    count      1-4 green crosses (a quarter each); classes "one green cross" ... "four green crosses"
    relation   a red triangle and a green star; the class is where the triangle is (left of, right of,
               above, below the star), as the full caption "a red triangle to the left of a green star"

Prompt templates are the training captions' own ("a photo of {}", "there is {}", ...). The count and
relation objects avoid the quickstart's held-out combinations (circles above, squares left of, ...), so
a model trained by `clipforge quickstart` has seen every class's kind of caption.
"""

from __future__ import annotations

import dataclasses

from clipforge.data.labelled import ClassificationData, LabelledImage, png_bytes
from clipforge.data.readers import Record
from clipforge.errors import DataError
from clipforge.synthetic.scene import (
    COLORS,
    SHAPES,
    Scene,
    SceneConfig,
    compute_relations,
    generate_scene,
    render_scene,
    spatial_relation,
)
from clipforge.synthetic.text import RELATION_WORDS, TEMPLATES, Phrase

TASKS = ("shape", "color", "count", "relation")
TASK_SPLITS = ("train", "val", "test")
SPLIT_SIZES = {"train": 1000, "val": 500, "test": 1000}
TASK_SEED = 7
DEFAULT_SIZE = 64
COUNTED = ("green", "cross")  # (colour, shape) of the counted objects
SUBJECT, OBJECT = ("red", "triangle"), ("green", "star")  # the relation task's pair
SPATIAL = ("left of", "right of", "above", "below")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def task_classes(task: str) -> tuple[list[str], list[str]]:
    """Class names and prompt templates of a task."""
    if task == "shape":
        return list(SHAPES), [t.format(objects=f"{_article(c)} {c} {{}}") for c in COLORS
                              for t in TEMPLATES["attribute"]]
    if task == "color":
        return list(COLORS), [t.format(objects=f"a {{}} {s}") for s in SHAPES for t in TEMPLATES["attribute"]]
    if task == "count":
        return [Phrase(*COUNTED, count=n).text() for n in range(1, 5)], [
            t.format(objects="{}") for t in TEMPLATES["count"]]
    if task == "relation":
        a, b = Phrase(*SUBJECT).text(), Phrase(*OBJECT).text()
        return [f"{a} {RELATION_WORDS[r]} {b}" for r in SPATIAL], ["{}", "a photo of {}", "there is {}"]
    raise DataError(f"unknown synthetic task '{task}' (known: {', '.join(TASKS)})")


def _kinds(task: str, count: int) -> list[tuple[str, str]] | None:
    """(colour, shape) the task paints its objects with; None keeps the sampled ones."""
    if task == "count":
        return [COUNTED] * count
    if task == "relation":
        return [SUBJECT, OBJECT]
    return None


def task_scene(task: str, size: int, split: str, index: int) -> tuple[Scene, int]:
    """Scene `index` of a task's split and its label."""
    count = 1 + index % 4 if task == "count" else 2 if task == "relation" else 1
    weights = tuple(1.0 if n == count else 0.0 for n in range(1, count + 1))
    config = SceneConfig(image_size=size, count_weights=weights, heldout_pairs=(), heldout_relations=())
    scene = generate_scene(config, TASK_SEED, split, index)
    kinds = _kinds(task, count)
    if kinds is not None:
        objects = tuple(dataclasses.replace(o, color=c, shape=s)
                        for o, (c, s) in zip(scene.objects, kinds, strict=True))
        scene = dataclasses.replace(scene, objects=objects,
                                    relations=compute_relations(objects, size, scene.margin))
    return scene, _label(task, scene)


def _label(task: str, scene: Scene) -> int:
    objects = scene.objects
    if task == "shape":
        return SHAPES.index(objects[0].shape)
    if task == "color":
        return COLORS.index(objects[0].color)
    if task == "count":
        return len(objects) - 1
    relation = spatial_relation(objects[0], objects[1], scene.margin)  # two-object scenes always have one
    return SPATIAL.index(str(relation))


class SceneTask(ClassificationData):
    """A synthetic task's split, rendered on demand (see the module docstring)."""

    def __init__(self, name: str, task: str, size: int, split: str) -> None:
        if split not in TASK_SPLITS:
            raise DataError(f"'{name}': synthetic tasks have splits {', '.join(TASK_SPLITS)}, not '{split}'")
        if not 32 <= size <= 224:
            raise DataError(f"'{name}': scene size must be 32-224 pixels, got {size}")
        classnames, templates = task_classes(task)
        self.scenes: dict[str, Scene] = {}
        items = []
        for index in range(SPLIT_SIZES[split]):
            scene, label = task_scene(task, size, split, index)
            key = f"{task}-{size}-{split}-{index:05d}"
            self.scenes[key] = scene
            items.append(LabelledImage(key, label, f"{name}#{index}"))
        super().__init__(name, classnames, items, templates)

    def read_bytes(self, record: Record) -> bytes:
        return png_bytes(render_scene(self.scenes[record.key]))
