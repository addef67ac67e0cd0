"""Text tokenizers: OpenAI CLIP's BPE (built in) and BERT WordPiece (for the MiniLM text tower)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from clipforge.errors import ConfigError
from clipforge.models.config import TokenizerConfig
from clipforge.tokenizer.bpe import ClipTokenizer, tokenize
from clipforge.tokenizer.rows import TokenizerError
from clipforge.tokenizer.wordpiece import WordPieceTokenizer

__all__ = ["ClipTokenizer", "TextTokenizer", "TokenizerError", "get_tokenizer", "tokenize"]


class TextTokenizer(Protocol):
    """What a model needs from a tokenizer: texts in, a LongTensor [N, context_length] out."""

    context_length: int

    def __call__(self, texts: str | Sequence[str]) -> torch.Tensor: ...

    def decode(self, ids: Sequence[int]) -> str: ...


def get_tokenizer(config: TokenizerConfig) -> TextTokenizer:
    """Builds the tokenizer a model config names.

    Raises:
        ConfigError: for an unknown tokenizer type.
    """
    if config.type == "clip-bpe":
        return ClipTokenizer(config.context_length)
    if config.type == "wordpiece":
        return WordPieceTokenizer(config.context_length)
    raise ConfigError(f"unknown tokenizer type {config.type!r} (known: clip-bpe, wordpiece)")
