"""The losses and held-out metrics of both DALL-E stages, and their config sections (`[dvae]`, `[prior]`).

dVAE: mean squared reconstruction error of pixels in [0, 1] plus β·KL(q ‖ uniform), the KL averaged
over grid cells, with β warmed up linearly and the Gumbel-softmax temperature annealed exponentially
(DALL-E: 1 → 1/16).

Transformer: cross-entropy of the next text token (padding tokens included, as in DALL-E) and of
the next image token, combined as ``(w_text · text + w_image · image) / (w_text + w_image)``
(DALL-E: 1 and 7).

Held-out metrics: the dVAE's reconstruction error on the hard path (argmax tokens decoded, as the
generator uses it) and codebook usage over the whole set; the transformer's teacher-forced text and
image cross-entropy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clipforge.dalle.batches import ImageBatch, TokenBatch, TokenPairs
from clipforge.errors import ConfigError
from clipforge.models.dvae import DVAE
from clipforge.models.generator import Generator


@dataclass(frozen=True)
class DVAEObjective:
    """The dVAE loss and its schedules.

    Attributes:
        beta: weight of KL(q ‖ uniform) per cell after warm-up.
        beta_warmup: steps of the linear warm-up of beta from 0.
        temperature_start, temperature_end: Gumbel-softmax temperature at step 0 and after the anneal.
        anneal_steps: steps of the exponential temperature anneal.
        straight_through: decode hard one-hot codes in the forward pass (gradients of the soft ones).
    """

    beta: float = 1e-3
    beta_warmup: int = 500
    temperature_start: float = 1.0
    temperature_end: float = 1.0 / 16
    anneal_steps: int = 1000
    straight_through: bool = False

    def __post_init__(self) -> None:
        if self.beta < 0 or self.beta_warmup < 0 or self.anneal_steps < 0:
            raise ConfigError("dvae objective: beta, beta_warmup and anneal_steps must be >= 0")
        if not 0 < self.temperature_end <= self.temperature_start:
            raise ConfigError("dvae objective: need 0 < temperature_end <= temperature_start")

    def temperature(self, step: int) -> float:
        """Exponential interpolation from start to end over `anneal_steps`, then constant."""
        progress = min(1.0, step / self.anneal_steps) if self.anneal_steps else 1.0
        return self.temperature_start * (self.temperature_end / self.temperature_start) ** progress

    def beta_at(self, step: int) -> float:
        return self.beta * (min(1.0, step / self.beta_warmup) if self.beta_warmup else 1.0)


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """Mean over cells of KL(softmax(logits) ‖ uniform) for logits [B, K, G, G]."""
    log_q = logits.log_softmax(dim=1)
    return (log_q.exp() * (log_q + math.log(logits.shape[1]))).sum(dim=1).mean()


def code_usage(tokens: torch.Tensor, codebook_size: int) -> dict[str, float]:
    """Perplexity of the code histogram (exp of its entropy) and the number of codes never used."""
    counts = torch.bincount(tokens.flatten(), minlength=codebook_size).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"perplexity": float(entropy.exp()), "dead_codes": int((counts == 0).sum())}


def dvae_loss(model: DVAE, batch: ImageBatch, objective: DVAEObjective
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of a batch at its training step (the schedules' position), and its loggable parts."""
    temperature, beta = objective.temperature(batch.step), objective.beta_at(batch.step)
    out = model(batch.images, temperature=temperature, hard=objective.straight_through)
    reconstruction = F.mse_loss(out.reconstruction, batch.images)
    kl = kl_to_uniform(out.logits)
    usage = code_usage(out.logits.argmax(dim=1), model.config.codebook_size)
    metrics = {"recon_mse": reconstruction.item(), "kl": kl.item(), "temperature": temperature,
               "beta": beta, **usage}
    return reconstruction + beta * kl, metrics


@dataclass(frozen=True)
class PriorObjective:
    """The transformer's training: its loss, and which dVAE tokenizes its images.

    Attributes:
        dvae: a trained dVAE folder whose weights the generator embeds and whose tokens it learns
            (its architecture must equal the generator's `dvae`); "" keeps the generator's own
            (random) dVAE, for tests.
        token_cache: folder where the training pairs' image tokens are cached, keyed by the dVAE's
            weights and the data ("" = no cache).
        text_weight, image_weight: weights of the two cross-entropies (DALL-E: 1 and 7).
        caption_dropout: probability that a training caption is replaced by the empty one, which
            teaches the unconditional model that classifier-free guidance needs.
        align_px: when positive, the training scenes' objects start on multiples of this many pixels
            (with the dVAE's cell side, every object of one shape, size and colour is the same tokens);
            0 places them anywhere.
    """

    dvae: str = ""
    token_cache: str = ""
    text_weight: float = 1.0
    image_weight: float = 7.0
    caption_dropout: float = 0.1
    align_px: int = 0

    def __post_init__(self) -> None:
        if self.align_px < 0:
            raise ConfigError(f"prior objective: align_px must be >= 0, got {self.align_px}")
        if min(self.text_weight, self.image_weight) < 0 or self.text_weight + self.image_weight <= 0:
            raise ConfigError("prior objective: weights must be >= 0 with a positive sum")
        if not 0 <= self.caption_dropout < 1:
            raise ConfigError("prior objective: caption_dropout must be in [0, 1)")


def prior_loss(model: Generator, batch: TokenBatch, objective: PriorObjective
               ) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of a batch of captions and image tokens, and its loggable parts."""
    out = model(batch.text, batch.image)
    targets = model.text_ids(batch.text)[:, 1:]  # [B, Lt - 1]
    text_loss = F.cross_entropy(out.text_logits.flatten(0, 1), targets.flatten())
    image_loss = F.cross_entropy(out.image_logits.flatten(0, 1), batch.image.flatten())
    weights = objective.text_weight + objective.image_weight
    loss = (objective.text_weight * text_loss + objective.image_weight * image_loss) / weights
    return loss, {"text_loss": text_loss.item(), "image_loss": image_loss.item()}


@torch.no_grad()
def dvae_metrics(model: DVAE, images: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """``recon_mse`` of decoded argmax tokens, ``perplexity`` and ``dead_codes`` on pixels [N, 3, S, S]
    (moved, a batch at a time, to the model's device)."""
    device = model.codebook.weight.device
    chunks = [images[i : i + batch_size].to(device) for i in range(0, len(images), batch_size)]
    tokens = [model.encode(chunk) for chunk in chunks]
    pairs = zip(tokens, chunks, strict=True)
    error = sum(float(((model.decode(t) - chunk) ** 2).sum()) for t, chunk in pairs)
    return {"recon_mse": error / images.numel(), **code_usage(torch.cat(tokens), model.config.codebook_size)}


@torch.no_grad()
def prior_metrics(model: Generator, pairs: TokenPairs, batch_size: int = 256) -> dict[str, float]:
    """Mean teacher-forced ``text_loss`` and ``image_loss`` over held-out pairs."""
    totals = {"text_loss": 0.0, "image_loss": 0.0}
    device = model.image_head.weight.device
    for start in range(0, len(pairs), batch_size):
        rows = slice(start, start + batch_size)
        batch = TokenBatch(pairs.text[rows], pairs.image[rows]).to(device)
        parts = prior_loss(model, batch, PriorObjective())[1]
        for key in totals:
            totals[key] += parts[key] * len(batch)
    return {key: value / len(pairs) for key, value in totals.items()}
