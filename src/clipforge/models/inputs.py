"""Checks on what a model is fed, so a mismatched tokenizer is one clear error, not an IndexError.

`clipforge.tokenize` makes CLIP-BPE rows of 77 ids; a model trained with a shorter context or with
WordPiece ids cannot take them. The tokenizer `clipforge.load` returns is the one that fits.
"""

from __future__ import annotations

import torch

from clipforge.errors import ModelInputError


def check_tokens(tokens: torch.Tensor, context_length: int, vocab_size: int, tokenizer: str) -> torch.Tensor:
    """Returns `tokens` ([B, L] integer ids) when they fit the text tower, else raises.

    Args:
        tokens: the ids.
        context_length: the longest rows the tower takes.
        vocab_size: ids must be below this.
        tokenizer: the tokenizer type the tower was built for, to name in the error.

    Raises:
        ModelInputError: rows too long, ids out of the vocabulary, or not a 2-D integer tensor.
    """
    hint = f"this model takes {tokenizer} ids, at most {context_length} per row: tokenize with the tokenizer "
    hint += "clipforge.load returns"
    if tokens.ndim != 2 or tokens.dtype.is_floating_point or tokens.dtype.is_complex:
        raise ModelInputError(f"expected integer token ids [B, L], got {tuple(tokens.shape)} {tokens.dtype}")
    if tokens.shape[1] > context_length:
        raise ModelInputError(f"token rows are {tokens.shape[1]} long; {hint}")
    if tokens.numel() and (int(tokens.max()) >= vocab_size or int(tokens.min()) < 0):
        top = int(tokens.max())
        raise ModelInputError(f"token ids up to {top} are outside the {vocab_size}-id vocabulary; {hint}")
    return tokens
