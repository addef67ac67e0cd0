"""What every tokenizer does with its ids: frame them, fit them to the context, pad them into a tensor."""

from __future__ import annotations

import torch

from clipforge.errors import ClipforgeError, ConfigError


class TokenizerError(ClipforgeError, ValueError):
    """A text does not fit the context length and truncation was turned off."""


def check_context_length(length: int) -> None:
    if not isinstance(length, int) or isinstance(length, bool) or length < 2:
        raise ConfigError(f"context_length must be an int >= 2 (room for start and end ids), got {length!r}")


def fit(ids: list[int], end_id: int, text: str, length: int, truncate: bool, framing: str) -> list[int]:
    """Framed ids (start ... end) cut to `length` with the end id kept last, or a TokenizerError.

    Args:
        ids: the text's ids with its start and end ids.
        end_id: the id that must stay last after truncation.
        text: the text, to name it in the error.
        length: the context length.
        truncate: cut instead of refusing.
        framing: how the error names the special ids (e.g. "start/end").
    """
    if len(ids) <= length:
        return ids
    if not truncate:
        short = text if len(text) <= 60 else text[:57] + "..."
        raise TokenizerError(
            f"text {short!r} has {len(ids)} tokens with {framing}, more than context_length {length}"
        )
    return [*ids[: length - 1], end_id]


def pack(rows: list[list[int]], length: int) -> torch.Tensor:
    """Zero-pads rows of ids into one LongTensor [N, length] (one build for the batch, not a copy per row)."""
    padded = [row + [0] * (length - len(row)) for row in rows]
    return torch.tensor(padded, dtype=torch.long).reshape(len(rows), length)  # [N, L]

