"""Real photos whose spatial truth is exact: mirrored with left/right swapped, and two-photo collages.

The probe's ``flip:`` and ``collage:`` suites build these from test photos; spatial training builds the same
from train photos. Images are *recipes* (`Mirrored`, `Collage`): a stable ``key`` and a ``render()`` that
decodes and composes on demand, so a suite of thousands of collages holds no pixels until it is scored.

Left/right in captions (`swap_left_right`): "left"/"right" count as sides when they follow a determiner or
possessive ("to the left of", "on his right"), precede a body part or "side"/"kick"/"turn" ("left arm",
"a high right kick"), or follow a verb of facing or turning ("looks left", "turning right") other than
before "at"/"away"/"now" ("looking right at the camera"). The verb "left" ("has left a trail") and "right"
meaning "exactly" or "correct" are not sides.

Categories of a photo (`photo_category`): `CATEGORY_WORDS` maps nouns to a few visually distinct
categories (dog, man, woman, child, horse, bird, cat, car, bicycle, boat, motorcycle). A photo *is* of
category C when a strict majority of its captions name C and no caption names another category, so in a
collage of a C photo and a D photo, "a C" and "a D" each point at exactly one half. Generic words
("person", "people", "someone") name no category.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from PIL import Image, ImageOps

from clipforge.data.transforms import load_image, to_rgb

T = TypeVar("T")
Layout = Literal["horizontal", "vertical"]
LAYOUTS: tuple[Layout, ...] = ("horizontal", "vertical")
COLLAGE_SIZE = 224
# Mid grey around the tiles: no colour cue, and close to the mean pixel CLIP normalizes away.
FILL = (124, 124, 124)

_SIDE_WORD = re.compile(r"\b(?:left|right)\b", re.IGNORECASE)
_DETERMINERS = {"the", "his", "her", "its", "their", "my", "your"}
_BODY = {"hand", "hands", "arm", "arms", "leg", "legs", "foot", "feet", "side", "shoulder", "knee", "eye",
         "ear", "cheek", "kick", "turn"}
_FACING = {"look", "looks", "looking", "turn", "turns", "turning", "facing", "faces", "lean", "leans",
           "leaning", "point", "points", "pointing", "heads", "heading"}
_NOT_AFTER_FACING = {"at", "away", "now", "back"}

CATEGORY_WORDS: dict[str, tuple[str, ...]] = {
    "dog": ("dog", "dogs", "puppy", "puppies"),
    "man": ("man", "men", "guy", "guys", "gentleman"),
    "woman": ("woman", "women", "lady", "ladies"),
    "child": ("child", "children", "boy", "boys", "girl", "girls", "kid", "kids", "toddler", "baby"),
    "horse": ("horse", "horses", "pony"),
    "bird": ("bird", "birds", "duck", "ducks", "seagull", "seagulls"),
    "cat": ("cat", "cats", "kitten"),
    "car": ("car", "cars", "truck"),
    "bicycle": ("bicycle", "bicycles", "bike", "bikes"),
    "boat": ("boat", "boats", "kayak", "canoe"),
    "motorcycle": ("motorcycle", "motorcycles", "motorbike"),
}
_CATEGORY_OF = {word: category for category, words in CATEGORY_WORDS.items() for word in words}

# The relation the first photo of a layout has to the second, its opposite, and how a sentence says it.
FIRST_RELATION: dict[Layout, str] = {"horizontal": "left of", "vertical": "above"}
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
PHRASES = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}


def _sides(caption: str) -> list[re.Match[str]]:
    """The "left"/"right" words of `caption` that name a side (rules in the module docstring)."""
    found = []
    for match in _SIDE_WORD.finditer(caption):
        before = (re.findall(r"[a-z]+", caption[: match.start()].lower()) or [""])[-1]
        after = (re.findall(r"[a-z]+", caption[match.end() :].lower()) or [""])[0]
        if before in _DETERMINERS or after in _BODY or (before in _FACING and after not in _NOT_AFTER_FACING):
            found.append(match)
    return found


def swap_left_right(caption: str) -> str | None:
    """The caption with every side word swapped, as it reads for the mirrored photo; None when it has none."""
    pieces, last = [], 0
    for match in _sides(caption):
        word = match.group(0)
        other = "right" if word.lower() == "left" else "left"
        pieces += [caption[last : match.start()], other.capitalize() if word[0].isupper() else other]
        last = match.end()
    return "".join(pieces) + caption[last:] if pieces else None


def first_side(caption: str) -> str | None:
    """``"left of"`` or ``"right of"``: the first side word of the caption, or None."""
    sides = _sides(caption)
    return f"{sides[0].group(0).lower()} of" if sides else None


def caption_categories(caption: str) -> set[str]:
    """The categories a caption names (see `CATEGORY_WORDS`)."""
    return {_CATEGORY_OF[w] for w in re.findall(r"[a-z]+", caption.lower()) if w in _CATEGORY_OF}


def photo_category(captions: Sequence[str]) -> str | None:
    """The category a strict majority of `captions` name when no caption names another, else None."""
    named = [caption_categories(c) for c in captions]
    every = set().union(*named) if named else set()
    if len(every) != 1:
        return None
    category = every.pop()
    mentions = sum(category in found for found in named)
    return category if 2 * mentions > len(captions) else None


@dataclass(frozen=True)
class Photo:
    """A photo of a dataset: its record key and where its bytes are (a path, or the bytes themselves)."""

    key: str
    source: Path | bytes

    def render(self) -> Image.Image:
        """The decoded RGB photo.

        Raises:
            ImageError: the file is missing or not a readable image.
        """
        return to_rgb(load_image(self.source, name=self.key))


@dataclass(frozen=True)
class Mirrored:
    """A photo flipped left to right."""

    photo: Photo

    @property
    def key(self) -> str:
        """Names the pixels: the photo's key and the flip."""
        return f"{self.photo.key}@mirror"

    def render(self) -> Image.Image:
        """The mirrored RGB photo."""
        return ImageOps.mirror(self.photo.render())


@dataclass(frozen=True)
class Collage:
    """Two photos side by side (``horizontal``: `first` on the left) or stacked (``vertical``: on top)."""

    first: Photo
    second: Photo
    layout: Layout
    size: int = COLLAGE_SIZE

    @property
    def key(self) -> str:
        """Names the pixels: both photos, the layout and the size."""
        return f"collage:{self.first.key}|{self.second.key}|{self.layout}|{self.size}"

    def render(self) -> Image.Image:
        """The collage as a ``size`` x ``size`` RGB image."""
        return compose(self.first.render(), self.second.render(), self.layout, self.size)


def compose(first: Image.Image, second: Image.Image, layout: Layout, size: int = COLLAGE_SIZE) -> Image.Image:
    """Puts each photo, shrunk to fit a ``size/2`` square, in the middle of its half of a grey square.

    The canvas is square so a CLIP center crop keeps both photos whole.
    """
    canvas = Image.new("RGB", (size, size), FILL)
    quarter = size / 4
    # Centres of the two halves; both layouts show equal tiles, only their arrangement differs.
    centres = [(1, 2), (3, 2)] if layout == "horizontal" else [(2, 1), (2, 3)]
    for photo, (cx, cy) in zip((first, second), centres, strict=True):
        tile = ImageOps.contain(to_rgb(photo), (size // 2, size // 2), Image.Resampling.BICUBIC)
        canvas.paste(tile, (round(cx * quarter - tile.width / 2), round(cy * quarter - tile.height / 2)))
    return canvas


def relation_sentence(subject: str, relation: str, obj: str) -> str:
    """``"a dog to the left of a man"`` for categories and one of `PHRASES`' relations."""
    return f"{_article(subject)} {subject} {PHRASES[relation]} {_article(obj)} {obj}"


def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


def collage_statements(first: str, second: str, layout: Layout) -> list[tuple[str, str, str]]:
    """``(true, false, relation)`` sentences about a collage of a `first`- and a `second`-category photo.

    Both phrasings: the first photo's relation to the second, and the second's to the first; the false
    sentence swaps the relation for its opposite.
    """
    relation = FIRST_RELATION[layout]
    opposite = OPPOSITE[relation]
    return [
        (relation_sentence(first, relation, second), relation_sentence(first, opposite, second), relation),
        (relation_sentence(second, opposite, first), relation_sentence(second, relation, first), opposite),
    ]


@dataclass(frozen=True)
class CollageStatement:
    """A collage with a true sentence about it, that sentence with the relation swapped, and the relation."""

    name: str  # "<layout>/<order>/<phrasing>", unique within one photo pair
    collage: Collage
    true: str
    false: str
    relation: str


def collage_variants(a: Photo, x: str, b: Photo, y: str, size: int = COLLAGE_SIZE) -> list[CollageStatement]:
    """The 8 statements about photos `a` (category `x`) and `b` (`y`): both layouts, both orders (``ab``,
    ``ba``), both phrasings, so each sentence is true of one collage and false of another."""
    orders = {"ab": ((a, x), (b, y)), "ba": ((b, y), (a, x))}
    statements = []
    for layout in LAYOUTS:
        for order, ((first, one), (second, two)) in orders.items():
            collage = Collage(first, second, layout, size)
            for phrasing, (true, false, relation) in enumerate(collage_statements(one, two, layout)):
                name = f"{layout}/{order}/{phrasing}"
                statements.append(CollageStatement(name, collage, true, false, relation))
    return statements


def pair_photos(photos: Sequence[tuple[T, str]], seed: int = 0) -> list[tuple[tuple[T, str], tuple[T, str]]]:
    """Pairs `(photo, category)` entries of different categories, each photo at most once, seeded.

    The photos are shuffled, then each is paired with the earliest unpaired photo of another category.
    """
    order = list(photos)
    random.Random(seed).shuffle(order)
    waiting: list[tuple[T, str]] = []
    pairs = []
    for entry in order:
        match = next((i for i, other in enumerate(waiting) if other[1] != entry[1]), None)
        if match is None:
            waiting.append(entry)
        else:
            pairs.append((waiting.pop(match), entry))
    return pairs


def category_counts(photos: Sequence[tuple[T, str]]) -> dict[str, int]:
    """Photos per category, most common first."""
    return dict(Counter(category for _, category in photos).most_common())
