"""Degrading renders the way generators degrade pictures: blur, pixel noise, JPEG artefacts, a shift.

Used to check that the parser still reads generator-like images (tests, benchmarks) and to build the
generated-looking images of the agreement check (`clipforge.skills.lookalike`).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

from clipforge.errors import ConfigError

DEGRADATIONS = ("blur", "noise", "jpeg", "shift", "all")
BLUR_SIGMA = 1.0
NOISE_SIGMA = 0.1
JPEG_QUALITY = 30
SHIFT_PX = 2


def blur(image: Image.Image, sigma: float = BLUR_SIGMA) -> Image.Image:
    """Gaussian blur of `sigma` pixels (each channel)."""
    pixels = np.asarray(image, dtype=np.float64)
    return _to_image(ndimage.gaussian_filter(pixels, sigma=(sigma, sigma, 0)))


def noise(image: Image.Image, rng: np.random.Generator, sigma: float = NOISE_SIGMA) -> Image.Image:
    """Additive Gaussian pixel noise of `sigma` (in units of the full 0-255 range), clipped."""
    pixels = np.asarray(image, dtype=np.float64)
    return _to_image(pixels + rng.normal(0.0, sigma * 255.0, pixels.shape))


def jpeg(image: Image.Image, quality: int = JPEG_QUALITY) -> Image.Image:
    """A JPEG round trip at `quality` (PIL's default 4:2:0 chroma subsampling)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def shift(image: Image.Image, rng: np.random.Generator, pixels: int = SHIFT_PX) -> Image.Image:
    """Moves the picture `pixels` along a random non-zero direction of the 8 neighbours; the uncovered
    strip takes the colour of the image's corner."""
    while True:
        dx, dy = (int(v) * pixels for v in rng.integers(-1, 2, size=2))
        if dx or dy:
            break
    array = np.asarray(image.convert("RGB"))
    out = np.empty_like(array)
    out[...] = array[0, 0]
    height, width = array.shape[:2]
    out[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = \
        array[max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)]
    return Image.fromarray(out)


def degrade(image: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """One degradation of `DEGRADATIONS`; ``all`` applies shift, blur, noise and JPEG in that order."""
    if kind == "blur":
        return blur(image)
    if kind == "noise":
        return noise(image, rng)
    if kind == "jpeg":
        return jpeg(image)
    if kind == "shift":
        return shift(image, rng)
    if kind == "all":
        return jpeg(noise(blur(shift(image, rng)), rng))
    raise ConfigError(f"unknown degradation {kind!r} (known: {', '.join(DEGRADATIONS)})")


def _to_image(pixels: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
