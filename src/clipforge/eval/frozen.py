"""Frozen image features of labelled data (cached on disk, shared with LiT), and few-shot sampling.

The linear probe, zero-shot heads, CoOp and WiSE-FT keep the image tower frozen up to its "frozen
features": a tower model's pooled backbone features (before the trainable projection head), any other
model's image embedding. Those are extracted once per image and cached by
`clipforge.train.feature_cache` under the tower's weights hash and the preprocessing, so LiT training and
adaptation share one cache folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clipforge.data.labelled import ClassificationData
from clipforge.data.transforms import Preprocess
from clipforge.errors import DataError
from clipforge.models.base import ContrastiveModel, TowerModel
from clipforge.progress import Say, quiet
from clipforge.train.feature_cache import FeatureCache, cached_features, module_hash, preprocess_hash


def freeze(model: ContrastiveModel) -> ContrastiveModel:
    """`model` in eval mode with no parameter taking gradients (adaptation never changes it)."""
    model.requires_grad_(False)
    return model.eval()


def logit_scale(model: ContrastiveModel) -> float:
    """The model's learned temperature, clamped as in training."""
    return float(model.similarity_scale())


def frozen_tower(model: ContrastiveModel) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module]:
    """The function from preprocessed images [B, 3, S, S] to frozen features [B, F], and the module whose
    weights the features depend on (the cache key): a tower model's image backbone, else the whole model."""
    if isinstance(model, TowerModel):
        return model.image_backbone_features, model.image_backbone
    return model.encode_image, model


def trainable_image_head(model: ContrastiveModel) -> nn.Module:
    """What maps frozen features to joint-space embeddings (before normalization): a tower model's image
    projection head, or nothing for other models (their frozen features already are the embeddings)."""
    return model.image_head if isinstance(model, TowerModel) else nn.Identity()


@torch.no_grad()
def embed_features(model: ContrastiveModel, features: torch.Tensor) -> torch.Tensor:
    """L2-normalized joint-space image embeddings [N, E] of frozen features [N, F]."""
    return F.normalize(trainable_image_head(model)(features), dim=-1)


@dataclass(frozen=True)
class FeatureSet:
    """Frozen features of the usable images of one dataset.

    Attributes:
        keys: the images' keys, in dataset order.
        features: [N, F] frozen features.
        labels: [N] class indices.
    """

    keys: tuple[str, ...]
    features: torch.Tensor
    labels: torch.Tensor

    def subset(self, index: np.ndarray) -> FeatureSet:
        """The rows `index` (an int array)."""
        rows = torch.as_tensor(index, dtype=torch.long)
        return FeatureSet(tuple(self.keys[int(i)] for i in rows), self.features[rows], self.labels[rows])

    def __len__(self) -> int:
        return len(self.keys)


def image_features(
    model: ContrastiveModel,
    preprocess: Preprocess,
    data: ClassificationData,
    cache_dir: str | Path,
    batch_size: int = 64,
    num_workers: int = 0,
    say: Say = quiet,
) -> FeatureSet:
    """Frozen features of every usable image of `data`, extracting only what the cache lacks.

    `say` gets a progress line every tenth of the extraction.

    Raises:
        DataError: no image of `data` could be read.
    """
    extract, tower = frozen_tower(model)
    cache = FeatureCache(cache_dir, module_hash(tower), preprocess_hash(preprocess.config))
    table, _ = cached_features(data, extract, preprocess, cache, batch_size, num_workers, say)
    keys = tuple(item.key for item in data.items if item.key in table)
    if not keys:
        raise DataError(f"no readable images in '{data.name}' ({data.bad.summary()})")
    features = torch.stack([table[k] for k in keys]).float()  # [N, F]
    return FeatureSet(keys, features, torch.tensor([data.label_of(k) for k in keys], dtype=torch.long))


def hit_rate(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of predictions equal to their labels (exact: hits / n)."""
    return int((predictions == labels).sum()) / max(len(labels), 1)


def few_shot_indices(labels: torch.Tensor, shots: int, seed: int) -> np.ndarray:
    """Rows of `shots` images per class (all of a class that has fewer), drawn without replacement."""
    rng = np.random.default_rng(seed)
    values = labels.numpy()
    rows = [np.flatnonzero(values == c) for c in np.unique(values)]
    chosen = [rng.choice(r, size=min(shots, len(r)), replace=False) for r in rows]
    return np.sort(np.concatenate(chosen))


def split_off(labels: torch.Tensor, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) rows: a stratified `fraction` of every class is held out (at least one image)."""
    rng = np.random.default_rng(seed)
    values = labels.numpy()
    held = []
    for c in np.unique(values):
        rows = rng.permutation(np.flatnonzero(values == c))
        held.append(rows[: max(1, round(fraction * len(rows)))])
    held_out = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(values)), held_out), held_out
