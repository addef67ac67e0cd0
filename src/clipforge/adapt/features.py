"""Frozen image features of labelled data (cached on disk, shared with LiT), and few-shot sampling.

Every adaptation method here keeps the image tower frozen up to its "frozen features": the backbone's
pooled features for the pretrained-tower models (before the trainable projection head), the whole image
tower's output for CLIP models. Those are extracted once per image and cached by
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
from tqdm import tqdm

from clipforge.data.labelled import ClassificationData
from clipforge.data.transforms import Preprocess
from clipforge.errors import ConfigError, DataError
from clipforge.models.clip import CLIP, LOGIT_SCALE_MAX
from clipforge.models.towers import TowerCLIP
from clipforge.train.feature_cache import FeatureCache, cached_features, module_hash, preprocess_hash

AdaptableModel = CLIP | TowerCLIP


def adaptable(model: nn.Module) -> AdaptableModel:
    """`model` as one of the architectures adaptation supports, frozen (no parameter takes gradients).

    Raises:
        ConfigError: another kind of model.
    """
    if not isinstance(model, CLIP | TowerCLIP):
        raise ConfigError(f"adaptation supports CLIP and pretrained-tower models, not {type(model).__name__}")
    model.requires_grad_(False)
    return model.eval()


def logit_scale(model: AdaptableModel) -> float:
    """The model's learned temperature, clamped as in training."""
    return float(model.logit_scale.exp().clamp(max=LOGIT_SCALE_MAX))


def frozen_tower(model: AdaptableModel) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Module]:
    """The function from preprocessed images [B, 3, S, S] to frozen features [B, F], and its module."""
    if isinstance(model, TowerCLIP):
        return model.image_backbone_features, model.visual.backbone
    return model.encode_image, model.visual


def trainable_image_head(model: AdaptableModel) -> nn.Module:
    """What maps frozen features to joint-space embeddings (before normalization): the tower's projection
    head, or nothing for CLIP models (their frozen features already are the embeddings)."""
    return model.visual.head if isinstance(model, TowerCLIP) else nn.Identity()


@torch.no_grad()
def embed_features(model: AdaptableModel, features: torch.Tensor) -> torch.Tensor:
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
    model: AdaptableModel,
    preprocess: Preprocess,
    data: ClassificationData,
    cache_dir: str | Path,
    batch_size: int = 64,
    num_workers: int = 0,
) -> FeatureSet:
    """Frozen features of every usable image of `data`, extracting only what the cache lacks.

    Raises:
        DataError: no image of `data` could be read.
    """
    extract, tower = frozen_tower(model)
    cache = FeatureCache(cache_dir, module_hash(tower), preprocess_hash(preprocess.config))
    with tqdm(desc=f"features {data.name}", unit="img", leave=False, disable=None) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        table, _ = cached_features(data, extract, preprocess, cache, batch_size, num_workers, progress)
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
