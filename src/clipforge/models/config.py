"""Typed architecture configs, parsed from JSON-like dicts that may not carry unknown keys.

A model config is plain data: `ModelConfig.from_dict(json.load(f))`. Each tower has a `type` that
picks its dataclass, so a ViT config cannot silently carry ResNet fields.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from clipforge.errors import ConfigError
from clipforge.typed import check_value, parse_dataclass, to_dict

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
ACTIVATIONS = ("quick_gelu", "gelu")
INTERPOLATIONS = ("bicubic", "bilinear", "nearest")
RESIZE_MODES = ("shortest",)
TOKENIZERS = ("clip-bpe", "wordpiece")
PRETRAINED_WEIGHTS = ("package", "none")
PROJECTION_HEADS = ("mlp", "linear")
IMAGE_POOLS = ("mean", "attention", "flatten")
TEXT_POOLS = ("mean", "attention")
CLIP_BPE_VOCAB = 49408
MINILM_MAX_POSITIONS = 512
# Semantic bounds: beyond them a config is a typo or an attack, not a model (sizes are also bounded by
# the parameter ceiling of `models.size`, checked before anything is allocated).
MAX_IMAGE_SIZE = 4096
MAX_CONTEXT_LENGTH = 8192


def require(ok: bool, message: str) -> None:
    """Raises ConfigError(`message`) unless `ok`; the parser prefixes where the config came from."""
    if not ok:
        raise ConfigError(message)


def _check_choice(name: str, value: str, known: tuple[str, ...]) -> None:
    require(value in known, f"{name}={value!r} is not one of {', '.join(known)}")


def _check_range(name: str, value: float, low: float, high: float = math.inf) -> None:
    require(math.isfinite(value) and low <= value <= high,
            f"{name}={value!r} must be between {low} and {high}" if high < math.inf
            else f"{name}={value!r} must be >= {low}")


def _check_heads(width: int, heads: int, name: str = "heads") -> None:
    _check_range(name, heads, 1)
    require(width % heads == 0, f"{name}={heads} must divide the width {width}")


def _check_eps(eps: float) -> None:
    require(math.isfinite(eps) and 0 < eps < 1, f"eps={eps!r} must be between 0 and 1 (exclusive)")


def _check_mlp(width: int, mlp_ratio: float) -> None:
    require(math.isfinite(mlp_ratio) and mlp_ratio > 0 and round(width * mlp_ratio) >= 1,
            f"mlp_ratio={mlp_ratio!r} must be > 0 (and width x mlp_ratio >= 1)")


def _check_transformer(width: int, layers: int, heads: int, mlp_ratio: float, act: str, eps: float) -> None:
    """The settings both transformer towers share."""
    _check_range("width", width, 1)
    _check_range("layers", layers, 0)
    _check_heads(width, heads)
    _check_mlp(width, mlp_ratio)
    _check_choice("act", act, ACTIVATIONS)
    _check_eps(eps)


def _check_head(weights: str, head: str, dropout: float, unlocked_blocks: int) -> None:
    _check_choice("weights", weights, PRETRAINED_WEIGHTS)
    _check_choice("head", head, PROJECTION_HEADS)
    require(math.isfinite(dropout) and 0 <= dropout < 1, f"dropout={dropout!r} must be in [0, 1)")
    _check_range("unlocked_blocks", unlocked_blocks, 0)


@dataclass(frozen=True)
class ViTConfig:
    """Vision transformer: patchify, class token, pre-LN transformer, projection of the class token."""

    type: str = "vit"
    image_size: int = 224
    patch_size: int = 32
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    act: str = "quick_gelu"
    eps: float = 1e-5

    def __post_init__(self) -> None:
        _check_range("image_size", self.image_size, 1, MAX_IMAGE_SIZE)
        _check_range("patch_size", self.patch_size, 1, self.image_size)
        _check_transformer(self.width, self.layers, self.heads, self.mlp_ratio, self.act, self.eps)


@dataclass(frozen=True)
class ResNetConfig:
    """OpenAI's ModifiedResNet: 3-conv stem, anti-aliased strided blocks, attention pooling."""

    type: str = "resnet"
    image_size: int = 224
    layers: tuple[int, ...] = (3, 4, 6, 3)
    width: int = 64
    heads: int = 32

    def __post_init__(self) -> None:
        _check_range("image_size", self.image_size, 32, MAX_IMAGE_SIZE)
        require(self.image_size % 32 == 0, f"image_size={self.image_size} must be a multiple of 32")
        require(len(self.layers) == 4 and all(n >= 1 for n in self.layers),
                f"layers={list(self.layers)} must be four block counts >= 1")
        _check_range("width", self.width, 2)
        require(self.width % 2 == 0, f"width={self.width} must be even (the stem halves it)")
        _check_heads(self.width * 32, self.heads)


@dataclass(frozen=True)
class ConvNetConfig:
    """Small CPU conv tower that keeps the spatial layout: strided convs, flatten, MLP.

    Attributes:
        max_pool: also feed the MLP each channel's maximum over all positions: whether a feature (a
            shape) is anywhere in the image, learned once instead of once per position.
    """

    type: str = "convnet"
    image_size: int = 64
    channels: tuple[int, ...] = (32, 64, 128)
    hidden: int = 256
    max_pool: bool = False

    def __post_init__(self) -> None:
        _check_range("image_size", self.image_size, 1, MAX_IMAGE_SIZE)
        require(len(self.channels) >= 1 and all(c >= 1 for c in self.channels),
                f"channels={list(self.channels)} must be one or more counts >= 1")
        stride = 2 ** len(self.channels)
        require(self.image_size % stride == 0,
                f"image_size={self.image_size} must be a multiple of {stride} (2 per conv)")
        _check_range("hidden", self.hidden, 1)


@dataclass(frozen=True)
class EfficientNetConfig:
    """Pretrained EfficientNet-Lite0 image tower (1280-d pooled features) with a projection head.

    `pool="attention"` keeps the last feature map (7x7 at 224 px) and adds an attention-pooling head with
    2-D position embeddings (`pool_width` wide, `pool_heads` heads) to the head on the mean features, so
    the embedding can depend on where things are; `pool="flatten"` adds a linear map of the flattened grid,
    each position narrowed to `pool_width` (see `towers.GridHead`). `fine=True` also gives that branch the
    stride-16 map (14x14 x 112 at 224 px), each 2x2 patch stacked onto the channels of its grid cell.
    """

    type: str = "efficientnet_lite0"
    image_size: int = 224
    weights: str = "package"
    head: str = "mlp"
    dropout: float = 0.1
    unlocked_blocks: int = 0
    pool: str = "mean"
    pool_width: int = 256
    pool_heads: int = 4
    fine: bool = False

    def __post_init__(self) -> None:
        _check_range("image_size", self.image_size, 32, MAX_IMAGE_SIZE)
        _check_head(self.weights, self.head, self.dropout, self.unlocked_blocks)
        _check_choice("pool", self.pool, IMAGE_POOLS)
        _check_heads(self.pool_width, self.pool_heads, "pool_heads")
        require(not self.fine or (self.pool != "mean" and self.image_size % 32 == 0),
                f"fine=true needs pool 'attention' or 'flatten' and image_size a multiple of 32, "
                f"got pool='{self.pool}', image_size={self.image_size}")


@dataclass(frozen=True)
class TextTransformerConfig:
    """Causal text transformer pooled at the end-of-text token (CLIP's own text tower)."""

    type: str = "transformer"
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    act: str = "quick_gelu"
    mlp_ratio: float = 4.0
    eps: float = 1e-5

    def __post_init__(self) -> None:
        _check_range("context_length", self.context_length, 2, MAX_CONTEXT_LENGTH)
        _check_range("vocab_size", self.vocab_size, 1)
        _check_transformer(self.width, self.layers, self.heads, self.mlp_ratio, self.act, self.eps)


@dataclass(frozen=True)
class MiniLMConfig:
    """Pretrained MiniLM-L6 (6-layer BERT, mean pooling) text tower with a projection head.

    `pool="attention"` keeps the last token states and adds `pool_heads` learned queries, each attending
    over the tokens (narrowed to `pool_width`), to the head on the mean state (see `towers.TokenHead`).
    """

    type: str = "minilm"
    context_length: int = 64
    weights: str = "package"
    head: str = "mlp"
    dropout: float = 0.1
    unlocked_blocks: int = 0
    pool: str = "mean"
    pool_width: int = 128
    pool_heads: int = 4

    def __post_init__(self) -> None:
        _check_range("context_length", self.context_length, 2, MINILM_MAX_POSITIONS)
        _check_head(self.weights, self.head, self.dropout, self.unlocked_blocks)
        _check_choice("pool", self.pool, TEXT_POOLS)
        _check_range("pool_width", self.pool_width, 1)
        _check_range("pool_heads", self.pool_heads, 1)


@dataclass(frozen=True)
class PreprocessConfig:
    """How images become tensors; travels with the weights."""

    image_size: int = 224
    mean: tuple[float, ...] = OPENAI_MEAN
    std: tuple[float, ...] = OPENAI_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    def __post_init__(self) -> None:
        _check_range("image_size", self.image_size, 1, MAX_IMAGE_SIZE)
        require(len(self.mean) == 3 and all(math.isfinite(m) for m in self.mean),
                f"mean={list(self.mean)} must hold three finite numbers (R, G, B)")
        require(len(self.std) == 3 and all(math.isfinite(v) and v > 0 for v in self.std),
                f"std={list(self.std)} must hold three finite numbers > 0 (R, G, B)")
        _check_choice("interpolation", self.interpolation, INTERPOLATIONS)
        _check_choice("resize_mode", self.resize_mode, RESIZE_MODES)


@dataclass(frozen=True)
class TokenizerConfig:
    """Which tokenizer turns text into ids; travels with the weights."""

    type: str = "clip-bpe"
    context_length: int = 77

    def __post_init__(self) -> None:
        _check_choice("type", self.type, TOKENIZERS)
        _check_range("context_length", self.context_length, 2, MAX_CONTEXT_LENGTH)


VisionConfig = ViTConfig | ResNetConfig | ConvNetConfig | EfficientNetConfig
TextConfig = TextTransformerConfig | MiniLMConfig

VISION_TYPES: dict[str, type] = {
    "vit": ViTConfig,
    "resnet": ResNetConfig,
    "convnet": ConvNetConfig,
    "efficientnet_lite0": EfficientNetConfig,
}
TEXT_TYPES: dict[str, type] = {"transformer": TextTransformerConfig, "minilm": MiniLMConfig}


def _parse_tower(data: Any, kinds: dict[str, type], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
    kind = data.get("type")
    if kind not in kinds:
        raise ConfigError(f"{where}: unknown tower type {kind!r} (known: {', '.join(kinds)})")
    return parse_dataclass(kinds[kind], data, where)


@dataclass(frozen=True)
class ModelConfig:
    """A whole image-text model: both towers, the joint embedding size and the input pipeline."""

    embed_dim: int
    vision: VisionConfig
    text: TextConfig
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    init_logit_scale: float = 2.659260036932778  # ln(1 / 0.07)
    init_logit_bias: float | None = None  # SigLIP's bias (open_clip's init_logit_bias); None = no bias

    def __post_init__(self) -> None:
        _check_range("embed_dim", self.embed_dim, 1)
        _check_range("init_logit_scale", self.init_logit_scale, -math.inf)
        text, tokenizer = self.text, self.tokenizer
        implied = "wordpiece" if isinstance(text, MiniLMConfig) else "clip-bpe"
        require(tokenizer.type == implied,
                f"tokenizer type {tokenizer.type!r} does not fit the {text.type} text tower "
                f"(it needs {implied!r})")
        require(tokenizer.context_length <= text.context_length,
                f"tokenizer context_length={tokenizer.context_length} is longer than the text tower's "
                f"{text.context_length}")
        if isinstance(text, TextTransformerConfig):
            require(text.vocab_size >= CLIP_BPE_VOCAB,
                    f"text vocab_size={text.vocab_size} is smaller than the clip-bpe vocabulary "
                    f"({CLIP_BPE_VOCAB} ids)")
        if not isinstance(self.vision, EfficientNetConfig):  # the other towers have a fixed input size
            require(self.preprocess.image_size == self.vision.image_size,
                    f"preprocess image_size={self.preprocess.image_size} differs from the "
                    f"{self.vision.type} tower's {self.vision.image_size}")

    @classmethod
    def from_dict(cls, data: Any, where: str = "model config") -> ModelConfig:
        """Parses a config dict; `preprocess` and `tokenizer` default to what the towers imply.

        Raises:
            ConfigError: an unknown key, a wrong type or a value that makes no sense, named with `where`.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{where}: unknown config key '{unknown[0]}' (allowed: {', '.join(sorted(known))})"
            )
        for key in ("embed_dim", "vision", "text"):
            if key not in data:
                raise ConfigError(f"{where}: missing config key '{key}'")
        vision = _parse_tower(data["vision"], VISION_TYPES, f"{where}:vision")
        text = _parse_tower(data["text"], TEXT_TYPES, f"{where}:text")
        preprocess = parse_dataclass(
            PreprocessConfig,
            {"image_size": vision.image_size, **_section(data, "preprocess", where)},
            f"{where}:preprocess",
        )
        default_tok = {
            "type": "wordpiece" if text.type == "minilm" else "clip-bpe",
            "context_length": text.context_length,
        }
        tokenizer = parse_dataclass(
            TokenizerConfig, {**default_tok, **_section(data, "tokenizer", where)}, f"{where}:tokenizer"
        )
        embed_dim = check_value("embed_dim", data["embed_dim"], int, where)
        scale = check_value(
            "init_logit_scale", data.get("init_logit_scale", 2.659260036932778), float, where
        )
        bias = check_value("init_logit_bias", data.get("init_logit_bias"), float | None, where)
        try:
            return cls(embed_dim, vision, text, preprocess, tokenizer, scale, bias)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from err

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form that `from_dict` reads back to an equal config.

        A model without a logit bias leaves the key out, so its config (and the fingerprint an index
        keeps of it) reads exactly as before the key existed.
        """
        data = to_dict(self)
        if self.init_logit_bias is None:
            del data["init_logit_bias"]
        return data


def _section(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    """An optional sub-object of a config (absent: empty)."""
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: '{key}' must be an object, got {type(value).__name__}")
    return value
