"""What a model provides: the typed contract between the model classes and every layer that uses them.

`Model` is anything built from a registry config and saved as a model folder. `ContrastiveModel` adds
the two encoders and the learned logit scale (and, for SigLIP, a logit bias) that training, evaluation,
probing, search and serving call. `TowerModel` is a contrastive model made of pretrained backbones and
projection heads: its backbones can be frozen and their features cached, so training can run the heads
alone.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.errors import ConfigError
from clipforge.models.config import ModelConfig

LOGIT_SCALE_MAX = 100.0


@dataclass
class CLIPOutput:
    """What `forward` returns: L2-normalized features and the scaled similarity logits."""

    image_features: torch.Tensor  # [B_img, E]
    text_features: torch.Tensor  # [B_txt, E]
    logits_per_image: torch.Tensor  # [B_img, B_txt]
    logits_per_text: torch.Tensor  # [B_txt, B_img]
    logit_scale: torch.Tensor  # scalar, exp of the learned log-scale (clamped at 100)


class ArchitectureConfig(Protocol):
    """A registry config of any model kind (CLIP, dVAE, generator): what a model folder stores."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form that the registry parses back to an equal config."""
        ...


class Model(nn.Module, ABC):
    """A network built from a registry config; `config` travels with the weights into its model folder."""

    config: ArchitectureConfig


class ContrastiveModel(Model):
    """An image encoder and a text encoder into one joint space, compared by scaled cosine similarity.

    Attributes:
        logit_scale: log of the factor cosine similarities are multiplied by.
        logit_bias: SigLIP's additive logit bias (open_clip's `init_logit_bias`); None for softmax models.
    """

    config: ModelConfig
    logit_scale: nn.Parameter
    logit_bias: nn.Parameter | None

    def init_logit_parameters(self) -> None:
        """Creates `logit_scale`, and `logit_bias` when the config has one, from the config's init values."""
        self.logit_scale = nn.Parameter(torch.tensor(self.config.init_logit_scale))
        bias = self.config.init_logit_bias
        self.register_parameter("logit_bias", None if bias is None else nn.Parameter(torch.tensor(bias)))

    def enable_logit_bias(self, init_scale: float, init_bias: float) -> None:
        """Readies a model without a bias for the sigmoid loss: a fresh scale and a new bias (SigLIP init)."""
        self.config = dataclasses.replace(self.config, init_logit_scale=init_scale, init_logit_bias=init_bias)
        with torch.no_grad():
            self.logit_scale.fill_(init_scale)
        self.register_parameter("logit_bias", nn.Parameter(torch.tensor(init_bias)))

    @abstractmethod
    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Embeds preprocessed images [B, 3, S, S] into [B, E]."""

    @abstractmethod
    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Embeds zero-padded token ids [B, L] into [B, E]."""

    def text_token_table(self) -> torch.Tensor:
        """The text tower's input embedding of every vocabulary id, [V, D] (the space prompt learning uses).

        Raises:
            ConfigError: the model cannot take its text input as embeddings.
        """
        raise ConfigError(f"{type(self).__name__} cannot encode text from token embeddings (prompt learning)")

    def encode_text_embeddings(
        self, embeddings: torch.Tensor, tokens: torch.Tensor, normalize: bool = False
    ) -> torch.Tensor:
        """Embeds input embeddings [B, L, D] that stand in for token ids `tokens` [B, L] into [B, E].

        `tokens` only gives the layout (padding, pooling position), so learned vectors may replace real
        tokens' embeddings: `encode_text(t)` equals `encode_text_embeddings(text_token_table()[t], t)`.

        Raises:
            ConfigError: the model cannot take its text input as embeddings.
        """
        raise ConfigError(f"{type(self).__name__} cannot encode text from token embeddings (prompt learning)")

    def lock_image_tower(self, unlocked_blocks: int | None = None) -> None:
        """Freezes the image tower (LiT) but its last `unlocked_blocks` blocks (None: the config's number).

        Raises:
            ConfigError: the model cannot lock its image tower, or cannot leave blocks unlocked.
        """
        raise ConfigError(f"{type(self).__name__} cannot lock its image tower")

    def lock_text_tower(self, unlocked_blocks: int | None = None) -> None:
        """Freezes the text backbone but its last `unlocked_blocks` layers (None: the config's number).

        Raises:
            ConfigError: the model has no separate text backbone to lock.
        """
        raise ConfigError("only tower models (e.g. effnetlite0-minilm) can lock the text tower")

    def similarity_scale(self) -> torch.Tensor:
        """exp(logit_scale) clamped at 100: what cosine similarities are multiplied by."""
        return self.logit_scale.exp().clamp(max=LOGIT_SCALE_MAX)

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> CLIPOutput:
        """Encodes both sides and scores every (image, text) pair; a SigLIP bias is added when present."""
        image_features = self.encode_image(images, normalize=True)
        text_features = self.encode_text(tokens, normalize=True)
        scale = self.similarity_scale()
        logits_per_image = scale * image_features @ text_features.t()  # [B_img, B_txt]
        if self.logit_bias is not None:
            logits_per_image = logits_per_image + self.logit_bias
        return CLIPOutput(image_features, text_features, logits_per_image, logits_per_image.t(), scale)


class TowerModel(ContrastiveModel):
    """Pretrained backbones followed by projection heads; frozen backbone features are worth caching."""

    @property
    @abstractmethod
    def image_backbone(self) -> nn.Module:
        """Images [B, 3, S, S] -> backbone features [B, F] (what an image feature cache is keyed by)."""

    @property
    @abstractmethod
    def image_head(self) -> nn.Module:
        """Image backbone features [B, F] -> joint-space embeddings [B, E]."""

    @property
    @abstractmethod
    def text_backbone(self) -> nn.Module:
        """Token ids [B, L] -> backbone features [B, D] (what a text feature cache is keyed by)."""

    @property
    @abstractmethod
    def text_head(self) -> nn.Module:
        """Text backbone features [B, D] -> joint-space embeddings [B, E]."""

    @property
    def image_feature_kind(self) -> str:
        """Names what `image_backbone_features` returns when it is not the pooled vector ("grid"), so a
        feature cache keeps the two apart; "" for pooled features."""
        return ""

    @property
    def text_feature_kind(self) -> str:
        """Names what `text_backbone_features` returns when it is not the pooled vector ("tokens": states
        [L, D] per text, zero rows at padding); "" for pooled features."""
        return ""

    def image_backbone_features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features [B, F] of preprocessed images [B, 3, S, S]."""
        return self.image_backbone(images)

    def text_backbone_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Backbone features [B, D] of zero-padded token ids [B, L]."""
        return self.text_backbone(tokens)

    def project_image_features(self, features: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Joint-space embeddings [B, E] of image backbone features [B, F]."""
        embeddings = self.image_head(features.to(self.logit_scale.device))
        return F.normalize(embeddings, dim=-1) if normalize else embeddings

    def project_text_features(self, features: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Joint-space embeddings [B, E] of text backbone features [B, D]."""
        embeddings = self.text_head(features.to(self.logit_scale.device))
        return F.normalize(embeddings, dim=-1) if normalize else embeddings

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Embeds preprocessed images [B, 3, S, S] into [B, E]."""
        return self.project_image_features(self.image_backbone_features(images), normalize)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Embeds zero-padded token ids [B, L] into [B, E]."""
        return self.project_text_features(self.text_backbone_features(tokens), normalize)
