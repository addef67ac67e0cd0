"""Zero-shot attribute labels of single-object synthetic scenes: the prompts and the labelled images.

`clipforge eval zeroshot` and the quickstart classify single-object scenes by shape and by colour; this
module says which class names and prompts that uses and reads the labelled scenes from a `clipforge synth`
folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from clipforge.data.transforms import load_image
from clipforge.errors import DataError, ImageError
from clipforge.synthetic.scene import COLORS, SHAPES
from clipforge.synthetic.text import image_name

ATTRIBUTES = ("shape", "color")


def attribute_prompts(attribute: str) -> tuple[list[str], list[str]]:
    """Class names and prompt templates for one synthetic attribute.

    The prompts name both attributes, as the training captions do, and the ensemble runs over the
    other attribute: shape "circle" is the mean of "a red circle", "a green circle", ...
    """
    if attribute == "shape":
        return list(SHAPES), [f"a {color} {{}}" for color in COLORS]
    if attribute == "color":
        return list(COLORS), [f"a {{}} {shape}" for shape in SHAPES]
    raise DataError(f"unknown zero-shot attribute '{attribute}' (known: {', '.join(ATTRIBUTES)})")


@dataclass(frozen=True)
class LabelledScene:
    """A single-object synthetic scene on disk and its attribute labels."""

    image: Path
    labels: dict[str, str]


def read_single_object_scenes(root: Path, split: str | None = None) -> list[LabelledScene]:
    """The single-object scenes listed in ``root/scenes.jsonl`` (of `split`, when given).

    Raises:
        DataError: ``scenes.jsonl`` is missing or a line is not a JSON object.
    """
    path = root / "scenes.jsonl"
    if not path.is_file():
        raise DataError(f"synthetic scenes file not found: {path}")
    scenes = []
    for line_no, line in enumerate(path.read_text().splitlines()):
        try:
            scene = json.loads(line)
            objects = scene["objects"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f"{path}:{line_no + 1}: not a scene record ({err})") from err
        if len(objects) == 1 and split in (None, scene.get("split")):
            labels = {a: str(objects[0][a]) for a in ATTRIBUTES}
            scenes.append(LabelledScene(root / str(scene.get("image", image_name(line_no))), labels))
    return scenes


def load_labelled_scenes(root: Path, split: str | None = None
                         ) -> tuple[list[Image.Image], list[dict[str, str]], int]:
    """Images and labels of the single-object scenes under `root`, and how many images were unreadable."""
    images, labels, bad = [], [], 0
    for scene in read_single_object_scenes(root, split):
        try:
            images.append(load_image(scene.image))
            labels.append(scene.labels)
        except ImageError:
            bad += 1
    return images, labels, bad
