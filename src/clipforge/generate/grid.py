"""Contact sheets: a prompt's candidates side by side, the kept (or picked) ones framed."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

KEPT_COLOR = (40, 220, 90)
_BORDER = 2
Color = tuple[int, int, int]


def candidate_grid(images: Sequence[Image.Image], kept: Sequence[bool], columns: int = 8,
                   scale: int = 2) -> Image.Image:
    """The candidates in draw order, `columns` per row, scaled up `scale` times; kept ones framed green."""
    return marked_grid(images, [[KEPT_COLOR] if keep else [] for keep in kept], columns, scale)


def marked_grid(images: Sequence[Image.Image], marks: Sequence[Sequence[Color]], columns: int = 8,
                scale: int = 2) -> Image.Image:
    """The candidates in draw order, each inside nested frames of its `marks` colours (outermost first)."""
    side = images[0].width * scale
    pad = _BORDER * max([1, *(len(m) for m in marks)])
    cell = side + 2 * pad
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (cell * min(columns, len(images)), cell * rows), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (image, colors) in enumerate(zip(images, marks, strict=True)):
        x, y = (k % columns) * cell, (k // columns) * cell
        for depth, color in enumerate(colors):
            inset = depth * _BORDER
            draw.rectangle((x + inset, y + inset, x + cell - 1 - inset, y + cell - 1 - inset), fill=color)
        sheet.paste(image.resize((side, side), Image.Resampling.NEAREST), (x + pad, y + pad))
    return sheet
