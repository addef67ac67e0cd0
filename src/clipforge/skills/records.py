"""The PaintSkills on-disk format: skill records (a prompt and its scene's objects), read and written.

Layout of a skill set folder (DALL-Eval's PaintSkills layout, plus ``metadata.json``)::

    DIR/metadata.json                        vocabulary, image size, seed, held-out combinations
    DIR/{skill}/scenes/{skill}_{split}.json  {"data": [record, ...]} for split train / val
    DIR/{skill}/images/image_{id}.png        the ground-truth render of each record

A record is ``{"id", "scene", "text", "skill", "split", "objects": [{"id", "shape", "color",
"relation", "scale", ...}], ...}``. Spatial records store the relation on ``objects[1]`` relative to
object 0: ``"left_0"`` says object 1 is left of object 0 ("a triangle to the left of a star" has the
star as object 0). clipforge adds ``bbox`` and ``size`` per object, and ``image_size`` and
``heldout`` (the renderer's held-out combinations the prompt names) per record. Real PaintSkills
files (COCO object names, colour ``"plain"``, no boxes) read too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clipforge.errors import DataError
from clipforge.fileio import write_json

SKILLS = ("object", "count", "color", "spatial")
SKILL_SPLITS = ("train", "val")
RELATIONS = ("left", "right", "above", "below")
METADATA_NAME = "metadata.json"


@dataclass(frozen=True)
class SkillObject:
    """One object of a skill scene.

    Attributes:
        id: position in the record's object list.
        shape: shape (renderer vocabulary) or object name (e.g. a COCO class in real PaintSkills).
        color: colour name; ``"plain"`` when the object has none.
        relation: ``"{left,right,above,below}_{j}"``: this object relative to object j; None otherwise.
        scale: bbox side / image side.
        bbox: ``(x0, y0, x1, y1)`` in pixels (x1, y1 exclusive); None when unknown.
        size: the renderer's size word (small, large); None when unknown.
    """

    id: int
    shape: str
    color: str = "plain"
    relation: str | None = None
    scale: float | None = None
    bbox: tuple[int, int, int, int] | None = None
    size: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "shape": self.shape, "color": self.color,
                                "relation": self.relation, "scale": self.scale}
        if self.bbox is not None:
            data["bbox"] = list(self.bbox)
        if self.size is not None:
            data["size"] = self.size
        return data


@dataclass(frozen=True)
class SkillRecord:
    """One prompt of a skill set with the objects its ground-truth scene shows.

    Attributes:
        id: record id, unique within the skill (image file ``image_{id}.png``).
        skill: object, count, color or spatial.
        split: train or val.
        text: the prompt.
        objects: the scene's objects; for spatial, object 1 carries the relation to object 0.
        scene: background name (``"plain"`` for the renderer's plain style).
        image_size: image side in pixels; None when unknown.
        heldout: held-out compositional combinations the prompt names (e.g. ``["red star"]``).
    """

    id: str
    skill: str
    split: str
    text: str
    objects: tuple[SkillObject, ...]
    scene: str = "plain"
    image_size: int | None = None
    heldout: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "scene": self.scene, "text": self.text, "skill": self.skill,
                "split": self.split, "objects": [o.to_json() for o in self.objects],
                "image_size": self.image_size, "heldout": list(self.heldout)}

    @property
    def image_name(self) -> str:
        """The ground-truth image's file name inside ``{skill}/images``."""
        return f"image_{self.id}.png"


def split_relation(relation: str) -> tuple[str, int]:
    """``"left_0"`` -> ``("left", 0)``.

    Raises:
        DataError: not of the form ``{left,right,above,below}_{index}``.
    """
    name, _, index = relation.rpartition("_")
    if name not in RELATIONS or not index.isdigit():
        raise DataError(f"malformed relation {relation!r} (expected e.g. 'left_0')")
    return name, int(index)


def _box(value: Any) -> tuple[int, int, int, int] | None:
    if value is None:
        return None
    x0, y0, x1, y1 = (int(v) for v in value)
    return x0, y0, x1, y1


def _object_from_json(data: dict[str, Any], position: int) -> SkillObject:
    scale = data.get("scale")
    return SkillObject(
        int(data.get("id", position)), str(data["shape"]), str(data.get("color") or "plain"),
        data.get("relation"), float(scale) if isinstance(scale, int | float) else None,
        _box(data.get("bbox")), data.get("size"))


def record_from_json(data: dict[str, Any], skill: str, split: str) -> SkillRecord:
    """Parses one record; `skill` and `split` are used where the record does not name them.

    Raises:
        DataError: a key is missing or malformed.
    """
    try:
        objects = tuple(_object_from_json(o, k) for k, o in enumerate(data["objects"]))
        size = data.get("image_size")
        return SkillRecord(str(data["id"]), str(data.get("skill", skill)), str(data.get("split", split)),
                           str(data["text"]), objects, str(data.get("scene", "plain")),
                           int(size) if size is not None else None,
                           tuple(str(h) for h in data.get("heldout", ())))
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"malformed skill record {data.get('id', '?')!r} (bad or missing key {err})") from err


def scenes_path(root: Path, skill: str, split: str) -> Path:
    """Where the records of one skill and split live."""
    return root / skill / "scenes" / f"{skill}_{split}.json"


def write_records(root: Path, skill: str, split: str, records: list[SkillRecord]) -> Path:
    """Writes ``{skill}_{split}.json`` atomically."""
    return write_json({"data": [r.to_json() for r in records]}, scenes_path(root, skill, split))


def read_records(path: Path, skill: str, split: str) -> list[SkillRecord]:
    """Records of one ``{skill}_{split}.json`` file.

    Raises:
        DataError: the file is missing, not JSON, or has no ``data`` list.
    """
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise DataError(f"skill file not found: {path}") from err
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read skill file {path}: {err}") from err
    if not isinstance(content, dict) or not isinstance(content.get("data"), list):
        raise DataError(f"{path}: expected an object with a 'data' list")
    return [record_from_json(item, skill, split) for item in content["data"]]


def load_skill_set(root: Path, split: str = "val") -> dict[str, list[SkillRecord]]:
    """``{skill: records}`` of every skill folder under `root` that has a file for `split`.

    Raises:
        DataError: `root` holds no skill file for `split`.
    """
    found = {skill: read_records(scenes_path(root, skill, split), skill, split)
             for skill in SKILLS if scenes_path(root, skill, split).is_file()}
    if not found:
        raise DataError(f"no skill files for split {split!r} under {root} "
                        f"(expected e.g. {scenes_path(root, 'object', split)})")
    return found


def read_metadata(root: Path) -> dict[str, Any]:
    """``metadata.json`` of a skill set; empty when there is none (a real PaintSkills copy may lack it).

    Raises:
        DataError: the file exists but is not a JSON object.
    """
    path = root / METADATA_NAME
    if not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}") from err
    if not isinstance(content, dict):
        raise DataError(f"{path}: expected a JSON object")
    return content
