"""Spatial probes on real photos whose truth is exact: ``flip:DATA`` and ``collage:DATA``.

``flip:`` — every caption of `DATA` with a side word (`clipforge.data.spatial_aug.swap_left_right`) gives
two items: the photo with its caption (false: left/right swapped), and the mirrored photo with the
swapped caption (false: the caption). ``collage:`` — photos of one caption-mined category each
(`photo_category`) are paired across categories (`pair_photos`, seeded); each pair is shown side by side
and stacked, in both orders, and every collage is asked both ways round ("a dog to the left of a man" /
"a man to the right of a dog"), so each true sentence is the false one of another item.

Both designs balance the text prior exactly: the two sentences of an item appear again with the roles
swapped, so a model that cannot see layout — or the blind baseline — scores exactly 0.5 (ties aside).
Tags are the relation of the true sentence; items of one caption (flip) or photo pair (collage) share a
``group``, so ``--limit`` never splits them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipforge.data.readers import WebDatasetData
from clipforge.data.spatial_aug import (
    COLLAGE_SIZE,
    OPPOSITE,
    Mirrored,
    Photo,
    collage_variants,
    first_side,
    pair_photos,
    photo_category,
    swap_left_right,
)
from clipforge.data.specs import ImageTextData, Record, open_data
from clipforge.probe.items import BadItem, ProbeItem

Loaded = tuple[list[ProbeItem], list[BadItem]]


@dataclass(frozen=True)
class CollageOptions:
    """``--option`` keys of ``collage:``.

    Attributes:
        seed: seeds which photos are paired.
        size: side of the square collage in pixels (each photo fits a size/2 square).
    """

    seed: int = 0
    size: int = COLLAGE_SIZE


def photo_of(data: ImageTextData, record: Record) -> Photo:
    """The record's photo; shard members have no path of their own, so their bytes are read now.

    Raises:
        OSError: a shard member cannot be read.
    """
    source = data.read_bytes(record) if isinstance(data, WebDatasetData) else Path(record.source)
    return Photo(record.key, source)


def _read_bad(data: ImageTextData) -> list[BadItem]:
    return [BadItem(b.key, f"{b.reason}: {b.detail}") for b in data.bad.examples.values()]


def flip_items(data_spec: str) -> Loaded:
    """The ``flip:`` items of every caption with a side word (module docstring)."""
    data = open_data(data_spec)
    items: list[ProbeItem] = []
    bad: list[BadItem] = []
    for record in data.records():
        for index, caption in enumerate(record.captions):
            swapped, side = swap_left_right(caption), first_side(caption)
            if swapped is None or side is None:
                continue
            try:
                photo = photo_of(data, record)
            except OSError as err:
                bad.append(BadItem(record.key, f"cannot read image: {err}"))
                break
            items += flip_pair(photo, caption, swapped, side, f"{record.key}#{index}")
    return items, bad + _read_bad(data)


def flip_pair(photo: Photo, caption: str, swapped: str, side: str, group: str) -> list[ProbeItem]:
    """The photo with its caption and the mirrored photo with the swapped caption."""
    other = OPPOSITE[side]
    return [
        ProbeItem(group, photo, caption, (swapped,), side, side, (side, other), group=group),
        ProbeItem(f"{group}/mirror", Mirrored(photo), swapped, (caption,), other, other, (other, side),
                  group=group),
    ]


def collage_items(data_spec: str, options: CollageOptions) -> Loaded:
    """The ``collage:`` items of every photo pair (module docstring)."""
    data = open_data(data_spec)
    photos: list[tuple[Photo, str]] = []
    bad: list[BadItem] = []
    for record in data.records():
        category = photo_category(record.captions)
        if category is None:
            continue
        try:
            photos.append((photo_of(data, record), category))
        except OSError as err:
            bad.append(BadItem(record.key, f"cannot read image: {err}"))
    items = [item for (a, x), (b, y) in pair_photos(photos, options.seed)
             for item in collage_group(a, x, b, y, options.size)]
    return items, bad + _read_bad(data)


def collage_group(a: Photo, x: str, b: Photo, y: str, size: int = COLLAGE_SIZE) -> list[ProbeItem]:
    """The 8 items of photos `a` (category `x`) and `b` (`y`): both layouts, both orders, both phrasings."""
    group = f"{a.key}+{b.key}"
    return [
        ProbeItem(f"{group}/{s.name}", s.collage, s.true, (s.false,), s.relation, s.relation,
                  (s.relation, OPPOSITE[s.relation]), group=group)
        for s in collage_variants(a, x, b, y, size)
    ]
