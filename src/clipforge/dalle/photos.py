"""Real captioned photos for both DALL-E stages: a data spec (e.g. ``flickr8k:ROOT:train``) decoded once.

Every image is read and decoded once (`data.loader.decode_sample`, the package's one decoding path:
`load_image`), resized and centre-cropped to the dVAE's side and kept in memory as uint8 pixels; at
32 px the 6000 Flickr8k training photos take 18 MB. Unusable images are skipped and counted by reason
in the reader's `bad` counter, never dropped silently. The dVAE draws random batches of these pixels;
the transformer pairs every caption of an image with the image's dVAE tokens.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from clipforge.dalle.batches import ImageBatch, TokenPairs
from clipforge.data.loader import decode_sample
from clipforge.data.readers import BadSample, BadSampleCounter
from clipforge.data.specs import open_data
from clipforge.data.transforms import Preprocess
from clipforge.errors import DataError
from clipforge.models.config import PreprocessConfig
from clipforge.models.dvae import DVAE
from clipforge.tokenizer import TextTokenizer


@dataclass
class CaptionedPhotos:
    """Decoded photos of one data spec, their captions, and the samples that were skipped.

    Attributes:
        pixels: uint8 [N, S, S, 3] (channels last, as decoded).
        captions: the usable captions of each photo (at least one).
        keys: each photo's name in the data.
        bad: skipped samples by reason.
    """

    pixels: torch.Tensor
    captions: list[tuple[str, ...]]
    keys: list[str]
    bad: BadSampleCounter

    def __len__(self) -> int:
        return len(self.keys)

    def floats(self, rows: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """Float pixels [B, 3, S, S] in [0, 1] of the selected photos."""
        return self.pixels[rows].permute(0, 3, 1, 2).float().div_(255.0)  # [B, 3, S, S]

    def fingerprint(self) -> str:
        """SHA-256 of the pixels and captions: what a token cache of these photos is keyed by."""
        digest = hashlib.sha256(self.pixels.contiguous().numpy().tobytes())
        digest.update(repr(self.captions).encode())
        return digest.hexdigest()


def read_photos(spec: str, image_size: int, limit: int = 0) -> CaptionedPhotos:
    """Decodes the images of `spec` (the first `limit` usable ones; 0: all) at `image_size` pixels.

    Raises:
        DataError: the spec cannot be opened, or no image of it is usable.
    """
    data = open_data(spec)
    crop = Preprocess(PreprocessConfig(image_size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "bicubic",
                                       "shortest")).crop_uint8
    pixels, captions, keys = [], [], []
    for record in data.records():
        sample = decode_sample(data, record, record.captions, crop)
        if isinstance(sample, BadSample):
            data.bad.add(sample)
            continue
        pixels.append(sample.image)
        captions.append(record.captions)
        keys.append(record.key)
        if len(keys) == limit:
            break
    if not keys:
        raise DataError(f"no usable image in '{spec}': {data.bad.summary()}")
    return CaptionedPhotos(torch.stack(pixels), captions, keys, data.bad)


@torch.no_grad()
def encode_photos(dvae: DVAE, tokenizer: TextTokenizer, photos: CaptionedPhotos, batch_size: int = 256
                  ) -> TokenPairs:
    """Every caption of every photo, each paired with its photo's tokens (the dVAE in eval mode)."""
    dvae.eval()
    starts = range(0, len(photos), batch_size)
    chunks = [dvae.encode(photos.floats(slice(i, i + batch_size))).cpu() for i in starts]
    counts = torch.tensor([len(c) for c in photos.captions])
    image = torch.cat(chunks).repeat_interleave(counts, dim=0)  # [sum(counts), G * G]
    return TokenPairs(tokenizer([c for group in photos.captions for c in group]), image)


class PhotoBatches:
    """Endless batches of photos: batch i holds B photos drawn without replacement by a generator seeded
    with (seed, i), so a resumed run draws exactly the batches the interrupted one would have."""

    def __init__(self, photos: CaptionedPhotos, seed: int, batch_size: int) -> None:
        if batch_size > len(photos):
            raise DataError(f"train.batch_size {batch_size} exceeds the {len(photos)} usable photos")
        self.photos, self.seed, self.batch_size = photos, seed, batch_size
        self.position = 0

    def next_batch(self) -> ImageBatch:
        step = self.position
        self.position += 1
        rng = np.random.default_rng([self.seed, step])
        rows = torch.from_numpy(rng.choice(len(self.photos), self.batch_size, replace=False))
        return ImageBatch(self.photos.floats(rows), step)

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])
