"""Why does (or doesn't) a CLIP re-ranker repair spatial errors? Two pair-balanced diagnoses.

1. Can it read relations in the generator's kind of image? Each spatial prompt's ground-truth render
   (or its dVAE reconstruction) is scored against the prompt and against the prompt with the relation
   swapped ("a star to the left of a circle" vs "... to the right of ..."): relation accuracy is the
   fraction of images where the true prompt scores higher (chance 0.5, whatever the class balance).
2. Does it prefer the right candidates? Among a prompt's generated candidates, those the skill parser
   accepts are paired with those it rejects: pairwise accuracy is the fraction of (right, wrong) pairs
   where the right one scores higher (ties count half), averaged over prompts that have both kinds — an
   AUC per prompt, so a prompt with many right candidates does not weigh more.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from PIL import Image

from clipforge.errors import DataError
from clipforge.synthetic.scene import OPPOSITE, SPATIAL_RELATIONS
from clipforge.synthetic.text import RELATION_WORDS

# the skill prompts' relation phrases and their opposites (left <-> right, above <-> below)
_SWAPS = {RELATION_WORDS[r]: RELATION_WORDS[OPPOSITE[r]] for r in SPATIAL_RELATIONS}


class PairScorer(Protocol):
    """Scores each image with its own text (`clipforge.generate.rerank.ClipReranker`)."""

    def scores(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray: ...


def swap_relation(text: str) -> str:
    """The prompt with its relation phrase replaced by the opposite one.

    Raises:
        DataError: the text names no (or more than one) left/right/above/below relation.
    """
    found = [phrase for phrase in _SWAPS if f" {phrase} " in f" {text} "]
    if len(found) != 1:
        raise DataError(f"cannot swap the relation of {text!r}: it names {len(found)} relations")
    return f" {text} ".replace(f" {found[0]} ", f" {_SWAPS[found[0]]} ").strip()


def relation_accuracy(reranker: PairScorer, images: Sequence[Image.Image], texts: Sequence[str]
                      ) -> np.ndarray:
    """Per image: 1.0 when its prompt outscores the relation-swapped prompt, 0.5 on a tie, else 0.0."""
    true = reranker.scores(images, texts)
    swapped = reranker.scores(images, [swap_relation(t) for t in texts])
    return (true > swapped) + 0.5 * (true == swapped)


def pairwise_accuracy(scores: np.ndarray, right: np.ndarray) -> float | None:
    """Fraction of (right, wrong) candidate pairs where the right one scores higher (ties half); None when
    the candidates are all right or all wrong."""
    good, bad = scores[right], scores[~right]
    if len(good) == 0 or len(bad) == 0:
        return None
    diff = good[:, None] - bad[None, :]  # [n_right, n_wrong]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())
