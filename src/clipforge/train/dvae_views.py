"""Training data for re-rankers of a DALL-E-style generator: its own skill scenes and prompts, and
generated-looking images (scenes seen through its dVAE).

With ``data.source = "skill-scenes"`` a CLIP trains on the generator's skill scenes (`clipforge.dalle.scenes`)
captioned with the prompts that ask for them ("a star to the left of a circle", "three stars"): the
wording a re-ranker is asked to score, which the synthetic captions (always naming colours) never use.
Hard negatives are the prompt's spatial swaps (`clipforge.data.negatives`); one-object and count prompts
have none to swap.

A CLIP that re-ranks a DALL-E-style generator's candidates scores dVAE-decoded images (blurry, small,
with code artifacts), which crisp renders never show it. With ``data.dvae`` set, every synthetic scene is
rendered at the dVAE's image size, encoded to its argmax tokens and decoded — the best the generator can
draw of that scene — and then preprocessed by the model exactly like a generated candidate (PIL image,
resize, normalize). Captions and hard negatives are those of the scene, unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

from clipforge.checkpoint import load_folder
from clipforge.dalle.batches import round_trip_pixels
from clipforge.dalle.scenes import SkillSceneConfig, skill_scene, swap_names_heldout
from clipforge.errors import ConfigError
from clipforge.models.dvae import DVAE
from clipforge.synthetic.dataset import image_tensor
from clipforge.train.batches import PairBatch, PairCollate, caption_negatives


class SkillSceneItems(Dataset[dict[str, Any]]):
    """Item `i`: skill scene `i` of the stream seeded with `seed` (`dalle.scenes.skill_scene`), as an
    ``image`` (uint8 [3, S, S]), its prompt as ``caption``, and up to `hard_negatives` of the prompt's
    spatial swaps as ``negatives`` (none where the swap claims a held-out relation: `swap_names_heldout`)."""

    def __init__(self, scenes: SkillSceneConfig, seed: int, length: int, hard_negatives: int) -> None:
        self.scenes, self.seed, self.length, self.k = scenes, seed, length, hard_negatives

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        scene = skill_scene(self.scenes, self.seed, index)
        negatives = []
        if self.k and not swap_names_heldout(self.scenes, scene):
            negatives = caption_negatives(str(index), scene.text, self.k)
        return {"image": image_tensor(scene.render()), "caption": scene.text, "negatives": negatives,
                "index": index}


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
