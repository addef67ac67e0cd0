"""Image corruptions at five severities, for distribution-shift curves (after ImageNet-C's definitions).

Severities 1-5 follow Hendrycks & Dietterich (2019): Gaussian noise of standard deviation
0.08/0.12/0.18/0.26/0.38 (pixels in [0, 1]); Gaussian blur of sigma 1/2/3/4/6 pixels at 224 px (scaled
with the image's shorter side); JPEG re-encoding at quality 25/18/15/10/7; greyscale blends 20/40/60/80/100 %
of the way to the luminance image. Noise is seeded by the image key, so a corrupted dataset is the same
on every run (and its cached features stay valid).
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
from PIL import Image, ImageFilter

from clipforge.data.labelled import ClassificationData, LabelledImage, MappedData
from clipforge.errors import DataError

NOISE_STD = (0.08, 0.12, 0.18, 0.26, 0.38)
BLUR_SIGMA = (1.0, 2.0, 3.0, 4.0, 6.0)
JPEG_QUALITY = (25, 18, 15, 10, 7)
REFERENCE_SIDE = 224  # blur sigmas are defined at this image size
KINDS = ("gaussian_noise", "blur", "jpeg", "greyscale")


def gaussian_noise(image: Image.Image, severity: int, key: str) -> Image.Image:
    """Adds clipped Gaussian noise, seeded by `key`."""
    seed = int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "little")
    pixels = np.asarray(image, dtype=np.float32) / 255.0  # [H, W, 3]
    noisy = pixels + np.random.default_rng(seed).normal(0.0, NOISE_STD[severity - 1], pixels.shape)
    return Image.fromarray((np.clip(noisy, 0.0, 1.0) * 255.0).round().astype(np.uint8))


def blur(image: Image.Image, severity: int, key: str) -> Image.Image:
    """Gaussian blur whose sigma scales with the image's shorter side."""
    sigma = BLUR_SIGMA[severity - 1] * min(image.size) / REFERENCE_SIDE
    return image.filter(ImageFilter.GaussianBlur(radius=sigma))


def jpeg(image: Image.Image, severity: int, key: str) -> Image.Image:
    """Re-encodes as a low-quality JPEG."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY[severity - 1])
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def greyscale(image: Image.Image, severity: int, key: str) -> Image.Image:
    """Blends toward the luminance image; severity 5 is fully grey."""
    grey = image.convert("L").convert("RGB")
    return Image.blend(image, grey, severity / 5)


_CORRUPTIONS = {"gaussian_noise": gaussian_noise, "blur": blur, "jpeg": jpeg, "greyscale": greyscale}


def corrupt_image(image: Image.Image, kind: str, severity: int, key: str = "") -> Image.Image:
    """`image` (RGB) under corruption `kind` at `severity` (1-5).

    Raises:
        DataError: unknown kind or a severity outside 1-5.
    """
    if kind not in _CORRUPTIONS:
        raise DataError(f"unknown corruption '{kind}' (known: {', '.join(KINDS)})")
    if not 1 <= severity <= 5:
        raise DataError(f"corruption severity must be 1-5, got {severity}")
    return _CORRUPTIONS[kind](image.convert("RGB"), severity, key)


def corrupted(data: ClassificationData, kind: str, severity: int, name: str) -> ClassificationData:
    """`data` with every image corrupted (same keys, labels and classes)."""
    corrupt_image(Image.new("RGB", (8, 8)), kind, severity)  # fails now on a bad kind or severity

    def transform(image: Image.Image, item: LabelledImage) -> Image.Image:
        return corrupt_image(image, kind, severity, item.key)

    return MappedData(name, data, transform)
