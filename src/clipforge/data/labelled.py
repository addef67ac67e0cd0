"""Labelled images for classification: class names, integer labels and optional prompt templates.

A `ClassificationData` is an `ImageTextData` whose records carry their class name as the only caption,
so the image-text loader, its bad-sample counting and the frozen-feature cache read it unchanged.
`MappedData` derives a dataset whose images are a function of another's (a corruption, text written
onto the image, ...), keeping keys and labels: the way to build distribution shifts and attacks.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from clipforge.data.readers import BadSample, ImageTextData, Record
from clipforge.data.transforms import load_image
from clipforge.errors import DataError, ImageError
from clipforge.fileio import read_regular_file

MAX_LIST_BYTES = 2**20  # classnames.txt and templates.txt are a few kilobytes


@dataclass(frozen=True)
class LabelledImage:
    """One image of a classification dataset.

    Attributes:
        key: unique within the dataset (a file name, or a generated name for rendered images).
        label: index into the dataset's class names.
        source: where the bytes come from (a path; for generated images, a description).
    """

    key: str
    label: int
    source: str


class ClassificationData(ImageTextData):
    """Images with integer labels.

    Attributes:
        name: the spec it was opened from.
        classnames: one name per class; the prompt text of the class.
        items: the labelled images, in a fixed order.
        templates: prompt templates with one "{}" that suit this data; empty when the caller's default
            (e.g. OpenAI's 80 ImageNet templates) should be used.
    """

    def __init__(self, name: str, classnames: Sequence[str], items: Sequence[LabelledImage],
                 templates: Sequence[str] = ()) -> None:
        super().__init__(name)
        self.classnames, self.items, self.templates = tuple(classnames), tuple(items), tuple(templates)
        _check(name, self.classnames, self.items, self.templates)
        self._by_key = {item.key: item for item in self.items}

    def _entries(self) -> Iterator[Record | BadSample]:
        for item in self.items:
            yield Record(item.key, item.source, (self.classnames[item.label],))

    def label_of(self, key: str) -> int:
        """The label of the image named `key`."""
        return self._by_key[key].label

    def item(self, key: str) -> LabelledImage:
        """The labelled image named `key`."""
        return self._by_key[key]

    def image(self, key: str) -> Image.Image:
        """The decoded image named `key`.

        Raises:
            ImageError: it cannot be read or decoded.
        """
        item = self._by_key[key]
        try:
            data = self.read_bytes(Record(item.key, item.source, ()))
        except OSError as err:
            raise ImageError(f"cannot read image {item.source}: {err}") from err
        return load_image(data, name=item.source)

    def class_counts(self) -> dict[str, int]:
        """Images per class name, in class order."""
        counts = Counter(item.label for item in self.items)
        return {name: counts.get(i, 0) for i, name in enumerate(self.classnames)}


def _check(name: str, classnames: tuple[str, ...], items: tuple[LabelledImage, ...],
           templates: tuple[str, ...]) -> None:
    if len(classnames) < 2 or any(not c.strip() for c in classnames):
        raise DataError(f"'{name}': a classification needs at least two non-empty class names")
    if len(set(classnames)) != len(classnames):
        raise DataError(f"'{name}': duplicate class names in {list(classnames)}")
    bad_template = next((t for t in templates if t.count("{}") != 1), None)
    if bad_template is not None:
        raise DataError(f"'{name}': template {bad_template!r} must contain exactly one '{{}}'")
    if not items:
        raise DataError(f"'{name}' has no images")
    bad_label = next((i for i in items if not 0 <= i.label < len(classnames)), None)
    if bad_label is not None:
        raise DataError(f"'{name}': image {bad_label.key} has label {bad_label.label} outside the classes")
    if len({i.key for i in items}) != len(items):
        raise DataError(f"'{name}': image keys are not unique")


def png_bytes(image: Image.Image) -> bytes:
    """Lossless encoding of a generated or transformed image (the same pixels give the same bytes)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


ImageMap = Callable[[Image.Image, LabelledImage], Image.Image]


class MappedData(ClassificationData):
    """Another dataset's images passed through `transform` (keys, labels, classes and templates kept).

    An image the parent cannot decode is handed on as its raw bytes, so the loader counts it as bad.
    """

    def __init__(self, name: str, parent: ClassificationData, transform: ImageMap) -> None:
        super().__init__(name, parent.classnames, parent.items, parent.templates)
        self.parent, self.transform = parent, transform

    def read_bytes(self, record: Record) -> bytes:
        raw = self.parent.read_bytes(record)
        try:
            image = load_image(raw, name=record.source)
        except ImageError:
            return raw
        return png_bytes(self.transform(image.convert("RGB"), self.item(record.key)))


def read_lines(path: Path) -> list[str]:
    """Non-empty, stripped lines of an optional text file (names, templates); [] when it is absent.

    Raises:
        DataError: it exists but is not a readable regular UTF-8 file of at most `MAX_LIST_BYTES`.
    """
    if not path.exists():
        return []
    raw = read_regular_file(path, MAX_LIST_BYTES, DataError, "text file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start})") from err
    return [line.strip() for line in text.splitlines() if line.strip()]
