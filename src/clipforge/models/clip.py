"""The CLIP model: an image tower and a causal text transformer in one joint embedding space.

Parameter names follow OpenAI's state-dict layout (`visual.*`, `token_embedding`, `transformer.*`,
`ln_final`, `text_projection`, `logit_scale`) so their checkpoints load with `strict=True`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.models.config import ConvNetConfig, ModelConfig, ResNetConfig, TextTransformerConfig, ViTConfig
from clipforge.models.inputs import check_tokens
from clipforge.models.layers import Transformer
from clipforge.models.vision import ModifiedResNet, build_vision_tower

LOGIT_SCALE_MAX = 100.0


@dataclass
class CLIPOutput:
    """What `forward` returns: L2-normalized features and the scaled similarity logits."""

    image_features: torch.Tensor  # [B_img, E]
    text_features: torch.Tensor  # [B_txt, E]
    logits_per_image: torch.Tensor  # [B_img, B_txt]
    logits_per_text: torch.Tensor  # [B_txt, B_img]
    logit_scale: torch.Tensor  # scalar, exp of the learned log-scale (clamped at 100)


def contrastive_output(model: nn.Module, images: torch.Tensor, tokens: torch.Tensor) -> CLIPOutput:
    """Shared `forward` of every two-tower model: encode, normalize, scale the cosine logits."""
    image_features = model.encode_image(images, normalize=True)  # type: ignore[operator]
    text_features = model.encode_text(tokens, normalize=True)  # type: ignore[operator]
    scale = model.logit_scale.exp().clamp(max=LOGIT_SCALE_MAX)  # type: ignore[operator]
    logits_per_image = scale * image_features @ text_features.t()
    return CLIPOutput(image_features, text_features, logits_per_image, logits_per_image.t(), scale)


class CLIP(nn.Module):
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
        self.logit_scale = nn.Parameter(torch.tensor(config.init_logit_scale))
        self.init_weights()

    def init_weights(self) -> None:
        """OpenAI's initialization (small embeddings, depth-scaled residual projections)."""
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        self.transformer.init_weights()
        nn.init.normal_(self.text_projection, std=self.transformer.width**-0.5)
        self.visual.init_weights()  # type: ignore[operator]

    @property
    def dtype(self) -> torch.dtype:
        return self.text_projection.dtype

    @property
    def is_resnet(self) -> bool:
        return isinstance(self.visual, ModifiedResNet)

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Embeds preprocessed images [B, 3, S, S] into [B, E]."""
        features = self.visual(images.to(self.text_projection.device, self.dtype))
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Embeds token ids [B, L] (zero-padded, end-of-text has the highest id) into [B, E]."""
        vocab = self.token_embedding.num_embeddings
        tokens = check_tokens(tokens, self.context_length, vocab, "clip-bpe").to(self.text_projection.device)
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length].to(self.dtype)  # [B, L, D]
        x = self.ln_final(self.transformer(x, causal=True))
        eot = tokens.argmax(dim=-1)  # the end-of-text id is the largest in the vocabulary
        features = x[torch.arange(x.shape[0]), eot] @ self.text_projection  # [B, E]
        return F.normalize(features, dim=-1) if normalize else features

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> CLIPOutput:
        return contrastive_output(self, images, tokens)
