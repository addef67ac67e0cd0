"""DALL-Eval's skill rules, applied to what the parser read (or to a scene's exact truth).

The parser's fit is its confidence, so "the detected object" is the most confident one (the larger on a
tie), as DALL-Eval takes DETR's most confident query:

- object: the most confident object has the asked shape;
- count: exactly N objects, all of the asked shape;
- color: the most confident object of the asked shape has the asked colour;
- spatial: the two most confident objects are the two asked shapes and the relation holds by the
  centre rule: ``|dx| > |dy|`` decides left/right, else above/below (dx, dy: centre of object 1 minus
  centre of object 0; y grows downwards). When both asked shapes are the same, only the axis is checked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from clipforge.errors import DataError
from clipforge.skills.parser import DetectedObject, Reading
from clipforge.skills.records import SkillRecord, split_relation


@dataclass(frozen=True)
class Verdict:
    """Whether an image shows its prompt, and why not when it does not."""

    passed: bool
    reason: str


def centre_relation(subject: tuple[float, float], reference: tuple[float, float]) -> str:
    """DALL-Eval's centre rule: where `subject` is relative to `reference` (left, right, above, below)."""
    dx, dy = subject[0] - reference[0], subject[1] - reference[1]
    if abs(dx) > abs(dy):
        return "left" if dx < 0 else "right"
    return "above" if dy < 0 else "below"


def _object_rule(record: SkillRecord, reading: Reading) -> Verdict:
    asked = record.objects[0].shape
    top = reading.objects[0]
    return Verdict(top.shape == asked, "ok" if top.shape == asked else f"read a {top.shape or 'blob'}")


def _count_rule(record: SkillRecord, reading: Reading) -> Verdict:
    asked, wanted = record.objects[0].shape, len(record.objects)
    found = len(reading.objects)
    if found != wanted:
        return Verdict(False, f"read {found} objects")
    others = [o.shape or "blob" for o in reading.objects if o.shape != asked]
    return Verdict(not others, "ok" if not others else f"read a {others[0]}")


def _color_rule(record: SkillRecord, reading: Reading) -> Verdict:
    asked = record.objects[0]
    match = next((o for o in reading.objects if o.shape == asked.shape), None)
    if match is None:
        return Verdict(False, f"no {asked.shape}")
    passed = match.color == asked.color
    found = match.color or "of no palette colour"
    return Verdict(passed, "ok" if passed else f"the {asked.shape} is {found}")


def _spatial_rule(record: SkillRecord, reading: Reading) -> Verdict:
    reference, subject = record.objects[0], record.objects[1]
    relation, _ = split_relation(str(subject.relation))
    if len(reading.objects) < 2:
        return Verdict(False, f"read {len(reading.objects)} object")
    first, second = reading.objects[0], reading.objects[1]
    pair = _assign(reference.shape, subject.shape, first, second)
    if pair is None:
        return Verdict(False, f"read {first.shape or 'blob'} and {second.shape or 'blob'}")
    found = centre_relation(pair[1].centre, pair[0].centre)
    if reference.shape == subject.shape:
        passed = (found in ("left", "right")) == (relation in ("left", "right"))
    else:
        passed = found == relation
    return Verdict(passed, "ok" if passed else f"{subject.shape} is {found}")


def _assign(reference: str, subject: str, first: DetectedObject, second: DetectedObject
            ) -> tuple[DetectedObject, DetectedObject] | None:
    """(reference, subject) detections when the two shapes match the two asked ones, else None."""
    if (first.shape, second.shape) == (reference, subject):
        return first, second
    if (first.shape, second.shape) == (subject, reference):
        return second, first
    return None


RULES: dict[str, Callable[[SkillRecord, Reading], Verdict]] = {
    "object": _object_rule, "count": _count_rule, "color": _color_rule, "spatial": _spatial_rule,
}


def judge(record: SkillRecord, reading: Reading) -> Verdict:
    """Applies the record's skill rule; an unparseable image fails every skill.

    Raises:
        DataError: the record's skill has no rule.
    """
    rule = RULES.get(record.skill)
    if rule is None:
        raise DataError(f"no rule for skill {record.skill!r} (known: {', '.join(RULES)})")
    if not reading.parseable:
        return Verdict(False, "unparseable")
    return rule(record, reading.ranked())


def truth_reading(record: SkillRecord) -> Reading:
    """The reading a perfect parser would give of the record's ground-truth scene (objects need boxes).

    Raises:
        DataError: an object has no box.
    """
    objects = []
    for obj in record.objects:
        if obj.bbox is None:
            raise DataError(f"record {record.id}: object {obj.id} has no bbox")
        x0, y0, x1, y1 = obj.bbox
        objects.append(DetectedObject(obj.shape, obj.color, obj.bbox, (x1 - x0) * (y1 - y0), 1.0))
    return Reading(tuple(objects))
