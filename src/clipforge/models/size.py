"""How many parameters a config describes, counted from the config alone, before anything is allocated.

A hostile or mistyped config (a width of 1e7, a vocabulary of 1e9) would otherwise reach the allocator
and die there with a raw error after trying to take terabytes. `check_model_size` refuses such configs
up front against a ceiling: `DEFAULT_MAX_PARAMS` (3 billion, above every public CLIP, ViT-bigG-14
included, at 2.5 billion), overridable with the `CLIPFORGE_MAX_PARAMS` environment variable or the
`max_params` keyword. The counts are exact (tests compare them with the built models).
"""

from __future__ import annotations

import os

from clipforge.errors import ConfigError
from clipforge.models.config import (
    ConvNetConfig,
    EfficientNetConfig,
    MiniLMConfig,
    ModelConfig,
    ResNetConfig,
    TextTransformerConfig,
    ViTConfig,
)

DEFAULT_MAX_PARAMS = 3_000_000_000
MAX_PARAMS_ENV = "CLIPFORGE_MAX_PARAMS"
# The pretrained backbones have fixed sizes (EfficientNet's ImageNet classifier included, as built).
EFFICIENTNET_LITE0_PARAMS = 4_652_008
EFFICIENTNET_FEATURES = 1280
MINILM_PARAMS = 22_565_376
MINILM_FEATURES = 384


def max_params() -> int:
    """The parameter ceiling: `CLIPFORGE_MAX_PARAMS` when set, else DEFAULT_MAX_PARAMS.

    Raises:
        ConfigError: the environment variable is not a positive integer.
    """
    raw = os.environ.get(MAX_PARAMS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PARAMS
    try:
        value = int(float(raw))
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{MAX_PARAMS_ENV}={raw!r} must be a positive number of parameters")
    return value


def check_model_size(config: ModelConfig, limit: int | None = None) -> int:
    """Counts the parameters of `config` and refuses it above the ceiling, before anything is allocated.

    Args:
        config: the architecture.
        limit: the ceiling; `max_params()` by default.

    Returns:
        The parameter count.

    Raises:
        ConfigError: the model would have more parameters than the ceiling.
    """
    count = count_parameters(config)
    ceiling = max_params() if limit is None else limit
    if count > ceiling:
        raise ConfigError(
            f"model too large: {count:,} parameters (~{4 * count / 2**30:,.1f} GiB in float32) is over the "
            f"limit of {ceiling:,}; set {MAX_PARAMS_ENV} to raise it"
        )
    return count


def count_parameters(config: ModelConfig) -> int:
    """The exact number of parameters `create_model(config)` would allocate."""
    embed = config.embed_dim
    return _vision(config.vision, embed) + _text(config.text, embed) + 1  # + logit_scale


def _vision(config: ViTConfig | ResNetConfig | ConvNetConfig | EfficientNetConfig, embed: int) -> int:
    if isinstance(config, ViTConfig):
        return _vit(config, embed)
    if isinstance(config, ResNetConfig):
        return _resnet(config, embed)
    if isinstance(config, ConvNetConfig):
        return _convnet(config, embed)
    total = EFFICIENTNET_LITE0_PARAMS + _head(config.head, EFFICIENTNET_FEATURES, embed)
    width, grid = config.pool_width, config.image_size // 32
    if config.pool != "mean":
        fine = 4 * 112 if config.fine else 0  # each cell's 2x2 patch of the stride-16 map
        total += (EFFICIENTNET_FEATURES + fine) * width + width  # the narrowing linear map
    if config.pool == "attention":
        total += (grid * grid + 1) * width + 3 * (width * width + width) + width * embed + embed
    if config.pool == "flatten":
        total += grid * grid * width * embed + embed
    return total


def _text(config: TextTransformerConfig | MiniLMConfig, embed: int) -> int:
    if isinstance(config, MiniLMConfig):
        total = MINILM_PARAMS + _head(config.head, MINILM_FEATURES, embed)
        if config.pool == "attention":
            width, read = config.pool_width, config.pool_width * config.pool_heads
            total += MINILM_FEATURES * width + width + width * width + width + read  # narrow, key, queries
            total += 2 * read + read * embed + embed + embed * embed + embed  # LayerNorm and the MLP
        return total
    width = config.width
    tables = (config.vocab_size + config.context_length) * width
    blocks = config.layers * _block(width, round(width * config.mlp_ratio))
    return tables + blocks + 2 * width + width * embed  # ln_final, text_projection


def _block(width: int, hidden: int) -> int:
    """One pre-LN transformer block: packed q/k/v, output projection, MLP, two LayerNorms."""
    return 4 * width * width + 2 * width * hidden + 9 * width + hidden


def _vit(config: ViTConfig, embed: int) -> int:
    width, patch = config.width, config.patch_size
    grid = config.image_size // patch
    stem = 3 * patch * patch * width + width + (grid * grid + 1) * width  # conv1, class token, positions
    blocks = config.layers * _block(width, round(width * config.mlp_ratio))
    return stem + blocks + 4 * width + width * embed  # ln_pre, ln_post, proj


def _resnet(config: ResNetConfig, embed: int) -> int:
    half, width = config.width // 2, config.width
    total = 9 * (3 * half + half * half + half * width) + 2 * (half + half + width)  # 3-conv stem + BNs
    inplanes = width
    for stage, blocks in enumerate(config.layers):
        planes = width * 2**stage
        total += _bottleneck(inplanes, planes, downsample=stage > 0 or inplanes != 4 * planes)
        total += (blocks - 1) * _bottleneck(4 * planes, planes, downsample=False)
        inplanes = 4 * planes
    channels, grid = width * 32, config.image_size // 32
    pool = (grid * grid + 1) * channels + 3 * (channels * channels + channels) + channels * embed + embed
    return total + pool


def _bottleneck(inplanes: int, planes: int, downsample: bool) -> int:
    convs = inplanes * planes + 9 * planes * planes + 4 * planes * planes
    norms = 2 * (planes + planes + 4 * planes)
    shortcut = inplanes * 4 * planes + 8 * planes if downsample else 0
    return convs + norms + shortcut


def _convnet(config: ConvNetConfig, embed: int) -> int:
    total, channels_in = 0, 3
    for channels in config.channels:
        total += 9 * channels_in * channels + channels
        channels_in = channels
    side = config.image_size // 2 ** len(config.channels)
    flat = channels_in * (side * side + config.max_pool)
    return total + flat * config.hidden + config.hidden + config.hidden * embed + embed


def _head(kind: str, features: int, embed: int) -> int:
    if kind == "linear":
        return features * embed
    return features * embed + embed + embed * embed + embed + 2 * embed  # projection, fc, LayerNorm
