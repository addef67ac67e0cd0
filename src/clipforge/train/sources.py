"""From the `data` section of a run config to a batch source and a default evaluation hook."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from clipforge.data.transforms import Preprocess
from clipforge.errors import DataError
from clipforge.eval.retrieval import recall_at_k
from clipforge.models.config import ModelConfig
from clipforge.tokenizer import get_tokenizer
from clipforge.train.batches import BatchSource, LoaderBatches, MapBatches, PairBatch, PairCollate
from clipforge.train.config import TrainRunConfig
from clipforge.train.distributed import DistEnv

SYNTHETIC = "synthetic"


def synthetic_dataset(config: TrainRunConfig, split: str, size: int, image_size: int) -> Dataset:
    """The synthetic scenes of `split`, rendered on the fly at the model's input size."""
    from clipforge.synthetic.dataset import SyntheticScenes
    from clipforge.synthetic.scene import SceneConfig
    from clipforge.synthetic.text import NEGATIVE_KINDS

    loss = config.loss
    kinds = (loss.negative_kinds or NEGATIVE_KINDS) if loss.hard_negatives and split == "train" else ()
    return SyntheticScenes(SceneConfig(image_size=image_size), split, size, config.data.seed, kinds)


def build_source(config: TrainRunConfig, model: nn.Module, env: DistEnv) -> BatchSource:
    """The training batches the `data` section names (every rank reads the same global batches)."""
    model_config: ModelConfig = model.config  # type: ignore[assignment]
    preprocess = Preprocess(model_config.preprocess)
    tokenizer = get_tokenizer(model_config.tokenizer)
    data, train = config.data, config.train
    collate = PairCollate(preprocess, tokenizer, config.loss.hard_negatives)
    if data.source == SYNTHETIC:
        dataset = synthetic_dataset(config, "train", data.n_train, model_config.preprocess.image_size)
        return MapBatches(dataset, collate, train.batch_size, train.seed, data.num_workers)
    from clipforge.data.loader import ImageTextLoader, LoaderConfig
    from clipforge.data.specs import open_data

    if config.model.feature_cache:
        from clipforge.train.lit import (
            CachedFeatureBatches,
            FeatureCollate,
            caches_text,
            image_feature_table,
            text_feature_table,
        )

        pairs = open_data(data.spec(data.source))
        table = image_feature_table(
            model, pairs, config.model.feature_cache, config.eval.batch_size, data.num_workers
        )
        source = CachedFeatureBatches(table, pairs, collate, train.batch_size, train.seed)
        if caches_text(config.model):
            texts = text_feature_table(
                model, source.all_texts(), config.model.feature_cache, config.eval.batch_size
            )
            source.collate = FeatureCollate(texts, config.loss.hard_negatives)
        return source
    loader_config = LoaderConfig("pairs", train.batch_size, data.num_workers, shuffle=True, seed=train.seed)
    loader = ImageTextLoader(open_data(data.spec(data.source)), preprocess, loader_config)
    return LoaderBatches(loader, collate)


def eval_batches(config: TrainRunConfig, model: nn.Module) -> list[PairBatch]:
    """Held-out (image, caption) batches for the built-in evaluation; empty when there are none."""
    model_config: ModelConfig = model.config  # type: ignore[assignment]
    preprocess = Preprocess(model_config.preprocess)
    collate = PairCollate(preprocess, get_tokenizer(model_config.tokenizer), 0)
    data, size = config.data, config.eval.batch_size
    if data.source == SYNTHETIC:
        dataset = synthetic_dataset(config, "val", data.n_val, model_config.preprocess.image_size)
        items = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
        return [collate(items[i : i + size]) for i in range(0, len(items), size)]
    if not data.eval_source:
        return []
    return _real_eval_batches(data.spec(data.eval_source), preprocess, collate, size, data.n_val)


def _real_eval_batches(
    spec: str, preprocess: Preprocess, collate: PairCollate, size: int, limit: int
) -> list[PairBatch]:
    from clipforge.data.loader import ImageTextLoader, LoaderConfig
    from clipforge.data.specs import open_data

    loader = ImageTextLoader(open_data(spec), preprocess, LoaderConfig("images", size))
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


def retrieval_recall(model: nn.Module, batches: list[PairBatch]) -> dict[str, float]:
    """Recall@1 of image->text and text->image retrieval among all held-out pairs."""
    images = torch.cat([model.encode_image(b.images, normalize=True) for b in batches])  # type: ignore[operator]
    texts = torch.cat([model.encode_text(b.tokens, normalize=True) for b in batches])  # type: ignore[operator]
    recall = recall_at_k(images, texts, torch.arange(images.shape[0]), ks=(1,))  # one caption per image
    n = float(images.shape[0])
    return {"image_to_text_r1": recall["i2t_r1"], "text_to_image_r1": recall["t2i_r1"], "n": n}


EvalHook = Callable[[nn.Module, int], dict[str, Any]]


def build_evaluator(config: TrainRunConfig, model: nn.Module) -> EvalHook | None:
    """Retrieval recall on held-out data, or None when the data has no held-out split.

    With an image-feature cache the held-out split is scored in full (all images, all captions) from
    cached features, which is cheap enough to select the best model on.
    """
    if config.model.feature_cache and config.data.eval_source:
        return _cached_evaluator(config, model)
    batches = eval_batches(config, model)
    if not batches:
        return None
    return lambda m, step: retrieval_recall(m, batches)


def _cached_evaluator(config: TrainRunConfig, model: nn.Module) -> EvalHook:
    from clipforge.data.specs import open_data
    from clipforge.train.lit import cached_retrieval, caches_text, image_feature_table, text_feature_table

    data = open_data(config.data.spec(config.data.eval_source))
    table = image_feature_table(
        model, data, config.model.feature_cache, config.eval.batch_size, config.data.num_workers
    )
    tokenizer = get_tokenizer(model.config.tokenizer)  # type: ignore[union-attr,arg-type]
    text_table = None
    if caches_text(config.model):
        captions = [c for r in data.records() for c in r.captions]
        text_table = text_feature_table(model, captions, config.model.feature_cache, config.eval.batch_size)
    return lambda m, step: cached_retrieval(m, table, data, tokenizer, config.eval.batch_size, text_table)
