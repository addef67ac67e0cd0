"""Training batches of cached backbone features, for locked-tower (LiT) training.

With the image backbone frozen, its output for an image never changes, so it is computed once (and kept
on disk, `train.feature_cache`) and training only runs the image head and the text side: on a CPU that
turns an hour of convolutions per epoch into seconds. When the text backbone is frozen as well, every
caption (and hard negative) is encoded once too, and an epoch only trains the two projection heads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from clipforge.data.readers import ImageTextData
from clipforge.data.specs import open_data
from clipforge.data.transforms import Preprocess
from clipforge.errors import ConfigError, DataError
from clipforge.models.base import ContrastiveModel, TowerModel
from clipforge.models.inputs import row_lengths
from clipforge.progress import Progress, Say
from clipforge.tokenizer import TextTokenizer, get_tokenizer
from clipforge.train.batches import (
    PairBatch,
    PairCollate,
    PairEncoder,
    caption_negatives,
    epoch_permutation,
    pad_negatives,
)
from clipforge.train.config import ModelSection, TrainRunConfig
from clipforge.train.feature_cache import FeatureCache, cached_features, module_hash, preprocess_hash
from clipforge.typed import to_dict


def tower_model(model: ContrastiveModel) -> TowerModel:
    """`model` as a tower model, whose backbone features can be cached.

    Raises:
        ConfigError: it is not one.
    """
    if not isinstance(model, TowerModel):
        raise ConfigError("model.feature_cache needs a tower model (e.g. effnetlite0-minilm)")
    return model


def caches_text(section: ModelSection) -> bool:
    """Whether the whole text backbone is frozen and cached (both towers locked: heads-only training)."""
    return bool(section.feature_cache) and section.lock_text and section.unlocked_text_blocks == 0


def feature_encoder(model: TowerModel, cached_text: bool) -> PairEncoder:
    """For batches of cached image features, and cached text features or token ids."""
    texts = partial(model.encode_text, normalize=True)
    if cached_text:
        texts = partial(model.project_text_features, normalize=True)
    return PairEncoder(partial(model.project_image_features, normalize=True), texts)


def image_feature_table(
    model: TowerModel, data: ImageTextData, cache_dir: str | Path, batch_size: int, num_workers: int, say: Say
) -> dict[str, torch.Tensor]:
    """Frozen backbone features of every usable image of `data`, by record key (cached on disk)."""
    preprocess = Preprocess(model.config.preprocess)
    backbone = model.image_backbone
    kind = model.image_feature_kind
    dtype = torch.float16 if kind else torch.float32  # grids are 49x bigger: stored (and kept) in half
    cache = FeatureCache(cache_dir, module_hash(backbone), preprocess_hash(preprocess.config), kind, dtype)
    was_training = backbone.training
    backbone.eval()
    features, stats = cached_features(
        data, model.image_backbone_features, preprocess, cache, batch_size, num_workers, say
    )
    say(
        f"image features of '{data.name}': {stats.images} images, {stats.hits} from the cache, "
        f"{stats.extracted} extracted in {stats.seconds:.0f}s; {data.bad.summary()}"
    )
    backbone.train(was_training)
    return features


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


@torch.no_grad()
def text_feature_table(
    model: TowerModel, texts: Sequence[str], cache_dir: str | Path, batch_size: int, say: Say
) -> dict[str, torch.Tensor]:
    """Frozen text-backbone features of `texts`, by text (cached on disk by text hash).

    Missing texts are encoded in a fixed order (by token count, then text) and fixed batches, and a resumed
    run reads them back from the cache, so the features it trains on are the ones the interrupted run used.
    """
    tokenizer_id = hashlib.sha256(json.dumps(to_dict(model.config.tokenizer)).encode()).hexdigest()
    kind = model.text_feature_kind
    dtype = torch.float16 if kind else torch.float32  # token states: ~12 x 384 x 2 bytes = 9 KB a text
    tower = module_hash(model.text_backbone)
    cache = FeatureCache(Path(cache_dir) / "text", tower, tokenizer_id, kind, dtype)
    stored = cache.load()
    tokenizer = get_tokenizer(model.config.tokenizer)
    missing = by_length(sorted({t for t in texts if text_key(t) not in stored}), tokenizer)
    with Progress(f"text features of {len(missing)} new texts", len(missing), say) as progress:
        for chunk in chunks(missing, batch_size):
            features = model.text_backbone_features(tokenizer(chunk)).to(dtype)
            keys = [text_key(t) for t in chunk]
            cache.add(keys, features)
            stored.update(zip(keys, features, strict=True))
            progress.update(len(chunk))
    return {t: stored[text_key(t)] for t in texts}


def by_length(texts: list[str], tokenizer: TextTokenizer) -> list[str]:
    """`texts` (sorted) stably re-sorted by token count: batches of similar lengths are trimmed to little
    padding, which halves the work of encoding Flickr8k captions whose lengths range 3-40 tokens."""
    if not texts:
        return texts
    lengths = row_lengths(tokenizer(texts)).tolist()
    return [t for _, t in sorted(zip(lengths, texts, strict=True), key=lambda pair: pair[0])]


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive slices of `items`, `size` long (the last one shorter)."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def stack_texts(features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stacks cached text features: pooled [D] into [N, D]; token states [L, D] of different lengths
    into [N, L_max, D], zero rows past each text's end (what a token head reads as padding)."""
    if features[0].dim() == 1:
        return torch.stack(list(features))  # [N, D]
    return torch.nn.utils.rnn.pad_sequence(list(features), batch_first=True)  # [N, L_max, D]


class FeatureCollate:
    """Builds a `PairBatch` of cached features: images [B, F], captions [B, *T], negatives [B, K, *T]
    (T: the text feature's shape, [D] pooled or [L, D] token states)."""

    def __init__(self, text_table: dict[str, torch.Tensor], hard_negatives: int) -> None:
        self.text_table, self.k = text_table, hard_negatives

    def __call__(self, items: list[dict[str, Any]]) -> PairBatch:
        images = torch.stack([item["image"] for item in items])  # [B, F]
        blank = torch.zeros_like(self.text_table[items[0]["caption"]])  # a padding negative's row
        rows, mask = [self.text_table[item["caption"]] for item in items], []
        for item in items:
            kept, real = pad_negatives(item.get("negatives", ()), self.k)
            rows += [self.text_table[t] if ok else blank for t, ok in zip(kept, real, strict=True)]
            mask.append(real)
        stacked = stack_texts(rows)  # [B + B*K, *T]
        texts = stacked[: len(items)]
        negatives = stacked[len(items) :].reshape(len(items), self.k, *stacked.shape[1:])  # [B, K, *T]
        return PairBatch(
            images, texts, negatives, torch.tensor(mask, dtype=torch.bool).reshape(len(items), self.k)
        )


def feature_pairs(
    data: ImageTextData, features: dict[str, torch.Tensor], batch_size: int
) -> list[tuple[str, str]]:
    """Every (image key, caption) pair of `data` whose image has features.

    Raises:
        DataError: fewer pairs than one batch.
    """
    pairs = [(r.key, c) for r in data.records() if r.key in features for c in r.captions]
    if len(pairs) < batch_size:
        raise DataError(f"'{data.name}' has {len(pairs)} usable pairs, fewer than batch_size={batch_size}")
    return pairs


def pair_texts(pairs: list[tuple[str, str]], hard_negatives: int) -> list[str]:
    """Every caption and hard negative training on `pairs` can use (to encode them all up front)."""
    return [t for key, caption in pairs for t in (caption, *caption_negatives(key, caption, hard_negatives))]


class CachedFeatureBatches:
    """Training batches of (cached image features, caption) pairs; `PairBatch.images` holds [B, F] features.

    Batch `i` is a pure function of (seed, i): each epoch is a seeded permutation of all pairs, so the
    position alone resumes a run exactly.
    """

    def __init__(
        self,
        features: dict[str, torch.Tensor],
        pairs: list[tuple[str, str]],
        collate: PairCollate | FeatureCollate,
        batch_size: int,
        seed: int,
        negatives: dict[tuple[str, str], list[str]] | None = None,
    ) -> None:
        self.features, self.pairs, self.collate = features, pairs, collate
        self.batch_size, self.seed, self.position = batch_size, seed, 0
        self.negatives = negatives or {}  # pairs whose hard negatives are given, not mined from the caption

    def next_batch(self) -> PairBatch:
        per_epoch = len(self.pairs) // self.batch_size
        epoch, offset = divmod(self.position, per_epoch)
        order = epoch_permutation(len(self.pairs), self.seed, epoch)
        chosen = order[offset * self.batch_size : (offset + 1) * self.batch_size]
        self.position += 1
        return self.collate([self._item(int(i)) for i in chosen])

    def _item(self, index: int) -> dict[str, Any]:
        key, caption = self.pairs[index]
        negatives = self.negatives.get((key, caption)) or caption_negatives(key, caption, self.collate.k)
        return {"image": self.features[key], "caption": caption, "negatives": negatives}

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])


def cached_feature_batches(
    config: TrainRunConfig, model: TowerModel, say: Say
) -> tuple[CachedFeatureBatches, PairEncoder]:
    """The training batches of a LiT run from cached features, and the encoder that fits them."""
    section, k = config.model, config.loss.hard_negatives
    data = open_data(config.data.spec(config.data.source))
    images = image_feature_table(
        model, data, section.feature_cache, config.eval.batch_size, config.data.num_workers, say
    )
    pairs = feature_pairs(data, images, config.train.batch_size)
    collate: PairCollate | FeatureCollate
    if caches_text(section):
        texts = pair_texts(pairs, k)
        table = text_feature_table(model, texts, section.feature_cache, config.eval.batch_size, say)
        collate = FeatureCollate(table, k)
    else:
        collate = PairCollate(Preprocess(model.config.preprocess), get_tokenizer(model.config.tokenizer), k)
    batches = CachedFeatureBatches(images, pairs, collate, config.train.batch_size, config.train.seed)
    return batches, feature_encoder(model, caches_text(section))
