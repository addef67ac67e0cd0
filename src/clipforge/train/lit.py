"""Locked-tower training (LiT): freezing backbones, and batches of cached frozen features.

With the image backbone frozen, its output for an image never changes, so it is computed once
(`feature_cache`) and training only runs the image head and the text side: on a CPU that turns an
hour of convolutions per epoch into seconds. When the text backbone is frozen as well, every caption
(and hard negative) is encoded once too, and an epoch only trains the two projection heads.
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clipforge.data.negatives import text_hard_negatives
from clipforge.data.readers import ImageTextData
from clipforge.data.transforms import Preprocess
from clipforge.errors import ConfigError, DataError
from clipforge.eval.retrieval import recall_at_k
from clipforge.tokenizer import TextTokenizer, get_tokenizer
from clipforge.train.batches import PairBatch, PairCollate, epoch_permutation, pad_negatives
from clipforge.train.config import ModelSection
from clipforge.train.feature_cache import FeatureCache, cached_features, module_hash, preprocess_hash
from clipforge.typed import to_dict


def apply_locks(model: nn.Module, section: ModelSection) -> None:
    """Freezes the backbones the config locks (tower models), or the whole image tower (CLIP)."""
    if hasattr(model, "lock_image_tower"):
        if section.lock_image:
            model.lock_image_tower(section.unlocked_image_blocks)  # type: ignore[operator]
        if section.lock_text:
            model.lock_text_tower(section.unlocked_text_blocks)  # type: ignore[operator]
        return
    if section.lock_text or section.unlocked_image_blocks:
        raise ConfigError(f"model '{section.name}': only tower models support lock_text and unlocked blocks")
    if section.lock_image:
        model.visual.requires_grad_(False)  # type: ignore[union-attr]


def image_feature_table(
    model: nn.Module, data: ImageTextData, cache_dir: str | Path, batch_size: int, num_workers: int
) -> dict[str, torch.Tensor]:
    """Frozen backbone features of every usable image of `data`, by record key (cached on disk)."""
    if not hasattr(model, "image_backbone_features"):
        raise ConfigError("model.feature_cache needs a tower model (e.g. effnetlite0-minilm)")
    preprocess = Preprocess(model.config.preprocess)  # type: ignore[union-attr,arg-type]
    backbone: nn.Module = model.visual.backbone  # type: ignore[union-attr,assignment]
    cache = FeatureCache(cache_dir, module_hash(backbone), preprocess_hash(preprocess.config))
    was_training = backbone.training
    backbone.eval()
    extract: Callable[[torch.Tensor], torch.Tensor] = model.image_backbone_features  # type: ignore[assignment]
    report = _progress(f"image features of '{data.name}'")
    features, stats = cached_features(data, extract, preprocess, cache, batch_size, num_workers, report)
    _say(
        f"image features of '{data.name}': {stats.images} images, {stats.hits} from the cache, "
        f"{stats.extracted} extracted in {stats.seconds:.0f}s; {data.bad.summary()}"
    )
    backbone.train(was_training)
    return features


def _say(message: str) -> None:
    """A progress line on stderr (training runs for minutes; the user should see what it is doing)."""
    print(f"clipforge: {message}", file=sys.stderr, flush=True)


def _progress(label: str) -> Callable[[int, int], None]:
    """Reports every tenth of the way through a long extraction."""
    marks: set[int] = set()

    def report(done: int, total: int) -> None:
        tenth = 10 * done // max(total, 1)
        if tenth not in marks:
            marks.add(tenth)
            _say(f"{label}: {done}/{total}")

    return report


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


@torch.no_grad()
def text_feature_table(
    model: nn.Module, texts: Sequence[str], cache_dir: str | Path, batch_size: int = 256
) -> dict[str, torch.Tensor]:
    """Frozen text-backbone features of `texts`, by text (cached on disk by text hash).

    Missing texts are encoded in sorted order and fixed batches, and a resumed run reads them back from
    the cache, so the features it trains on are the ones the interrupted run used.
    """
    if not hasattr(model, "text_backbone_features"):
        raise ConfigError(
            "a locked text tower with a feature cache needs a tower model (e.g. effnetlite0-minilm)"
        )
    backbone: nn.Module = model.text.backbone  # type: ignore[union-attr,assignment]
    tokenizer_id = hashlib.sha256(json.dumps(to_dict(model.config.tokenizer)).encode()).hexdigest()  # type: ignore[union-attr,arg-type]
    cache = FeatureCache(Path(cache_dir) / "text", module_hash(backbone), tokenizer_id)
    stored = cache.load()
    missing = sorted({t for t in texts if text_key(t) not in stored})
    tokenizer = get_tokenizer(model.config.tokenizer)  # type: ignore[union-attr,arg-type]
    report = _progress(f"text features of {len(missing)} new texts")
    for done, chunk in enumerate(_chunks(missing, batch_size)):
        features = model.text_backbone_features(trim_padding(tokenizer(chunk))).float()  # type: ignore[operator]
        keys = [text_key(t) for t in chunk]
        cache.add(keys, features)
        stored.update(zip(keys, features, strict=True))
        report(min((done + 1) * batch_size, len(missing)), len(missing))
    return {t: stored[text_key(t)] for t in texts}


class FeatureCollate:
    """Builds a `PairBatch` of cached features: images [B, F], captions [B, D], negatives [B, K, D]."""

    def __init__(self, text_table: dict[str, torch.Tensor], hard_negatives: int) -> None:
        self.text_table, self.k = text_table, hard_negatives

    def __call__(self, items: list[dict[str, Any]]) -> PairBatch:
        images = torch.stack([item["image"] for item in items])  # [B, F]
        texts = torch.stack([self.text_table[item["caption"]] for item in items])  # [B, D]
        rows, mask = [], []
        for item in items:
            kept, real = pad_negatives(item.get("negatives", ()), self.k)
            rows += [
                self.text_table[t] if ok else torch.zeros_like(texts[0])
                for t, ok in zip(kept, real, strict=True)
            ]
            mask.append(real)
        negatives = (
            torch.stack(rows).reshape(len(items), self.k, -1)
            if self.k
            else texts.new_zeros(len(items), 0, texts.shape[1])
        )
        return PairBatch(
            images, texts, negatives, torch.tensor(mask, dtype=torch.bool).reshape(len(items), self.k)
        )


class CachedFeatureBatches:
    """Training batches of (cached image features, caption) pairs; `PairBatch.images` holds [B, F] features.

    Batch `i` is a pure function of (seed, i): each epoch is a seeded permutation of all pairs, so the
    position alone resumes a run exactly.
    """

    def __init__(
        self,
        features: dict[str, torch.Tensor],
        data: ImageTextData,
        collate: PairCollate | FeatureCollate,
        batch_size: int,
        seed: int,
    ) -> None:
        self.pairs = [(r.key, c) for r in data.records() if r.key in features for c in r.captions]
        if len(self.pairs) < batch_size:
            count = len(self.pairs)
            raise DataError(f"'{data.name}' has {count} usable pairs, fewer than batch_size={batch_size}")
        self.features, self.collate = features, collate
        self.batch_size, self.seed, self.position = batch_size, seed, 0

    def next_batch(self) -> PairBatch:
        per_epoch = len(self.pairs) // self.batch_size
        epoch, offset = divmod(self.position, per_epoch)
        order = epoch_permutation(len(self.pairs), self.seed, epoch)
        chosen = order[offset * self.batch_size : (offset + 1) * self.batch_size]
        self.position += 1
        return self.collate([self._item(int(i)) for i in chosen])

    def all_texts(self) -> list[str]:
        """Every caption and hard negative this source can hand out (to encode them all up front)."""
        texts = []
        for index in range(len(self.pairs)):
            item = self._item(index)
            texts += [item["caption"], *item["negatives"]]
        return texts

    def _item(self, index: int) -> dict[str, Any]:
        key, caption = self.pairs[index]
        rng = random.Random(f"{key}:{caption}")  # the same negatives on resume
        return {
            "image": self.features[key],
            "caption": caption,
            "negatives": text_hard_negatives(caption, self.collate.k, rng),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@torch.no_grad()
def cached_retrieval(
    model: nn.Module,
    features: dict[str, torch.Tensor],
    data: ImageTextData,
    tokenizer: TextTokenizer,
    batch_size: int = 256,
    text_table: dict[str, torch.Tensor] | None = None,
) -> dict[str, float]:
    """Recall@{1,5,10} over held-out images (cached features) and all their captions.

    With `text_table` (a frozen text backbone), captions come from cached features too.
    """
    records = [r for r in data.records() if r.key in features]
    images = model.project_image_features(
        torch.stack([features[r.key] for r in records]),  # type: ignore[operator]
        normalize=True,
    )
    captions = [c for r in records for c in r.captions]
    owner = torch.tensor([i for i, r in enumerate(records) for _ in r.captions])
    if text_table is not None:
        cached = torch.stack([text_table[c] for c in captions])  # [T, D]
        texts = model.project_text_features(cached, normalize=True)  # type: ignore[operator]
    else:
        texts = torch.cat(
            [
                model.encode_text(trim_padding(tokenizer(chunk)), normalize=True)  # type: ignore[operator]
                for chunk in _chunks(captions, batch_size)
            ]
        )
    return recall_at_k(images, texts, owner)


def caches_text(section: ModelSection) -> bool:
    """Whether the whole text backbone is frozen and cached (both towers locked: heads-only training)."""
    return bool(section.feature_cache) and section.lock_text and section.unlocked_text_blocks == 0


def trim_padding(tokens: torch.Tensor) -> torch.Tensor:
    """Drops all-padding trailing columns [B, L] -> [B, L'], which no output depends on (pad id 0)."""
    length = int((tokens != 0).sum(dim=1).max().clamp(min=1))
    return tokens[:, :length]
