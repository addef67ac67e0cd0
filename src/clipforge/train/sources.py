"""From the `data` section of a contrastive run to its training batches and the encoder that fits them.

Three kinds of source: synthetic scenes rendered on the fly, real image-text data decoded by the loader,
and cached backbone features of real data (locked towers, `train.features`).
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from clipforge.data.loader import ImageTextLoader, LoaderConfig
from clipforge.data.specs import open_data
from clipforge.data.transforms import Preprocess
from clipforge.models.base import ContrastiveModel
from clipforge.progress import Say
from clipforge.synthetic.dataset import SyntheticScenes
from clipforge.synthetic.scene import SceneConfig
from clipforge.synthetic.text import NEGATIVE_KINDS
from clipforge.tokenizer import get_tokenizer
from clipforge.train.batches import (
    LoaderBatches,
    MapBatches,
    PairBatch,
    PairCollate,
    PairEncoder,
    tower_encoder,
)
from clipforge.train.config import RENDERED, SKILL_SCENES, TrainRunConfig
from clipforge.train.dalle_tasks import HELD_OUT_SEED_OFFSET, skill_scenes
from clipforge.train.dvae_views import RoundTripCollate, SkillSceneItems, load_dvae
from clipforge.train.features import cached_feature_batches, tower_model
from clipforge.train.task import BatchSource

SYNTHETIC = "synthetic"


def synthetic_dataset(config: TrainRunConfig, split: str, size: int, image_size: int) -> SyntheticScenes:
    """The synthetic scenes of `split`, rendered on the fly at the model's input size and data style."""
    loss = config.loss
    train = split == "train"
    kinds = (loss.negative_kinds or NEGATIVE_KINDS) if loss.hard_negatives and train else ()
    scenes = SceneConfig(image_size=image_size, style=config.data.style)
    negative_images = loss.negative_images if train else 0.0
    return SyntheticScenes(scenes, split, size, config.data.seed, kinds, negative_images)


def pair_collate(model: ContrastiveModel, hard_negatives: int) -> PairCollate:
    """Pixels and token ids in the model's own preprocessing and tokenizer."""
    config = model.config
    return PairCollate(Preprocess(config.preprocess), get_tokenizer(config.tokenizer), hard_negatives)


def scene_dataset(config: TrainRunConfig, split: str, size: int, image_size: int) -> Dataset[dict[str, Any]]:
    """The rendered scenes of `split` ("train" or "val"): synthetic scenes, or the generator's skill scenes
    (val: the stream its own training holds out)."""
    if config.data.source != SKILL_SCENES:
        return synthetic_dataset(config, split, size, image_size)
    seed = config.data.seed + (HELD_OUT_SEED_OFFSET if split == "val" else 0)
    k = config.loss.hard_negatives if split == "train" else 0
    return SkillSceneItems(skill_scenes(image_size), seed, size, k)


def synthetic_pairs(config: TrainRunConfig, model: ContrastiveModel, split: str, size: int,
                    hard_negatives: int) -> tuple[Dataset[dict[str, Any]], PairCollate | RoundTripCollate]:
    """The rendered scenes of `split` and the collate that batches them: rendered at the model's input
    size, or with ``data.dvae`` at the dVAE's size and seen through its round trip."""
    collate = pair_collate(model, hard_negatives)
    if not config.data.dvae:
        return scene_dataset(config, split, size, model.config.preprocess.image_size), collate
    seen = RoundTripCollate(collate, load_dvae(config.data.dvae))
    return scene_dataset(config, split, size, seen.image_size), seen


def pair_batches(
    config: TrainRunConfig, model: ContrastiveModel, say: Say
) -> tuple[BatchSource[PairBatch], PairEncoder]:
    """The training batches the `data` section names (every rank reads the same global batches)."""
    data, train = config.data, config.train
    if config.model.feature_cache:
        return cached_feature_batches(config, tower_model(model), say)
    if data.source in RENDERED:
        dataset, collate = synthetic_pairs(config, model, "train", data.n_train, config.loss.hard_negatives)
        batches = MapBatches(dataset, collate, train.batch_size, train.seed, data.num_workers)
        return batches, tower_encoder(model)
    pairs = pair_collate(model, config.loss.hard_negatives)
    loader_config = LoaderConfig("pairs", train.batch_size, data.num_workers, shuffle=True, seed=train.seed)
    loader = ImageTextLoader(open_data(data.spec(data.source)), pairs.preprocess, loader_config)
    return LoaderBatches(loader, pairs), tower_encoder(model)
