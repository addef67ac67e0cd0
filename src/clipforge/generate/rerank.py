"""Re-ranking generated candidates with any clipforge-loadable CLIP: the cosine of image and prompt."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from clipforge.checkpoint import load


class ClipReranker:
    """Scores (image, prompt) pairs with a CLIP model loaded from `spec`."""

    def __init__(self, spec: str, batch_size: int = 256, device: str = "cpu") -> None:
        # load() refuses a dVAE or generator folder with a one-line error.
        self.model, self.preprocess, self.tokenizer = load(spec, device)
        self.batch_size = batch_size

    @torch.no_grad()
    def scores(self, images: Sequence[Image.Image], texts: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each image with its own text (`texts[i]` goes with `images[i]`), [N]."""
        unique = sorted(set(texts))
        text_features = self.model.encode_text(self.tokenizer(unique), normalize=True)  # [T, E]
        rows = torch.tensor([unique.index(t) for t in texts])
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.stack([self.preprocess(im) for im in images[start : start + self.batch_size]])
            features = self.model.encode_image(batch, normalize=True)  # [b, E]
            out.append((features * text_features[rows[start : start + len(batch)]]).sum(dim=-1))
        return torch.cat(out).cpu().numpy()


def rank_order(scores: np.ndarray) -> np.ndarray:
    """Rank of each candidate (0 = best, ties broken by draw order)."""
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(len(scores), dtype=int)
    ranks[order] = np.arange(len(scores))
    return ranks
