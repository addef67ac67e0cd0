"""Probe items: an image, one true sentence and the false sentences it must beat.

Every suite format is read into `ProbeItem`s, so scoring and statistics never see a file format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from PIL import Image

from clipforge.data.transforms import load_image, to_rgb
from clipforge.errors import ImageError


class ImageRecipe(Protocol):
    """An image made on demand (a mirrored photo, a collage): a stable name and the pixels.

    `clipforge.data.spatial_aug.Mirrored` and `Collage` are recipes.
    """

    @property
    def key(self) -> str: ...

    def render(self) -> Image.Image: ...


ImageSource = str | Path | bytes | Image.Image | ImageRecipe


@dataclass(frozen=True)
class ProbeItem:
    """One probe: the model passes when `true` scores above every sentence in `false`.

    Attributes:
        id: a name unique within the suite (used in reports and in the bad-item list).
        image: a path, encoded bytes, an already-loaded PIL image or a recipe rendered when scored.
        true: the sentence that describes the image.
        false: the sentences that must score lower (at least one).
        tag: the group the item is reported under (swap kind, preposition, category).
        relation: the preposition of the true sentence, when the suite knows it.
        labels: what each sentence stands for in the confusion table, ``(true, *false)``; derived from
            the spatial phrases when empty.
        crop: ``(x, y, w, h)`` box cut out of the image before scoring (ARO's union box).
        group: items scored together by a group metric (What'sUp object pair, Winoground example).
        split: the part of the suite the item belongs to, reported on its own as well (a synthetic
            suite's scene split: ``test``, ``test_heldout`` or the held-out style ``test_style``).
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
    split: str | None = None

    @property
    def sentences(self) -> tuple[str, ...]:
        """The true sentence first, then the false ones."""
        return (self.true, *self.false)

    @property
    def image_key(self) -> str:
        """Identifies the pixels to encode, so items sharing an image (and crop) share one embedding."""
        # In-memory images are told apart by object: items made from one record share the object.
        if isinstance(self.image, str | Path):
            base = str(self.image)
        elif isinstance(self.image, bytes | Image.Image):
            base = f"mem:{id(self.image)}"
        else:
            base = self.image.key
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
    source = item.image
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, str | Path | bytes):
        image = load_image(source)
    else:
        image = source.render()
    image = to_rgb(image)
    if item.crop is None:
        return image
    x, y, w, h = item.crop
    if w <= 0 or h <= 0:
        raise ImageError(f"empty crop box {item.crop} for item {item.id}")
    return image.crop((round(x), round(y), round(x + w), round(y + h)))


@dataclass
class Suite:
    """Loaded probe items and what could not be read (`clipforge.probe.suites.load_suite` makes one).

    Attributes:
        spec: the spec the suite was loaded from.
        kind: its kind (see `clipforge.probe.suites`).
        items: the items, in file order.
        bad: entries that could not be read (images are checked later, when scored).
        group_metric: the group scores `summarize` adds for this kind, if any.
    """

    spec: str
    kind: str
    items: list[ProbeItem]
    bad: list[BadItem] = field(default_factory=list)
    group_metric: str | None = None
