"""Scoring probe items with one model: every image and every text is encoded once, in batches.

`run_probe` works on items in memory, so the CLI, the quickstart and tests share one code path.

Blind baseline: every item is also scored against one *blind image*, the normalized mean embedding of the
images of its split (all the suite's images when items name no split). It is the same vector for every item
of a split, so the blind pick depends on the sentences alone: blind accuracy is the model's text prior, and
accuracy minus blind accuracy is what the image contributed. Per split, so that adding a split to a suite
never moves another split's blind numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from clipforge.checkpoint import load_with
from clipforge.device import DEFAULT_RUNTIME, Runtime
from clipforge.errors import ImageError
from clipforge.models.base import ContrastiveModel
from clipforge.models.inputs import encode_by_length
from clipforge.probe.items import BadItem, ProbeItem, load_item_image
from clipforge.probe.scorers import check_scorer, sentence_parts

# Items whose images are decoded at once; bounds memory on large suites.
IMAGE_CHUNK = 256


class Encoder(Protocol):
    """Anything that embeds images and texts into one space with unit-norm rows."""

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...


class ClipEncoder:
    """A clipforge model with its preprocessing and tokenizer, encoding in batches without gradients."""

    def __init__(self, model: ContrastiveModel, preprocess: Callable[[Image.Image], torch.Tensor],
                 tokenizer: Callable[[list[str]], torch.Tensor], batch_size: int = 64) -> None:
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    @classmethod
    def load(cls, spec: str, batch_size: int = 64, runtime: Runtime = DEFAULT_RUNTIME) -> ClipEncoder:
        """Loads a model from any spec `clipforge.load` understands, to run as `runtime` says."""
        model, preprocess, tokenizer = load_with(spec, runtime)
        return cls(model, preprocess, tokenizer, batch_size)

    @torch.inference_mode()
    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Unit-norm image embeddings [N, E]."""
        out = []
        for start in range(0, len(images), self.batch_size):
            pixels = torch.stack([self.preprocess(im) for im in images[start : start + self.batch_size]])
            out.append(self.model.encode_image(pixels, normalize=True).float().cpu())
        return torch.cat(out).numpy()

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm text embeddings [N, E], encoded in batches of similar length."""
        features = encode_by_length(self.model, self.tokenizer(list(texts)), self.batch_size)
        return features.float().cpu().numpy()


@dataclass
class ProbeResult:
    """One model's scores on a suite.

    Attributes:
        items: the items that were scored, in suite order.
        scores: per item, the scores of ``(true, *false)``.
        bad: items that could not be scored (missing or unreadable image).
        scorer: the scorer used.
        blind_scores: per item, the scores of its sentences against the blind image (module docstring).
    """

    items: list[ProbeItem]
    scores: list[np.ndarray]
    bad: list[BadItem] = field(default_factory=list)
    scorer: str = "cosine"
    blind_scores: list[np.ndarray] = field(default_factory=list)

    def subset(self, indices: Sequence[int]) -> ProbeResult:
        """The result restricted to the items at `indices` (their blind scores kept, bad items dropped)."""
        blind = [self.blind_scores[i] for i in indices] if self.blind_scores else []
        return ProbeResult([self.items[i] for i in indices], [self.scores[i] for i in indices], [],
                           self.scorer, blind)

    @property
    def margins(self) -> np.ndarray:
        """True score minus the best false score, per item (> 0 means the item passed)."""
        return np.array([s[0] - s[1:].max() for s in self.scores], dtype=np.float64)

    @property
    def correct(self) -> np.ndarray:
        """Whether the true sentence scored strictly highest, per item (a tie fails)."""
        return self.margins > 0

    @property
    def blind_correct(self) -> np.ndarray:
        """Whether the true sentence scored strictly highest against the blind image, per item."""
        return np.array([s[0] > s[1:].max() for s in self.blind_scores], dtype=bool)

    @property
    def winners(self) -> np.ndarray:
        """Index into ``item.sentences`` of the highest-scoring sentence (0 = the true one)."""
        return np.array([0 if s[0] > s[1:].max() else 1 + int(np.argmax(s[1:])) for s in self.scores])


def run_probe(items: Sequence[ProbeItem], encoder: Encoder, scorer: str = "cosine") -> ProbeResult:
    """Scores every item's sentences against its image.

    Args:
        items: the probe items (images as paths, bytes or PIL images).
        encoder: the model, e.g. ``ClipEncoder.load("tiny-vit")``.
        scorer: ``cosine`` or ``compositional`` (sum over relation clauses).

    Returns:
        The scores; items whose image cannot be read are listed in ``bad``, never raised.
    """
    check_scorer(scorer)
    loaders = {item.image_key: partial(load_item_image, item) for item in items}
    images, failed = encode_images(loaders, encoder)
    bad = [BadItem(item.id, failed[item.image_key]) for item in items if item.image_key in failed]
    kept = [item for item in items if item.image_key in images]
    parts = {s: sentence_parts(s, scorer) for item in kept for s in item.sentences}
    texts = _encode_texts(sorted({p for ps in parts.values() for p in ps}), encoder)
    scores = [_item_scores(item, images[item.image_key], parts, texts) for item in kept]
    blinds = split_blind_images(kept, images)
    blind_scores = [_item_scores(item, blinds[item.split], parts, texts) for item in kept]
    return ProbeResult(kept, scores, bad, scorer, blind_scores)


def split_blind_images(items: Sequence[ProbeItem], images: Mapping[str, np.ndarray]
                       ) -> dict[str | None, np.ndarray]:
    """The blind image of each split among `items`, from the embeddings of its distinct images."""
    keys: dict[str | None, dict[str, None]] = {}
    for item in items:
        keys.setdefault(item.split, {})[item.image_key] = None  # a dict keeps first-seen order, once per key
    return {split: blind_image([images[k] for k in split_keys]) for split, split_keys in keys.items()}


def blind_image(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """The blind image: the normalized mean of unit image embeddings (zeros when there are none)."""
    if not embeddings:
        return np.zeros(0)
    mean = np.mean(np.stack(embeddings), axis=0)  # [E]
    return mean / max(float(np.linalg.norm(mean)), 1e-12)


def _item_scores(item: ProbeItem, image: np.ndarray, parts: dict[str, list[str]],
                 texts: dict[str, np.ndarray]) -> np.ndarray:
    return np.array([sum(float(image @ texts[p]) for p in parts[s]) for s in item.sentences])


def encode_images(loaders: Mapping[str, Callable[[], Image.Image]], encoder: Encoder
                  ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Embeds images by key, decoding at most `IMAGE_CHUNK` at a time.

    Args:
        loaders: per key, a function returning the RGB image (raising `ImageError` when it cannot).
        encoder: the model.

    Returns:
        The embeddings by key, and the reason by key for images that failed to load.
    """
    embeddings: dict[str, np.ndarray] = {}
    failed: dict[str, str] = {}
    keys = list(loaders)
    for start in range(0, len(keys), IMAGE_CHUNK):
        loaded: dict[str, Image.Image] = {}
        for key in keys[start : start + IMAGE_CHUNK]:
            try:
                loaded[key] = loaders[key]()
            except ImageError as err:
                failed[key] = str(err)
        if loaded:
            vectors = encoder.encode_images(list(loaded.values()))
            embeddings.update(zip(loaded, vectors, strict=True))
    return embeddings, failed


def _encode_texts(texts: list[str], encoder: Encoder) -> dict[str, np.ndarray]:
    if not texts:
        return {}
    return dict(zip(texts, encoder.encode_texts(texts), strict=True))

