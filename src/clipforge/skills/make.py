"""PaintSkills-format skill sets drawn by the synthetic renderer, with exact ground truth.

Four skills, one prompt kind each (texts from the renderer's caption grammar):

- object: one object, "a triangle";
- count: one to four objects of one shape, "three circles" (colours vary, as the prompt names none);
- color: one object, "a red square";
- spatial: two objects of different shapes, "a triangle to the left of a star".

Scenes keep the renderer's plain style (dark background, palette colours, no texture), its shapes,
colours and two sizes, but are laid out for reading: objects keep `gap_px` apart and `border_px` from
the edges (so a 2-pixel shift never clips one), and a spatial pair is offset on its asked axis by at
least the renderer's relation margin more than on the other, so DALL-Eval's centre rule reads it
without doubt.

Held-out combinations: ``train`` never shows the renderer's held-out (colour, shape) pairs nor its
held-out (shape, relation) combinations (`SceneConfig`). In ``val``, every other color prompt names a
held-out pair ("a red star") and every other spatial prompt a held-out relation ("a circle above a
cross"); the rest of val is held-out free, so the two halves are reported apart.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass
from pathlib import Path

from clipforge.errors import ConfigError, DataError
from clipforge.fileio import write_bytes_atomic, write_json
from clipforge.skills.records import (
    METADATA_NAME,
    SKILL_SPLITS,
    SKILLS,
    SkillObject,
    SkillRecord,
    write_records,
)
from clipforge.synthetic.render import Box
from clipforge.synthetic.scene import (
    SIZES,
    Scene,
    SceneConfig,
    SceneObject,
    compute_relations,
    heldout_combinations,
    render_scene,
    scene_rng,
    spatial_relation,
)
from clipforge.synthetic.text import Caption, Phrase
from clipforge.version import __version__

FORMAT_NAME = "clipforge-paintskills"
MAX_COUNT = 4
# Renderer relation <-> PaintSkills relation word.
RELATION_OF = {"left of": "left", "right of": "right", "above": "above", "below": "below"}
RENDERER_RELATION = {word: relation for relation, word in RELATION_OF.items()}
_TRIES = 2000


@dataclass(frozen=True)
class SkillSetConfig:
    """What `make_skill_set` writes.

    Attributes:
        n_per_skill: records per skill and split (train and val each get this many).
        seed: seeds every scene; the same config always gives the same files.
        image_size: image side in pixels (32 to 224).
    """

    n_per_skill: int = 200
    seed: int = 0
    image_size: int = 64

    def __post_init__(self) -> None:
        if self.n_per_skill <= 0:
            raise ConfigError(f"skill set: n_per_skill must be positive, got {self.n_per_skill}")
        SceneConfig(image_size=self.image_size)  # validates the size

    @property
    def scene(self) -> SceneConfig:
        """The renderer config whose vocabulary, sizes, margin and held-out combinations are used."""
        return SceneConfig(image_size=self.image_size)

    @property
    def border_px(self) -> int:
        """Free pixels kept between objects and the image edge."""
        return max(3, math.ceil(0.06 * self.image_size))

    @property
    def gap_px(self) -> int:
        """Free pixels kept between two objects' boxes."""
        return max(3, round(0.08 * self.image_size))


def record_id(split: str, index: int) -> str:
    """Record ids: ``val_00012``."""
    return f"{split}_{index:05d}"


def prompt_text(skill: str, objects: tuple[SkillObject, ...]) -> str:
    """The prompt of a skill record, built with the renderer's caption grammar."""
    first = objects[0]
    if skill == "object":
        return Phrase("", first.shape).text()
    if skill == "color":
        return Phrase(first.color, first.shape).text()
    if skill == "count":
        return Phrase("", first.shape, None, len(objects)).text()
    if skill == "spatial":
        relation = RENDERER_RELATION[str(objects[1].relation).rpartition("_")[0]]
        return Caption("relation", (Phrase("", objects[1].shape), Phrase("", first.shape)), relation).text
    raise ConfigError(f"unknown skill {skill!r} (known: {', '.join(SKILLS)})")


class _Sampler:
    """Samples the scene of one record from its own random stream."""

    def __init__(self, config: SkillSetConfig, skill: str, split: str, index: int) -> None:
        self.config, self.scene_config = config, config.scene
        self.skill, self.split, self.index = skill, split, index
        self.rng: random.Random = scene_rng(config.seed, split, index, f"skill-{skill}")
        # Even val records of color and spatial name a held-out combination; no other scene shows one.
        self.heldout = split == "val" and index % 2 == 0 and skill in ("color", "spatial")

    def sample(self) -> tuple[Scene, str | None]:
        """The scene and, for spatial, the renderer relation of object 1 to object 0."""
        for _ in range(_TRIES):
            kinds, relation = self._kinds()
            placed = self._place(len(kinds))
            if placed is None:
                continue
            scene = self._scene(kinds, *placed)
            margin = self.scene_config.margin_px
            found = spatial_relation(scene.objects[1], scene.objects[0], margin) if relation else None
            if found != relation:
                continue
            if bool(heldout_combinations(scene, self.scene_config)) == self.heldout:
                return scene, relation
        raise DataError(f"could not lay out {self.skill} record {self.index} at "
                        f"{self.config.image_size} px in {_TRIES} tries")

    def _kinds(self) -> tuple[list[tuple[str, str]], str | None]:
        """(colour, shape) per object and, for spatial, the asked relation of object 1 to object 0."""
        shapes, rng = self.scene_config.shapes, self.rng
        if self.skill == "color" and self.heldout:
            return [rng.choice(self.scene_config.heldout_pairs)], None
        if self.skill in ("object", "color"):
            shape = rng.choice(shapes)
            return [(self._color_for(shape), shape)], None
        if self.skill == "count":
            shape = rng.choice(shapes)
            return [(self._color_for(shape), shape) for _ in range(rng.randint(1, MAX_COUNT))], None
        if self.heldout:
            subject, relation = rng.choice(self.scene_config.heldout_relations)
        else:
            subject, relation = rng.choice(shapes), rng.choice(tuple(RELATION_OF))
        reference = rng.choice([s for s in shapes if s != subject])
        return [(self._color_for(reference), reference), (self._color_for(subject), subject)], relation

    def _color_for(self, shape: str) -> str:
        """A colour that does not make a held-out pair with `shape`."""
        banned = set(self.scene_config.heldout_pairs)
        return self.rng.choice([c for c in self.scene_config.colors if (c, shape) not in banned])

    def _place(self, count: int) -> tuple[list[Box], list[str]] | None:
        """Boxes by rejection, `gap_px` apart and `border_px` inside; None when they did not fit."""
        sizes = [self.rng.choice(SIZES) for _ in range(count)]
        boxes: list[Box] = []
        for size in sizes:
            side = self.scene_config.side(size)
            box = next((b for b in (self._box(side) for _ in range(50)) if self._apart(b, boxes)), None)
            if box is None:
                return None
            boxes.append(box)
        return boxes, sizes

    def _box(self, side: int) -> Box:
        size, border = self.config.image_size, self.config.border_px
        x0 = self.rng.randint(border, size - border - side)
        y0 = self.rng.randint(border, size - border - side)
        return (x0, y0, x0 + side, y0 + side)

    def _apart(self, box: Box, boxes: list[Box]) -> bool:
        gap = self.config.gap_px
        return all(box[0] >= b[2] + gap or b[0] >= box[2] + gap or box[1] >= b[3] + gap
                   or b[1] >= box[3] + gap for b in boxes)

    def _scene(self, kinds: list[tuple[str, str]], boxes: list[Box], sizes: list[str]) -> Scene:
        drawn = enumerate(zip(kinds, sizes, boxes, strict=True))
        objects = tuple(SceneObject(shape, color, size, box, k) for k, ((color, shape), size, box) in drawn)
        size, margin = self.config.image_size, self.scene_config.margin_px
        return Scene(self.config.seed, self.split, self.index, size, margin, objects,
                     compute_relations(objects, size, margin))


def skill_record(config: SkillSetConfig, skill: str, split: str, index: int) -> tuple[SkillRecord, Scene]:
    """Record `index` of a skill and split with its renderer scene; a pure function of the arguments."""
    scene, relation = _Sampler(config, skill, split, index).sample()
    size = config.image_size
    objects = tuple(
        SkillObject(k, o.shape, o.color, None if k != 1 or relation is None else f"{RELATION_OF[relation]}_0",
                    round((o.bbox[2] - o.bbox[0]) / size, 4), o.bbox, o.size)
        for k, o in enumerate(scene.objects))
    heldout = tuple(heldout_combinations(scene, config.scene)) if skill in ("color", "spatial") else ()
    record = SkillRecord(record_id(split, index), skill, split, prompt_text(skill, objects), objects,
                         "plain", size, heldout)
    return record, scene


def record_scene(record: SkillRecord) -> Scene:
    """The renderer scene of a clipforge skill record (objects need boxes).

    Raises:
        DataError: an object has no bbox (e.g. a real PaintSkills record).
    """
    objects = []
    for obj in record.objects:
        if obj.bbox is None or record.image_size is None:
            raise DataError(f"record {record.id} has no boxes or image size to render from")
        objects.append(SceneObject(obj.shape, obj.color, obj.size or "small", obj.bbox, obj.id))
    size = record.image_size or 0
    margin = SceneConfig(image_size=size).margin_px
    return Scene(0, record.split, 0, size, margin, tuple(objects), compute_relations(tuple(objects), size,
                                                                                      margin))


def make_skill_set(out: Path, config: SkillSetConfig) -> dict[str, dict[str, int]]:
    """Writes a skill set in the PaintSkills layout (see `clipforge.skills.records`).

    Returns:
        ``{skill: {split: records}}``.
    """
    if (out / METADATA_NAME).exists():
        raise DataError(f"{out} already holds a skill set ({METADATA_NAME}); remove it or pick another")
    written: dict[str, dict[str, int]] = {}
    for skill in SKILLS:
        for split in SKILL_SPLITS:
            records = []
            for index in range(config.n_per_skill):
                record, scene = skill_record(config, skill, split, index)
                write_bytes_atomic(out / skill / "images" / record.image_name, _png(scene))
                records.append(record)
            write_records(out, skill, split, records)
            written.setdefault(skill, {})[split] = len(records)
    write_json(metadata(config), out / METADATA_NAME)
    return written


def _png(scene: Scene) -> bytes:
    buffer = io.BytesIO()
    render_scene(scene).save(buffer, format="PNG")
    return buffer.getvalue()


def metadata(config: SkillSetConfig) -> dict[str, object]:
    """The content of ``metadata.json``: vocabulary (PaintSkills' ``Shape``/``Color`` keys) and settings."""
    scene = config.scene
    return {
        "format": FORMAT_NAME, "version": __version__, "seed": config.seed,
        "image_size": config.image_size, "n_per_skill": config.n_per_skill, "style": "plain",
        "Shape": list(scene.shapes), "Color": list(scene.colors), "Relation": list(RENDERER_RELATION),
        "Count": list(range(1, MAX_COUNT + 1)), "border_px": config.border_px, "gap_px": config.gap_px,
        "relation_margin_px": scene.margin_px,
        "heldout_pairs": [list(p) for p in scene.heldout_pairs],
        "heldout_relations": [list(r) for r in scene.heldout_relations],
    }
