"""Resumable batch streams for both stages: rendered skill scenes for the dVAE, and a pool of
(caption, image tokens) pairs encoded once by the dVAE for the transformer.

Each source can say where it is (`state_dict`), so a resumed run sees exactly the batches the
interrupted one would have seen. Batches can be cut into rows (rank shards, accumulation micro-batches).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from clipforge.dalle.scenes import SkillScene, SkillSceneConfig, skill_scene
from clipforge.models.dvae import DVAE
from clipforge.tokenizer import TextTokenizer


def pixels(scenes: Sequence[SkillScene]) -> torch.Tensor:
    """Rendered scenes as float pixels [B, 3, S, S] in [0, 1]."""
    return image_pixels([s.render() for s in scenes])


def image_pixels(images: Sequence[Image.Image]) -> torch.Tensor:
    """RGB images of one size as float pixels [B, 3, S, S] in [0, 1]."""
    arrays = np.stack([np.asarray(image.convert("RGB")) for image in images])  # [B, S, S, 3]
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div_(255.0)  # [B, 3, S, S]


def to_pil(pixels: torch.Tensor) -> list[Image.Image]:
    """PIL images of pixels [B, 3, S, S] in [0, 1]."""
    arrays = (pixels.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()  # [B, S, S, 3]
    return [Image.fromarray(a) for a in arrays]


@torch.no_grad()
def round_trip_pixels(dvae: DVAE, pixels: torch.Tensor) -> list[Image.Image]:
    """What the generator can draw at best: pixels [B, 3, S, S] in [0, 1] encoded to argmax tokens and
    decoded by `dvae`, as images."""
    return to_pil(dvae.decode(dvae.encode(pixels)))


def round_trip(dvae: DVAE, images: Sequence[Image.Image]) -> list[Image.Image]:
    """`round_trip_pixels` of RGB images of the dVAE's size."""
    return round_trip_pixels(dvae, image_pixels(images))


@dataclass
class ImageBatch:
    """Pixels [B, 3, S, S] in [0, 1], and the training step they are for (the dVAE's schedules use it)."""

    images: torch.Tensor
    step: int

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def rows(self, start: int, stop: int) -> ImageBatch:
        return ImageBatch(self.images[start:stop], self.step)

    def to(self, device: torch.device) -> ImageBatch:
        return ImageBatch(self.images.to(device), self.step)


class SceneBatches:
    """Endless batches of rendered skill scenes: batch i holds scenes i*B .. (i+1)*B - 1 of the stream."""

    def __init__(self, config: SkillSceneConfig, seed: int, batch_size: int) -> None:
        self.config, self.seed, self.batch_size = config, seed, batch_size
        self.position = 0

    def next_batch(self) -> ImageBatch:
        start = self.position
        self.position += self.batch_size
        scenes = [skill_scene(self.config, self.seed, i) for i in range(start, self.position)]
        return ImageBatch(pixels(scenes), start // self.batch_size)

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])


@dataclass
class TokenBatch:
    """Captions [B, Lt] (BPE ids) and image tokens [B, N]."""

    text: torch.Tensor
    image: torch.Tensor

    def __len__(self) -> int:
        return int(self.text.shape[0])

    def rows(self, start: int, stop: int) -> TokenBatch:
        return TokenBatch(self.text[start:stop], self.image[start:stop])

    def to(self, device: torch.device) -> TokenBatch:
        return TokenBatch(self.text.to(device), self.image.to(device))


@dataclass
class TokenPairs:
    """Captions and image tokens of a fixed set of scenes."""

    text: torch.Tensor  # [N, Lt] BPE ids
    image: torch.Tensor  # [N, G * G] dVAE codes

    def __len__(self) -> int:
        return int(self.text.shape[0])


@torch.no_grad()
def encode_scenes(
    dvae: DVAE, tokenizer: TextTokenizer, scenes: Sequence[SkillScene], batch_size: int = 256
) -> TokenPairs:
    """Tokenizes the prompts and encodes the renders of `scenes` (the dVAE in eval mode)."""
    dvae.eval()
    starts = range(0, len(scenes), batch_size)
    chunks = [dvae.encode(pixels(scenes[i : i + batch_size])).cpu() for i in starts]
    return TokenPairs(tokenizer([s.text for s in scenes]), torch.cat(chunks))


class TokenBatches:
    """Endless shuffled batches over `TokenPairs`; a caption is dropped to the empty one with
    probability `caption_dropout` (a new draw each epoch), for classifier-free guidance."""

    def __init__(self, pairs: TokenPairs, empty: torch.Tensor, batch_size: int, seed: int,
                 caption_dropout: float) -> None:
        self.pairs, self.empty, self.batch_size = pairs, empty, batch_size
        self.seed, self.caption_dropout = seed, caption_dropout
        self.epoch, self.offset = 0, 0
        self._plan: tuple[int, np.ndarray, np.ndarray] | None = None

    def _epoch_plan(self) -> tuple[np.ndarray, np.ndarray]:
        """The epoch's order and dropped captions: a function of (seed, epoch), computed once per epoch."""
        if self._plan is None or self._plan[0] != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            plan = rng.permutation(len(self.pairs)), rng.random(len(self.pairs)) < self.caption_dropout
            self._plan = (self.epoch, *plan)
        return self._plan[1], self._plan[2]

    def next_batch(self) -> TokenBatch:
        """A batch whose dropped captions are the empty one."""
        if self.offset + self.batch_size > len(self.pairs):
            self.epoch, self.offset = self.epoch + 1, 0
        order, dropped = self._epoch_plan()
        rows = torch.from_numpy(order[self.offset : self.offset + self.batch_size])
        drop = torch.from_numpy(dropped[self.offset : self.offset + self.batch_size])
        self.offset += self.batch_size
        text = torch.where(drop[:, None], self.empty, self.pairs.text[rows])  # [B, Lt]
        return TokenBatch(text, self.pairs.image[rows])

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.offset = int(state["epoch"]), int(state["offset"])
