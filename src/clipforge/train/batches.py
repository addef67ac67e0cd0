"""Endless, resumable streams of training batches (`train.task.BatchSource`), and the image-text batch.

A batch source hands out one global batch per optimizer step and can say where it is (`state_dict`),
so a resumed run sees exactly the batches the interrupted one would have seen. Two sources here:
`MapBatches` over any map-style dataset (the synthetic scenes) and `LoaderBatches` over the real-data
`ImageTextLoader`; `train.features.CachedFeatureBatches` serves cached backbone features. Each source of
`PairBatch`es comes with the `PairEncoder` that knows what its tensors hold.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence, Sized
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from clipforge.data.loader import Batch, ImageTextLoader, ignore_interrupts
from clipforge.data.negatives import text_hard_negatives
from clipforge.data.transforms import Preprocess
from clipforge.errors import DataError
from clipforge.models.base import ContrastiveModel
from clipforge.tokenizer import TextTokenizer

T = TypeVar("T")


@dataclass
class PairBatch:
    """One batch, preprocessed and tokenized.

    Attributes:
        images: [B, 3, S, S] normalized pixels, or [B, F] cached image-backbone features.
        tokens: [B, L] caption token ids, or [B, D] cached text-backbone features ([B, L, D] token states).
        negative_tokens: [B, K, L] hard-negative token ids, or [B, K, D] features ([B, K, L, D] token
            states; K = 0 without negatives).
        negative_mask: [B, K] True where the negative is real, False where it pads.
        negative_images: [B, 3, S, S] hard-negative images (zeros where a sample has none), or None.
        negative_image_mask: [B] True where a sample has a hard-negative image, or None.

    Which of the two each field holds is not read off the tensors: the source that made the batch
    supplies the `PairEncoder` for it.
    """

    images: torch.Tensor
    tokens: torch.Tensor
    negative_tokens: torch.Tensor
    negative_mask: torch.Tensor
    negative_images: torch.Tensor | None = None
    negative_image_mask: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def rows(self, start: int, stop: int) -> PairBatch:
        """Samples `start:stop` (a rank's shard or an accumulation micro-batch)."""
        return self.map(lambda t: t[start:stop])

    def to(self, device: torch.device) -> PairBatch:
        """The batch on `device`; on the CPU, the batch itself."""
        if self.images.device == device:
            return self
        return self.map(lambda t: t.to(device))

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> PairBatch:
        """The batch with `fn` applied to each of its tensors."""
        images, mask = self.negative_images, self.negative_image_mask
        return PairBatch(fn(self.images), fn(self.tokens), fn(self.negative_tokens), fn(self.negative_mask),
                         None if images is None else fn(images), None if mask is None else fn(mask))


@dataclass(frozen=True)
class PairEncoder:
    """How a batch source's image and text tensors reach the joint space (L2-normalized [N, E] each).

    Attributes:
        images: `PairBatch.images` -> image embeddings.
        texts: `PairBatch.tokens` (and the negatives, same kind) -> text embeddings.
    """

    images: Callable[[torch.Tensor], torch.Tensor]
    texts: Callable[[torch.Tensor], torch.Tensor]


def tower_encoder(model: ContrastiveModel) -> PairEncoder:
    """For batches of pixels and token ids: both go through the whole towers (which trim the padding)."""
    images, texts = partial(model.encode_image, normalize=True), partial(model.encode_text, normalize=True)
    return PairEncoder(images, texts)


def caption_negatives(key: str, caption: str, k: int) -> list[str]:
    """Up to `k` spatial-swap hard negatives of a real-data caption, seeded by (image key, caption) so a
    resumed run makes the same ones."""
    return text_hard_negatives(caption, k, random.Random(f"{key}:{caption}"))


def pad_negatives(negatives: Sequence[str], k: int) -> tuple[list[str], list[bool]]:
    """Crops a sample's negatives to `k`, padding with masked empty captions when it has fewer."""
    kept = list(negatives[:k])
    pad = k - len(kept)
    return kept + [""] * pad, [True] * len(kept) + [False] * pad


class PairCollate:
    """Turns dataset items (``image``, ``caption``, optional ``negatives``, optional ``negative_image`` with
    ``negative_image_mask``) into a `PairBatch`.

    uint8 images are scaled to [0, 1] and normalized; float images are taken as already normalized.
    """

    def __init__(self, preprocess: Preprocess, tokenizer: TextTokenizer, hard_negatives: int) -> None:
        self.preprocess, self.tokenizer, self.k = preprocess, tokenizer, hard_negatives

    def pixels(self, image: torch.Tensor) -> torch.Tensor:
        """[3, S, S] normalized pixels of one item's image."""
        if image.dtype == torch.uint8:
            return self.preprocess.normalize(image.float() / 255.0)
        return image

    def __call__(self, items: list[dict[str, Any]]) -> PairBatch:
        images = torch.stack([self.pixels(item["image"]) for item in items])  # [B, 3, S, S]
        tokens = self.tokenizer([item["caption"] for item in items])  # [B, L]
        padded = [pad_negatives(item.get("negatives", ()), self.k) for item in items]
        mask = torch.tensor([m for _, m in padded], dtype=torch.bool).reshape(len(items), self.k)  # [B, K]
        if self.k == 0:
            negatives = tokens.new_zeros(len(items), 0, tokens.shape[1])  # [B, 0, L]
        else:
            flat = self.tokenizer([text for texts, _ in padded for text in texts])  # [B * K, L]
            negatives = flat.reshape(len(items), self.k, -1)  # [B, K, L]
        if "negative_image" not in items[0]:
            return PairBatch(images, tokens, negatives, mask)
        negative_images = torch.stack([self.pixels(item["negative_image"]) for item in items])  # [B, 3, S, S]
        has_image = torch.tensor([bool(item["negative_image_mask"]) for item in items])  # [B]
        return PairBatch(images, tokens, negatives, mask, negative_images, has_image)


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The sample order of one epoch, a pure function of (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class _StepSampler(Sampler[list[int]]):
    """Yields the index lists of batches `start`, `start + 1`, ... forever (full batches only)."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int) -> None:
        self.n, self.batch_size, self.seed, self.start = n, batch_size, seed, start

    def __iter__(self) -> Iterator[list[int]]:
        per_epoch = self.n // self.batch_size
        step = self.start
        while True:
            epoch, offset = divmod(step, per_epoch)
            order = epoch_permutation(self.n, self.seed, epoch)
            yield order[offset * self.batch_size : (offset + 1) * self.batch_size].tolist()
            step += 1


class MapBatches(Generic[T]):
    """Batches of a map-style dataset: each epoch a fresh permutation, the last partial batch dropped.

    The position is just the number of batches handed out, because batch `i` is a pure function of
    (seed, i); DataLoader workers only fetch and collate, so their number does not change the data.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        collate: Callable[[list[Any]], T],
        batch_size: int,
        seed: int,
        num_workers: int = 0,
    ) -> None:
        n = len(cast(Sized, dataset))  # map-style datasets have a length; torch's Dataset type omits it
        if n < batch_size:
            raise DataError(f"dataset has {n} samples, fewer than train.batch_size={batch_size}")
        self.dataset, self.collate, self.n = dataset, collate, n
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.position = 0
        self._batches: Iterator[T] | None = None

    def next_batch(self) -> T:
        """The next batch; starts the DataLoader at the current position on first use."""
        if self._batches is None:
            sampler = _StepSampler(self.n, self.batch_size, self.seed, self.position)
            loader = DataLoader(self.dataset, batch_sampler=sampler, collate_fn=self.collate,
                                num_workers=self.num_workers, worker_init_fn=ignore_interrupts)
            self._batches = iter(loader)
        self.position += 1
        return next(self._batches)

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])
        self._batches = None


class LoaderBatches:
    """Batches of real image-text data through `ImageTextLoader`, epoch after epoch.

    Bad samples are skipped by the loader, so a batch may be short; the position is (epoch, item).
    Hard negatives are made from each caption by spatial-phrase swaps, seeded by the caption itself,
    so a resumed run makes the same ones.
    """

    def __init__(self, loader: ImageTextLoader, collate: PairCollate) -> None:
        self.loader, self.collate = loader, collate
        self.epoch, self.position = 0, 0
        self._batches: Iterator[Batch] | None = None

    def next_batch(self) -> PairBatch:
        """The next batch, moving on to the next epoch when this one is used up."""
        for _ in range(2):
            if self._batches is None:
                self._batches = self.loader.epoch(self.epoch, start=self.position)
            batch = next(self._batches, None)
            if batch is not None:
                self.position = self.loader.position
                return self._to_pairs(batch)
            self.epoch, self.position, self._batches = self.epoch + 1, 0, None
        raise DataError(f"no usable samples in '{self.loader.data.name}'")

    def _to_pairs(self, batch: Batch) -> PairBatch:
        items = [
            {"image": image, "caption": caption, "negatives": caption_negatives(key, caption, self.collate.k)}
            for key, image, (caption,) in zip(batch.keys, batch.images, batch.captions, strict=True)
        ]
        return self.collate(items)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._batches = None
