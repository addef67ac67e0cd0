import io
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.data.transforms import Preprocess, center_crop, load_image, resize_shortest, to_rgb
from clipforge.errors import ImageError
from clipforge.models.config import PreprocessConfig


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def test_resize_shortest_keeps_aspect() -> None:
    assert resize_shortest(Image.new("RGB", (300, 200)), 100).size == (150, 100)
    assert resize_shortest(Image.new("RGB", (200, 333)), 100).size == (100, 166)


def test_center_crop_offsets_round_like_torchvision() -> None:
    array = np.arange(5 * 7, dtype=np.uint8).reshape(5, 7)
    crop = np.asarray(center_crop(Image.fromarray(array), 4))
    # torchvision: top = round((5 - 4) / 2) = 0 (banker's rounding of 0.5), left = round(1.5) = 2
    assert np.array_equal(crop, array[0:4, 2:6])


def test_preprocess_output_matches_manual_pipeline() -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
    config = PreprocessConfig(image_size=32)
    out = Preprocess(config)(image)
    manual = image.resize((42, 32), Image.Resampling.BICUBIC).crop((5, 0, 37, 32))
    expected = torch.from_numpy(np.asarray(manual, dtype=np.float32) / 255).permute(2, 0, 1)
    expected = (expected - torch.tensor(config.mean).view(3, 1, 1)) / torch.tensor(config.std).view(3, 1, 1)
    assert out.shape == (3, 32, 32)
    assert torch.allclose(out, expected, atol=1e-6)


def test_uint8_batches_normalize_exactly_like_single_images() -> None:
    """Workers send uint8 crops and a batch is normalized at once: bit-identical to per-image pixels."""
    rng = np.random.default_rng(1)
    sizes = ((48, 64), (33, 9))  # landscape and portrait: both resized, cropped at odd offsets
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]
    preprocess = Preprocess(PreprocessConfig(image_size=24, mean=(0.48, 0.45, 0.41), std=(0.27, 0.26, 0.28)))
    crops = torch.stack([preprocess.crop_uint8(image) for image in images])  # [2, 24, 24, 3]
    assert crops.dtype == torch.uint8 and crops.shape == (2, 24, 24, 3)
    batch = preprocess.normalize_uint8(crops)  # [2, 3, 24, 24]
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch, torch.stack([preprocess(image) for image in images]))
    resized = center_crop(resize_shortest(images[0], 24), 24)
    documented = torch.from_numpy(np.asarray(resized, dtype=np.float32)).permute(2, 0, 1) / 255.0
    documented = (documented - preprocess.mean) / preprocess.std
    assert torch.equal(preprocess(images[0]), documented)


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "I", "F", "LA", "1"])
def test_any_mode_becomes_rgb(mode: str) -> None:
    if mode == "I;16":
        image = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
        assert image.mode == "I;16"
    else:
        image = Image.new("RGB", (8, 8), (200, 100, 50)).convert(mode)
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (8, 8)
    if mode == "I;16":
        assert np.asarray(rgb).min() == 255  # full-scale 16-bit is white, not clipped garbage
    assert Preprocess(PreprocessConfig(image_size=4))(image).shape == (3, 4, 4)


def test_small_image_is_padded_not_crashing() -> None:
    assert Preprocess(PreprocessConfig(image_size=16))(Image.new("RGB", (1, 1))).shape == (3, 16, 16)


def test_load_image_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(ImageError, match="not found: .*missing.jpg"):
        load_image(tmp_path / "missing.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty image file: .*empty.jpg"):
        load_image(tmp_path / "empty.jpg")
    (tmp_path / "notes.txt").write_text("hello, not an image")
    with pytest.raises(ImageError, match="not a readable image .*notes.txt"):
        load_image(tmp_path / "notes.txt")
    data = _png(Image.new("RGB", (64, 64), (1, 2, 3)))
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="cut.png"):
        load_image(tmp_path / "cut.png")


def test_decompression_bomb_is_refused(tmp_path) -> None:
    # A valid PNG header that claims 20000x20000 pixels; decoding must stop at the header.
    data = bytearray(_png(Image.new("L", (1, 1))))
    data[16:24] = (20000).to_bytes(4, "big") + (20000).to_bytes(4, "big")
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # keep the IHDR checksum valid
    (tmp_path / "bomb.png").write_bytes(bytes(data))
    with pytest.raises(ImageError, match="too large"):
        load_image(tmp_path / "bomb.png")
