"""DALL-E's stage two: a decoder-only transformer over one stream of [text tokens ; image tokens].

The caption (CLIP BPE ids, a short context) comes first; every text position after the end-of-text id
gets its own padding token, as in DALL-E, so the model always knows how far the caption reached. Image
tokens (codes of the embedded dVAE, row-major) follow, each with a row and a column embedding. The
output at the last text position predicts the first image token. Text and image logits come from
separate heads; the generator folder embeds its dVAE, so one folder turns text into pixels.

Text vocabulary: a model trained on a small caption set embeds only the BPE ids its captions use
(`text_vocab`); every other id reads as one unknown token. An empty `text_vocab` embeds all of BPE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from clipforge.errors import ConfigError
from clipforge.models.base import Model
from clipforge.models.config import PreprocessConfig, TokenizerConfig
from clipforge.models.dvae import DVAE, DVAEConfig
from clipforge.models.layers import KVCache, Transformer
from clipforge.typed import to_dict

BPE_VOCAB_SIZE = 49408
EOT_ID = BPE_VOCAB_SIZE - 1  # CLIP BPE's end-of-text id is its largest


@dataclass(frozen=True)
class GeneratorConfig:
    """A text-to-image transformer and the dVAE whose codes it writes.

    Attributes:
        dvae: the embedded dVAE's architecture.
        text_context: text positions, start and end ids included.
        text_vocab: the BPE ids with an embedding of their own; empty: every BPE id.
        width, layers, heads, mlp_ratio, act: the transformer.
    """

    kind: str = "generator"
    dvae: DVAEConfig = field(default_factory=DVAEConfig)
    text_context: int = 16
    text_vocab: tuple[int, ...] = ()
    width: int = 256
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    act: str = "gelu"

    def __post_init__(self) -> None:
        if self.kind != "generator":
            raise ConfigError(f"generator config: kind must be 'generator', got {self.kind!r}")
        if self.text_context < 2 or self.width % self.heads:
            raise ConfigError("generator config: text_context must be >= 2 and width divisible by heads")
        if any(not 0 <= i < BPE_VOCAB_SIZE for i in self.text_vocab):
            raise ConfigError(f"generator config: text_vocab ids must be in [0, {BPE_VOCAB_SIZE})")

    @property
    def image_tokens(self) -> int:
        """Image tokens per image (the dVAE grid, row-major)."""
        return self.dvae.grid**2

    @property
    def text_tokens(self) -> int:
        """Size of the text embedding: the vocabulary, the unknown token, one padding token per position."""
        return (len(self.text_vocab) or BPE_VOCAB_SIZE) + 1 + self.text_context

    @property
    def preprocess(self) -> PreprocessConfig:
        return self.dvae.preprocess

    @property
    def tokenizer(self) -> TokenizerConfig:
        return TokenizerConfig("clip-bpe", self.text_context)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


@dataclass
class GeneratorOutput:
    """Next-token logits of a teacher-forced pass."""

    text_logits: torch.Tensor  # [B, Lt - 1, V]: predicts text positions 1 .. Lt - 1
    image_logits: torch.Tensor  # [B, N, K]: predicts image tokens 0 .. N - 1


def _bpe_lookup(config: GeneratorConfig) -> torch.Tensor:
    """Model text id of every BPE id: its index in `text_vocab`, or the unknown token."""
    if not config.text_vocab:
        return torch.arange(BPE_VOCAB_SIZE)
    lookup = torch.full((BPE_VOCAB_SIZE,), len(config.text_vocab), dtype=torch.long)
    lookup[torch.tensor(config.text_vocab, dtype=torch.long)] = torch.arange(len(config.text_vocab))
    return lookup


class Generator(Model):
    """Text-conditioned autoregressive prior over dVAE tokens, with the (frozen) dVAE inside."""

    config: GeneratorConfig
    bpe_to_text: torch.Tensor

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        grid, width = config.dvae.grid, config.width
        self.register_buffer("bpe_to_text", _bpe_lookup(config), persistent=False)
        self.pad_offset = (len(config.text_vocab) or BPE_VOCAB_SIZE) + 1
        self.text_embedding = nn.Embedding(config.text_tokens, width)
        self.text_positional = nn.Parameter(torch.empty(config.text_context, width))
        self.image_embedding = nn.Embedding(config.dvae.codebook_size, width)
        self.image_row = nn.Parameter(torch.empty(grid, width))
        self.image_col = nn.Parameter(torch.empty(grid, width))
        self.transformer = Transformer(width, config.layers, config.heads, config.mlp_ratio, config.act)
        self.ln_final = nn.LayerNorm(width)
        self.text_head = nn.Linear(width, config.text_tokens)
        self.image_head = nn.Linear(width, config.dvae.codebook_size)
        self.dvae = DVAE(config.dvae).requires_grad_(False)
        self.init_weights()

    def init_weights(self) -> None:
        """GPT-style: small embeddings, OpenAI's depth-scaled residual init, zero head biases."""
        for table in (self.text_embedding.weight, self.image_embedding.weight, self.text_positional,
                      self.image_row, self.image_col, self.text_head.weight, self.image_head.weight):
            nn.init.normal_(table, std=0.02)
        nn.init.zeros_(self.text_head.bias)
        nn.init.zeros_(self.image_head.bias)
        self.transformer.init_weights()

    def text_ids(self, tokens: torch.Tensor) -> torch.Tensor:
        """Model text ids [B, Lt] of BPE ids [B, Lt]; positions after end-of-text become their pad tokens."""
        if tokens.shape[1] != self.config.text_context:
            raise ConfigError(f"generator expects {self.config.text_context} text positions, "
                              f"got {tokens.shape[1]}")
        positions = torch.arange(tokens.shape[1], device=tokens.device)  # [Lt]
        end = (tokens == EOT_ID).long().argmax(dim=1, keepdim=True)  # [B, 1]
        return torch.where(positions > end, self.pad_offset + positions, self.bpe_to_text[tokens])

    def embed_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Input embeddings [B, Lt, D] of BPE ids [B, Lt]."""
        return self.text_embedding(self.text_ids(tokens)) + self.text_positional

    def embed_image(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Input embeddings [B, T, D] of image tokens [B, T] at grid positions start .. start + T - 1."""
        index = torch.arange(start, start + tokens.shape[1], device=tokens.device)  # [T]
        grid = self.config.dvae.grid
        position = self.image_row[index // grid] + self.image_col[index % grid]  # [T, D]
        return self.image_embedding(tokens) + position

    def hidden(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Final-normalized causal transformer states [B, T, D]; with a cache, T new positions."""
        return self.ln_final(self.transformer(x, causal=True, cache=cache))

    def forward(self, text: torch.Tensor, image: torch.Tensor) -> GeneratorOutput:
        """Teacher-forced logits for BPE ids [B, Lt] and image tokens [B, N]."""
        x = torch.cat([self.embed_text(text), self.embed_image(image[:, :-1])], dim=1)  # [B, Lt + N - 1, D]
        h = self.hidden(x)
        context = self.config.text_context
        return GeneratorOutput(self.text_head(h[:, : context - 1]), self.image_head(h[:, context - 1 :]))

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pixels [B, 3, S, S] in [0, 1] of image tokens [B, N] (the dVAE decoder)."""
        return self.dvae.decode(tokens)
