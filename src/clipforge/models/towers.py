"""Two pretrained towers, EfficientNet-Lite0 and MiniLM-L6, projected into one joint embedding space.

This is the model for training on a CPU: the towers already know images and sentences, so only
the projection heads (and optionally the last few backbone blocks) have to learn the alignment.
The shipped `effnetlite0-minilm` config uses a 512-d joint space and dropout 0.7 in both heads: on
Flickr8k with both backbones frozen, a sweep (embed 128/256/512/1024, dropout 0.1-0.7, measured on
held-out retrieval R@1) put 512 ahead of 256 by ~1 point of R@1 and showed the heads overfitting within
three epochs unless dropout is strong (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from clipforge.errors import ConfigError
from clipforge.models import efficientnet, minilm
from clipforge.models.base import TowerModel
from clipforge.models.config import EfficientNetConfig, MiniLMConfig, ModelConfig
from clipforge.models.inputs import fit_tokens
from clipforge.models.vision import AttentionPool2d

WEIGHTS = ("package", "none")
HEADS = ("mlp", "linear")


class ProjectionHead(nn.Module):
    """Maps backbone features to the joint space: a linear map plus a residual GELU MLP, then LayerNorm."""

    def __init__(self, in_dim: int, embed_dim: int, dropout: float) -> None:
        super().__init__()
        self.projection = nn.Linear(in_dim, embed_dim)
        self.fc = nn.Linear(embed_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.ln = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = self.projection(x)  # [B, E]
        x = self.dropout(self.fc(F.gelu(projected)))
        return self.ln(x + projected)


def build_head(kind: str, in_dim: int, embed_dim: int, dropout: float) -> nn.Module:
    """The projection head a tower config names: "mlp" (ProjectionHead) or "linear" (one bias-free matrix)."""
    if kind == "mlp":
        return ProjectionHead(in_dim, embed_dim, dropout)
    if kind == "linear":
        return nn.Linear(in_dim, embed_dim, bias=False)
    raise ConfigError(f"unknown projection head '{kind}' (known: {', '.join(HEADS)})")


def _check_weights(weights: str, tower: str) -> None:
    if weights not in WEIGHTS:
        raise ConfigError(f"{tower}: unknown weights '{weights}' (known: {', '.join(WEIGHTS)})")


class GridHead(nn.Module):
    """Image head on the last feature map: the pooled-feature head plus a head that sees positions.

    The mean of the grid is exactly the pooled feature the `mean` head sees, so this head can do whatever
    that one does; the spatial part adds what the mean throws away: where things are. `pool="attention"`
    is CLIP's AttentionPool2d on a narrowed grid, with 2-D position embeddings; `pool="flatten"` narrows
    each position and maps the flattened grid linearly, with weights of its own for every position.
    Trained on collages alone, both fit the training collages, but only the flattened map generalized to
    held-out ones (0.89 vs 0.61 for the attention pool, see RESULTS "spatial-lit"): a pool that starts by
    averaging positions learns to tell collages apart by content first.
    With `config.fine` each cell also carries its 2x2 patch of the stride-16 map (`ImageTower.features`):
    the spatial part reads those channels too, the mean head only the first `in_dim`.
    """

    def __init__(self, config: EfficientNetConfig, in_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.side, self.in_dim = config.image_size // 32, in_dim
        self.mean_head = build_head(config.head, in_dim, embed_dim, config.dropout)
        self.narrow = nn.Linear(in_dim + fine_channels(config), config.pool_width)
        self.spatial: nn.Module
        if config.pool == "attention":
            self.spatial = AttentionPool2d(self.side, config.pool_width, config.pool_heads, embed_dim)
            self.spatial.init_weights()
        else:
            self.spatial = nn.Linear(self.side**2 * config.pool_width, embed_dim)
            # Zero at the start, so the head starts as exactly its mean head (`TowerCLIP.start_from_pooled`).
            nn.init.zeros_(self.spatial.weight)
            nn.init.zeros_(self.spatial.bias)
        self.attention = config.pool == "attention"

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        """Embeddings [B, E] of grid features [B, HW, C] (row-major positions; cached ones are float16)."""
        return self.base(grid) + self.added(grid)  # [B, E]

    def base(self, grid: torch.Tensor) -> torch.Tensor:
        """The mean head's embedding [B, E] of the grid's mean (the pooled feature)."""
        return self.mean_head(grid[..., : self.in_dim].float().mean(dim=1))  # [B, E]

    def added(self, grid: torch.Tensor) -> torch.Tensor:
        """What the spatial part adds [B, E] to the mean head's embedding."""
        grid = grid.float()
        batch, positions, _ = grid.shape
        narrow = self.narrow(grid)  # [B, HW, W]
        if self.attention:
            side = math.isqrt(positions)
            narrow = narrow.transpose(1, 2).reshape(batch, -1, side, side)  # [B, W, H, W]
        else:
            narrow = narrow.flatten(1)  # [B, HW * W]
        return self.spatial(narrow)  # [B, E]


def fine_channels(config: EfficientNetConfig) -> int:
    """Channels a grid cell gains from the stride-16 map: its 2x2 patch (0 without `config.fine`)."""
    return 4 * efficientnet.FINE_CHANNELS if config.fine else 0


def grid_cells(fine: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Each cell of the last map `grid` [B, C, H, W] with its 2x2 patch of the stride-16 map `fine`
    [B, C', 2H, 2W] appended: [B, HW, C + 4C'] (row-major cells; patch channel c * 4 + 2 * dy + dx)."""
    patches = F.pixel_unshuffle(fine, 2)  # [B, 4C', H, W]
    return torch.cat([grid, patches.to(grid.dtype)], dim=1).flatten(2).transpose(1, 2)  # [B, HW, C + 4C']


class TokenHead(nn.Module):
    """Text head on MiniLM's token states: the mean-state head plus learned queries reading the tokens.

    Under mean pooling "a dog to the left of a man" and "a dog to the right of a man" differ in one state
    of about ten. Here each query is its own softmax over the tokens (one may find the relation word,
    another the subject), and an MLP over what they read can combine them: which noun sits where is a
    product of the subject and the relation, which no linear map of a mean can express.
    Padding rows of `states` are exactly zero (a real state never is: MiniLM ends with a LayerNorm), which
    is how rows of different lengths share one batch.
    """

    def __init__(self, config: MiniLMConfig, in_dim: int, embed_dim: int) -> None:
        super().__init__()
        width, read = config.pool_width, config.pool_width * config.pool_heads
        self.mean_head = build_head(config.head, in_dim, embed_dim, config.dropout)
        self.narrow = nn.Linear(in_dim, width)
        self.key = nn.Linear(width, width)
        self.queries = nn.Parameter(torch.randn(config.pool_heads, width) / width**0.5)
        out = nn.Linear(embed_dim, embed_dim)
        # Zero at the start, so the head starts as exactly its mean head (`TowerCLIP.start_from_pooled`).
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.mlp = nn.Sequential(nn.LayerNorm(read), nn.Linear(read, embed_dim), nn.GELU(), out)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        """Embeddings [B, E] of token states [B, L, D], zero rows past each text's end."""
        return self.base(states) + self.added(states)  # [B, E]

    def base(self, states: torch.Tensor) -> torch.Tensor:
        """The mean head's embedding [B, E] of the mean of each text's real (non-zero) states."""
        states = states.float()
        weights = (states.abs().amax(dim=-1) > 0).unsqueeze(-1).float()  # [B, L, 1]
        mean = (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # [B, D]
        return self.mean_head(mean)  # [B, E]

    def added(self, states: torch.Tensor) -> torch.Tensor:
        """What the queries add [B, E] to the mean head's embedding."""
        states = states.float()
        mask = states.abs().amax(dim=-1) > 0  # [B, L]
        narrow = self.narrow(states)  # [B, L, W]
        scores = self.key(narrow) @ self.queries.t() / narrow.shape[-1] ** 0.5  # [B, L, Q]
        scores = scores.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        read = scores.softmax(dim=1).transpose(1, 2) @ narrow  # [B, Q, W]
        return self.mlp(read.flatten(1))  # [B, E]


class ImageTower(nn.Module):
    """EfficientNet-Lite0 backbone (`backbone`) followed by a `head` on its pooled features or on its grid."""

    def __init__(self, config: EfficientNetConfig, embed_dim: int) -> None:
        super().__init__()
        _check_weights(config.weights, "vision")
        self.backbone = efficientnet.EfficientNetLite0()
        if config.weights == "package":
            efficientnet.load_pretrained(self.backbone)
        self.pool, self.fine = config.pool, config.fine
        dim = self.backbone.output_dim
        self.head = (
            GridHead(config, dim, embed_dim)
            if config.pool != "mean"
            else build_head(config.head, dim, embed_dim, config.dropout)
        )

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """What the head reads: pooled features [B, 1280], or the grid [B, HW, 1280] for a grid head, with
        each cell's 2x2 patch of the stride-16 map appended ([B, HW, 1280 + 448]) when `fine`."""
        if self.pool == "mean":
            return self.backbone(images)  # [B, 1280]
        if not self.fine:
            return self.backbone.grid(images).flatten(2).transpose(1, 2)  # [B, HW, 1280]
        return grid_cells(*self.backbone.maps(images))  # [B, HW, 1280 + 448]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))  # [B, E]


class TextTower(nn.Module):
    """MiniLM-L6 backbone (`backbone`) followed by a `head` on its mean state or on its token states."""

    def __init__(self, config: MiniLMConfig, embed_dim: int) -> None:
        super().__init__()
        _check_weights(config.weights, "text")
        self.backbone = minilm.MiniLM()
        if config.weights == "package":
            minilm.load_pretrained(self.backbone)
        self.pool = config.pool
        dim = self.backbone.output_dim
        self.head = (
            TokenHead(config, dim, embed_dim)
            if config.pool == "attention"
            else build_head(config.head, dim, embed_dim, config.dropout)
        )

    def features(self, embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """What the head reads, from word embeddings [B, L, D] and `mask` [B, L] (True for real tokens):
        the mean state [B, 384], or the token states [B, L, 384] with zero rows at padding."""
        if self.pool == "attention":
            states = self.backbone.states_from_embeddings(embeddings, mask)  # [B, L, 384]
            return states * mask.unsqueeze(-1).to(states.dtype)
        return self.backbone.pool_embeddings(embeddings, mask)  # [B, 384]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        embeddings = self.backbone.token_embedding(tokens)  # [B, L, D]
        return self.head(self.features(embeddings, tokens != minilm.PAD_ID))  # [B, E]


class TowerCLIP(TowerModel):
    """The tower-model contract over EfficientNet-Lite0 (`visual`) and MiniLM-L6 (`text`).

    Args:
        config: a model config whose vision tower is EfficientNetConfig and text tower MiniLMConfig;
            `weights="package"` loads the pretrained backbones from their packages, `"none"` leaves them
            randomly initialized (for tests, or before loading a clipforge checkpoint).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config.vision, EfficientNetConfig):
            raise ConfigError(f"TowerCLIP needs an efficientnet_lite0 tower, got '{config.vision.type}'")
        if not isinstance(config.text, MiniLMConfig):
            raise ConfigError(f"TowerCLIP needs a minilm text tower, got '{config.text.type}'")
        self.config = config
        self.vision_config, self.text_config = config.vision, config.text
        self.context_length = config.text.context_length
        self.visual = ImageTower(config.vision, config.embed_dim)
        self.text = TextTower(config.text, config.embed_dim)
        self.init_logit_parameters()
        self.frozen_mean_heads = False  # set by `start_from_pooled`

    @property
    def image_backbone(self) -> nn.Module:
        return self.visual.backbone

    @property
    def image_head(self) -> nn.Module:
        return self.visual.head

    @property
    def text_backbone(self) -> nn.Module:
        return self.text.backbone

    @property
    def text_head(self) -> nn.Module:
        return self.text.head

    @property
    def image_feature_kind(self) -> str:
        if self.vision_config.pool == "mean":
            return ""
        return "grid+fine" if self.vision_config.fine else "grid"

    def image_backbone_features(self, images: torch.Tensor) -> torch.Tensor:
        """EfficientNet features of images [B, 3, S, S]: pooled [B, 1280], the grid [B, HW, 1280], or with
        `fine` the grid cells with their stride-16 patches [B, HW, 1280 + 448] (`ImageTower.features`)."""
        return self.visual.features(images.to(self.logit_scale.device))

    def text_backbone_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Mean-pooled MiniLM features [B, 384] of WordPiece ids [B, L], or its token states [B, L', 384]
        (zero rows at padding) for `pool="attention"`; trimmed to the longest row (`fit_tokens`); worth
        caching when frozen."""
        backbone = self.text.backbone
        vocab, positions = backbone.token_embedding.num_embeddings, backbone.position_embedding.num_embeddings
        tokens = fit_tokens(tokens, positions, vocab, "wordpiece").to(self.logit_scale.device)
        return self.text.features(backbone.token_embedding(tokens), tokens != minilm.PAD_ID)

    @property
    def text_feature_kind(self) -> str:
        return "tokens" if self.text_config.pool == "attention" else ""

    def text_token_table(self) -> torch.Tensor:
        """MiniLM's word embedding of every vocabulary id, [V, 384] (the space CoOp learns in)."""
        return self.text.backbone.token_embedding.weight

    def encode_text_embeddings(
        self, embeddings: torch.Tensor, tokens: torch.Tensor, normalize: bool = False
    ) -> torch.Tensor:
        """Embeds word embeddings [B, L, 384] that stand in for WordPiece ids `tokens` [B, L] into [B, E].

        `tokens` only gives the layout (its padding is masked out), so learned vectors may replace any
        real token's embedding (prompt learning, e.g. CoOp).
        """
        features = self.text.features(embeddings, tokens != minilm.PAD_ID)
        return self.project_text_features(features, normalize)

    def mean_heads(self) -> tuple[nn.Module, nn.Module]:
        """The heads on the pooled image feature and the mean text state (the whole head of a mean-pool
        tower; the `mean_head` part of a grid or token head)."""
        image, text = self.visual.head, self.text.head
        image = image.mean_head if isinstance(image, GridHead) else image
        return image, text.mean_head if isinstance(text, TokenHead) else text

    def drift(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """How far the grid and token branches move embeddings off the mean heads' alone: the mean of
        1 - cosine(embedding, mean-head embedding) over the images and texts (0 while they add nothing)."""
        distances = []
        for head, features in ((self.visual.head, image_features), (self.text.head, text_features)):
            if isinstance(head, GridHead | TokenHead):
                base = head.base(features)  # [B, E]
                full = base + head.added(features)  # [B, E], the branch run once
                distances.append(1 - F.cosine_similarity(full, base, dim=-1))
        return torch.cat(distances).mean() if distances else self.logit_scale.new_zeros(())

    def start_from_pooled(self, pooled: TowerCLIP) -> None:
        """Copies the projection heads and temperature of `pooled` (a mean-pool model of the same towers)
        into this model's mean heads and freezes them.

        Grid and token heads add branches that start at zero, so this model's embeddings start as exactly
        `pooled`'s: what the branches then learn is what the mean throws away (where things are, which
        word relates which), and retrieval starts where the pooled model's did.
        """
        for mine, theirs in zip(self.mean_heads(), pooled.mean_heads(), strict=True):
            mine.load_state_dict(theirs.state_dict())
            mine.requires_grad_(False)
        self.logit_scale.data.copy_(pooled.logit_scale.data)
        self.frozen_mean_heads = True
        self.train(self.training)

    def train(self, mode: bool = True) -> TowerCLIP:
        """Sets train `mode`; mean heads frozen by `start_from_pooled` stay in eval mode, as the pooled model
        is evaluated: a frozen head is a fixed function, and its dropout (0.7) would only add noise to what
        the branches learn against (and to the anchor's target)."""
        super().train(mode)
        if self.frozen_mean_heads:
            for head in self.mean_heads():
                head.eval()
        return self

    def lock_image_tower(self, unlocked_blocks: int | None = None) -> None:
        """Freezes the EfficientNet backbone but its last `unlocked_blocks` blocks; the head stays trainable.

        Args:
            unlocked_blocks: blocks left trainable, counted from the output (the head conv is one);
                `config.vision.unlocked_blocks` by default.
        """
        unlocked = self.vision_config.unlocked_blocks if unlocked_blocks is None else unlocked_blocks
        self.visual.backbone.lock(unlocked)

    def lock_text_tower(self, unlocked_blocks: int | None = None) -> None:
        """Freezes the MiniLM backbone but its last `unlocked_blocks` layers; the head stays trainable.

        Args:
            unlocked_blocks: encoder layers left trainable; `config.text.unlocked_blocks` by default.
        """
        unlocked = self.text_config.unlocked_blocks if unlocked_blocks is None else unlocked_blocks
        self.text.backbone.lock(unlocked)
