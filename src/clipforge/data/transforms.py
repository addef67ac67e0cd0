"""Image loading and CLIP preprocessing with PIL + torch only.

Matches OpenAI's pipeline: resize the shortest side (bicubic), center crop, RGB, normalize. torchvision
cannot be used here, so the steps are written out; the crop offsets round like torchvision's.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile

from clipforge.errors import ImageError
from clipforge.fileio import read_regular_file
from clipforge.models.config import PreprocessConfig

# Refuse images above ~89 Mpx (PIL's default warning level) as decompression bombs instead of warning.
MAX_IMAGE_PIXELS = 89_478_485
# Encoded files above this are refused before they are read (an uncompressed 89 Mpx RGBA image fits).
MAX_IMAGE_BYTES = 512 * 2**20
# A 2,000,000 x 1 image passes the pixel count but asks a resize for gigabytes: refuse strips this thin.
MAX_ASPECT_RATIO = 100

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


def load_image(source: str | Path | bytes, name: str | None = None) -> Image.Image:
    """Decodes an image fully, so truncated files fail here rather than later in a worker.

    Args:
        source: a path or the encoded bytes.
        name: how to name the image in errors (defaults to the path).

    Raises:
        ImageError: the file is missing, empty, not an image, truncated or too large.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    if isinstance(source, bytes):
        data = source
    else:  # only regular files: a FIFO or a device given as an image must not hang or fill memory
        data = read_regular_file(source, MAX_IMAGE_BYTES, ImageError, "image file")
    if not data:
        raise ImageError(f"empty image file: {label}")
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            check_image_size(image.width, image.height, label)
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError(f"image too large (decompression bomb): {label}") from err
    except Image.UnidentifiedImageError as err:
        raise ImageError(f"not a readable image (unknown or unsupported format): {label}") from err
    except Exception as err:  # PIL raises many types for bad data; all mean "not a usable image"
        # PIL's messages may name our in-memory stream ("<_io.BytesIO object at 0x...>"): say "the file".
        detail = _STREAM_REPR.sub("the file", str(err))
        raise ImageError(f"not a readable image ({type(err).__name__}: {detail}): {label}") from err
    return image


_STREAM_REPR = re.compile(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def check_image_size(width: int, height: int, label: str) -> None:
    """Refuses empty images, decompression bombs and strips too thin to resize (all "too large" skips).

    Raises:
        ImageError: the size is unusable; the message says "too large" so loaders count it as such.
    """
    if width < 1 or height < 1:
        raise ImageError(f"not a readable image (it has no pixels: {width}x{height}): {label}")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(f"image too large ({width}x{height}): {label}")
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageError(
            f"image too large for its shape ({width}x{height}, beyond {MAX_ASPECT_RATIO}:1): {label}"
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """Converts any PIL mode to RGB; 16/32-bit integer and float images are scaled to 8 bits first."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        array = np.clip(array / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(array).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def resize_shortest(image: Image.Image, size: int, interpolation: str = "bicubic") -> Image.Image:
    """Resizes so the shorter side equals `size`, keeping the aspect ratio (torchvision's rounding).

    Raises:
        ImageError: the image is more than MAX_ASPECT_RATIO times longer than wide, so the output would be
            too (`load_image` refuses such files already; this bounds images built in memory too).
    """
    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    if short == size:
        return image
    if short < 1 or long > MAX_ASPECT_RATIO * short:
        raise ImageError(f"image too large for its shape ({width}x{height}, beyond {MAX_ASPECT_RATIO}:1)")
    new_long = int(size * long / short)
    new_size = (size, new_long) if width <= height else (new_long, size)
    return image.resize(new_size, _RESAMPLE[interpolation])


def center_crop(image: Image.Image, size: int) -> Image.Image:
    """Crops the central `size` x `size` square (pads with black first when the image is smaller)."""
    width, height = image.size
    if width < size or height < size:
        canvas = Image.new(image.mode, (max(width, size), max(height, size)))
        canvas.paste(image, ((canvas.width - width) // 2, (canvas.height - height) // 2))
        image, width, height = canvas, canvas.width, canvas.height
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image to a float tensor in [0, 1]."""
    array = np.asarray(image, dtype=np.uint8).copy()  # [H, W, 3]
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)  # [3, H, W]


class Preprocess:
    """Callable turning a PIL image (any mode, any size) into a normalized [3, S, S] tensor."""

    def __init__(self, config: PreprocessConfig) -> None:
        if config.interpolation not in _RESAMPLE:
            known = ", ".join(_RESAMPLE)
            raise ImageError(f"unknown interpolation '{config.interpolation}' (known: {known})")
        self.config = config
        self.mean = torch.tensor(config.mean).view(3, 1, 1)
        self.std = torch.tensor(config.std).view(3, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.normalize_uint8(self.crop_uint8(image))  # [3, S, S]

    def crop_uint8(self, image: Image.Image) -> torch.Tensor:
        """The image resized and cropped, before normalizing: uint8 [S, S, 3].

        Decoding workers return these (a quarter of the float bytes) and the consumer normalizes a
        whole batch with `normalize_uint8`, which gives exactly what `__call__` gives per image.
        """
        size = self.config.image_size
        image = center_crop(resize_shortest(to_rgb(image), size, self.config.interpolation), size)
        return torch.from_numpy(np.array(image, dtype=np.uint8))  # [S, S, 3]

    def normalize_uint8(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalized float pixels [..., 3, S, S] of uint8 ones [..., S, S, 3] (`crop_uint8`'s layout).

        Computed in place over whole rows of R, G, B triples, where the per-channel mean and std repeat
        every three values: contiguous passes over memory, ~4x faster than broadcasting over a channel
        dimension. The result is a view of that memory, so a batch comes out channels-last.
        """
        *lead, height, width, channels = pixels.shape
        rows = pixels.reshape(*lead, height, width * channels).float().div_(255.0)  # [..., S, S*3]
        rows.sub_(self.mean.flatten().repeat(width)).div_(self.std.flatten().repeat(width))
        return rows.view(*lead, height, width, channels).movedim(-1, -3)  # [..., 3, S, S]

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalizes float pixels in [0, 1] already at the right size ([..., 3, S, S])."""
        return (pixels - self.mean.to(pixels.device)) / self.std.to(pixels.device)

    def __repr__(self) -> str:
        return f"Preprocess({self.config})"
