"""Typed architecture configs, parsed from JSON-like dicts that may not carry unknown keys.

A model config is plain data: `ModelConfig.from_dict(json.load(f))`. Each tower has a `type` that
picks its dataclass, so a ViT config cannot silently carry ResNet fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from clipforge.errors import ConfigError
from clipforge.typed import check_value, parse_dataclass, to_dict

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


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


@dataclass(frozen=True)
class ResNetConfig:
    """OpenAI's ModifiedResNet: 3-conv stem, anti-aliased strided blocks, attention pooling."""

    type: str = "resnet"
    image_size: int = 224
    layers: tuple[int, ...] = (3, 4, 6, 3)
    width: int = 64
    heads: int = 32


@dataclass(frozen=True)
class ConvNetConfig:
    """Small CPU conv tower that keeps the spatial layout: strided convs, flatten, MLP."""

    type: str = "convnet"
    image_size: int = 64
    channels: tuple[int, ...] = (32, 64, 128)
    hidden: int = 256


@dataclass(frozen=True)
class EfficientNetConfig:
    """Pretrained EfficientNet-Lite0 image tower (1280-d pooled features) with a projection head."""

    type: str = "efficientnet_lite0"
    image_size: int = 224
    weights: str = "package"
    head: str = "mlp"
    dropout: float = 0.1
    unlocked_blocks: int = 0


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


@dataclass(frozen=True)
class MiniLMConfig:
    """Pretrained MiniLM-L6 (6-layer BERT, mean pooling) text tower with a projection head."""

    type: str = "minilm"
    context_length: int = 64
    weights: str = "package"
    head: str = "mlp"
    dropout: float = 0.1
    unlocked_blocks: int = 0


@dataclass(frozen=True)
class PreprocessConfig:
    """How images become tensors; travels with the weights."""

    image_size: int = 224
    mean: tuple[float, ...] = OPENAI_MEAN
    std: tuple[float, ...] = OPENAI_STD
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"


@dataclass(frozen=True)
class TokenizerConfig:
    """Which tokenizer turns text into ids; travels with the weights."""

    type: str = "clip-bpe"
    context_length: int = 77


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

    @classmethod
    def from_dict(cls, data: Any, where: str = "model config") -> ModelConfig:
        """Parses a config dict; `preprocess` and `tokenizer` default to what the towers imply."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected an object, got {type(data).__name__}")
        known = {"embed_dim", "vision", "text", "preprocess", "tokenizer", "init_logit_scale"}
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
            {"image_size": vision.image_size, **data.get("preprocess", {})},
            f"{where}:preprocess",
        )
        default_tok = {
            "type": "wordpiece" if text.type == "minilm" else "clip-bpe",
            "context_length": text.context_length,
        }
        tokenizer = parse_dataclass(
            TokenizerConfig, {**default_tok, **data.get("tokenizer", {})}, f"{where}:tokenizer"
        )
        embed_dim = check_value("embed_dim", data["embed_dim"], int, where)
        scale = check_value(
            "init_logit_scale", data.get("init_logit_scale", 2.659260036932778), float, where
        )
        return cls(embed_dim, vision, text, preprocess, tokenizer, scale)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form that `from_dict` reads back to an equal config."""
        return to_dict(self)
