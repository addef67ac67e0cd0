"""The embedding store of an index folder: one SQLite file with metadata rows and float16 vectors.

An index folder holds `index.sqlite` (this store) and, for large collections, `ann.faiss` (see
`clipforge.index.ann`). Each row keeps what incremental runs need to tell a file unchanged (size,
mtime, captions) and what search results show (path, captions). Row ids grow monotonically
(AUTOINCREMENT) and a changed file gets a new row, so an id never names two different images over
the life of an index, and the set of ids alone says which vectors a derived ANN index must hold.

Paths that are not valid UTF-8 (POSIX file names are bytes; Python shows the undecodable ones as
surrogates) are stored as BLOBs of their raw bytes in the same column, so they round-trip exactly.
Files that failed to decode are remembered with their size and mtime in `bad`, so an unchanged
bad file is counted again on the next run without being read again.
"""

from __future__ import annotations

import json
import os
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
CREATE TABLE IF NOT EXISTS bad (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""
_CHUNK = 900  # ids per `IN (...)` query, under SQLite's oldest bound-parameter limit
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


@dataclass(frozen=True)
class KnownBad:
    """A file that failed to decode, with the signature it had then and why it failed."""

    path: str
    size: int
    mtime_ns: int
    reason: str
    detail: str


def to_db_path(path: str) -> str | bytes:
    """The column value of a path: text when it is valid UTF-8, else its raw file-name bytes."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def from_db_path(value: str | bytes) -> str:
    """The path a column value stands for (`to_db_path` inverted)."""
    return os.fsdecode(value) if isinstance(value, bytes) else value


def display_path(path: str) -> str:
    """A path as printable UTF-8 text: bytes that are not UTF-8 are shown as `\\xNN`."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


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

    def set_meta(self, **values: str) -> None:
        """Sets metadata values, in one transaction (each commit waits for the disk)."""
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", values.items())

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
        signatures = {}
        for path, i, size, mtime, text in rows:
            signatures[from_db_path(path)] = Signature(i, size, mtime, tuple(json.loads(text)))
        return signatures

    def add(self, items: Sequence[Item], embeddings: np.ndarray) -> list[int]:
        """Stores items with their embeddings, replacing any row of the same path; returns the new ids."""
        vectors = np.ascontiguousarray(embeddings, dtype=np.float16)  # [N, D]
        ids = []
        with self._db:
            for item, vector in zip(items, vectors, strict=True):
                path = to_db_path(item.path)
                self._db.execute("DELETE FROM items WHERE path = ?", (path,))
                self._db.execute("DELETE FROM bad WHERE path = ?", (path,))
                captions = json.dumps(item.captions)
                cursor = self._db.execute(
                    _INSERT, (path, captions, item.size, item.mtime_ns, item.sha256, vector.tobytes())
                )
                ids.append(int(cursor.lastrowid or 0))
        return ids

    def remove(self, ids: Iterable[int]) -> None:
        """Deletes rows by id."""
        with self._db:
            self._db.executemany("DELETE FROM items WHERE id = ?", [(int(i),) for i in ids])

    def known_bad(self) -> dict[str, KnownBad]:
        """Path -> the last failure of every file remembered as bad."""
        rows = self._db.execute("SELECT path, size, mtime_ns, reason, detail FROM bad")
        return {from_db_path(r[0]): KnownBad(from_db_path(r[0]), *r[1:]) for r in rows}

    def set_bad(self, bad: Sequence[KnownBad]) -> None:
        """Remembers files that failed to decode (replacing what was known about them)."""
        rows = [(to_db_path(b.path), b.size, b.mtime_ns, b.reason, b.detail) for b in bad]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO bad VALUES (?, ?, ?, ?, ?)", rows)

    def forget_bad(self, paths: Iterable[str]) -> None:
        """Forgets known-bad files (gone, or changed and about to be read again)."""
        with self._db:
            self._db.executemany("DELETE FROM bad WHERE path = ?", [(to_db_path(p),) for p in paths])

    def ids(self) -> np.ndarray:
        """All row ids [N] (int64, ascending)."""
        rows = self._db.execute("SELECT id FROM items ORDER BY id").fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """All ids [N] (int64, ascending) and embeddings [N, D] (float16)."""
        rows = self._db.execute("SELECT id, embedding FROM items ORDER BY id").fetchall()
        dim = int(self.get_meta("embed_dim") or 0)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        flat = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16)
        matrix = flat.reshape(len(rows), dim)  # [N, D]
        return ids, matrix

    def vectors(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Embeddings [len(ids), D] (float16) of the given ids, in that order.

        Raises:
            DataError: an id is not in the store.
        """
        found: dict[int, bytes] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = [int(i) for i in ids[start : start + _CHUNK]]
            marks = ",".join("?" * len(chunk))
            found.update(self._db.execute(f"SELECT id, embedding FROM items WHERE id IN ({marks})", chunk))
        missing = [int(i) for i in ids if int(i) not in found]
        if missing:
            raise DataError(f"{len(missing)} ids are not in {self.folder / STORE_NAME} (first: {missing[0]})")
        dim = int(self.get_meta("embed_dim") or 0)
        flat = np.frombuffer(b"".join(found[int(i)] for i in ids), dtype=np.float16)
        return flat.reshape(len(ids), dim)  # [n, D]

    def items(self, ids: Sequence[int]) -> dict[int, Item]:
        """Id -> item for the ids that exist."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self._db.execute(
            f"SELECT id, path, captions, size, mtime_ns, sha256 FROM items WHERE id IN ({marks})",
            [int(i) for i in ids],
        )
        return {r[0]: Item(from_db_path(r[1]), tuple(json.loads(r[2])), r[3], r[4], r[5], r[0]) for r in rows}
