"""Querying an index folder by text or by image with the model that built it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from clipforge.index.ann import VectorIndex, load_index
from clipforge.index.embed import encode_images, model_fingerprint
from clipforge.index.store import EmbeddingStore, Item

MAX_K = 1000


@dataclass(frozen=True)
class Hit:
    """One search result: the stored item and its cosine similarity to the query."""

    item: Item
    score: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready result as the CLI and the HTTP API print it."""
        item = self.item
        return {"id": item.id, "path": item.path, "score": round(self.score, 6), "caption": item.caption}


class Searcher:
    """An open index folder plus the model it was built with, ready for text and image queries."""

    def __init__(self, folder: str | Path, model_spec: str | None = None) -> None:
        """Opens an index and loads its model.

        Args:
            folder: an index folder written by `clipforge embed`.
            model_spec: the model to embed queries with; defaults to the one recorded in the index.

        Raises:
            DataError: the folder is not a complete index.
            ConfigError: `model_spec` is not the model the index was built with.
        """
        from clipforge.checkpoint import load

        self.store = EmbeddingStore(folder)
        spec = model_spec or self.store.get_meta("model_spec") or ""
        self.model, self.preprocess, self.tokenizer = load(spec)
        self.store.check_model(model_fingerprint(self.model), spec)
        ids, vectors = self.store.embeddings()
        self.kind = self.store.get_meta("index_kind") or "exact"
        self.index: VectorIndex = load_index(self.store.folder, self.kind, ids, vectors)

    @property
    def fingerprint(self) -> str:
        """Hash of the model the index was built with."""
        return self.store.get_meta("model_hash") or ""

    def __len__(self) -> int:
        return len(self.index)

    @torch.inference_mode()
    def encode_text(self, text: str) -> np.ndarray:
        """Normalized text embedding [1, E]."""
        return self.model.encode_text(self.tokenizer([text]), normalize=True).float().numpy()  # type: ignore[operator]

    def encode_image(self, image: Image.Image) -> np.ndarray:
        """Normalized image embedding [1, E], rounded to float16 like the stored vectors."""
        return encode_images(self.model, self.preprocess(image).unsqueeze(0)).astype(np.float32)  # [1, E]

    def search_text(self, text: str, k: int = 10) -> list[Hit]:
        """The k images closest to a text query."""
        return self.search_vector(self.encode_text(text), k)

    def search_image(self, image: Image.Image, k: int = 10) -> list[Hit]:
        """The k images closest to an image query."""
        return self.search_vector(self.encode_image(image), k)

    def search_vector(self, query: np.ndarray, k: int = 10) -> list[Hit]:
        """The k images closest to a query embedding [1, E], best first."""
        scores, ids = self.index.search(query, max(1, min(k, MAX_K)))
        found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
        items = self.store.items([i for i, _ in found])
        return [Hit(items[i], s) for i, s in found if i in items]

    def item(self, item_id: int) -> Item | None:
        """The stored item with this id, or None."""
        return self.store.items([item_id]).get(item_id)
