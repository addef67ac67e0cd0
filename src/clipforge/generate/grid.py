"""Contact sheets: a prompt's candidates side by side, the kept ones framed."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

KEPT_COLOR = (40, 220, 90)
_BORDER = 2


def candidate_grid(images: Sequence[Image.Image], kept: Sequence[bool], columns: int = 8,
                   scale: int = 2) -> Image.Image:
    """The candidates in draw order, `columns` per row, scaled up `scale` times; kept ones framed green."""
    side = images[0].width * scale
    cell = side + 2 * _BORDER
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (cell * min(columns, len(images)), cell * rows), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (image, keep) in enumerate(zip(images, kept, strict=True)):
        x, y = (k % columns) * cell, (k // columns) * cell
        if keep:
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=KEPT_COLOR)
        sheet.paste(image.resize((side, side), Image.Resampling.NEAREST), (x + _BORDER, y + _BORDER))
    return sheet
