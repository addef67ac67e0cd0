"""Nearest-neighbour search over L2-normalized vectors: exact matrix product, or FAISS IVF / HNSW.

All indexes score by inner product, which is the cosine similarity on normalized vectors, and map
results back to the store's row ids. Small collections are searched exactly (a [Q, D] x [D, N]
product is a few milliseconds up to ~50k vectors); larger ones use FAISS, saved as `ann.faiss`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from clipforge.errors import ConfigError, DataError, MissingExtraError

ANN_NAME = "ann.faiss"
KINDS = ("auto", "exact", "ivf", "hnsw")
EXACT_LIMIT = 50_000  # auto picks FAISS above this many vectors
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128


def import_faiss() -> Any:
    """The faiss module, or MissingExtraError naming the `index` extra."""
    try:
        import faiss
    except ImportError as err:
        raise MissingExtraError("faiss-cpu", "index") from err
    return faiss


class VectorIndex(Protocol):
    """What every index offers; `search` returns scores and ids [Q, k], padded with id -1."""

    kind: str

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def remove(self, ids: np.ndarray) -> None: ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]: ...

    def __len__(self) -> int: ...


class ExactIndex:
    """Brute force: one matrix product and a partial sort. Exact, nothing to train or save."""

    kind = "exact"

    def __init__(self, dim: int) -> None:
        self.ids = np.zeros(0, dtype=np.int64)
        self.matrix = np.zeros((0, dim), dtype=np.float32)  # [N, D]

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Appends vectors [N, D] under the given ids [N]."""
        self.ids = np.concatenate([self.ids, np.asarray(ids, dtype=np.int64)])
        self.matrix = np.concatenate([self.matrix, np.asarray(vectors, dtype=np.float32)])

    def remove(self, ids: np.ndarray) -> None:
        """Drops the vectors with these ids."""
        keep = ~np.isin(self.ids, ids)
        self.ids, self.matrix = self.ids[keep], self.matrix[keep]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k inner products of queries [Q, D]; ties keep the lower row first."""
        scores = np.asarray(queries, dtype=np.float32) @ self.matrix.T  # [Q, N]
        k_eff = min(k, len(self.ids))
        if k_eff == 0:
            return _pad(scores[:, :0], np.zeros((len(scores), 0), dtype=np.int64), k)
        top = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]  # [Q, k_eff], unordered
        top_scores = np.take_along_axis(scores, top, axis=1)  # [Q, k_eff]
        order = np.argsort(-top_scores, axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        return _pad(np.take_along_axis(top_scores, order, axis=1), self.ids[top], k)

    def __len__(self) -> int:
        return len(self.ids)


class FaissIndex:
    """A FAISS inner-product index keyed by row id: IVF-Flat (`ivf`) or HNSW-Flat (`hnsw`).

    HNSW graphs cannot delete vectors, so `remove` on an HNSW index raises; callers rebuild instead.
    """

    def __init__(self, kind: str, index: Any, nprobe: int | None = None) -> None:
        self.kind = kind
        self.index = index
        if nprobe is not None:
            self.nprobe = nprobe

    @property
    def nprobe(self) -> int:
        """IVF lists visited per query (more: slower and closer to exact)."""
        return int(self.index.nprobe)

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self.index.nprobe = value

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Adds vectors [N, D] under the given ids [N]."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> None:
        """Drops the vectors with these ids (IVF only)."""
        if self.kind == "hnsw":
            raise ConfigError("an HNSW index cannot delete vectors; rebuild it")
        self.index.remove_ids(np.asarray(ids, dtype=np.int64))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k inner products of queries [Q, D]."""
        scores, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
        return scores, ids

    def __len__(self) -> int:
        return int(self.index.ntotal)


def _pad(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pads [Q, k'] results to [Q, k] with score -inf and id -1, as FAISS does."""
    missing = k - scores.shape[1]
    if missing <= 0:
        return scores, ids
    return (
        np.pad(scores, ((0, 0), (0, missing)), constant_values=-np.inf),
        np.pad(ids, ((0, 0), (0, missing)), constant_values=-1),
    )


def choose_kind(count: int, requested: str = "auto") -> str:
    """The index kind for `count` vectors: `requested`, or exact below EXACT_LIMIT and IVF above.

    Raises:
        ConfigError: an unknown kind.
    """
    if requested not in KINDS:
        raise ConfigError(f"unknown index kind '{requested}' (known: {', '.join(KINDS)})")
    if requested != "auto":
        return requested
    return "exact" if count < EXACT_LIMIT else "ivf"


def ivf_lists(count: int) -> int:
    """IVF list count: sqrt(N), the low end of FAISS's guideline, so k-means at 1M vectors takes seconds."""
    return max(1, min(int(math.sqrt(count)), count // 39))


def default_nprobe(nlist: int) -> int:
    """Lists probed per query: 1/16 of them, at least 8 (or all when there are fewer)."""
    return min(nlist, max(8, nlist // 16))


def build_index(kind: str, ids: np.ndarray, vectors: np.ndarray, seed: int = 0) -> VectorIndex:
    """Builds an index of `kind` (`exact`, `ivf`, `hnsw`) over vectors [N, D] with row ids [N]."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    dim = vectors.shape[1]
    index: VectorIndex
    if kind == "exact":
        index = ExactIndex(dim)
    elif kind == "ivf":
        index = _train_ivf(vectors, seed)
    elif kind == "hnsw":
        faiss = import_faiss()
        graph = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        graph.hnsw.efSearch = HNSW_EF_SEARCH
        index = FaissIndex("hnsw", faiss.IndexIDMap2(graph))
    else:
        raise ConfigError(f"unknown index kind '{kind}' (known: exact, ivf, hnsw)")
    index.add(ids, vectors)
    return index


def _train_ivf(vectors: np.ndarray, seed: int) -> FaissIndex:
    """Trains the IVF coarse quantizer by k-means on at most 50 vectors per list (FAISS wants >= 39)."""
    faiss = import_faiss()
    count, dim = vectors.shape
    nlist = ivf_lists(count)
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = seed
    sample = np.random.default_rng(seed).permutation(count)[: 50 * nlist]
    ivf.train(vectors[np.sort(sample)])
    return FaissIndex("ivf", ivf, nprobe=default_nprobe(nlist))


def save_index(index: VectorIndex, folder: Path) -> None:
    """Writes a FAISS index as `ann.faiss` in the index folder; an exact index removes a stale one."""
    path = folder / ANN_NAME
    if isinstance(index, FaissIndex):
        import_faiss().write_index(index.index, str(path))
    elif path.exists():
        path.unlink()


def load_index(folder: Path, kind: str, ids: np.ndarray, vectors: np.ndarray) -> VectorIndex:
    """Opens the index of `kind` in `folder`; an exact index is rebuilt from the stored vectors.

    Raises:
        DataError: `ann.faiss` is missing, unreadable or out of step with the store.
    """
    if kind == "exact":
        return build_index("exact", ids, vectors)
    faiss = import_faiss()
    path = folder / ANN_NAME
    if not path.is_file():
        raise DataError(f"index kind is '{kind}' but {path} is missing: re-run `clipforge embed`")
    try:
        raw = faiss.read_index(str(path))
    except RuntimeError as err:
        raise DataError(f"cannot read FAISS index {path}: {str(err).splitlines()[0]}") from err
    if raw.ntotal != len(ids):
        raise DataError(f"{path} holds {raw.ntotal} vectors, the store {len(ids)}: re-run `clipforge embed`")
    if kind == "ivf":
        return FaissIndex(kind, raw, nprobe=default_nprobe(raw.nlist))
    return FaissIndex(kind, raw)
