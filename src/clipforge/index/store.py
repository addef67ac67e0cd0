"""The embedding store of an index folder: one SQLite file with metadata rows and float16 vectors.

An index folder holds `index.sqlite` (this store) and, for large collections, `ann.faiss` (see
`clipforge.index.ann`). Each row keeps what incremental runs need to tell a file unchanged (size,
mtime, captions) and what search results show (path, captions). Row ids grow monotonically
(AUTOINCREMENT), so an id never names two different images over the life of an index.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipforge.errors import ConfigError, DataError

STORE_NAME = "index.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    captions TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    embedding BLOB NOT NULL
);
"""
_INSERT = "INSERT INTO items (path, captions, size, mtime_ns, sha256, embedding) VALUES (?, ?, ?, ?, ?, ?)"


@dataclass(frozen=True)
class Item:
    """One indexed image (its embedding lives beside it in the store).

    Attributes:
        path: where the image is read from (absolute file path, or a reader's source string).
        captions: its captions, possibly none.
        size: encoded size in bytes.
        mtime_ns: modification time of the file, or -1 when the source is not a plain file.
        sha256: hex digest of the encoded bytes.
        id: row id; 0 until stored.
    """

    path: str
    captions: tuple[str, ...]
    size: int
    mtime_ns: int
    sha256: str
    id: int = 0

    @property
    def caption(self) -> str | None:
        """The first caption, or None for images without captions."""
        return self.captions[0] if self.captions else None


@dataclass(frozen=True)
class Signature:
    """What decides whether a listed image changed since it was stored."""

    id: int
    size: int
    mtime_ns: int
    captions: tuple[str, ...]


class EmbeddingStore:
    """SQLite table of items with their L2-normalized float16 embeddings, plus key-value metadata."""

    def __init__(self, folder: str | Path, create: bool = False) -> None:
        """Opens the store of an index folder.

        Args:
            folder: the index folder.
            create: make the folder and an empty store when they do not exist.

        Raises:
            DataError: the folder holds no store and `create` is false, or the file is not a store.
        """
        self.folder = Path(folder)
        path = self.folder / STORE_NAME
        if not path.is_file() and not create:
            raise DataError(f"not an index folder (no {STORE_NAME}): {self.folder}")
        self.folder.mkdir(parents=True, exist_ok=True)
        # Served from FastAPI's thread pool, hence check_same_thread=False; SQLite serializes access.
        self._db = sqlite3.connect(path, check_same_thread=False)
        try:
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            raise DataError(f"not a clipforge index store ({err}): {path}") from err

    def close(self) -> None:
        """Closes the database."""
        self._db.close()

    def get_meta(self, key: str) -> str | None:
        """A metadata value, or None when unset."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Sets a metadata value."""
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def check_model(self, fingerprint: str, spec: str) -> None:
        """Refuses a model other than the one the stored embeddings were made with.

        Raises:
            ConfigError: the store was made by a model with another fingerprint.
        """
        stored = self.get_meta("model_hash")
        if stored is not None and stored != fingerprint:
            made_by = self.get_meta("model_spec")
            raise ConfigError(
                f"index {self.folder} was built with model {made_by!r} (hash {stored[:12]}), but model "
                f"{spec!r} has hash {fingerprint[:12]}: use the same model or embed into a new index"
            )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM items").fetchone()[0])

    def signatures(self) -> dict[str, Signature]:
        """Path -> signature of every stored item."""
        rows = self._db.execute("SELECT path, id, size, mtime_ns, captions FROM items")
        return {p: Signature(i, size, mtime, tuple(json.loads(text))) for p, i, size, mtime, text in rows}

    def add(self, items: Sequence[Item], embeddings: np.ndarray) -> list[int]:
        """Stores items with their embeddings, replacing any row of the same path; returns the new ids."""
        vectors = np.ascontiguousarray(embeddings, dtype=np.float16)  # [N, D]
        ids = []
        with self._db:
            for item, vector in zip(items, vectors, strict=True):
                self._db.execute("DELETE FROM items WHERE path = ?", (item.path,))
                captions = json.dumps(item.captions)
                cursor = self._db.execute(
                    _INSERT, (item.path, captions, item.size, item.mtime_ns, item.sha256, vector.tobytes())
                )
                ids.append(int(cursor.lastrowid or 0))
        return ids

    def remove(self, ids: Iterable[int]) -> None:
        """Deletes rows by id."""
        with self._db:
            self._db.executemany("DELETE FROM items WHERE id = ?", [(int(i),) for i in ids])

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """All ids [N] (int64, ascending) and embeddings [N, D] (float16)."""
        rows = self._db.execute("SELECT id, embedding FROM items ORDER BY id").fetchall()
        dim = int(self.get_meta("embed_dim") or 0)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        flat = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16)
        matrix = flat.reshape(len(rows), dim)  # [N, D]
        return ids, matrix

    def items(self, ids: Sequence[int]) -> dict[int, Item]:
        """Id -> item for the ids that exist."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._db.execute(
            f"SELECT id, path, captions, size, mtime_ns, sha256 FROM items WHERE id IN ({marks})",
            [int(i) for i in ids],
        )
        return {r[0]: Item(r[1], tuple(json.loads(r[2])), r[3], r[4], r[5], r[0]) for r in rows}
