"""Contrastive objectives: symmetric InfoNCE (CLIP) and the pairwise sigmoid loss (SigLIP).

Both accept NegCLIP-style hard negatives: K extra captions per sample become extra *columns* on the
image->text side, so an image must beat its batch's captions and every hard negative; the text->image
side stays over the true captions only. Under `torchrun` each rank computes the loss of its own rows
against columns gathered from all ranks, so the average over ranks is the loss of the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.models.clip import LOGIT_SCALE_MAX
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
    """

    images: torch.Tensor
    texts: torch.Tensor
    logit_scale: torch.Tensor
    negatives: torch.Tensor | None = None
    negative_mask: torch.Tensor | None = None


def global_columns(f: PairFeatures) -> tuple[torch.Tensor, torch.Tensor]:
    """All ranks' captions followed by all ranks' negatives, and which of those columns are real.

    Returns:
        columns [G + G * K, E] and valid [G + G * K] (bool), G being the global batch size.
    """
    texts = gather_with_grad(f.texts)  # [G, E]
    valid = torch.ones(texts.shape[0], dtype=torch.bool, device=texts.device)
    if f.negatives is None or f.negative_mask is None:
        return texts, valid
    negatives = gather_with_grad(f.negatives)  # [G * K, E]
    mask = gather(f.negative_mask).reshape(-1)  # [G * K]
    return torch.cat([texts, negatives]), torch.cat([valid, mask])


class InfoNCELoss(nn.Module):
    """CLIP's symmetric cross-entropy over the cosine-similarity matrix, scaled by the model's temperature."""

    def forward(self, f: PairFeatures) -> torch.Tensor:
        columns, valid = global_columns(f)
        images = gather_with_grad(f.images)  # [G, E]
        rows = f.images.shape[0]
        labels = rank_offset(rows) + torch.arange(rows, device=f.images.device)
        per_image = f.logit_scale * f.images @ columns.t()  # [B, G + G * K]
        per_image = per_image.masked_fill(~valid, float("-inf"))
        per_text = f.logit_scale * f.texts @ images.t()  # [B, G]
        return (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels)) / 2


class SigLipLoss(nn.Module):
    """SigLIP: an independent binary decision per (image, caption) pair, with its own scale and bias.

    The scale and bias are parameters of the loss, not of the model, so they live in the optimizer
    and the checkpoints without changing the model's architecture.
    """

    def __init__(self, init_scale: float, init_bias: float) -> None:
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(init_scale))
        self.logit_bias = nn.Parameter(torch.tensor(init_bias))

    def forward(self, f: PairFeatures) -> torch.Tensor:
        columns, valid = global_columns(f)
        rows = f.images.shape[0]
        scale = self.logit_scale.exp().clamp(max=LOGIT_SCALE_MAX)
        logits = scale * f.images @ columns.t() + self.logit_bias  # [B, G + G * K]
        signs = -torch.ones_like(logits)
        signs[torch.arange(rows), rank_offset(rows) + torch.arange(rows)] = 1.0
        terms = F.logsigmoid(signs * logits) * valid  # padded negatives contribute nothing
        return -terms.sum() / rows


def build_loss(config: LossSection) -> nn.Module:
    """The loss module a config names."""
    if config.kind == "siglip":
        return SigLipLoss(config.siglip_init_scale, config.siglip_init_bias)
    return InfoNCELoss()
