"""Pixels of synthetic scenes: the shapes' geometry, the palette and the backgrounds, drawn with PIL.

Kept free of scene types so that both the scene sampler (occlusion masks) and the renderer use it.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

PALETTE = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "orange": (245, 135, 20),
}
BACKGROUND = (20, 20, 20)

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels; x1, y1 exclusive


def _unit_star(points: int = 5, inner: float = 0.45) -> tuple[tuple[float, float], ...]:
    """Star vertices stretched to fill the unit square (an upright star is shorter than wide)."""
    raw = [(math.cos(math.pi * (k / points - 0.5)) * (1 if k % 2 == 0 else inner),
            math.sin(math.pi * (k / points - 0.5)) * (1 if k % 2 == 0 else inner)) for k in range(2 * points)]
    xs, ys = [p[0] for p in raw], [p[1] for p in raw]
    return tuple(((x - min(xs)) / (max(xs) - min(xs)), (y - min(ys)) / (max(ys) - min(ys))) for x, y in raw)


_THIRD = 1 / 3
# Polygons touch all four sides of the unit square, so a shape fills its bbox exactly.
_UNIT_POLYGONS: dict[str, tuple[tuple[float, float], ...]] = {
    "triangle": ((0.5, 0.0), (1.0, 1.0), (0.0, 1.0)),
    "diamond": ((0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)),
    "cross": ((_THIRD, 0.0), (2 * _THIRD, 0.0), (2 * _THIRD, _THIRD), (1.0, _THIRD), (1.0, 2 * _THIRD),
              (2 * _THIRD, 2 * _THIRD), (2 * _THIRD, 1.0), (_THIRD, 1.0), (_THIRD, 2 * _THIRD),
              (0.0, 2 * _THIRD), (0.0, _THIRD), (_THIRD, _THIRD)),
    "star": _unit_star(),
}
SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross")


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, bbox: Box, fill: tuple[int, int, int] | int) -> None:
    """Draws `shape` filling `bbox`."""
    x0, y0, x1, y1 = bbox
    x1, y1 = x1 - 1, y1 - 1  # PIL boxes include their last pixel
    if shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    else:
        points = [(x0 + u * (x1 - x0), y0 + v * (y1 - y0)) for u, v in _UNIT_POLYGONS[shape]]
        draw.polygon(points, fill=fill)


def shape_mask(shape: str, bbox: Box, image_size: int) -> np.ndarray:
    """Boolean [H, W] mask of the pixels `draw_shape` colours."""
    canvas = Image.new("L", (image_size, image_size), 0)
    draw_shape(ImageDraw.Draw(canvas), shape, bbox, 255)
    return np.asarray(canvas) > 0


def background(image_size: int, texture_seed: int | None) -> Image.Image:
    """Plain dark background, or seeded grey texture when `texture_seed` is given."""
    if texture_seed is None:
        return Image.new("RGB", (image_size, image_size), BACKGROUND)
    rng = np.random.default_rng(texture_seed)
    # Grey blobs plus fine grain: texture without hue, so colour names stay exact.
    blobs = Image.fromarray(rng.integers(15, 85, (8, 8), dtype=np.uint8))
    coarse = blobs.resize((image_size, image_size), Image.Resampling.BILINEAR)
    grain = rng.integers(-10, 11, (image_size, image_size), dtype=np.int16)
    grey = np.clip(np.asarray(coarse, dtype=np.int16) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2))  # [H, W] -> [H, W, 3]
