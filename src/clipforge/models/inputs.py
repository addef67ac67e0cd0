"""What a text tower is fed: checked ids (a mismatched tokenizer is one clear error, not an IndexError),
trimmed to the longest row, and grouped by length for large jobs.

`clipforge.tokenize` makes CLIP-BPE rows of 77 ids; a model trained with a shorter context or with
WordPiece ids cannot take them. The tokenizer `clipforge.load` returns is the one that fits.
"""

from __future__ import annotations

from typing import Protocol

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


def row_lengths(tokens: torch.Tensor) -> torch.Tensor:
    """Length [B] of each zero-padded row [B, L]: one past its last non-zero id.

    Not a count of non-zero ids: CLIP-BPE's id 0 is "!", a real token that may sit inside a text.
    """
    positions = torch.arange(1, tokens.shape[1] + 1, device=tokens.device)  # [L]
    return ((tokens != 0) * positions).amax(dim=1) if tokens.numel() else positions[:0]


def trim_padding(tokens: torch.Tensor) -> torch.Tensor:
    """Drops the padding columns after the longest row [B, L] -> [B, L'].

    No output depends on them: the causal CLIP text transformer reads its end-of-text position, and
    MiniLM masks padding out of attention and pooling. Attention cost falls with the square of L.
    """
    if not tokens.numel():
        return tokens
    return tokens[:, : max(int(row_lengths(tokens).max()), 1)]


def fit_tokens(tokens: torch.Tensor, context_length: int, vocab_size: int, tokenizer: str) -> torch.Tensor:
    """`tokens` checked (`check_tokens`) and trimmed (`trim_padding`) for a text tower's forward pass.

    While the model is traced for an export (ONNX), the rows pass as given: the exported graph takes
    rows of any length, and its runtime trims before calling it.
    """
    if torch.compiler.is_exporting() or torch.jit.is_tracing():
        return tokens
    return trim_padding(check_tokens(tokens, context_length, vocab_size, tokenizer))


class TextEncoder(Protocol):
    """Anything with a model's `encode_text`."""

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor: ...


def encode_by_length(model: TextEncoder, tokens: torch.Tensor, batch_size: int,
                     normalize: bool = True) -> torch.Tensor:
    """`model.encode_text` of token rows [N, L] in batches of similar length, the rows kept in order.

    Each batch is trimmed to its own longest row, so sorting first spares short texts the padding of
    long ones (the bucketing for large jobs: prompt ensembles, caption sets).

    Args:
        model: the text encoder.
        tokens: all rows.
        batch_size: rows per call.
        normalize: L2-normalize the features.
    """
    order = torch.argsort(row_lengths(tokens), stable=True)  # [N]
    features = [model.encode_text(tokens[chunk], normalize=normalize) for chunk in order.split(batch_size)]
    return torch.cat(features)[torch.argsort(order)]  # [N, E]
