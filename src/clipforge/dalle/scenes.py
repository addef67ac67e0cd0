"""Training scenes for the generator: the four image skills' kinds of picture with the prompts that ask
for them, drawn by the synthetic renderer (plain style).

- object:  one object of any colour — "a star"
- color:   one object of the asked colour — "a red star"
- count:   1-4 objects of the asked shape, any colours — "three stars"
- spatial: two objects of different shapes, the first in the asked relation to the second by the
  centre rule (the dominant axis wins by at least the scene margin) — "a star to the left of a circle"

A scene is a pure function of ``(config, seed, index)``. The compositional hold-out of `SceneConfig`
is respected: no scene shows a held-out (colour, shape) object, and no spatial scene shows a held-out
(shape, relation), read from either object (a circle above a star is also a star below a circle).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image

from clipforge.errors import ConfigError
from clipforge.synthetic.render import Box
from clipforge.synthetic.scene import (
    OPPOSITE,
    Scene,
    SceneConfig,
    SceneObject,
    compute_relations,
    names_heldout,
    render_scene,
    scene_rng,
    spatial_relation,
)
from clipforge.synthetic.text import NUMBER_WORDS, RELATION_WORDS

SKILLS = ("object", "count", "color", "spatial")
_TRIES = 200


@dataclass(frozen=True)
class SkillSceneConfig:
    """What the generator is trained on.

    Attributes:
        scene: vocabulary, image size, sizes, margin and hold-out (its other fields are unused).
        skill_weights: relative frequency of object, count, color and spatial scenes.
        max_count: the largest count drawn for count scenes.
        align_px: when positive, boxes start on multiples of this many pixels (e.g. the dVAE's cell
            side, so that an object is always drawn by the same tokens); 0 places them anywhere.
    """

    scene: SceneConfig = SceneConfig(image_size=32)
    skill_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    max_count: int = 4
    align_px: int = 0

    @property
    def border_px(self) -> int:
        """Free pixels between objects and the image edge (as in the skill sets)."""
        return max(3, math.ceil(0.06 * self.scene.image_size))

    @property
    def gap_px(self) -> int:
        """Free pixels between two objects' boxes (as in the skill sets)."""
        return max(3, round(0.08 * self.scene.image_size))

    def __post_init__(self) -> None:
        if len(self.skill_weights) != 4 or min(self.skill_weights) < 0 or sum(self.skill_weights) <= 0:
            raise ConfigError("skill scenes: skill_weights needs 4 non-negative weights with a positive sum")
        if not 1 <= self.max_count <= 4:
            raise ConfigError(f"skill scenes: max_count must be in [1, 4], got {self.max_count}")


@dataclass(frozen=True)
class SkillScene:
    """A scene, the prompt that asks for it, its skill and (spatial scenes) the asked relation of the first
    object to the second."""

    scene: Scene
    text: str
    skill: str
    relation: str | None = None

    def render(self) -> Image.Image:
        return render_scene(self.scene)


def _article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def _plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


def prompt_text(skill: str, objects: tuple[SceneObject, ...], relation: str | None = None) -> str:
    """The prompt of a skill scene, e.g. "a red star", "three stars", "a star above a circle"."""
    first = objects[0]
    if skill == "object":
        return _article(first.shape)
    if skill == "color":
        return _article(f"{first.color} {first.shape}")
    if skill == "count":
        noun = first.shape if len(objects) == 1 else _plural(first.shape)
        return f"{NUMBER_WORDS[len(objects)]} {noun}"
    return f"{_article(first.shape)} {RELATION_WORDS[str(relation)]} {_article(objects[1].shape)}"


def skill_scene(config: SkillSceneConfig, seed: int, index: int) -> SkillScene:
    """Scene `index` of the stream seeded with `seed` (the same arguments give the same scene)."""
    rng = scene_rng(seed, "generator", index, "skill")
    skill = rng.choices(SKILLS, weights=config.skill_weights)[0]
    # drawn once, so that placement retries cannot skew the count distribution towards few objects
    count = rng.randint(1, config.max_count) if skill == "count" else 2 if skill == "spatial" else 1
    for _ in range(_TRIES):
        drawn = _sample(config, skill, count, rng)
        if drawn is not None:
            objects, relation = drawn
            scene_config = config.scene
            scene = Scene(seed, "train", index, scene_config.image_size, scene_config.margin_px, objects,
                          compute_relations(objects, scene_config.image_size, scene_config.margin_px))
            return SkillScene(scene, prompt_text(skill, objects, relation), skill, relation)
    raise ConfigError(f"skill scenes: could not place a {skill} scene in {_TRIES} tries")


def _kinds(config: SceneConfig, skill: str, rng: random.Random, count: int) -> list[tuple[str, str]]:
    """(colour, shape) per object, never a held-out pair."""
    held = set(config.heldout_pairs)
    allowed = [(c, s) for c in config.colors for s in config.shapes if (c, s) not in held]
    first = rng.choice(allowed)
    if skill == "count":
        same = [pair for pair in allowed if pair[1] == first[1]]
        return [first] + [rng.choice(same) for _ in range(count - 1)]
    if skill == "spatial":
        other = [pair for pair in allowed if pair[1] != first[1]]
        return [first, rng.choice(other)]
    return [first]


def _sample(config: SkillSceneConfig, skill: str, count: int, rng: random.Random
            ) -> tuple[tuple[SceneObject, ...], str | None] | None:
    """One placement attempt; None when it failed (the caller retries)."""
    scene = config.scene
    kinds = _kinds(scene, skill, rng, count)
    boxes: list[Box] = []
    for _ in range(count):
        side = scene.side(rng.choice(scene.sizes))
        box = _free_box(config, side, boxes, rng)
        if box is None:
            return None
        boxes.append(box)
    drawn = enumerate(zip(kinds, boxes, strict=True))
    objects = tuple(SceneObject(s, c, _size_word(scene, b), b, k) for k, ((c, s), b) in drawn)
    if skill != "spatial":
        return objects, None
    relation = spatial_relation(objects[0], objects[1], scene.margin_px)
    if relation is None or names_heldout(scene, relation=(objects[0].shape, relation, objects[1].shape)):
        return None
    return objects, relation


def swap_names_heldout(config: SkillSceneConfig, scene: SkillScene) -> bool:
    """Whether the relation swap of a spatial scene's prompt claims a held-out (shape, relation).

    No scene shows such a claim, so a caption that makes one is never a positive: used as a hard negative
    it would teach that the wording itself is false, whatever the image, and a re-ranker would then reject
    the held-out prompts' right pictures.
    """
    if scene.relation is None:
        return False
    first, second = scene.scene.objects[:2]
    return names_heldout(config.scene, relation=(first.shape, OPPOSITE[scene.relation], second.shape))


def _size_word(config: SceneConfig, box: Box) -> str:
    return next(size for size in config.sizes if config.side(size) == box[2] - box[0])


def _free_box(config: SkillSceneConfig, side: int, boxes: list[Box], rng: random.Random) -> Box | None:
    """A box `border_px` inside the image and `gap_px` away from `boxes`, or None."""
    low, high, gap = config.border_px, config.scene.image_size - config.border_px - side, config.gap_px
    if config.align_px:
        low, high = -(-low // config.align_px), high // config.align_px  # starts in units of align_px
    step = config.align_px or 1
    for _ in range(_TRIES):
        x0, y0 = rng.randint(low, high) * step, rng.randint(low, high) * step
        box = (x0, y0, x0 + side, y0 + side)
        if not any(box[0] < b[2] + gap and b[0] < box[2] + gap and box[1] < b[3] + gap and b[1] < box[3] + gap
                   for b in boxes):
            return box
    return None

