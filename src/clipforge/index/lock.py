"""One writer per index folder: an advisory `flock` on `FOLDER/.lock`, held for a whole `embed` run.

The kernel drops the lock when its holder exits, however it exits (SIGKILL included), so a crash
never leaves a folder locked. Readers (`search`, `serve`) take no lock: SQLite serializes their
reads with the writer's transactions and the ANN file is only ever replaced whole.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clipforge.errors import ClipforgeError

LOCK_NAME = ".lock"


class IndexBusyError(ClipforgeError):
    """Another process is updating the index folder."""


@contextmanager
def index_lock(folder: Path) -> Iterator[None]:
    """Holds the folder's write lock for the duration of the block.

    Raises:
        IndexBusyError: another process holds it (names its pid); nothing was changed.
        ClipforgeError: the folder cannot be created or written.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise ClipforgeError(f"cannot use {folder} as an index folder: {err.strerror or err}") from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            raise IndexBusyError(
                f"index {folder} is being updated by another process (pid {holder}): "
                "wait for that `clipforge embed` to finish, then run again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
