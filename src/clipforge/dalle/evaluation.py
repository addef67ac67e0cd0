"""Held-out numbers for both stages, as an in-training evaluation hook would report them.

dVAE: reconstruction error of the hard path (argmax tokens decoded, as the generator will use it) and
codebook usage over the whole set. Transformer: teacher-forced text and image cross-entropy.
"""

from __future__ import annotations

import torch

from clipforge.dalle.batches import TokenBatch, TokenPairs
from clipforge.dalle.objectives import PriorObjective, code_usage, prior_loss
from clipforge.models.dvae import DVAE
from clipforge.models.generator import Generator


@torch.no_grad()
def dvae_metrics(model: DVAE, images: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """``recon_mse`` of decoded argmax tokens, ``perplexity`` and ``dead_codes`` on pixels [N, 3, S, S]."""
    tokens = torch.cat([model.encode(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])
    error = sum(float(((model.decode(tokens[i : i + batch_size]) - images[i : i + batch_size]) ** 2).sum())
                for i in range(0, len(images), batch_size))
    return {"recon_mse": error / images.numel(), **code_usage(tokens, model.config.codebook_size)}


@torch.no_grad()
def prior_metrics(model: Generator, pairs: TokenPairs, batch_size: int = 256) -> dict[str, float]:
    """Mean teacher-forced ``text_loss`` and ``image_loss`` over held-out pairs."""
    totals = {"text_loss": 0.0, "image_loss": 0.0}
    for start in range(0, len(pairs), batch_size):
        batch = TokenBatch(pairs.text[start : start + batch_size], pairs.image[start : start + batch_size])
        parts = prior_loss(model, batch, PriorObjective())[1]
        for key in totals:
            totals[key] += parts[key] * len(batch)
    return {key: value / len(pairs) for key, value in totals.items()}
