"""Contrastive objectives: symmetric InfoNCE (CLIP) and the pairwise sigmoid loss (SigLIP).

Both accept NegCLIP-style hard negatives: K extra captions per sample become extra *columns* on the
image->text side, so an image must beat its batch's captions and every hard negative. InfoNCE also takes
one hard-negative image per sample as an extra column on the text->image side; without them that side
stays over the batch's images only. Under `torchrun` each rank computes the loss of its own rows
against columns gathered from all ranks, so the average over ranks is the loss of the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.errors import ConfigError
from clipforge.train.config import LossSection
from clipforge.train.distributed import gather, gather_with_grad, rank_offset


@dataclass
class PairFeatures:
    """L2-normalized features of one (local) batch.

    Attributes:
        images: [B, E] image features.
        texts: [B, E] features of each image's caption.
        logit_scale: the model's temperature, exp of its log-scale, clamped at 100.
        negatives: [B * K, E] hard-negative caption features, sample-major (None without negatives).
        negative_mask: [B, K] True where a negative is real, False where a sample had fewer than K.
        logit_bias: the model's logit bias (SigLIP), None for models without one.
        negative_images: [B, E] hard-negative image features, one per sample (None without them).
        negative_image_mask: [B] True where a sample's hard-negative image is real.
    """

    images: torch.Tensor
    texts: torch.Tensor
    logit_scale: torch.Tensor
    negatives: torch.Tensor | None = None
    negative_mask: torch.Tensor | None = None
    logit_bias: torch.Tensor | None = None
    negative_images: torch.Tensor | None = None
    negative_image_mask: torch.Tensor | None = None


def global_columns(f: PairFeatures) -> tuple[torch.Tensor, torch.Tensor]:
    """All ranks' captions followed by all ranks' negatives, and which of those columns are real.

    Returns:
        columns [G + G * K, E] and valid [G + G * K] (bool), G being the global batch size.
    """
    return _gathered(f.texts, f.negatives, f.negative_mask)


def global_images(f: PairFeatures) -> tuple[torch.Tensor, torch.Tensor]:
    """All ranks' images followed by all ranks' hard-negative images, and which of those columns are real.

    Returns:
        columns [G (+ G), E] and valid [G (+ G)] (bool), G being the global batch size.
    """
    return _gathered(f.images, f.negative_images, f.negative_image_mask)


def _gathered(features: torch.Tensor, extra: torch.Tensor | None, mask: torch.Tensor | None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """All ranks' `features`, then all ranks' `extra` rows when there are any, with which rows are real."""
    gathered = gather_with_grad(features)  # [G, E]
    valid = torch.ones(gathered.shape[0], dtype=torch.bool, device=gathered.device)
    if extra is None or mask is None:
        return gathered, valid
    extra_mask = gather(mask).reshape(-1)  # [G * K] (K = 1 for images)
    return torch.cat([gathered, gather_with_grad(extra)]), torch.cat([valid, extra_mask])


class InfoNCELoss(nn.Module):
    """CLIP's symmetric cross-entropy over the cosine-similarity matrix, scaled by the model's temperature."""

    def forward(self, f: PairFeatures) -> torch.Tensor:
        columns, valid = global_columns(f)
        images, image_valid = global_images(f)
        rows = f.images.shape[0]
        labels = rank_offset(rows) + torch.arange(rows, device=f.images.device)
        per_image = f.logit_scale * f.images @ columns.t()  # [B, G + G * K]
        per_image = per_image.masked_fill(~valid, float("-inf"))
        per_text = f.logit_scale * f.texts @ images.t()  # [B, G (+ G)]
        per_text = per_text.masked_fill(~image_valid, float("-inf"))
        return (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels)) / 2


class SigLipLoss(nn.Module):
    """SigLIP: an independent binary decision per (image, caption) pair, with the model's scale and bias.

    The bias is a parameter of the model (as in open_clip), so a trained model keeps its calibration:
    sigmoid(scale * cosine + bias) is the probability that a caption matches an image.
    """

    def forward(self, f: PairFeatures) -> torch.Tensor:
        if f.logit_bias is None:
            raise ConfigError("the SigLIP loss needs a model with a logit bias (ModelConfig.init_logit_bias)")
        columns, valid = global_columns(f)
        rows = f.images.shape[0]
        logits = f.logit_scale * f.images @ columns.t() + f.logit_bias  # [B, G + G * K]
        signs = -torch.ones_like(logits)
        signs[torch.arange(rows), rank_offset(rows) + torch.arange(rows)] = 1.0
        terms = F.logsigmoid(signs * logits) * valid  # padded negatives contribute nothing
        return -terms.sum() / rows


def build_loss(config: LossSection) -> InfoNCELoss | SigLipLoss:
    """The loss module a config names (the SigLIP init values go to the model, see `ContrastiveTask`)."""
    return SigLipLoss() if config.kind == "siglip" else InfoNCELoss()
