"""Probe items: an image, one true sentence and the false sentences it must beat.

Every suite format is read into `ProbeItem`s, so scoring and statistics never see a file format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from clipforge.data.transforms import load_image, to_rgb
from clipforge.errors import ImageError

ImageSource = str | Path | bytes | Image.Image


@dataclass(frozen=True)
class ProbeItem:
    """One probe: the model passes when `true` scores above every sentence in `false`.

    Attributes:
        id: a name unique within the suite (used in reports and in the bad-item list).
        image: a path, encoded bytes or an already-loaded PIL image.
        true: the sentence that describes the image.
        false: the sentences that must score lower (at least one).
        tag: the group the item is reported under (swap kind, preposition, category).
        relation: the preposition of the true sentence, when the suite knows it.
        labels: what each sentence stands for in the confusion table, ``(true, *false)``; derived from
            the spatial phrases when empty.
        crop: ``(x, y, w, h)`` box cut out of the image before scoring (ARO's union box).
        group: items scored together by a group metric (What'sUp object pair, Winoground example).
    """

    id: str
    image: ImageSource
    true: str
    false: tuple[str, ...]
    tag: str = "all"
    relation: str | None = None
    labels: tuple[str, ...] = ()
    crop: tuple[float, float, float, float] | None = None
    group: str | None = None

    @property
    def sentences(self) -> tuple[str, ...]:
        """The true sentence first, then the false ones."""
        return (self.true, *self.false)

    @property
    def image_key(self) -> str:
        """Identifies the pixels to encode, so items sharing an image (and crop) share one embedding."""
        # In-memory images are told apart by object: items made from one record share the object.
        base = str(self.image) if isinstance(self.image, str | Path) else f"mem:{id(self.image)}"
        return base if self.crop is None else f"{base}@{','.join(f'{v:g}' for v in self.crop)}"


@dataclass(frozen=True)
class BadItem:
    """An item that could not be scored (or a line that could not be read), and why."""

    id: str
    reason: str


def load_item_image(item: ProbeItem) -> Image.Image:
    """The item's RGB image, cropped to its box when it has one.

    Raises:
        ImageError: the file is missing or unreadable, or the crop box is empty.
    """
    image = item.image if isinstance(item.image, Image.Image) else load_image(item.image)
    image = to_rgb(image)
    if item.crop is None:
        return image
    x, y, w, h = item.crop
    if w <= 0 or h <= 0:
        raise ImageError(f"empty crop box {item.crop} for item {item.id}")
    return image.crop((round(x), round(y), round(x + w), round(y + h)))
