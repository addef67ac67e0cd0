"""Probe suites named by a spec ``KIND:LOCATION``, loaded into items.

Kinds:
    ``pairs:FILE.jsonl``           our JSONL pairs (images under ``--images``, default: the file's folder)
    ``preposition-swap:DATA``      captions of any ``--data`` spec (e.g. ``flickr8k:ROOT:test``) with a
                                   spatial phrase; the false sentence swaps it for its antonym
    ``flip:DATA``                  captions with left/right, on the photo and on its mirror image
    ``collage:DATA``               two photos of different caption-mined categories, side by side or stacked
                                   (`clipforge.probe.exact_spatial`; options ``seed``, ``size``)
    ``synthetic:DIR``              the synthetic generator's ``DIR/probes.jsonl``
    ``spatialvoc2k:FILE.json``     SpatialVOC2K annotations
    ``whatsup:FILE.json``          What'sUp controlled images or COCO/GQA-spatial
    ``aro:FILE.json``              ARO VG-Relation or VG-Attribution
    ``sugarcrepe:FILE_OR_DIR``     SugarCrepe category file(s)
    ``winoground:FILE.jsonl``      Winoground examples

Analysis kinds (`clipforge.probe.analysis`; not item lists, each scores models its own way):
    ``bias:DATA``                  gender skew of retrieval for neutral queries (`clipforge.probe.bias`)
    ``typographic:DATA``           a wrong class name written on classification images, against a neutral
                                   word (`clipforge.probe.typographic`)

``--option KEY=VALUE`` sets a kind's options; kinds without options refuse any.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from clipforge.data.negatives import SpatialSwap, spatial_swaps
from clipforge.data.specs import open_data
from clipforge.errors import ConfigError, DataError
from clipforge.probe import bias, formats, typographic
from clipforge.probe.analysis import Analysis, parse_options
from clipforge.probe.exact_spatial import CollageOptions, collage_items, flip_items, photo_of
from clipforge.probe.items import BadItem, ProbeItem, Suite
from clipforge.probe.spatial import canonical_relation

_READERS: dict[str, Callable[[Path, Path], formats.Loaded]] = {
    "pairs": formats.read_pairs,
    "spatialvoc2k": formats.read_spatialvoc2k,
    "whatsup": formats.read_whatsup,
    "aro": formats.read_aro,
    "sugarcrepe": formats.read_sugarcrepe,
    "winoground": formats.read_winoground,
}
# Analysis kinds: open(location, options, limit).
ANALYSES: dict[str, Callable[[str, Sequence[str], int | None], Analysis]] = {
    "bias": bias.open_bias, "typographic": typographic.open_typographic}
ITEM_KINDS = ("pairs", "preposition-swap", "flip", "collage", "synthetic", *list(_READERS)[1:])
KINDS = (*ITEM_KINDS, *ANALYSES)
GROUP_METRICS = {"whatsup": "whatsup", "winoground": "winoground"}


def open_suite(spec: str, images: str | Path | None = None, limit: int | None = None,
               options: Sequence[str] = ()) -> Suite | Analysis:
    """Opens an item suite or an analysis (see the module docstring).

    Args:
        spec: ``KIND:LOCATION``.
        images: folder the suite's image paths are relative to (default: the file's folder).
        limit: keep only the first `limit` items (whole groups are kept; an analysis reads that many images).
        options: ``KEY=VALUE`` options of the kind.

    Raises:
        DataError: the spec is malformed or its file is missing or not of the expected format.
        ConfigError: an option the kind does not take.
    """
    kind, location = _split_spec(spec)
    if kind in ANALYSES:
        return ANALYSES[kind](location, options, limit)
    return load_suite(spec, images, limit, options)


def _split_spec(spec: str) -> tuple[str, str]:
    kind, colon, location = spec.partition(":")
    if not colon or not location:
        raise DataError(f"suite spec '{spec}' must look like KIND:LOCATION (kinds: {', '.join(KINDS)})")
    if kind not in KINDS:
        raise DataError(f"unknown suite kind '{kind}' in '{spec}' (kinds: {', '.join(KINDS)})")
    return kind, location


def load_suite(spec: str, images: str | Path | None = None, limit: int | None = None,
               options: Sequence[str] = ()) -> Suite:
    """Loads the item suite named by `spec`.

    Args:
        spec: ``KIND:LOCATION`` (see the module docstring).
        images: folder the suite's image paths are relative to (default: the file's folder).
        limit: keep only the first `limit` items (whole groups are not split).
        options: ``KEY=VALUE`` options (``collage:`` only).

    Raises:
        DataError: the spec is malformed or its file is missing or not of the expected format.
        ConfigError: an option the kind does not take, or an analysis kind (use `open_suite`).
    """
    kind, location = _split_spec(spec)
    if kind in ANALYSES:
        raise ConfigError(f"'{kind}:' is an analysis, not an item suite: open it with open_suite")
    if options and kind != "collage":
        raise ConfigError(f"suite kind '{kind}' takes no --option (got '{options[0]}')")
    if kind == "preposition-swap":
        items, bad = preposition_swap_items(location, limit)
    elif kind == "flip":
        items, bad = flip_items(location)
    elif kind == "collage":
        items, bad = collage_items(location, parse_options(CollageOptions, options, "collage options"))
    else:
        items, bad = _read_suite_file(kind, location, images)
    return Suite(spec, kind, _limited(items, limit), bad, GROUP_METRICS.get(kind))


def _read_suite_file(kind: str, location: str, images: str | Path | None) -> formats.Loaded:
    path = Path(location).expanduser()
    if kind == "synthetic":
        path = path / "probes.jsonl"
    if not path.exists():
        raise DataError(f"suite file not found: {path}")
    root = Path(images).expanduser() if images is not None else (path if path.is_dir() else path.parent)
    return _READERS.get(kind, formats.read_pairs)(path, root)


def _limited(items: list[ProbeItem], limit: int | None) -> list[ProbeItem]:
    if limit is None or len(items) <= limit:
        return items
    kept = items[:limit]
    # Extend to the end of the last group so group scores are not computed on half a group.
    while len(kept) < len(items) and kept[-1].group is not None and items[len(kept)].group == kept[-1].group:
        kept.append(items[len(kept)])
    return kept


def preposition_swap_items(data_spec: str, limit: int | None = None) -> tuple[list[ProbeItem], list[BadItem]]:
    """Items from every caption with a spatial phrase: its first phrase swapped for the antonym.

    The swaps are `clipforge.data.negatives.spatial_swaps`, the edits training uses for its negatives;
    the tag is the relation the phrase expresses ("to the left of" and "on the left side of" -> "left of").

    Args:
        data_spec: a ``--data`` spec, e.g. ``flickr8k:ROOT:test``.
        limit: stop after this many items.
    """
    data = open_data(data_spec)
    items: list[ProbeItem] = []
    bad: list[BadItem] = []
    for record in data.records():
        if limit is not None and len(items) >= limit:
            break
        try:
            image = photo_of(data, record).source
        except OSError as err:
            bad.append(BadItem(record.key, f"cannot read image: {err}"))
            continue
        for index, caption in enumerate(record.captions):
            swaps = spatial_swaps(caption)
            if swaps:
                swap = swaps[0]
                labels = (swap.tag, _antonym_tag(swap))
                key = f"{record.key}#{index}"
                items.append(ProbeItem(key, image, caption, (swap.text,), swap.tag, swap.tag, labels))
    bad += [BadItem(b.key, f"{b.reason}: {b.detail}") for b in data.bad.examples.values()]
    return items[:limit] if limit is not None else items, bad


def _antonym_tag(swap: SpatialSwap) -> str:
    """The relation the antonym expresses ("right" in "his right hand" -> "right of")."""
    back = (s.tag for s in spatial_swaps(swap.text) if s.phrase == " ".join(swap.antonym.lower().split()))
    return next(back, canonical_relation(swap.antonym))
