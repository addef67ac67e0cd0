"""Querying an index folder by text or by image with the model that built it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from clipforge.checkpoint import load_with
from clipforge.data.loader import torch_threads
from clipforge.data.transforms import load_image
from clipforge.device import DEFAULT_RUNTIME, Runtime, resolve_device
from clipforge.errors import ConfigError, DataError
from clipforge.index.ann import VectorIndex, faiss_threads, search_reranked
from clipforge.index.embed import image_encoder
from clipforge.index.store import EmbeddingStore, Item, display_path
from clipforge.index.sync import synced_index

MAX_K = 1000


@dataclass(frozen=True)
class Hit:
    """One search result: the stored item and its cosine similarity to the query."""

    item: Item
    score: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready result as the CLI and the HTTP API print it (undecodable path bytes as `\\xNN`)."""
        item = self.item
        path = display_path(item.path)
        return {"id": item.id, "path": path, "score": round(self.score, 6), "caption": item.caption}


class Searcher:
    """An open index folder plus the model it was built with, ready for text and image queries.

    Attributes:
        kind: the vector index kind (`exact`, `ivf`, ...).
        index_note: how the vector index was opened (`up to date`, `patched: ...`, `built (...)`).
    """

    def __init__(self, folder: str | Path, model_spec: str | None = None,
                 runtime: Runtime = DEFAULT_RUNTIME) -> None:
        """Opens an index and loads its model.

        Args:
            folder: an index folder written by `clipforge embed`.
            model_spec: the model to embed queries with; defaults to the one recorded in the index.
            runtime: where and how the query model runs (device, backend, precision).

        Raises:
            DataError: the folder is not an index, or holds no images.
            ConfigError: `model_spec` is not the model the index was built with.
        """
        self.store = EmbeddingStore(folder)
        if not len(self.store):
            raise DataError(f"index {folder} holds no images: add some with `clipforge embed --out {folder}`")
        spec = model_spec or self.store.get_meta("model_spec") or ""
        self.device = resolve_device(runtime.device)
        self.model, preprocess, self.tokenizer = load_with(spec, runtime)
        self.images = image_encoder(self.model, preprocess, self.device)
        self.store.check_model(self.images.fingerprint, spec)
        self.kind = self.store.get_meta("index_kind") or "exact"
        synced = synced_index(self.store, self.kind, save=False)
        self.index: VectorIndex = synced.index
        self.index_note = synced.how

    @property
    def fingerprint(self) -> str:
        """Hash of the model the index was built with."""
        return self.images.fingerprint

    def __len__(self) -> int:
        return len(self.index)

    @torch.inference_mode()
    def encode_text(self, text: str) -> np.ndarray:
        """Normalized text embedding [1, E]."""
        tokens = self.tokenizer([text]).to(self.device)
        return self.model.encode_text(tokens, normalize=True).float().cpu().numpy()

    def encode_image(self, image: Image.Image) -> np.ndarray:
        """Normalized image embedding [1, E], rounded to float16 like the stored vectors."""
        return self.images.encode(self.images.preprocess(image).unsqueeze(0)).astype(np.float32)  # [1, E]

    def search_text(self, text: str, k: int = 10) -> list[Hit]:
        """The k images closest to a text query."""
        return self.search_vector(self.encode_text(text), k)

    def search_image(self, image: Image.Image, k: int = 10) -> list[Hit]:
        """The k images closest to an image query."""
        return self.search_vector(self.encode_image(image), k)

    def search_vector(self, query: np.ndarray, k: int = 10) -> list[Hit]:
        """The k images closest to a query embedding [1, E], best first."""
        scores, ids = search_reranked(self.index, query, max(1, min(k, MAX_K)), self.store.vectors)
        found = [(int(i), float(s)) for i, s in zip(ids, scores, strict=True)]
        items = self.store.items([i for i, _ in found])
        return [Hit(items[i], s) for i, s in found if i in items]

    def item(self, item_id: int) -> Item | None:
        """The stored item with this id, or None."""
        return self.store.items([item_id]).get(item_id)


@dataclass(frozen=True)
class SearchConfig:
    """What `clipforge search` does: one text or image query against an index folder.

    Attributes:
        index: an index folder written by `clipforge embed`.
        text: a text query, or None.
        image: a query image, or None.
        model: the query model; defaults to the one recorded in the index.
        k: number of results.
        threads: torch (and FAISS) threads; None keeps torch's default.
        runtime: where and how the query model runs (device, backend, precision).
    """

    index: Path
    text: str | None = None
    image: Path | None = None
    model: str | None = None
    k: int = 10
    threads: int | None = None
    runtime: Runtime = Runtime()

    def __post_init__(self) -> None:
        if (self.text is None) == (self.image is None):
            raise ConfigError("search needs exactly one of a TEXT query or --image PATH")
        if not 1 <= self.k <= MAX_K:
            raise ConfigError(f"-k must be in 1..{MAX_K}, got {self.k}")


def search(config: SearchConfig) -> list[Hit]:
    """Runs one query; the k closest indexed images, best first.

    Raises:
        DataError: the folder is not an index or is empty; the query image cannot be read.
        ConfigError: the model is not the one the index was built with.
    """
    with torch_threads(config.threads), faiss_threads(config.threads):
        searcher = Searcher(config.index, config.model, config.runtime)
        if config.text is not None:
            return searcher.search_text(config.text, config.k)
        return searcher.search_image(load_image(config.image or ""), config.k)
