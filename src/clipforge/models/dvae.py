"""Discrete VAE (DALL-E's stage one): an image becomes a grid of codes from a learned codebook.

The encoder maps pixels to logits over `codebook_size` codes per cell; training relaxes the choice
with Gumbel-softmax (temperature annealed by the trainer) and decodes the soft mixture of codebook
vectors; at inference an image's tokens are the argmax of its logits and `decode` draws them back.
Pixels enter and leave in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.errors import ConfigError
from clipforge.models.base import Model
from clipforge.models.config import PreprocessConfig
from clipforge.typed import to_dict


@dataclass(frozen=True)
class DVAEConfig:
    """A dVAE architecture.

    Attributes:
        image_size: side of the square input in pixels.
        channels: conv width of each stage; every stage halves the resolution, so the token grid
            has side ``image_size / 2**len(channels)``.
        res_blocks: residual blocks per stage, in the encoder and in the decoder.
        codebook_size: number of codes K.
        code_dim: width of a codebook vector.
    """

    kind: str = "dvae"
    image_size: int = 32
    channels: tuple[int, ...] = (64, 128)
    res_blocks: int = 1
    codebook_size: int = 512
    code_dim: int = 64

    def __post_init__(self) -> None:
        if self.kind != "dvae":
            raise ConfigError(f"dvae config: kind must be 'dvae', got {self.kind!r}")
        if not self.channels or self.image_size % 2 ** len(self.channels):
            raise ConfigError(f"dvae config: image_size {self.image_size} is not divisible by "
                              f"2**{len(self.channels)} (one halving per entry of channels)")
        if self.codebook_size < 2 or self.code_dim < 1 or self.res_blocks < 0:
            raise ConfigError("dvae config: codebook_size must be >= 2, code_dim >= 1, res_blocks >= 0")

    @property
    def grid(self) -> int:
        """Side of the token grid."""
        return self.image_size // 2 ** len(self.channels)

    @property
    def preprocess(self) -> PreprocessConfig:
        """Pixels in [0, 1] at the model's size (no normalization)."""
        return PreprocessConfig(self.image_size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "bicubic", "shortest")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


class ResBlock(nn.Module):
    """x + conv(relu(conv(relu(x)))), the decoder's and encoder's refinement step."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


def _encoder(config: DVAEConfig) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(3, config.channels[0], 3, padding=1)]
    previous = config.channels[0]
    for width in config.channels:
        layers.append(nn.Conv2d(previous, width, 4, stride=2, padding=1))
        layers += [ResBlock(width) for _ in range(config.res_blocks)]
        previous = width
    layers += [nn.ReLU(), nn.Conv2d(previous, config.codebook_size, 1)]
    return nn.Sequential(*layers)


def _decoder(config: DVAEConfig) -> nn.Sequential:
    widths = config.channels[::-1]
    layers: list[nn.Module] = [nn.Conv2d(config.code_dim, widths[0], 1)]
    previous = widths[0]
    for width in widths:
        layers += [ResBlock(previous) for _ in range(config.res_blocks)]
        layers.append(nn.ConvTranspose2d(previous, width, 4, stride=2, padding=1))  # doubles the side
        previous = width
    layers += [nn.ReLU(), nn.Conv2d(previous, 3, 3, padding=1)]
    return nn.Sequential(*layers)


def gumbel_softmax(logits: torch.Tensor, temperature: float, hard: bool) -> torch.Tensor:
    """Gumbel-softmax over dim 1 of [B, K, G, G]; `hard`: one-hot forward, soft gradients.

    The Gumbel noise is drawn as -log(-log(U)) from `torch.rand`, several times faster on CPU than the
    exponential sampler `F.gumbel_softmax` uses; the distribution is the same.
    """
    uniform = torch.rand_like(logits).clamp_(1e-10, 1.0 - 1e-7)
    soft = ((logits - torch.log(-torch.log(uniform))) / temperature).softmax(dim=1)
    if not hard:
        return soft
    one_hot = torch.zeros_like(soft).scatter_(1, soft.argmax(dim=1, keepdim=True), 1.0)
    return one_hot - soft.detach() + soft


@dataclass
class DVAEOutput:
    """What a training forward pass returns."""

    logits: torch.Tensor  # [B, K, G, G] encoder logits
    reconstruction: torch.Tensor  # [B, 3, S, S] in (about) [0, 1]


class DVAE(Model):
    """Conv encoder -> K logits per cell -> (Gumbel-)softmax over the codebook -> conv decoder."""

    config: DVAEConfig

    def __init__(self, config: DVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = _encoder(config)
        self.codebook = nn.Embedding(config.codebook_size, config.code_dim)
        self.decoder = _decoder(config)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits over the codebook per cell, [B, K, G, G], of pixels [B, 3, S, S] in [0, 1] (moved to the
        model's device)."""
        logits: torch.Tensor = self.encoder(images.to(self.codebook.weight.device) * 2.0 - 1.0)
        return logits

    def decode_soft(self, weights: torch.Tensor) -> torch.Tensor:
        """Pixels [B, 3, S, S] from per-cell weights over the codebook [B, K, G, G]."""
        codes = torch.einsum("bkhw,kd->bdhw", weights, self.codebook.weight)  # [B, D, G, G]
        pixels: torch.Tensor = self.decoder(codes)
        return pixels

    def forward(self, images: torch.Tensor, temperature: float = 1.0, hard: bool = False) -> DVAEOutput:
        """Encodes, draws a Gumbel-softmax relaxation at `temperature` and decodes it.

        Args:
            images: pixels [B, 3, S, S] in [0, 1].
            temperature: Gumbel-softmax temperature.
            hard: straight-through: decode one-hot codes, pass gradients of the soft ones.
        """
        logits = self.logits(images)
        weights = gumbel_softmax(logits, temperature, hard)  # [B, K, G, G]
        return DVAEOutput(logits, self.decode_soft(weights))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Image tokens [B, G * G] in row-major order: the argmax code of each cell."""
        return self.logits(images).argmax(dim=1).flatten(1)  # [B, G, G] -> [B, G * G]

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pixels [B, 3, S, S] clamped to [0, 1] from tokens [B, G * G] (moved to the model's device)."""
        grid = self.config.grid
        cells = tokens.to(self.codebook.weight.device).reshape(-1, grid, grid)  # [B, G, G]
        one_hot = F.one_hot(cells, self.config.codebook_size)  # [B, G, G, K]
        weights = one_hot.permute(0, 3, 1, 2).to(self.codebook.weight.dtype)  # [B, K, G, G]
        return self.decode_soft(weights).clamp(0.0, 1.0)
