"""Readers for probe files: our JSONL pairs, the synthetic probes and five public benchmarks.

Each reader returns ``(items, bad)``: a line or entry that cannot be read becomes a `BadItem` naming
the file and line, so one bad entry never stops a run. Images are resolved under an image folder
(``--images``); a missing image is only found (and counted) when the item is scored.

Formats (the public ones as their authors distribute them):
    pairs        JSONL, one item a line: ``{"image", "true", "false": str | [str, ...], "tag"}``
                 (optional ``"relation"``, ``"id"``, ``"group"``, ``"split"`` and ``"labels"`` — what each
                 sentence stands for, true first; the synthetic generator's probes.jsonl; `write_pairs`
                 writes it).
    SpatialVOC2K JSON ``{image_id: {"width", "height", "objects": {k: {"name", "xmin", "ymin", "xmax",
                 "ymax"}}, "relations": [{"object_0", "object_1", "all": [prepositions]}]}}``; French
                 labels are translated. The true sentence uses a preposition from ``all``, the false one
                 its antonym when that is not in ``all``; the image is cut to the two objects' box.
    What'sUp     JSON list of ``{"image_path", "caption_options": [4 captions, the first correct]}``
                 (controlled images, grouped by object pair for pair/set accuracy) or of
                 ``[image_id, true, false]`` (COCO- and GQA-spatial).
    ARO          JSON list of ``{"image_path", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "true_caption",
                 "false_caption", "relation_name" | "attributes"}`` (VG-Relation / VG-Attribution);
                 the image is cut to the union box.
    SugarCrepe   JSON ``{id: {"filename", "caption", "negative_caption"}}``, one file per category.
    Winoground   JSONL ``{"id", "caption_0", "caption_1", "image_0", "image_1", "tag"}``; each example
                 becomes two items (one per image) scored together for text/image/group scores.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from PIL import Image

from clipforge.errors import DataError, ImageError
from clipforge.fileio import write_bytes_atomic, write_text_atomic
from clipforge.probe.items import BadItem, ProbeItem, load_item_image
from clipforge.probe.spatial import ANTONYMS, canonical_relation, relation_label

Loaded = tuple[list[ProbeItem], list[BadItem]]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_json(path: Path) -> Any:
    """Parses a JSON file, naming it when it is missing or malformed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise DataError(f"probe file not found: {path}") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err


def read_jsonl(path: Path) -> list[tuple[str, Any]]:
    """``(where, parsed line)`` for each non-empty line; a malformed line parses to None."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as err:
        raise DataError(f"probe file not found: {path}") from err
    rows = []
    for number, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append((f"{path.name}:{number}", json.loads(line)))
            except json.JSONDecodeError:
                rows.append((f"{path.name}:{number}", None))
    return rows


def resolve_image(images: Path, name: str) -> Path:
    """`name` under `images`; falls back to its base name, and to a known suffix when it has none."""
    candidates = [images / name, images / Path(name).name]
    if not Path(name).suffix:
        candidates += [images / f"{name}{suffix}" for suffix in IMAGE_SUFFIXES]
    return next((c for c in candidates if c.is_file()), candidates[0])


def _text(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: '{key}' must be a non-empty string")
    return value.strip()


def synthetic_item_id(scene: object, tag: object) -> str:
    """The id of a synthetic probe item (there is one item per scene and probe kind)."""
    return f"scene{scene}/{tag}"


def item_from_record(record: Any, where: str, images: Path | None) -> ProbeItem:
    """One pairs-format record as an item; ``record["image"]`` may also be a loaded PIL image.

    Raises:
        DataError: a key is missing or has the wrong type.
    """
    if not isinstance(record, dict):
        raise DataError(f"{where}: not a JSON object")
    for key in ("image", "true", "false"):
        if key not in record:
            raise DataError(f"{where}: missing key '{key}'")
    false = record["false"] if isinstance(record["false"], list) else [record["false"]]
    if not false:
        raise DataError(f"{where}: 'false' is empty")
    image = record["image"]
    if isinstance(image, str):
        image = resolve_image(images, image) if images is not None else Path(image)
    relation, split = record.get("relation"), record.get("split")
    labels = record.get("labels") or []
    if not isinstance(labels, list) or (labels and len(labels) != 1 + len(false)):
        raise DataError(f"{where}: 'labels' must list one label per sentence, true first")
    group = record.get("group")
    # Synthetic probes have one item per scene and kind: name them so, on disk and in memory alike.
    default_id = synthetic_item_id(record["scene"], record.get("tag")) if "scene" in record else where
    return ProbeItem(
        id=str(record.get("id", default_id)),
        image=image,
        true=_text(record["true"], "true", where),
        false=tuple(_text(f, "false", where) for f in false),
        tag=str(record.get("tag") or "all"),
        relation=relation if isinstance(relation, str) and relation else None,
        labels=tuple(str(label) for label in labels),
        group=str(group) if group is not None else None,
        split=split if isinstance(split, str) and split else None,
    )


def items_from_records(records: Iterable[Any], images: Path | None = None, name: str = "item") -> Loaded:
    """Items from pairs-format records (e.g. the synthetic generator's in-memory probes)."""
    items, bad = [], []
    for index, record in enumerate(records):
        where = f"{name}:{index}"
        try:
            items.append(item_from_record(record, where, images))
        except DataError as err:
            bad.append(BadItem(where, str(err)))
    return items, bad


def items_from_synthetic(probes: Iterable[tuple[Any, Image.Image]]) -> Loaded:
    """Items from `clipforge.synthetic.dataset.synthetic_probe_items` (probe, rendered image) pairs.

    They score exactly like ``synthetic:DIR`` on the same scenes: the PNGs on disk are lossless.
    """
    records = ({**probe.to_json(), "image": image} for probe, image in probes)
    return items_from_records(records, name="synthetic")


def read_pairs(path: Path, images: Path) -> Loaded:
    """Reads a pairs JSONL file (also the synthetic generator's probes.jsonl)."""
    items, bad = [], []
    for where, record in read_jsonl(path):
        try:
            if record is None:
                raise DataError(f"{where}: not valid JSON")
            items.append(item_from_record(record, where, images))
        except DataError as err:
            bad.append(BadItem(where, str(err)))
    return items, bad


def write_pairs(items: Iterable[ProbeItem], folder: Path) -> tuple[Path, list[BadItem]]:
    """Writes items as a pairs suite: ``folder/pairs.jsonl``, every image as a PNG under ``folder/images``.

    Generated images (mirrors, collages) and crops are written as rendered, so ``pairs:folder/pairs.jsonl``
    scores exactly like the suite in memory. Items whose image cannot be read are left out and returned.
    """
    lines: list[str] = []
    names: dict[str, str] = {}
    bad: list[BadItem] = []
    for item in items:
        if item.image_key not in names:
            try:
                image = load_item_image(item)
            except ImageError as err:
                bad.append(BadItem(item.id, str(err)))
                continue
            names[item.image_key] = f"images/{len(names):06d}.png"
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            write_bytes_atomic(folder / names[item.image_key], buffer.getvalue())
        record = {"id": item.id, "image": names[item.image_key], "true": item.true,
                  "false": list(item.false), "tag": item.tag, "relation": item.relation,
                  "labels": list(item.labels), "group": item.group}
        lines.append(json.dumps(record))
    return write_text_atomic(folder / "pairs.jsonl", "\n".join(lines) + "\n"), bad


def _entries(data: Any, path: Path, kind: type) -> list[Any]:
    """The list's elements or the object's ``(key, value)`` pairs, after checking the top-level type."""
    if not isinstance(data, kind):
        raise DataError(f"{path}: expected a JSON {kind.__name__}, got {type(data).__name__}")
    return list(data.items()) if isinstance(data, dict) else list(data)  # type: ignore[call-overload]


def _collect(entries: Iterable[tuple[str, Any]], build: Any) -> Loaded:
    """Runs `build(where, entry)` on each entry; it returns a list of items, a DataError marks it bad."""
    items, bad = [], []
    for where, entry in entries:
        try:
            items.extend(build(where, entry))
        except (DataError, KeyError, TypeError, ValueError, IndexError) as err:
            reason = str(err) if isinstance(err, DataError) else f"{where}: malformed entry ({err!r})"
            bad.append(BadItem(where, reason))
    return items, bad


# ---------------------------------------------------------------------------------------------- What'sUp

def read_whatsup(path: Path, images: Path) -> Loaded:
    """Reads What'sUp controlled images (dict entries) or COCO/GQA-spatial (``[id, true, false]``)."""
    entries = _entries(read_json(path), path, list)
    return _collect(((f"{path.name}:{i}", e) for i, e in enumerate(entries)),
                    lambda where, e: [_whatsup_item(where, e, images)])


def _whatsup_item(where: str, entry: Any, images: Path) -> ProbeItem:
    if isinstance(entry, list):
        image_id, true, false = entry[0], entry[1], entry[2]
        name = str(image_id).zfill(12) + ".jpg" if isinstance(image_id, int) else str(image_id)
        if not resolve_image(images, name).is_file():
            name = f"{image_id}.jpg"
        return _captioned_item(where, resolve_image(images, name), [true, false], None)
    stem = Path(entry["image_path"]).stem
    parts = stem.split("_")
    group = f"{parts[0]}|{parts[-1]}" if len(parts) >= 3 else None
    return _captioned_item(where, resolve_image(images, entry["image_path"]), entry["caption_options"], group)


def _captioned_item(where: str, image: Path, captions: list[Any], group: str | None) -> ProbeItem:
    texts = [_text(c, "caption", where) for c in captions]
    if len(texts) < 2:
        raise DataError(f"{where}: needs at least two captions, got {len(texts)}")
    labels = [relation_label(t) for t in texts]
    relation = canonical_relation(labels[0]) if labels[0] else None
    tag = relation or "all"
    shown = tuple(canonical_relation(label) if label else f"caption {i}" for i, label in enumerate(labels))
    return ProbeItem(where, image, texts[0], tuple(texts[1:]), tag, relation, shown, group=group)


# ---------------------------------------------------------------------------------------------- ARO

def read_aro(path: Path, images: Path) -> Loaded:
    """Reads ARO's VG-Relation or VG-Attribution JSON; each image is cut to its union box."""
    entries = _entries(read_json(path), path, list)
    return _collect(((f"{path.name}:{i}", e) for i, e in enumerate(entries)),
                    lambda where, e: [_aro_item(where, e, images)])


def _aro_item(where: str, entry: dict[str, Any], images: Path) -> ProbeItem:
    x, y, w, h = (float(entry[k]) for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"))
    if "relation_name" in entry:
        tag = str(entry["relation_name"])
    elif "attributes" in entry:
        tag = "_".join(str(a) for a in entry["attributes"])
    else:
        raise DataError(f"{where}: neither 'relation_name' nor 'attributes'")
    relation = tag if "relation_name" in entry else None
    true = _text(entry["true_caption"], "true_caption", where)
    false = _text(entry["false_caption"], "false_caption", where)
    image = resolve_image(images, entry["image_path"])
    return ProbeItem(where, image, true, (false,), tag, relation, crop=(x, y, w, h))


# ---------------------------------------------------------------------------------------------- SugarCrepe

def read_sugarcrepe(path: Path, images: Path) -> Loaded:
    """Reads one SugarCrepe category file, or every ``*.json`` in a folder (tag = the file's stem)."""
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"no SugarCrepe .json files in {path}")
    items, bad = [], []
    for file in files:
        entries = _entries(read_json(file), file, dict)
        got, lost = _collect(((f"{file.stem}/{key}", e) for key, e in entries),
                             lambda where, e, tag=file.stem: [_sugarcrepe_item(where, e, tag, images)])
        items += got
        bad += lost
    return items, bad


def _sugarcrepe_item(where: str, entry: dict[str, Any], tag: str, images: Path) -> ProbeItem:
    true = _text(entry["caption"], "caption", where)
    false = _text(entry["negative_caption"], "negative_caption", where)
    return ProbeItem(where, resolve_image(images, entry["filename"]), true, (false,), tag)


# ---------------------------------------------------------------------------------------------- Winoground

def read_winoground(path: Path, images: Path) -> Loaded:
    """Reads Winoground's examples.jsonl: two items per example, grouped by its id."""
    rows = read_jsonl(path)
    return _collect(rows, lambda where, e: _winoground_items(where, e, images))


def _winoground_items(where: str, entry: Any, images: Path) -> list[ProbeItem]:
    if entry is None:
        raise DataError(f"{where}: not valid JSON")
    group = str(entry.get("id", where))
    tag = str(entry.get("collapsed_tag") or entry.get("tag") or "all")
    captions = [_text(entry[f"caption_{i}"], f"caption_{i}", where) for i in (0, 1)]
    return [
        ProbeItem(f"{group}/{i}", resolve_image(images, str(entry[f"image_{i}"])), captions[i],
                  (captions[1 - i],), tag, labels=(f"caption_{i}", f"caption_{1 - i}"), group=group)
        for i in (0, 1)
    ]


# ---------------------------------------------------------------------------------------------- SpatialVOC2K

FRENCH_PREPOSITIONS = {
    "a_cote": "next to", "a_cote_de": "next to", "a_cot_de": "next to", "a_l'exterieur_de": "outside of",
    "au_dessous_de": "below", "au_dessus_de": "above", "au_niveau_de": "at the level of", "aucun": "none",
    "autour_de": "around", "contre": "against", "dans": "in", "derriere": "behind", "devant": "in front of",
    "en_face_de": "opposite", "en_travers_de": "across", "le_long_de": "along", "loin_de": "far from",
    "loin": "far from", "par_dela": "beyond", "pres": "near", "pres_de": "near", "sous": "under", "sur": "on",
}
FRENCH_OBJECTS = {
    "l'avion": "aeroplane", "l'oiseau": "bird", "le_velo": "bicycle", "le_bateau": "boat",
    "la_bouteille": "bottle", "le_bus": "bus", "la_voiture": "car", "le_chat": "cat", "la_chaise": "chair",
    "la_vache": "cow", "la_table": "dining table", "le_chien": "dog", "le_cheval": "horse",
    "la_moto": "motorbike", "la_personne": "person", "la_plante": "potted plant", "le_mouton": "sheep",
    "le_canape": "sofa", "le_train": "train", "l'ecran": "tv monitor",
}
# Prepositions SpatialVOC2K uses that the free-text lexicon does not swap.
_VOC_ANTONYMS = {**ANTONYMS, "on": "under", "in": "outside of", "against": "far from"}


def read_spatialvoc2k(path: Path, images: Path) -> Loaded:
    """Reads SpatialVOC2K's JSON: one item per annotated object pair whose prepositions have an antonym."""
    relations = [(f"{key}/{index}", (key, entry, relation))
                 for key, entry in _entries(read_json(path), path, dict)
                 for index, relation in enumerate(entry["relations"] if isinstance(entry, dict) else [])]
    return _collect(relations, lambda where, parts: _voc_item(where, parts, images))


def _voc_item(where: str, parts: tuple[str, dict[str, Any], dict[str, Any]], images: Path) -> list[ProbeItem]:
    """The item of one annotated relation: ``parts`` is (image key, image entry, relation)."""
    key, entry, relation = parts
    objects = {o["name"]: o for o in entry["objects"].values()}
    first, second = objects[relation["object_0"]], objects[relation["object_1"]]
    allowed = [_voc_preposition(p) for p in relation["all"]]
    chosen = next((p for p in allowed if p in _VOC_ANTONYMS and _VOC_ANTONYMS[p] not in allowed), None)
    if chosen is None:
        return []  # every preposition's antonym is also acceptable: nothing false to ask
    subject, obj = _voc_object(first["name"]), _voc_object(second["name"])
    antonym = _VOC_ANTONYMS[chosen]
    image = resolve_image(images, str(entry.get("filename") or entry.get("file_name") or f"{key}.jpg"))
    true, false = f"the {subject} is {chosen} the {obj}", f"the {subject} is {antonym} the {obj}"
    box = _union_box(first, second)
    return [ProbeItem(where, image, true, (false,), chosen, chosen, (chosen, antonym), box)]


def _voc_preposition(label: str) -> str:
    return FRENCH_PREPOSITIONS.get(label, label.replace("_", " "))


def _voc_object(name: str) -> str:
    base = re.sub(r"_?\d+$", "", name)
    return FRENCH_OBJECTS.get(base, base.replace("_", " "))


def _union_box(first: dict[str, Any], second: dict[str, Any]) -> tuple[float, float, float, float]:
    left, top = min(first["xmin"], second["xmin"]), min(first["ymin"], second["ymin"])
    right, bottom = max(first["xmax"], second["xmax"]), max(first["ymax"], second["ymax"])
    return float(left), float(top), float(right - left), float(bottom - top)
