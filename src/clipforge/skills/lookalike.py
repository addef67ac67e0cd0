"""Generated-looking images with known content: skill renders edited the way generators go wrong.

Each image is a skill record's scene with one edit, then mildly blurred, noised and sometimes JPEG'd,
and comes with the reading a perfect observer would give (built from the edit, not from pixels). The
agreement of the parser with that reading, through DALL-Eval's rules, is the parser's second,
independent check (tests and ``benchmarks/bench_skills.py``).

Edits (`EDITS`):
    noise_blobs: three dim patches of coloured pixel noise anywhere; the content is unchanged.
    smudge: an irregular palette-coloured blob of object size; an extra object of no shape.
    half_drawn: one object drawn only on one side of a random line (35-65 % of it): an object of no
        shape, unless the part drawn is itself a whole shape (`WHOLE_IOU` with that shape's drawing in
        its box, e.g. the apex part of a triangle).
    missing: one object left out (a one-object scene becomes empty: unparseable).
    extra: another random object (count records only, where object order does not matter).
    reshape: one object drawn as another shape.
    recolor: one object drawn in another colour.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from PIL import Image

from clipforge.skills.degrade import blur, jpeg, noise
from clipforge.skills.make import SkillSetConfig, skill_record
from clipforge.skills.parser import DetectedObject, Reading, parse_image
from clipforge.skills.records import SKILLS, SkillRecord
from clipforge.skills.rules import Verdict, judge
from clipforge.synthetic.render import PALETTE, SHAPES, Box, shape_mask
from clipforge.synthetic.scene import SIZE_FRACTION, Scene, SceneObject, render_scene

Made = tuple[Image.Image, list[DetectedObject], str]  # image, its truth, what was done
EDITS = ("noise_blobs", "smudge", "half_drawn", "missing", "extra", "reshape", "recolor")
NO_SHAPE_FIT = 0.5  # a shapeless object is less confident than any drawn shape
WHOLE_IOU = 0.85
_TRIES = 200


@dataclass(frozen=True)
class Lookalike:
    """One generated-looking image, what it shows, and how it was made."""

    image: Image.Image
    truth: Reading
    edit: str
    detail: str


def _as_detected(obj: SceneObject) -> DetectedObject:
    x0, y0, x1, y1 = obj.bbox
    return DetectedObject(obj.shape, obj.color, obj.bbox, (x1 - x0) * (y1 - y0), 1.0)


def _free_box(scene: Scene, side: int, rng: np.random.Generator, gap: int = 3) -> Box | None:
    """A box of `side` pixels clear of every object (by `gap`) and of the border; None if none is found."""
    size = scene.image_size
    for _ in range(_TRIES):
        x0, y0 = (int(v) for v in rng.integers(gap, size - gap - side, size=2))
        box = (x0, y0, x0 + side, y0 + side)
        if all(box[0] >= o.bbox[2] + gap or o.bbox[0] >= box[2] + gap or box[1] >= o.bbox[3] + gap
               or o.bbox[1] >= box[3] + gap for o in scene.objects):
            return box
    return None


def _mask_box(mask: np.ndarray) -> Box:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _paint(image: Image.Image, mask: np.ndarray, color: tuple[int, int, int]) -> Image.Image:
    pixels = np.asarray(image).copy()
    pixels[mask] = color
    return Image.fromarray(pixels)


def _noise_blobs(scene: Scene, rng: np.random.Generator) -> Made:
    pixels = np.asarray(render_scene(scene), dtype=np.float64)
    size = scene.image_size
    for _ in range(3):
        cy, cx = rng.uniform(0, size, size=2)
        radius = rng.uniform(0.06, 0.12) * size
        yy, xx = np.mgrid[0:size, 0:size]
        weight = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))[..., None]  # [H, W, 1]
        pixels += weight * rng.normal(0, 0.12 * 255, pixels.shape)
    image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    return image, [_as_detected(o) for o in scene.objects], "3 noise patches"


def _smudge(scene: Scene, rng: np.random.Generator) -> Made | None:
    side = round(SIZE_FRACTION["large"] * scene.image_size)
    box = _free_box(scene, side, rng)
    if box is None:
        return None
    size = scene.image_size
    yy, xx = np.mgrid[0:size, 0:size]
    field = np.zeros((size, size))
    for _ in range(4):  # a lumpy union of random bumps inside the box
        cx = rng.uniform(box[0] + side * 0.2, box[2] - side * 0.2)
        cy = rng.uniform(box[1] + side * 0.2, box[3] - side * 0.2)
        spread = rng.uniform(0.1, 0.25) * side
        field += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * spread**2))
    mask = field > 0.6
    if mask.sum() < 4:
        return None
    color, bbox = str(rng.choice(list(PALETTE))), _mask_box(mask)
    truth = [_as_detected(o) for o in scene.objects]
    truth.append(DetectedObject(None, color, bbox, int(mask.sum()), NO_SHAPE_FIT))
    return _paint(render_scene(scene), mask, PALETTE[color]), truth, f"{color} smudge at {bbox}"


def _whole_shape(mask: np.ndarray, bbox: Box) -> str | None:
    """The shape a partial drawing still is, when it matches the renderer's drawing of that shape in its
    own (square) box with IoU >= `WHOLE_IOU`: the apex half of a triangle is a smaller triangle."""
    width, height = bbox[2] - bbox[0], bbox[3] - bbox[1]
    if abs(width - height) > max(1.0, 0.1 * max(width, height)):
        return None
    drawings = {s: shape_mask(s, bbox, mask.shape[0]) for s in SHAPES}
    ious = {s: float((mask & d).sum() / (mask | d).sum()) for s, d in drawings.items()}
    best = max(ious, key=lambda s: ious[s])
    return best if ious[best] >= WHOLE_IOU else None


def _half_drawn(scene: Scene, rng: np.random.Generator) -> Made | None:
    k = int(rng.integers(len(scene.objects)))
    target = scene.objects[k]
    rest = dataclasses.replace(scene, objects=tuple(o for i, o in enumerate(scene.objects) if i != k))
    mask = shape_mask(target.shape, target.bbox, scene.image_size)
    ys, xs = np.nonzero(mask)
    angle = rng.uniform(0, 2 * np.pi)
    along = (xs - xs.mean()) * np.cos(angle) + (ys - ys.mean()) * np.sin(angle)
    keep_share = rng.uniform(0.35, 0.65)
    kept = along >= np.quantile(along, 1 - keep_share)
    partial = np.zeros_like(mask)
    partial[ys[kept], xs[kept]] = True
    bbox = _mask_box(partial)
    whole = _whole_shape(partial, bbox)
    cut = DetectedObject(whole, target.color, bbox, int(kept.sum()), 1.0 if whole else NO_SHAPE_FIT)
    truth = [_as_detected(o) if i != k else cut for i, o in enumerate(scene.objects)]
    detail = f"object {k} ({target.shape}) cut to {keep_share:.0%}" + (f", a whole {whole}" if whole else "")
    return _paint(render_scene(rest), partial, PALETTE[target.color]), truth, detail


def _missing(scene: Scene, rng: np.random.Generator) -> Made:
    k = int(rng.integers(len(scene.objects)))
    kept = tuple(o for i, o in enumerate(scene.objects) if i != k)
    return render_scene(dataclasses.replace(scene, objects=kept)), [_as_detected(o) for o in kept], \
        f"object {k} left out"


def _extra(scene: Scene, rng: np.random.Generator) -> Made | None:
    size = str(rng.choice(("small", "large")))
    box = _free_box(scene, round(SIZE_FRACTION[size] * scene.image_size), rng)
    if box is None:
        return None
    shape, color = str(rng.choice(SHAPES)), str(rng.choice(list(PALETTE)))
    edited = dataclasses.replace(
        scene, objects=(*scene.objects, SceneObject(shape, color, size, box, len(scene.objects))))
    return render_scene(edited), [_as_detected(o) for o in edited.objects], f"extra {color} {shape}"


def _swap(scene: Scene, rng: np.random.Generator, field: str) -> Made:
    k = int(rng.integers(len(scene.objects)))
    target = scene.objects[k]
    old = target.shape if field == "shape" else target.color
    new = str(rng.choice([v for v in (SHAPES if field == "shape" else tuple(PALETTE)) if v != old]))
    changed = (dataclasses.replace(target, shape=new) if field == "shape"
               else dataclasses.replace(target, color=new))
    objects = tuple(changed if i == k else o for i, o in enumerate(scene.objects))
    edited = dataclasses.replace(scene, objects=objects)
    return render_scene(edited), [_as_detected(o) for o in objects], f"object {k} {field} {old} -> {new}"


def _apply(edit: str, scene: Scene, rng: np.random.Generator
           ) -> Made | None:
    if edit == "noise_blobs":
        return _noise_blobs(scene, rng)
    if edit == "smudge":
        return _smudge(scene, rng)
    if edit == "half_drawn":
        return _half_drawn(scene, rng)
    if edit == "missing":
        return _missing(scene, rng)
    if edit == "extra":
        return _extra(scene, rng)
    return _swap(scene, rng, "shape" if edit == "reshape" else "color")


def _generator_look(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Mild blur and noise, JPEG half of the time: how a small generator's pictures look."""
    image = noise(blur(image, float(rng.uniform(0.3, 1.0))), rng, float(rng.uniform(0.0, 0.06)))
    return jpeg(image, 50) if rng.random() < 0.5 else image


def make_lookalike(record: SkillRecord, scene: Scene, edit: str, rng: np.random.Generator
                   ) -> Lookalike | None:
    """The record's scene with `edit` applied and a generator's look; None when the edit does not apply
    (``extra`` outside count records, or no free room for a new object)."""
    if edit == "extra" and record.skill != "count":
        return None
    made = _apply(edit, scene, rng)
    if made is None:
        return None
    image, truth, detail = made
    truth.sort(key=lambda o: -o.fit)  # stable: drawn objects in scene order, shapeless ones last
    return Lookalike(_generator_look(image, rng), Reading(tuple(truth)), edit, detail)



def _name(obj: DetectedObject) -> str:
    return f"{obj.color or 'colourless'} {obj.shape or 'shapeless object'}"


def _nearest(obj: DetectedObject, others: list[DetectedObject]) -> DetectedObject | None:
    """The object of `others` whose centre lies inside `obj`'s box grown by 2 px, nearest first."""
    x0, y0, x1, y1 = obj.bbox
    inside = [o for o in others if x0 - 2 <= o.centre[0] <= x1 + 2 and y0 - 2 <= o.centre[1] <= y1 + 2]
    return min(inside, key=lambda o: np.hypot(o.centre[0] - obj.centre[0], o.centre[1] - obj.centre[1]),
               default=None)


def explain(truth: Reading, reading: Reading) -> list[str]:
    """How a parser reading differs from the truth: objects missed, extra, or read differently, and a
    different most confident object (which the object, color and spatial rules look at first)."""
    notes, unmatched = [], list(reading.objects)
    for obj in truth.objects:
        found = _nearest(obj, unmatched)
        if found is None:
            notes.append(f"missed the {_name(obj)}")
            continue
        unmatched.remove(found)
        if (found.shape, found.color) != (obj.shape, obj.color):
            notes.append(f"read the {_name(obj)} as: {_name(found)} (fit {found.fit:.3f})")
    notes += [f"found an extra {_name(o)} (fit {o.fit:.3f})" for o in unmatched]
    if truth.objects and reading.objects and _nearest(truth.objects[0], [reading.objects[0]]) is None:
        notes.append(f"ranked the {_name(reading.objects[0])} first")
    return notes


@dataclass(frozen=True)
class Disagreement:
    """A generated-looking image whose verdict from the parser differs from its construction truth's."""

    record: SkillRecord
    look: Lookalike
    parser: Verdict
    truth: Verdict
    notes: tuple[str, ...]


def agreement(config: SkillSetConfig, per_skill: int) -> tuple[int, list[Disagreement]]:
    """Judges `per_skill` generated-looking val images per skill (edits in turn) with the parser and with
    their construction truth; returns how many verdicts agree and the disagreements, explained."""
    agree, disagreements = 0, []
    for skill in SKILLS:
        made, index = 0, 0
        while made < per_skill:
            record, scene = skill_record(config, skill, "val", index)
            rng = np.random.default_rng([config.seed, index])
            look = make_lookalike(record, scene, EDITS[index % len(EDITS)], rng)
            index += 1
            if look is None:
                continue
            made += 1
            reading = parse_image(look.image)
            parser, truth = judge(record, reading), judge(record, look.truth)
            if parser.passed == truth.passed:
                agree += 1
            else:
                notes = tuple(explain(look.truth, reading))
                disagreements.append(Disagreement(record, look, parser, truth, notes))
    return agree, disagreements
