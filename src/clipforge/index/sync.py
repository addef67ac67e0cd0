"""The vector index of an index folder, brought in line with the rows its store holds.

`ann.faiss` is derived from the store (see `clipforge.index.annfile`). Opening it compares its stamp
with the store's row ids: equal, it is used as is; different (a run was killed between committing
rows and saving the index), the ids it lacks are added and the ids the store dropped are removed;
unusable (missing, truncated, another kind, far outgrown), it is rebuilt from the stored vectors.
`embed` saves the result; `search` and `serve` only patch in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from clipforge.index.ann import (
    AUTO_KINDS,
    TARGET_RECALL,
    TUNE_QUERIES,
    FaissIndex,
    VectorIndex,
    build_auto,
    build_faiss,
    build_index,
    choose_kind,
    tune,
)
from clipforge.index.annfile import ANN_NAME, ids_digest, read_ann, remove_ann, save_ann
from clipforge.index.store import EmbeddingStore

RETUNE_DRIFT = 0.1  # re-tune once the collection is 10% larger or smaller than when tuned
REBUILD_GROWTH = 4  # retrain IVF lists once the collection is 4x what they were trained on
HNSW_RETUNE_GROWTH = 2  # an HNSW graph is rebuilt (and re-tuned) once the collection doubles

CrashHook = Callable[[str], None]


@dataclass(frozen=True)
class Synced:
    """An index that holds exactly the store's rows, and how it got there (for the run's summary)."""

    index: VectorIndex
    how: str


def synced_index(
    store: EmbeddingStore,
    requested: str,
    save: bool,
    target: float = TARGET_RECALL,
    crash_hook: CrashHook | None = None,
) -> Synced:
    """The index of `requested` kind over the store's rows: reused, patched or rebuilt; saved if `save`."""
    ids = store.ids()
    kind = choose_kind(len(ids), requested) if len(ids) else "exact"
    if kind == "exact":
        if save:
            remove_ann(store.folder)
        return Synced(build_index("exact", *store.embeddings()), "exact")
    index, how = _reuse(store, AUTO_KINDS if requested == "auto" else (kind,), ids, target)
    if index is None:
        build = build_auto if requested == "auto" else partial(build_faiss, kind)
        index, how = build(*store.embeddings(), target=target), f"built ({how})"
    if save and how != "up to date":
        save_ann(index, store.folder, crash_hook)
    return Synced(index, how)


def _reuse(
    store: EmbeddingStore, kinds: tuple[str, ...], ids: np.ndarray, target: float
) -> tuple[FaissIndex | None, str]:
    """The saved index (of one of `kinds`) patched to hold `ids`, or None and why it cannot be reused."""
    saved = read_ann(store.folder)
    if isinstance(saved, str):
        return None, saved
    index, stamp = saved
    dim = int(store.get_meta("embed_dim") or 0)
    if stamp.kind not in kinds or stamp.dim != dim:
        want = " or ".join(kinds)
        return None, f"{ANN_NAME} is a {stamp.kind} index of {stamp.dim}-d vectors, want {want} of {dim}-d"
    kind = stamp.kind
    if kind != "hnsw" and len(ids) > REBUILD_GROWTH * index.trained_on:
        return None, f"the collection outgrew the {index.trained_on} vectors its lists were trained on"
    tuned_on = index.tuning.tuned_on if index.tuning else 0
    if kind == "hnsw" and len(ids) > HNSW_RETUNE_GROWTH * tuned_on:
        return None, f"the collection outgrew the {tuned_on} vectors its graph was tuned on"
    if stamp.ids_sha256 == ids_digest(ids):
        return index, "up to date"
    held = index.stored_ids()
    gone, new = np.setdiff1d(held, ids), np.setdiff1d(ids, held)
    if kind == "hnsw" and len(gone):
        return None, "an HNSW graph cannot delete vectors"
    if len(gone):
        index.remove(gone)
    if len(new):
        index.add(new, store.vectors(new))
    _retune_if_drifted(index, store, target)
    return index, f"patched: {len(new)} added, {len(gone)} removed"


def _retune_if_drifted(index: FaissIndex, store: EmbeddingStore, target: float) -> None:
    """Re-measures an IVF index's search effort once the collection size moved by more than RETUNE_DRIFT.

    The sample is taken out of the index while it is tuned (see `clipforge.index.ann.tune`).
    """
    tuned_on = index.tuning.tuned_on if index.tuning else 0
    if index.kind == "hnsw" or abs(len(index) - tuned_on) <= RETUNE_DRIFT * tuned_on:
        return
    ids, vectors = store.embeddings()
    held = np.random.default_rng(0).permutation(len(ids))[: min(TUNE_QUERIES, len(ids) // 10)]
    if len(held):
        index.remove(ids[held])
        index.set_tuning(tune(index, ids, vectors, held, target))
        index.add(ids[held], vectors[held])
