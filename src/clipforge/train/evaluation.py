"""The built-in held-out evaluation of contrastive training: retrieval recall, in the shared vocabulary.

Every evaluator reports `t2i_r1` and `i2t_r1` (what `clipforge eval retrieval` calls them), so model
selection, the training curves and the quickstart read the same keys whatever the data path.
"""

from __future__ import annotations

from typing import Any

import torch

from clipforge.data.loader import ImageTextLoader, LoaderConfig
from clipforge.data.readers import ImageTextData
from clipforge.data.specs import open_data
from clipforge.errors import ConfigError, DataError
from clipforge.eval.retrieval import recall_at_k
from clipforge.models.base import ContrastiveModel, TowerModel
from clipforge.progress import Say
from clipforge.tokenizer import TextTokenizer, get_tokenizer
from clipforge.train.batches import PairBatch, PairCollate, PairEncoder
from clipforge.train.config import TrainRunConfig
from clipforge.train.features import (
    caches_text,
    chunks,
    feature_encoder,
    image_feature_table,
    stack_texts,
    text_feature_table,
    tower_model,
)
from clipforge.train.sources import RENDERED, pair_collate, synthetic_pairs
from clipforge.train.task import EvalHook

R1_KEYS = ("t2i_r1", "i2t_r1")


def selection_score(metrics: dict[str, Any]) -> float:
    """The mean of the two retrieval R@1s: what `eval.select_best` maximizes.

    Raises:
        ConfigError: the evaluation reported no R@1s (a custom `on_eval` hook).
    """
    if not all(key in metrics for key in R1_KEYS):
        raise ConfigError(f"eval.select_best needs R@1 metrics; the evaluation reported {sorted(metrics)}")
    return sum(float(metrics[key]) for key in R1_KEYS) / len(R1_KEYS)


def build_evaluator(
    config: TrainRunConfig, model: ContrastiveModel, say: Say
) -> EvalHook[ContrastiveModel] | None:
    """Retrieval recall on held-out data, or None when the data has no held-out split.

    With an image-feature cache the held-out split is scored in full (all images, all captions) from
    cached features, which is cheap enough to select the best model on.
    """
    if config.model.feature_cache and config.data.eval_source:
        return cached_evaluator(config, tower_model(model), say)
    batches = eval_batches(config, model)
    if not batches:
        return None
    return lambda m, step: retrieval_recall(m, batches)


def eval_batches(config: TrainRunConfig, model: ContrastiveModel) -> list[PairBatch]:
    """Held-out (image, caption) batches for the built-in evaluation; empty when there are none."""
    data, size = config.data, config.eval.batch_size
    if data.source in RENDERED:
        dataset, scene_collate = synthetic_pairs(config, model, "val", data.n_val, 0)
        items = [dataset[i] for i in range(data.n_val)]
        return [scene_collate(items[i : i + size]) for i in range(0, len(items), size)]
    collate = pair_collate(model, 0)
    if not data.eval_source:
        return []
    return _real_eval_batches(data.spec(data.eval_source), collate, size, data.n_val)


def _real_eval_batches(spec: str, collate: PairCollate, size: int, limit: int) -> list[PairBatch]:
    loader = ImageTextLoader(open_data(spec), collate.preprocess, LoaderConfig("images", size))
    items: list[dict[str, Any]] = []
    for batch in loader.epoch():
        pairs = zip(batch.images, batch.captions, strict=True)
        items += [{"image": image, "caption": captions[0]} for image, captions in pairs]
        if len(items) >= limit:
            break
    if not items:
        raise DataError(f"no usable evaluation samples in '{spec}'")
    items = items[:limit]
    return [collate(items[i : i + size]) for i in range(0, len(items), size)]


def retrieval_recall(model: ContrastiveModel, batches: list[PairBatch]) -> dict[str, Any]:
    """Recall@1 of image->text and text->image retrieval among all held-out pairs (one caption each)."""
    images = torch.cat([model.encode_image(b.images, normalize=True).cpu() for b in batches])  # [N, E]
    texts = torch.cat([model.encode_text(b.tokens, normalize=True).cpu() for b in batches])  # [N, E]
    recall = recall_at_k(images, texts, torch.arange(images.shape[0]), ks=(1,))
    return {"i2t_r1": recall["i2t_r1"], "t2i_r1": recall["t2i_r1"], "n": int(images.shape[0])}


def cached_evaluator(config: TrainRunConfig, model: TowerModel, say: Say) -> EvalHook[ContrastiveModel]:
    """Recall@{1,5,10} on the whole held-out split from cached features (the training encoder's path)."""
    data = open_data(config.data.spec(config.data.eval_source))
    section, batch_size = config.model, config.eval.batch_size
    table = image_feature_table(model, data, section.feature_cache, batch_size, config.data.num_workers, say)
    text_table = None
    if caches_text(section):
        captions = [c for r in data.records() for c in r.captions]
        text_table = text_feature_table(model, captions, section.feature_cache, batch_size, say)
    encoder, tokenizer = feature_encoder(model, text_table is not None), get_tokenizer(model.config.tokenizer)
    return lambda m, step: cached_retrieval(encoder, table, data, tokenizer, batch_size, text_table)


@torch.no_grad()
def cached_retrieval(
    encoder: PairEncoder,
    features: dict[str, torch.Tensor],
    data: ImageTextData,
    tokenizer: TextTokenizer,
    batch_size: int,
    text_table: dict[str, torch.Tensor] | None,
) -> dict[str, float]:
    """Recall@{1,5,10} over held-out images (cached features) and all their captions.

    With `text_table` (a frozen text backbone), captions come from cached features too.
    """
    records = [r for r in data.records() if r.key in features]
    images = encoder.images(torch.stack([features[r.key] for r in records]))  # [N, E]
    captions = [c for r in records for c in r.captions]
    owner = torch.tensor([i for i, r in enumerate(records) for _ in r.captions])
    texts = encode_texts(encoder, captions, text_table, tokenizer, batch_size)
    return recall_at_k(images.cpu(), texts.cpu(), owner)


def encode_texts(
    encoder: PairEncoder,
    texts: list[str],
    text_table: dict[str, torch.Tensor] | None,
    tokenizer: TextTokenizer,
    batch_size: int,
) -> torch.Tensor:
    """Embeddings [T, E] of `texts`: from their cached features with `text_table`, else from token ids."""
    if text_table is not None:
        return encoder.texts(stack_texts([text_table[t] for t in texts]))  # [T, E]
    return torch.cat([encoder.texts(tokenizer(chunk)) for chunk in chunks(texts, batch_size)])
