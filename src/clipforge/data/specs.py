"""`--data` specs: parse ``KIND:LOCATION[:SPLIT]`` and open the matching reader.

Kinds:
    ``flickr8k:ROOT[:split]``       ``captions.txt``, ``images/``, ``{train,dev,test}_images.txt``
    ``coco:CAPTIONS_JSON:IMAGE_DIR`` COCO captions JSON and its image folder
    ``csv:FILE[:split]``            open_clip CSV/TSV (``filepath``/``title`` columns by default)
    ``synthetic:DIR[:split]``       ``clipforge synth`` output: ``captions.csv`` (filepath,caption,split)
    ``folder:DIR``                  images with same-name ``.txt`` captions
    ``webdataset:PATTERN``          uncompressed tar shards, e.g. ``shards/{000..009}.tar``

The kind ends at the first ':'. A split is read from the last ':' only when what follows is a known
split name, so a location may itself contain ':'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipforge.data.readers import (
    BAD_REASONS,
    BadSample,
    BadSampleCounter,
    CocoData,
    CsvData,
    Flickr8kData,
    FolderData,
    ImageTextData,
    Record,
    WebDatasetData,
)
from clipforge.errors import DataError

__all__ = [
    "BAD_REASONS",
    "KINDS",
    "SPLITS",
    "BadSample",
    "BadSampleCounter",
    "DataSpec",
    "ImageTextData",
    "Record",
    "open_data",
    "parse_spec",
]

KINDS = ("flickr8k", "coco", "csv", "synthetic", "folder", "webdataset")
SPLITS = ("train", "dev", "val", "test", "test_heldout", "val_style", "test_style")
_SPLIT_KINDS = ("flickr8k", "csv", "synthetic")


@dataclass(frozen=True)
class DataSpec:
    """A parsed ``KIND:LOCATION[:SPLIT]`` spec."""

    kind: str
    location: str
    split: str | None = None


def parse_spec(spec: str) -> DataSpec:
    """Parses a `--data` spec.

    Raises:
        DataError: the kind is unknown, the location is empty, or the kind takes no split.
    """
    kind, colon, rest = spec.partition(":")
    if not colon or not rest:
        raise DataError(f"data spec '{spec}' must look like KIND:LOCATION (kinds: {', '.join(KINDS)})")
    if kind not in KINDS:
        raise DataError(f"unknown data kind '{kind}' in '{spec}' (kinds: {', '.join(KINDS)})")
    head, _, tail = rest.rpartition(":")
    if head and tail in SPLITS:
        if kind not in _SPLIT_KINDS:
            raise DataError(f"data kind '{kind}' takes no split, got '{tail}' in '{spec}'")
        return DataSpec(kind, head, tail)
    return DataSpec(kind, rest)


def open_data(
    spec: str,
    *,
    image_key: str = "filepath",
    caption_key: str = "title",
    sep: str | None = None,
) -> ImageTextData:
    """Opens the image-caption data named by `spec`; nothing is read beyond checking the paths exist.

    Args:
        spec: ``KIND:LOCATION[:SPLIT]`` (see the module docstring).
        image_key: image path column of a ``csv:`` file.
        caption_key: caption column of a ``csv:`` file.
        sep: separator of a ``csv:`` file (default: tab when the header has a tab, else comma).

    Raises:
        DataError: the spec is malformed, or a root, file or split file is missing.
    """
    parsed = parse_spec(spec)
    location = Path(parsed.location).expanduser()
    _check_split_name(spec, parsed, location)
    if parsed.kind == "flickr8k":
        return Flickr8kData(spec, location, parsed.split)
    if parsed.kind == "coco":
        return _open_coco(spec, parsed.location)
    if parsed.kind == "csv":
        return CsvData(
            spec, location, image_key=image_key, caption_key=caption_key, sep=sep, split=parsed.split
        )
    if parsed.kind == "synthetic":
        return _open_synthetic(spec, location, parsed.split)
    if parsed.kind == "folder":
        return FolderData(spec, location)
    return WebDatasetData(spec, parsed.location)


def _check_split_name(spec: str, parsed: DataSpec, location: Path) -> None:
    """`flickr8k:ROOT:testing`: a misspelt split reads as part of the path; name the allowed splits."""
    head, colon, tail = parsed.location.rpartition(":")
    if parsed.kind in _SPLIT_KINDS and colon and not location.exists() and Path(head).expanduser().exists():
        raise DataError(f"unknown split '{tail}' in '{spec}' (splits: {', '.join(SPLITS)})")


def _open_coco(spec: str, location: str) -> ImageTextData:
    captions_json, colon, image_dir = location.rpartition(":")
    if not colon or not captions_json or not image_dir:
        raise DataError(f"coco spec '{spec}' must look like coco:CAPTIONS_JSON:IMAGE_DIR")
    return CocoData(spec, Path(captions_json).expanduser(), Path(image_dir).expanduser())


def _open_synthetic(spec: str, root: Path, split: str | None) -> ImageTextData:
    if not root.is_dir():
        raise DataError(f"synthetic data folder not found: {root}")
    captions = root / "captions.csv"
    if not captions.is_file():
        raise DataError(f"synthetic captions file not found: {captions}")
    return CsvData(spec, captions, image_key="filepath", caption_key="caption", sep=",", split=split)
