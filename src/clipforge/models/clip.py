"""The CLIP model: an image tower and a causal text transformer in one joint embedding space.

Parameter names follow OpenAI's state-dict layout (`visual.*`, `token_embedding`, `transformer.*`,
`ln_final`, `text_projection`, `logit_scale`) so their checkpoints load with `strict=True`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.errors import ConfigError
from clipforge.models.base import CLIPOutput, ContrastiveModel
from clipforge.models.config import ConvNetConfig, ModelConfig, ResNetConfig, TextTransformerConfig, ViTConfig
from clipforge.models.inputs import fit_tokens
from clipforge.models.layers import Transformer
from clipforge.models.vision import build_vision_tower

__all__ = ["CLIP", "CLIPOutput"]


class CLIP(ContrastiveModel):
    """Image tower (`visual`) plus a causal text transformer pooled at the end-of-text token."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config.vision, ViTConfig | ResNetConfig | ConvNetConfig):
            raise TypeError(f"CLIP cannot build a '{config.vision.type}' image tower")
        if not isinstance(config.text, TextTransformerConfig):
            raise TypeError(f"CLIP cannot build a '{config.text.type}' text tower")
        text = config.text
        self.config = config
        self.context_length = text.context_length
        self.visual = build_vision_tower(config.vision, config.embed_dim)
        self.token_embedding = nn.Embedding(text.vocab_size, text.width)
        self.positional_embedding = nn.Parameter(torch.empty(text.context_length, text.width))
        self.transformer = Transformer(
            text.width, text.layers, text.heads, text.mlp_ratio, text.act, text.eps
        )
        self.ln_final = nn.LayerNorm(text.width, eps=text.eps)
        self.text_projection = nn.Parameter(torch.empty(text.width, config.embed_dim))
        self.init_logit_parameters()
        self.init_weights()

    def init_weights(self) -> None:
        """OpenAI's initialization (small embeddings, depth-scaled residual projections)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        self.transformer.init_weights()
        nn.init.normal_(self.text_projection, std=self.transformer.width**-0.5)
        self.visual.init_weights()

    @property
    def dtype(self) -> torch.dtype:
        return self.text_projection.dtype

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Embeds preprocessed images [B, 3, S, S] into [B, E]."""
        features = self.visual(images.to(self.text_projection.device, self.dtype))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Embeds token ids [B, L] (zero-padded, end-of-text has the highest id) into [B, E].

        Only the columns up to the longest row's end-of-text are computed (`fit_tokens`).
        """
        vocab = self.token_embedding.num_embeddings
        tokens = fit_tokens(tokens, self.context_length, vocab, "clip-bpe").to(self.text_projection.device)
        return self.encode_text_embeddings(self.token_embedding(tokens), tokens, normalize)

    def text_token_table(self) -> torch.Tensor:
        """The text tower's input embedding of every vocabulary id, [V, D] (the space CoOp learns in)."""
        return self.token_embedding.weight

    def encode_text_embeddings(
        self, embeddings: torch.Tensor, tokens: torch.Tensor, normalize: bool = False
    ) -> torch.Tensor:
        """Embeds input embeddings [B, L, D] that stand in for `tokens` [B, L] into [B, E].

        `tokens` only gives the layout: the output is pooled at its end-of-text position, so learned
        vectors may replace any other token's embedding (prompt learning, e.g. CoOp).
        """
        length = tokens.shape[1]
        x = embeddings.to(self.dtype) + self.positional_embedding[:length].to(self.dtype)  # [B, L, D]
        x = self.ln_final(self.transformer(x, causal=True))
        eot = tokens.argmax(dim=-1)  # the end-of-text id is the largest in the vocabulary
        features = x[torch.arange(x.shape[0]), eot] @ self.text_projection  # [B, E]
        return F.normalize(features, dim=-1) if normalize else features

    def lock_image_tower(self, unlocked_blocks: int | None = None) -> None:
        """Freezes the whole image tower; CLIP's towers have no pretrained blocks to leave unlocked."""
        if unlocked_blocks:
            raise ConfigError("only tower models (e.g. effnetlite0-minilm) can keep image blocks unlocked")
        self.visual.requires_grad_(False)
