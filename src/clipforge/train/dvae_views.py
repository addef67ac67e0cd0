"""Generated-looking training images for re-rankers: synthetic scenes seen through a dVAE.

A CLIP that re-ranks a DALL-E-style generator's candidates scores dVAE-decoded images (blurry, small,
with code artifacts), which crisp renders never show it. With ``data.dvae`` set, every synthetic scene is
rendered at the dVAE's image size, encoded to its argmax tokens and decoded — the best the generator can
draw of that scene — and then preprocessed by the model exactly like a generated candidate (PIL image,
resize, normalize). Captions and hard negatives are those of the scene, unchanged.
"""

from __future__ import annotations

from typing import Any

import torch

from clipforge.checkpoint import load_folder
from clipforge.dalle.batches import round_trip_pixels
from clipforge.errors import ConfigError
from clipforge.models.dvae import DVAE
from clipforge.train.batches import PairBatch, PairCollate


def load_dvae(folder: str) -> DVAE:
    """The dVAE of a folder, in eval mode.

    Raises:
        ConfigError: the folder holds another kind of model.
    """
    model = load_folder(folder)
    if not isinstance(model, DVAE):
        raise ConfigError(f"data.dvae must be a dVAE folder; {folder} holds a {type(model).__name__}")
    return model.eval()


class RoundTripCollate:
    """A `PairCollate` whose uint8 scene images first pass through a dVAE's round trip."""

    def __init__(self, collate: PairCollate, dvae: DVAE) -> None:
        self.collate, self.dvae = collate, dvae

    @property
    def image_size(self) -> int:
        """The side the scenes are rendered at (the dVAE's)."""
        return self.dvae.config.image_size

    def __call__(self, items: list[dict[str, Any]]) -> PairBatch:
        pixels = torch.stack([item["image"] for item in items]).float() / 255.0  # [B, 3, s, s]
        decoded = round_trip_pixels(self.dvae, pixels)
        preprocess = self.collate.preprocess
        return self.collate([{**item, "image": preprocess(image)} for item, image in zip(items, decoded,
                                                                                          strict=True)])
