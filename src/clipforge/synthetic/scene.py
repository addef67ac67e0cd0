"""Synthetic spatial scenes with exact metadata: sampling, relations from geometry, PIL rendering.

A `Scene` is plain data (objects with shape, colour, size, bbox and depth; relations computed from the
geometry) that fully determines its pixels, so image and metadata cannot disagree. A scene is a pure
function of ``(config, seed, split, index)``: see `generate_scene`.

Relations. For objects a, b with bbox centres offset by ``(dx, dy) = centre(a) - centre(b)`` (y grows
downwards) and a margin ``m`` in pixels, "a left of b" is labelled when ``|dx| - |dy| > m`` and ``dx < 0``
(likewise right of / above / below on the dominant axis). Pairs inside the margin are not labelled.
"a in front of b" is labelled when a is drawn after b and their drawn shapes overlap by at least
`MIN_OVERLAP` of the smaller shape.

Compositional hold-out. ``SceneConfig.heldout_pairs`` (colour, shape) objects and
``heldout_relations`` (shape, relation) combinations, with the shape as the subject, never occur in the
``train``, ``val`` and ``test`` splits (a held-out relation is excluded even where it is merely plausible,
i.e. within the margin); every ``test_heldout`` scene shows at least one of them (labelled).

Styles. With ``SceneConfig.style`` set, `render_scene` draws each scene in a randomized style
(`clipforge.synthetic.style`) sampled from its own random stream, so metadata never depends on style.
The ``val_style`` and ``test_style`` splits are sampled like ``val`` and ``test`` (no held-out
combinations) but drawn in the held-out style: values of the style that no other split ever uses.
Without a style every scene is drawn plainly, on the palette's exact colours.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from clipforge.errors import ConfigError, DataError
from clipforge.synthetic.render import (
    PALETTE,
    SHAPES,
    Box,
    background,
    degrade,
    draw_shape,
    draw_styled_shape,
    shape_mask,
    styled_background,
)
from clipforge.synthetic.style import HELDOUT_STYLE_SPLITS, Style, StyleConfig, sample_style

COLORS = tuple(PALETTE)
SIZES = ("small", "large")
SIZE_FRACTION = {"small": 0.22, "large": 0.34}  # bbox side / image side
SPATIAL_RELATIONS = ("left of", "right of", "above", "below")
DEPTH_RELATIONS = ("in front of", "behind")
RELATIONS = SPATIAL_RELATIONS + DEPTH_RELATIONS
OPPOSITE = {
    "left of": "right of", "right of": "left of", "above": "below", "below": "above",
    "in front of": "behind", "behind": "in front of",
}
SPLITS = ("train", "val", "test", "test_heldout", *HELDOUT_STYLE_SPLITS)
DEFAULT_HELDOUT_PAIRS = (("red", "star"), ("green", "diamond"), ("blue", "triangle"), ("yellow", "cross"))
DEFAULT_HELDOUT_RELATIONS = (("circle", "above"), ("square", "left of"))

MIN_OVERLAP = 0.1  # overlap / smaller shape area for an occlusion to be labelled
_GAP = 2  # pixels kept free between non-occluding objects
_PLACE_TRIES = 100
_SCENE_TRIES = 1000


@dataclass(frozen=True)
class SceneConfig:
    """What scenes look like; built from keywords and validated on construction.

    Attributes:
        image_size: side of the square RGB image in pixels (32 to 224).
        count_weights: relative frequency of scenes with 1, 2, 3, 4 objects (length 1 to 4).
        shapes: shape vocabulary, a subset of `SHAPES`.
        colors: colour vocabulary, a subset of `COLORS`.
        sizes: size vocabulary, a subset of `SIZES`.
        margin: dominance margin of spatial relations, as a fraction of the image side.
        textured_background: draw on seeded grey noise instead of a plain dark background.
        occlusion: probability that a scene of 2+ objects draws its second object over its first.
        repeat: probability that a scene of 2+ objects repeats the first object's colour and shape
            (which makes count captions such as "two green triangles" informative).
        heldout_pairs: (colour, shape) objects reserved for the ``test_heldout`` split.
        heldout_relations: (subject shape, relation) combinations reserved for ``test_heldout``.
        caption_weights: relative frequency of relation, attribute and count captions.
        size_in_caption: probability of naming an object's size when it is not needed to tell it apart.
        style: randomized rendering (`clipforge.synthetic.style`); None draws every scene plainly.
    """

    image_size: int = 64
    count_weights: tuple[float, ...] = (0.1, 0.8, 0.05, 0.05)
    shapes: tuple[str, ...] = SHAPES
    colors: tuple[str, ...] = COLORS
    sizes: tuple[str, ...] = SIZES
    margin: float = 0.1
    textured_background: bool = False
    occlusion: float = 0.0
    repeat: float = 0.1
    heldout_pairs: tuple[tuple[str, str], ...] = DEFAULT_HELDOUT_PAIRS
    heldout_relations: tuple[tuple[str, str], ...] = DEFAULT_HELDOUT_RELATIONS
    caption_weights: tuple[float, float, float] = (0.8, 0.1, 0.1)
    size_in_caption: float = 0.25
    style: StyleConfig | None = None

    def __post_init__(self) -> None:
        if not 32 <= self.image_size <= 224:
            raise ConfigError(f"scene config: image_size must be in [32, 224], got {self.image_size}")
        _check_weights("count_weights", self.count_weights, 1, 4)
        _check_weights("caption_weights", self.caption_weights, 3, 3)
        _check_vocab("shapes", self.shapes, SHAPES, 3)
        _check_vocab("colors", self.colors, COLORS, 3)
        _check_vocab("sizes", self.sizes, SIZES, 1)
        for name in ("occlusion", "repeat", "size_in_caption"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"scene config: {name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.margin < 0.5:
            raise ConfigError(f"scene config: margin must be in [0, 0.5), got {self.margin}")
        if self.style is not None and self.textured_background:
            raise ConfigError("scene config: textured_background is a plain-style option; a style draws "
                              "its own backgrounds")
        self._check_heldout()

    def _check_heldout(self) -> None:
        if any(len(pair) != 2 for pair in self.heldout_pairs + self.heldout_relations):
            raise ConfigError("scene config: held-out combinations must be pairs, e.g. ['red', 'star']")
        for color, shape in self.heldout_pairs:
            if color not in self.colors or shape not in self.shapes:
                raise ConfigError(f"scene config: held-out pair ({color!r}, {shape!r}) is not in the vocab")
        for shape, relation in self.heldout_relations:
            if shape not in self.shapes or relation not in RELATIONS:
                raise ConfigError(f"scene config: held-out relation ({shape!r}, {relation!r}) is unknown")
        if len(set(self.heldout_pairs)) >= len(self.colors) * len(self.shapes):
            raise ConfigError("scene config: heldout_pairs hold out every (colour, shape) combination")

    @property
    def margin_px(self) -> float:
        """The relation margin in pixels."""
        return self.margin * self.image_size

    def side(self, size: str) -> int:
        """Bbox side in pixels of an object of the given size word."""
        return max(4, round(SIZE_FRACTION[size] * self.image_size))


def _check_weights(name: str, weights: tuple[float, ...], shortest: int, longest: int) -> None:
    if not shortest <= len(weights) <= longest or min(weights) < 0 or sum(weights) <= 0:
        raise ConfigError(f"scene config: {name} needs {shortest}-{longest} non-negative weights "
                          f"with a positive sum, got {weights}")


def _check_vocab(name: str, words: tuple[str, ...], known: tuple[str, ...], least: int) -> None:
    unknown = [w for w in words if w not in known]
    if unknown:
        raise ConfigError(f"scene config: unknown {name[:-1]} {unknown[0]!r} (known: {', '.join(known)})")
    if len(set(words)) != len(words) or len(words) < least:
        raise ConfigError(f"scene config: {name} needs at least {least} distinct entries, got {words}")


@dataclass(frozen=True)
class SceneObject:
    """One drawn object; `bbox` is ``(x0, y0, x1, y1)`` in pixels with x1, y1 exclusive.

    The shape touches all four sides of its bbox; `depth` is the draw order (0 is drawn first, furthest back).
    """

    shape: str
    color: str
    size: str
    bbox: Box
    depth: int

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.bbox
        return (x0 + x1) / 2, (y0 + y1) / 2


@dataclass(frozen=True)
class Relation:
    """``objects[subject]`` is `relation` ``objects[object]``, e.g. (0, "left of", 1)."""

    subject: int
    relation: str
    object: int


@dataclass(frozen=True)
class Scene:
    """Exact metadata of one scene; `render_scene` turns it into pixels.

    Attributes:
        seed, split, index: where the scene comes from (`generate_scene` arguments).
        image_size: image side in pixels.
        margin: relation margin in pixels.
        objects: objects in draw order.
        relations: every labelled relation between ordered pairs of objects.
        texture_seed: seed of the background texture; None for a plain background.
    """

    seed: int
    split: str
    index: int
    image_size: int
    margin: float
    objects: tuple[SceneObject, ...]
    relations: tuple[Relation, ...]
    texture_seed: int | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready metadata that `Scene.from_json` reads back to an equal scene."""
        return {
            "seed": self.seed, "split": self.split, "index": self.index, "image_size": self.image_size,
            "margin": self.margin, "texture_seed": self.texture_seed,
            "objects": [{"shape": o.shape, "color": o.color, "size": o.size, "bbox": list(o.bbox),
                         "depth": o.depth} for o in self.objects],
            "relations": [{"subject": r.subject, "relation": r.relation, "object": r.object}
                          for r in self.relations],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Scene:
        """Parses `to_json` output.

        Raises:
            DataError: a key is missing or malformed.
        """
        try:
            objects = tuple(SceneObject(o["shape"], o["color"], o["size"], tuple(o["bbox"]), o["depth"])
                            for o in data["objects"])
            relations = tuple(Relation(r["subject"], r["relation"], r["object"]) for r in data["relations"])
            return cls(data["seed"], data["split"], data["index"], data["image_size"], data["margin"],
                       objects, relations, data.get("texture_seed"))
        except (KeyError, TypeError) as err:
            raise DataError(f"malformed scene record (bad or missing key {err})") from err


def scene_rng(seed: int, split: str, index: int, stream: str) -> random.Random:
    """Independent, reproducible random stream for one scene (`stream` names its purpose)."""
    return random.Random(f"clipforge-synth:{seed}:{split}:{index}:{stream}")


def generate_scene(config: SceneConfig, seed: int, split: str, index: int) -> Scene:
    """Samples scene `index` of `split`; the same arguments always give the same scene.

    Raises:
        ConfigError: unknown split, or `test_heldout` without any held-out combination.
        DataError: the config leaves no room to place the objects.
    """
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
    if split == "test_heldout" and not (config.heldout_pairs or config.heldout_relations):
        raise ConfigError("split 'test_heldout' needs heldout_pairs or heldout_relations in the scene config")
    if split in HELDOUT_STYLE_SPLITS and config.style is None:
        raise ConfigError(f"split {split!r} is drawn in the held-out style and needs a style (scene config)")
    rng = scene_rng(seed, split, index, "scene")
    count = _draw_count(config, split, rng)
    for _ in range(_SCENE_TRIES):
        scene = _sample_scene(config, count, rng, (seed, split, index))
        if scene is not None and fits_split(scene, config):
            return scene
    raise DataError(f"could not place scene {index} of split {split!r} in {_SCENE_TRIES} tries; "
                    "use fewer or smaller objects")


def _draw_count(config: SceneConfig, split: str, rng: random.Random) -> int:
    """Drawn once per scene, so that the rejections that follow cannot skew the count distribution."""
    weights = list(config.count_weights)
    if split == "test_heldout" and not config.heldout_pairs and len(weights) > 1:
        weights[0] = 0.0  # a lone object cannot show a held-out relation
    return rng.choices(range(1, len(weights) + 1), weights=weights)[0]


def _sample_scene(config: SceneConfig, count: int, rng: random.Random, key: tuple[int, str, int]
                  ) -> Scene | None:
    """One placement attempt; `key` is (seed, split, index). None when the placement failed."""
    kinds = _sample_kinds(config, count, key[1] == "test_heldout", rng)
    sizes = [rng.choice(config.sizes) for _ in range(count)]
    occlude = count >= 2 and rng.random() < config.occlusion
    boxes = _place([config.side(s) for s in sizes], config, occlude, rng)
    if boxes is None:
        return None
    drawn = enumerate(zip(kinds, sizes, boxes, strict=True))
    objects = tuple(SceneObject(shape, color, size, box, k) for k, ((color, shape), size, box) in drawn)
    if occlude and not _clean_occlusion(objects[0], objects[1], config.image_size):
        return None
    texture = rng.getrandbits(31) if config.textured_background else None
    return Scene(*key, config.image_size, config.margin_px, objects,
                 compute_relations(objects, config.image_size, config.margin_px), texture)


def _sample_kinds(config: SceneConfig, count: int, heldout: bool, rng: random.Random
                  ) -> list[tuple[str, str]]:
    """(colour, shape) per object; outside `test_heldout` the held-out pairs are never drawn."""
    banned = set() if heldout else set(config.heldout_pairs)
    allowed = [(c, s) for c in config.colors for s in config.shapes if (c, s) not in banned]
    kinds = [rng.choice(allowed) for _ in range(count)]
    if count >= 2 and rng.random() < config.repeat:
        copies = rng.randint(1, count - 1)
        kinds[1:copies + 1] = [kinds[0]] * copies
    return kinds


def _place(sides: list[int], config: SceneConfig, occlude: bool, rng: random.Random) -> list[Box] | None:
    """Bboxes by rejection: apart from the occluding pair, objects keep `_GAP` pixels apart.

    A two-object scene must have a labelled spatial relation, so that it has a relation caption.
    """
    boxes: list[Box] = []
    for k, side in enumerate(sides):
        for _ in range(_PLACE_TRIES):
            size = config.image_size
            box = _near(boxes[0], side, size, rng) if occlude and k == 1 else _anywhere(side, size, rng)
            if box is not None and _apart(box, boxes, skip_first=occlude and k == 1):
                boxes.append(box)
                break
        else:
            return None
    if len(sides) == 2 and _spatial_label(_centre(boxes[0]), _centre(boxes[1]), config.margin_px) is None:
        return None
    return boxes


def _anywhere(side: int, image_size: int, rng: random.Random) -> Box:
    x0 = rng.randint(1, image_size - side - 1)
    y0 = rng.randint(1, image_size - side - 1)
    return (x0, y0, x0 + side, y0 + side)


def _near(other: Box, side: int, image_size: int, rng: random.Random) -> Box | None:
    """A box partly overlapping `other`; None when it would leave the image (the caller retries)."""
    cx, cy = _centre(other)
    angle = rng.uniform(0, 2 * math.pi)
    distance = rng.uniform(0.45, 0.75) * (other[2] - other[0] + side) / 2
    x0 = round(cx + distance * math.cos(angle) - side / 2)
    y0 = round(cy + distance * math.sin(angle) - side / 2)
    inside = min(x0, y0) >= 1 and max(x0, y0) + side <= image_size - 1
    return (x0, y0, x0 + side, y0 + side) if inside else None


def _apart(box: Box, boxes: list[Box], skip_first: bool) -> bool:
    others = boxes[1:] if skip_first else boxes
    return all(not _intersects(box, other, _GAP) for other in others)


def _intersects(a: Box, b: Box, gap: int = 0) -> bool:
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def _centre(box: Box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _clean_occlusion(back: SceneObject, front: SceneObject, image_size: int) -> bool:
    """The overlap is clearly visible, yet most of the back object still shows (and in another colour)."""
    if back.color == front.color:
        return False
    back_mask, front_mask = object_mask(back, image_size), object_mask(front, image_size)
    overlap = int((back_mask & front_mask).sum())
    smaller = min(int(back_mask.sum()), int(front_mask.sum()))
    return overlap >= 1.5 * MIN_OVERLAP * smaller and overlap <= 0.5 * int(back_mask.sum())


def fits_split(scene: Scene, config: SceneConfig) -> bool:
    """Whether the scene may belong to its split: a ``test_heldout`` scene shows a held-out combination,
    any other split's scene shows no held-out relation, not even within the margin."""
    if scene.split == "test_heldout":
        return bool(heldout_combinations(scene, config))
    return not any(
        scene.objects[i].shape == shape and relation_plausible(scene, i, j, relation)
        for shape, relation in config.heldout_relations
        for i in range(len(scene.objects)) for j in range(len(scene.objects)) if i != j
    )


def swap_places(scene: Scene, i: int, j: int) -> Scene | None:
    """The scene with objects `i` and `j` in each other's places: each keeps its size and is centred where
    the other's centre was (moved inside the image when it would cross the border), relations recomputed.

    None when a moved object would come closer than `_GAP` pixels to another object or the two would touch,
    so the new scene is as cleanly drawn as a sampled one.
    """
    a, b = scene.objects[i], scene.objects[j]
    boxes = {i: _centred(a.bbox, b.centre, scene.image_size), j: _centred(b.bbox, a.centre, scene.image_size)}
    objects = tuple(SceneObject(o.shape, o.color, o.size, boxes[k], o.depth) if k in boxes else o
                    for k, o in enumerate(scene.objects))
    for k in boxes:
        if not _apart(objects[k].bbox, [o.bbox for n, o in enumerate(objects) if n != k], skip_first=False):
            return None
    relations = compute_relations(objects, scene.image_size, scene.margin)
    return Scene(scene.seed, scene.split, scene.index, scene.image_size, scene.margin, objects, relations,
                 scene.texture_seed)


def _centred(box: Box, centre: tuple[float, float], image_size: int) -> Box:
    """A box of `box`'s side centred on `centre`, kept 1 px inside the image like sampled boxes."""
    side = box[2] - box[0]
    x0, y0 = (min(max(round(c - side / 2), 1), image_size - side - 1) for c in centre)
    return (x0, y0, x0 + side, y0 + side)


def names_heldout(config: SceneConfig, kinds: Iterable[tuple[str, str]] = (),
                  relation: tuple[str, str, str] | None = None) -> bool:
    """Whether a sentence naming the (colour, shape) `kinds` and the (subject shape, relation, object
    shape) `relation` claims a held-out combination.

    A relation is read from both objects ("a circle below a star" claims "star above"), as scenes label
    it both ways. No scene outside ``test_heldout`` shows such a claim, so a sentence that makes one is
    never a positive there: as a training negative it would teach that its wording is false whatever the
    image.
    """
    if set(kinds) & set(config.heldout_pairs):
        return True
    if relation is None:
        return False
    subject, word, obj = relation
    return bool({(subject, word), (obj, OPPOSITE[word])} & set(config.heldout_relations))


def heldout_combinations(scene: Scene, config: SceneConfig) -> list[str]:
    """Held-out combinations the scene shows, e.g. ``["red star", "circle above"]``."""
    pairs = {(o.color, o.shape) for o in scene.objects} & set(config.heldout_pairs)
    found = [f"{color} {shape}" for color, shape in sorted(pairs)]
    held = set(config.heldout_relations)
    found += sorted({f"{scene.objects[r.subject].shape} {r.relation}" for r in scene.relations
                     if (scene.objects[r.subject].shape, r.relation) in held})
    return found


def _spatial_label(a: tuple[float, float], b: tuple[float, float], margin: float) -> str | None:
    dx, dy = a[0] - b[0], a[1] - b[1]
    if abs(dx) - abs(dy) > margin:
        return "left of" if dx < 0 else "right of"
    if abs(dy) - abs(dx) > margin:
        return "above" if dy < 0 else "below"
    return None


def spatial_relation(a: SceneObject, b: SceneObject, margin: float) -> str | None:
    """The labelled spatial relation of a to b, or None inside the margin."""
    return _spatial_label(a.centre, b.centre, margin)


def spatial_plausible(a: SceneObject, b: SceneObject, relation: str, margin: float) -> bool:
    """Whether "a `relation` b" could be read into the geometry, margin included.

    Its negation is what makes a spatial statement definitely false: a is not offset in that direction
    at all, or the other axis dominates by more than the margin.
    """
    dx, dy = a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]
    offsets = {"left of": (-dx, dy), "right of": (dx, dy), "above": (-dy, dx), "below": (dy, dx)}
    along, across = offsets[relation]
    return along > 0 and along - abs(across) > -margin


def relation_plausible(scene: Scene, i: int, j: int, relation: str) -> bool:
    """Whether "objects[i] `relation` objects[j]" is not definitely false."""
    if relation in DEPTH_RELATIONS:
        return Relation(i, OPPOSITE[relation], j) not in scene.relations
    return spatial_plausible(scene.objects[i], scene.objects[j], relation, scene.margin)


def compute_relations(objects: tuple[SceneObject, ...], image_size: int, margin: float
                      ) -> tuple[Relation, ...]:
    """All labelled relations between ordered pairs of distinct objects."""
    relations = []
    for i, a in enumerate(objects):
        for j, b in enumerate(objects):
            label = spatial_relation(a, b, margin) if i != j else None
            if label is not None:
                relations.append(Relation(i, label, j))
    for back, front in _occlusions(objects, image_size):
        relations += [Relation(front, "in front of", back), Relation(back, "behind", front)]
    return tuple(relations)


def _occlusions(objects: tuple[SceneObject, ...], image_size: int) -> list[tuple[int, int]]:
    """(back, front) index pairs whose drawn shapes overlap by at least `MIN_OVERLAP`."""
    pairs = []
    for i, back in enumerate(objects):
        for j in range(i + 1, len(objects)):
            if not _intersects(back.bbox, objects[j].bbox):
                continue  # disjoint boxes cannot overlap; skips the mask rendering
            back_mask, front_mask = object_mask(back, image_size), object_mask(objects[j], image_size)
            smaller = min(int(back_mask.sum()), int(front_mask.sum()))
            if int((back_mask & front_mask).sum()) >= MIN_OVERLAP * smaller:
                pairs.append((i, j))
    return pairs


def object_mask(obj: SceneObject, image_size: int) -> np.ndarray:
    """Boolean [H, W] mask of the object's drawn pixels, ignoring what is drawn over it."""
    return shape_mask(obj.shape, obj.bbox, image_size)


def render_scene(scene: Scene, style: StyleConfig | None = None) -> Image.Image:
    """Draws the scene as an RGB PIL image, objects in depth order (later ones occlude earlier ones).

    Args:
        scene: the scene.
        style: the scene config's style; None draws plainly, on the palette's exact colours.
    """
    if style is not None:
        return render_styled(scene, scene_style(scene, style))
    image = background(scene.image_size, scene.texture_seed)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        draw_shape(draw, obj.shape, obj.bbox, PALETTE[obj.color])
    return image


def scene_style(scene: Scene, style: StyleConfig) -> Style:
    """The scene's draw of `style`: held-out values in the held-out style splits, none elsewhere."""
    rng = scene_rng(scene.seed, scene.split, scene.index, "style")
    kinds = [(obj.color, obj.shape) for obj in scene.objects]
    return sample_style(style, kinds, rng, heldout=scene.split in HELDOUT_STYLE_SPLITS)


def render_styled(scene: Scene, style: Style) -> Image.Image:
    """Draws the scene in one style draw (`scene_style`, or an edit of it) at `style.supersample` times the
    image size, then resizes and degrades it."""
    k, size = style.supersample, scene.image_size
    colors, param = style.background_colors, style.background_param
    image = styled_background(style.background, colors, param, k * size)
    draw = ImageDraw.Draw(image)
    for obj, fill, geometry in zip(scene.objects, style.shades, style.geometry, strict=True):
        # Objects whose boxes touch keep the plain geometry, so the overlap that labels depth is exact.
        touching = any(_intersects(obj.bbox, other.bbox) for other in scene.objects if other is not obj)
        draw_styled_shape(draw, obj.shape, obj.bbox, fill, (1.0, 1.0, 0.0) if touching else geometry, k)
    return degrade(image, size, style.blur, style.noise, style.noise_offset, style.jpeg_quality)
