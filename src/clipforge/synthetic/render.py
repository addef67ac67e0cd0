"""Pixels of synthetic scenes: the shapes' geometry, the palette and the backgrounds, drawn with PIL.

Kept free of scene types so that both the scene sampler (occlusion masks) and the renderer use it.
"""

from __future__ import annotations

import functools
import io
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from clipforge.data.transforms import load_image

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


# ---------------------------------------------------------------------------------------- styled drawing
# `clipforge.synthetic.style` draws a `Style`; these functions turn one into pixels, cheaply enough to
# render every training batch on the fly. Coordinates are pixel centres on a canvas `k` times the image
# size: a box (x0, y0, x1, y1) of the image spans k * x0 - 0.5 ... k * x1 - 0.5 there (the plain renderer
# fills x0 ... x1 - 1, the same span when k = 1).

_SQUARE = ((0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0))
GRADIENT_STEP = 5  # gradient directions are whole multiples of this many degrees
TEXTURES = 256  # textured backgrounds draw one of this many seeded blob maps
_TEXTURE_CELLS = 6  # blobs per side of a texture map
_GRADIENT_CELLS = 8  # a gradient is computed on this grid and resized up (bilinear: exact within it)
_MAP_SIDE = 32  # gradient and texture maps are cached at this side and resized to the canvas
# One bank of standard normal noise, drawn once: an image takes a slice of it at a random offset.
_NOISE = np.random.default_rng(0).standard_normal(1 << 18, dtype=np.float32)


def _solid(size: int, color: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (size, size), color)


def _blend(size: int, first: tuple[int, int, int], second: tuple[int, int, int], weights: Image.Image
           ) -> Image.Image:
    """`first` where the "L" image `weights` is 0, `second` where it is 255, mixed in between."""
    return Image.composite(_solid(size, second), _solid(size, first), weights)


@functools.lru_cache(maxsize=360 // GRADIENT_STEP)
def _gradient_map(angle: int) -> Image.Image:
    """0 to 255 along the direction `angle` (degrees), as an "L" image; shared, do not modify."""
    centres = (np.arange(_GRADIENT_CELLS) + 0.5) / _GRADIENT_CELLS - 0.5
    turn = math.radians(angle)
    ramp = centres[None, :] * math.cos(turn) + centres[:, None] * math.sin(turn)  # [G, G]
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1e-6) * 255.0
    small = Image.fromarray(ramp.round().astype(np.uint8), mode="L")
    return small.resize((_MAP_SIDE, _MAP_SIDE), Image.Resampling.BILINEAR)


@functools.lru_cache(maxsize=TEXTURES)
def _texture_map(index: int) -> Image.Image:
    """Seeded coarse blobs number `index`, 0 to 255, as an "L" image; shared, do not modify."""
    cells = np.random.default_rng([index, 17]).integers(0, 256, (_TEXTURE_CELLS, _TEXTURE_CELLS))
    blobs = Image.fromarray(cells.astype(np.uint8), mode="L")
    return blobs.resize((_MAP_SIDE, _MAP_SIDE), Image.Resampling.BICUBIC)


def _sized(weights: Image.Image, size: int) -> Image.Image:
    return weights.resize((size, size), Image.Resampling.BILINEAR)


def _shifted(color: tuple[int, int, int], amount: float) -> tuple[int, int, int]:
    """`color` lightened (or darkened, for a negative amount) by `amount` on the 0-1 scale."""
    red, green, blue = (min(255, max(0, c + round(255 * amount))) for c in color)
    return red, green, blue


def styled_background(kind: str, colors: tuple[tuple[int, int, int], ...], param: tuple[float, ...],
                      size: int) -> Image.Image:
    """An RGB background of side `size` (see `clipforge.synthetic.style` for the kinds).

    Args:
        kind: ``solid``, ``gradient``, ``texture`` or ``split``.
        colors: the background's two colours.
        param: the kind's parameters (`Style.background_param`).
        size: canvas side in pixels.
    """
    first, second = colors[0], colors[1]
    if kind == "gradient":
        return _blend(size, first, second, _sized(_gradient_map(int(param[0])), size))
    if kind == "texture":
        weights = _sized(_texture_map(int(param[1])), size)
        return _blend(size, _shifted(first, -param[0]), _shifted(first, param[0]), weights)
    image = _solid(size, first)
    if kind == "split":
        rise = math.tan(math.radians(param[1])) * size / 2
        horizon = param[0] * size
        ImageDraw.Draw(image).polygon([(0, horizon - rise), (size, horizon + rise), (size, size), (0, size)],
                                      fill=second)
    return image


def styled_points(shape: str, bbox: Box, geometry: tuple[float, float, float], k: int
                  ) -> list[tuple[float, float]]:
    """Polygon of a stretched, rotated, scaled shape centred in `bbox` on a canvas `k` times larger."""
    scale, aspect, angle = geometry
    unit = _SQUARE if shape == "square" else _UNIT_POLYGONS[shape]
    turn = math.radians(angle)
    stretched = [((u - 0.5) * math.sqrt(aspect), (v - 0.5) / math.sqrt(aspect)) for u, v in unit]
    turned = [(x * math.cos(turn) - y * math.sin(turn), x * math.sin(turn) + y * math.cos(turn))
              for x, y in stretched]
    xs, ys = [p[0] for p in turned], [p[1] for p in turned]
    span = scale * (k * (bbox[2] - bbox[0]) - 1) / max(max(xs) - min(xs), max(ys) - min(ys))
    cx, cy = k * (bbox[0] + bbox[2]) / 2 - 0.5, k * (bbox[1] + bbox[3]) / 2 - 0.5
    mid_x, mid_y = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    return [(cx + (x - mid_x) * span, cy + (y - mid_y) * span) for x, y in turned]


def draw_styled_shape(draw: ImageDraw.ImageDraw, shape: str, bbox: Box, fill: tuple[int, int, int],
                      geometry: tuple[float, float, float], k: int) -> None:
    """Draws `shape` inside `bbox` with its style geometry on a canvas `k` times the image size."""
    if shape != "circle":
        draw.polygon(styled_points(shape, bbox, geometry, k), fill=fill)
        return
    radius = geometry[0] * (k * (bbox[2] - bbox[0]) - 1) / 2
    cx, cy = k * (bbox[0] + bbox[2]) / 2 - 0.5, k * (bbox[1] + bbox[3]) / 2 - 0.5
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=fill)


def rgb_array(image: Image.Image) -> np.ndarray:
    """uint8 [H, W, 3] pixels of an RGB image (through its raw bytes: faster than ``np.asarray``)."""
    return np.frombuffer(image.tobytes(), dtype=np.uint8).reshape(image.height, image.width, 3)


def degrade(image: Image.Image, size: int, blur: float, noise: float, noise_offset: int,
            jpeg_quality: int | None) -> Image.Image:
    """Box-downsamples to `size`, box-blurs, adds per-channel Gaussian noise and re-encodes as JPEG.

    Args:
        image: the canvas, a whole multiple of `size`.
        size: the image side.
        blur: box blur radius in pixels (below 0.05: none).
        noise: noise standard deviation on the 0-255 scale (below 0.05: none).
        noise_offset: where the image's noise starts in the noise bank (any int; wrapped).
        jpeg_quality: JPEG quality, or None for no re-encoding.
    """
    if image.width != size:
        image = image.reduce(image.width // size)
    if blur >= 0.05:
        image = image.filter(ImageFilter.BoxBlur(blur))
    if noise >= 0.05:
        pixels = rgb_array(image).astype(np.float32)  # [S, S, 3]
        start = noise_offset % (len(_NOISE) - pixels.size)
        pixels += noise * _NOISE[start : start + pixels.size].reshape(pixels.shape) + 0.5
        np.clip(pixels, 0, 255, out=pixels)
        image = Image.fromarray(pixels.astype(np.uint8))  # truncating x + 0.5 rounds
    if jpeg_quality is not None:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=jpeg_quality)
        image = load_image(buffer.getvalue(), "JPEG re-encoding")
    return image
