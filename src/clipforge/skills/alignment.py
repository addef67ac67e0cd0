"""Image-text alignment with a CLIP: R-precision (DALL-Eval's protocol) and CLIPScore (Hessel et al. 2021).

Both take unit-norm embeddings, so cosine similarity is a dot product.

- R-precision: each image ranks its true text against `distractors` other texts drawn from the set's
  pool of distinct texts; a hit is the true text ranked first. Drawn afresh `repeats` times (seeded);
  the mean and standard deviation over the repeats are reported. A caller can rule texts out as
  distractors per image (`allowed`): the scoring job rules out texts that are also true of the prompt's
  scene, such as "one circle" for "a circle", which DALL-Eval's plain draw would count against the
  image. With fewer allowed texts than `distractors`, every allowed text is a distractor.
- CLIPScore: ``2.5 * max(cos(image, text), 0)`` per pair, averaged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipforge.errors import DataError

R_DISTRACTORS = 99
R_REPEATS = 5
CLIPSCORE_WEIGHT = 2.5


def clipscore(image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
    """Per-pair CLIPScore [N] of matching rows of unit-norm image [N, E] and text [N, E] embeddings."""
    cosines = np.einsum("ne,ne->n", image_embeddings, text_embeddings)  # [N]
    return CLIPSCORE_WEIGHT * np.clip(cosines, 0.0, None)


@dataclass(frozen=True)
class RPrecision:
    """R-precision hits per repeat and image, and the candidate count per ranking."""

    hits: np.ndarray  # [repeats, N] bool
    candidates: int

    def summary(self, rows: np.ndarray | None = None) -> dict[str, float | int | None]:
        """Mean and standard deviation over repeats of the hit rate (of the selected image `rows`)."""
        hits = self.hits if rows is None else self.hits[:, rows]
        if hits.shape[1] == 0:
            return {"mean": None, "std": None, "n": 0, "candidates": self.candidates}
        rates = hits.mean(axis=1)  # [repeats]
        return {"mean": float(rates.mean()), "std": float(rates.std()), "n": int(hits.shape[1]),
                "candidates": self.candidates}


def r_precision(image_embeddings: np.ndarray, true_texts: np.ndarray, pool: np.ndarray,
                distractors: int = R_DISTRACTORS, repeats: int = R_REPEATS, seed: int = 0,
                allowed: np.ndarray | None = None) -> RPrecision:
    """R-precision of images [N, E] whose true texts are rows `true_texts` [N] of the text pool [T, E].

    Args:
        allowed: [N, T] bool, the texts each image may draw distractors from (default: every text);
            its true text never is one.

    Raises:
        DataError: some image has no text to draw a distractor from.
    """
    rows = np.arange(len(image_embeddings))
    allowed = np.ones((len(rows), len(pool)), dtype=bool) if allowed is None else allowed.copy()
    allowed[rows, true_texts] = False
    if len(rows) and allowed.sum(axis=1).min() < 1:
        raise DataError("R-precision needs at least two distinct texts per image")
    count = min(distractors, int(allowed.sum(axis=1).min())) if len(rows) else distractors
    rng = np.random.default_rng(seed)
    similarity = image_embeddings @ pool.T  # [N, T]
    true_scores = similarity[rows, true_texts]  # [N]
    hits = np.zeros((repeats, len(rows)), dtype=bool)
    for repeat in range(repeats):
        # Random keys, with texts that are not allowed sorted last: the first `count` are the draw.
        keys = np.where(allowed, rng.random(allowed.shape), 2.0)  # [N, T]
        drawn = np.argsort(keys, axis=1)[:, :count]  # [N, count]
        hits[repeat] = true_scores > np.take_along_axis(similarity, drawn, axis=1).max(axis=1)
    return RPrecision(hits, count + 1)
