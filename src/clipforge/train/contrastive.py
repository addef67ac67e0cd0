"""The contrastive task: CLIP-style training of an image-text model (InfoNCE or SigLIP, optional LiT).

Reading a run top-down: `ContrastiveTask` builds the model (a registry architecture or a model folder,
with SigLIP's logit bias when the loss needs one, and its towers locked as the config says), the loss,
and the batch source with its `PairEncoder`; each step encodes a batch through that encoder into
`PairFeatures` and takes the loss; evaluation is held-out retrieval recall (`train.evaluation`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from clipforge.checkpoint import load_model
from clipforge.errors import ConfigError
from clipforge.models.base import ContrastiveModel
from clipforge.models.registry import create_model
from clipforge.models.towers import TowerCLIP
from clipforge.progress import Say
from clipforge.train.batches import PairBatch, PairEncoder
from clipforge.train.config import LossSection, ModelSection, TrainRunConfig
from clipforge.train.evaluation import build_evaluator, selection_score
from clipforge.train.freeze import apply_locks
from clipforge.train.loss import PairFeatures, build_loss
from clipforge.train.sources import pair_batches
from clipforge.train.task import BatchSource, EvalHook


def build_model(section: ModelSection, loss: LossSection) -> ContrastiveModel:
    """A registry architecture (random init) or a clipforge model folder to fine-tune, ready for `loss`.

    SigLIP needs a logit bias: a model without one gets SigLIP's initial scale and bias (ln 10, -10).
    """
    model = load_model(section.name) if Path(section.name).is_dir() else create_model(section.name)
    if section.start_from:
        start_from_pooled(model, load_model(section.start_from))
    if loss.kind == "siglip" and model.logit_bias is None:
        model.enable_logit_bias(loss.siglip_init_scale, loss.siglip_init_bias)
    apply_locks(model, section)
    return model.train()


def start_from_pooled(model: ContrastiveModel, pooled: ContrastiveModel) -> None:
    """`TowerCLIP.start_from_pooled` for `model.start_from`.

    Raises:
        ConfigError: either model is not an EfficientNet-MiniLM tower model, or their heads differ in shape.
    """
    if not isinstance(model, TowerCLIP) or not isinstance(pooled, TowerCLIP):
        raise ConfigError("model.start_from needs EfficientNet-MiniLM tower models on both sides")
    try:
        model.start_from_pooled(pooled)
    except RuntimeError as err:
        raise ConfigError(f"model.start_from: its heads do not fit this model's mean heads ({err})") from err


def encode_batch(encoder: PairEncoder, model: ContrastiveModel, batch: PairBatch) -> PairFeatures:
    """Features of a batch; captions and real hard negatives go through the text encoder in one call.

    Padding negatives are not encoded (free-text captions often have no spatial phrase to swap): their
    rows stay zero, and the loss masks them out anyway.
    """
    b, k = batch.negative_mask.shape
    images, negative_images = encode_images(encoder, batch)  # [B, E], [B, E] or None
    real = batch.negative_mask.reshape(b * k)  # [B * K]
    row = batch.negative_tokens.shape[2:]  # [L] ids, [D] cached features or [L, D] cached token states
    negatives = batch.negative_tokens.reshape(b * k, *row)[real]  # [R, *row]
    texts = encoder.texts(torch.cat([batch.tokens, negatives]))  # [B + R, E]
    scale, bias = model.similarity_scale(), model.logit_bias
    negative_features = _placed(real, texts[b:])  # [B * K, E]
    return PairFeatures(images, texts[:b], scale, negative_features if k else None,
                        batch.negative_mask if k else None, bias, negative_images, batch.negative_image_mask)


def encode_images(encoder: PairEncoder, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features of the batch's images and of its real hard-negative images (rows of zeros where a sample
    has none), in one call of the image encoder."""
    if batch.negative_images is None or batch.negative_image_mask is None:
        return encoder.images(batch.images), None
    real = batch.negative_image_mask  # [B]
    features = encoder.images(torch.cat([batch.images, batch.negative_images[real]]))  # [B + R, E]
    b = batch.images.shape[0]
    return features[:b], _placed(real, features[b:])  # [B, E], [B, E]


def _placed(real: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """[len(real), E]: `rows` where `real` is True, in order, and zeros elsewhere (padding slots)."""
    return rows.new_zeros(real.shape[0], rows.shape[1]).index_put((real,), rows)


class ContrastiveTask:
    """`Task` of image-text models: pairs in, InfoNCE or SigLIP over their features, retrieval recall out.

    Args:
        config: the run config.
        say: where feature-extraction progress goes.
    """

    def __init__(self, config: TrainRunConfig, say: Say) -> None:
        self.config, self.say = config, say
        self.model = build_model(config.model, config.loss)
        self.objective = build_loss(config.loss)
        self.batches, self.encoder = self.make_batches(config, say)

    def make_batches(self, config: TrainRunConfig, say: Say) -> tuple[BatchSource[PairBatch], PairEncoder]:
        """The training batches and their encoder (`SpatialTask` adds flips and collages)."""
        return pair_batches(config, self.model, say)

    def loss(self, batch: PairBatch) -> torch.Tensor:
        return self.objective(encode_batch(self.encoder, self.model, batch))

    def log_fields(self) -> dict[str, float]:
        """The temperature the loss uses (and the SigLIP bias when the model has one)."""
        fields = {"logit_scale": float(self.model.similarity_scale().detach())}
        if self.model.logit_bias is not None:
            fields["logit_bias"] = float(self.model.logit_bias.detach())
        return fields

    def evaluator(self) -> EvalHook[ContrastiveModel] | None:
        return build_evaluator(self.config, self.model, self.say)

    def selection_score(self, metrics: dict[str, Any]) -> float:
        return selection_score(metrics)
