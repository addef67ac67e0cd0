"""Text written onto images: the rendering half of a typographic attack (a label on an apple reads "iPod").

`write_text` draws one word with an outline in a contrasting colour, so it stays legible on any background,
inside the image's *centre square* (side = the shorter side): center-crop preprocessing, which every CLIP
model here uses, keeps that square, so the model always sees the whole word. The word's cap height is a
fraction of the square's side, shrunk when the word would be wider than `MAX_WIDTH` of it. `sample_style`
draws the size, the position and the colours from a seeded generator; the same generator state always gives
the same style, and the same style and word the same pixels.

The font is Pillow's bundled scalable font (`ImageFont.load_default(size=...)`, Pillow >= 10.1 with FreeType):
nothing is downloaded and the pixels do not depend on the fonts installed on the machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from clipforge.errors import ConfigError

HEIGHTS = (0.12, 0.18, 0.25)  # text size as a fraction of the centre square's side
POSITIONS = ("top", "middle", "bottom")
# (fill, outline): white on black, black on white, red on white, yellow on black.
COLOURS = (((255, 255, 255), (0, 0, 0)), ((0, 0, 0), (255, 255, 255)), ((220, 20, 20), (255, 255, 255)),
           ((255, 220, 0), (0, 0, 0)))
MAX_WIDTH = 0.95  # widest text, as a fraction of the centre square's side
MARGIN = 0.04  # gap between the text and the square's top or bottom edge, as a fraction of its side
MIN_SIZE = 6  # smallest font size in pixels

Box = tuple[int, int, int, int]  # left, top, right, bottom (right and bottom exclusive)


@dataclass(frozen=True)
class TextStyle:
    """How a word is written.

    Attributes:
        height: font size as a fraction of the centre square's side.
        position: ``top``, ``middle`` or ``bottom`` of the centre square.
        x: where the text sits horizontally, 0 (left edge of the square) to 1 (right edge).
        fill: text colour.
        outline: colour of the stroke around the letters.
    """

    height: float
    position: str
    x: float
    fill: tuple[int, int, int]
    outline: tuple[int, int, int]

    def __post_init__(self) -> None:
        if self.position not in POSITIONS:
            raise ConfigError(f"text position must be one of {', '.join(POSITIONS)}, got '{self.position}'")
        if not 0 < self.height <= 1 or not 0 <= self.x <= 1:
            raise ConfigError(f"text height must be in (0, 1] and x in [0, 1], got {self.height}, {self.x}")


def sample_style(rng: np.random.Generator) -> TextStyle:
    """A style drawn uniformly from `HEIGHTS` x `POSITIONS` x `COLOURS`, with a uniform horizontal place."""
    fill, outline = COLOURS[int(rng.integers(len(COLOURS)))]
    return TextStyle(float(HEIGHTS[int(rng.integers(len(HEIGHTS)))]),
                     POSITIONS[int(rng.integers(len(POSITIONS)))], float(rng.random()), fill, outline)


Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


@lru_cache(maxsize=64)
def _font(size: int) -> Font:
    return ImageFont.load_default(size=size)


def _fitted(draw: ImageDraw.ImageDraw, text: str, size: int, side: int) -> tuple[Font, int, Box]:
    """The font, stroke width and text box at the origin, shrunk until the text fits `MAX_WIDTH` of `side`."""
    while True:
        font, stroke = _font(size), max(1, size // 12)
        box = draw.textbbox((0, 0), text, font=font, stroke_width=stroke)
        width = box[2] - box[0]
        if width <= MAX_WIDTH * side or size <= MIN_SIZE:
            return font, stroke, (int(box[0]), int(box[1]), int(box[2]), int(box[3]))
        size = max(MIN_SIZE, min(size - 1, int(size * MAX_WIDTH * side / width)))


def write_text(image: Image.Image, text: str, style: TextStyle) -> tuple[Image.Image, Box]:
    """A copy of `image` (RGB) with `text` written on it, and the box the text was drawn inside.

    Every changed pixel lies inside the box; the box lies inside the image's centre square.

    Raises:
        ConfigError: the text is empty.
    """
    if not text.strip():
        raise ConfigError("cannot write an empty text onto an image")
    out = image.convert("RGB")  # convert always copies
    width, height = out.size
    side = min(width, height)
    square_x, square_y = (width - side) // 2, (height - side) // 2
    draw = ImageDraw.Draw(out)
    size = max(MIN_SIZE, round(style.height * side))
    font, stroke, (left, top, right, bottom) = _fitted(draw, text, size, side)
    text_w, text_h = right - left, bottom - top
    x = square_x + round(style.x * max(side - text_w, 0))
    y = square_y + {"top": round(MARGIN * side), "middle": (side - text_h) // 2,
                    "bottom": side - text_h - round(MARGIN * side)}[style.position]
    y = min(max(y, square_y), square_y + max(side - text_h, 0))
    draw.text((x - left, y - top), text, font=font, fill=style.fill, stroke_width=stroke,
              stroke_fill=style.outline)
    box = (max(x, 0), max(y, 0), min(x + text_w, width), min(y + text_h, height))
    return out, box
