"""`ann.faiss`: a FAISS index saved with a stamp of the store rows it was built from.

The file is a derived artefact of the SQLite store, never a source of truth. It is written whole
(temporary file, fsync, rename), and starts with a JSON stamp: the kind, a digest of the row ids it
holds, and its training and tuning. A reader compares the digest with the store's ids; when they
differ (a run was killed between committing rows and saving the index) the index is patched or
rebuilt, and a file that cannot be read at all (truncated, foreign, another dimension) is rebuilt,
never fatal.

Layout: the magic line `clipforge-ann 1`, a 4-byte little-endian header length, the JSON header,
then FAISS's own serialization, streamed (a 1M-vector flat index is 2 GB, too big to copy in memory).
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import numpy as np

from clipforge.fileio import atomic_writer, remove_stale_temps
from clipforge.index.ann import FaissIndex, Tuning, import_faiss

ANN_NAME = "ann.faiss"
_MAGIC = b"clipforge-ann 1\n"
_MAX_HEADER = 1 << 20
LEGACY_PQ_RERANK = 10  # candidates per result of `ivf-pq` files saved before the tuner chose them


@dataclass(frozen=True)
class AnnStamp:
    """What a saved index was built from.

    Attributes:
        kind: `ivf`, `ivf-sq8`, `ivf-pq` (4-bit fast-scan codes; older files: 8-bit) or `hnsw`.
        ids_sha256: `clipforge.index.store.ids_digest` of the row ids it holds.
        count: how many vectors it holds.
        dim: vector size.
        trained_on: collection size its IVF lists were trained on (0 for HNSW).
        tuning: its search effort and measured recall, if tuned.
    """

    kind: str
    ids_sha256: str
    count: int
    dim: int
    trained_on: int
    tuning: Tuning | None


def ids_digest(ids: np.ndarray) -> str:
    """sha256 of a set of row ids (order-free): the stamp of what a derived index was built from."""
    return hashlib.sha256(np.sort(np.asarray(ids, dtype=np.int64)).astype("<i8").tobytes()).hexdigest()


def save_ann(index: FaissIndex, folder: Path, crash_hook: Callable[[str], None] | None = None) -> AnnStamp:
    """Writes `index` as `folder/ann.faiss`, stamped with the digest of the ids it holds.

    Args:
        crash_hook: called with a stage name between writing and renaming (tests kill there).
    """
    faiss = import_faiss()
    digest = ids_digest(index.stored_ids())
    stamp = AnnStamp(index.kind, digest, len(index), int(index.index.d), index.trained_on, index.tuning)
    header = json.dumps(asdict(stamp)).encode()
    with atomic_writer(folder / ANN_NAME) as f:
        f.write(_MAGIC + struct.pack("<I", len(header)) + header)
        faiss.write_index(index.index, faiss.PyCallbackIOWriter(f.write))
        if crash_hook is not None:
            crash_hook("ann-written")
    return stamp


def read_ann(folder: Path) -> tuple[FaissIndex, AnnStamp] | str:
    """The saved index and its stamp, or why there is no usable one (missing, truncated, foreign)."""
    path = folder / ANN_NAME
    try:
        with path.open("rb") as f:
            stamp = _read_stamp(f)
            if isinstance(stamp, str):
                return stamp
            faiss = import_faiss()
            raw = faiss.read_index(faiss.PyCallbackIOReader(f.read))
    except FileNotFoundError:
        return f"{path} is missing"
    except (OSError, RuntimeError, ValueError, TypeError, KeyError, struct.error) as err:
        return f"{path} is unreadable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    if raw.ntotal != stamp.count or raw.d != stamp.dim:
        return f"{path} holds {raw.ntotal} x {raw.d} vectors, its stamp says {stamp.count} x {stamp.dim}"
    return FaissIndex(stamp.kind, raw, stamp.trained_on, stamp.tuning), stamp


def _read_stamp(f: IO[bytes]) -> AnnStamp | str:
    if f.read(len(_MAGIC)) != _MAGIC:
        return f"{f.name} is not a clipforge ANN file (an older or foreign format)"
    (size,) = struct.unpack("<I", f.read(4))
    if size > _MAX_HEADER:
        return f"{f.name} has a corrupt header"
    fields = json.loads(f.read(size))
    tuning = fields.pop("tuning")
    if tuning is not None and fields["kind"] == "ivf-pq":
        tuning.setdefault("candidates", LEGACY_PQ_RERANK)
    return AnnStamp(**fields, tuning=None if tuning is None else Tuning(**tuning))


def remove_ann(folder: Path) -> None:
    """Deletes the saved index and temporaries of killed writers (the caller holds the folder's lock)."""
    (folder / ANN_NAME).unlink(missing_ok=True)
    remove_stale_temps(folder / ANN_NAME)
