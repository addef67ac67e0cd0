"""Reading and writing files safely: bounded reads of regular files only, atomic writes.

A writer that is killed half-way leaves the previous version (or nothing), never a torn file: the
bytes go to a temporary file in the same folder, are flushed to disk, and replace the target in one
`os.replace`.

A reader never blocks on a FIFO or device, never reads a directory, and never reads more than the caller's
cap (so `/dev/zero` or a huge file given as a config fails fast with one line naming it). JSON is read with
a size cap and a nesting-depth guard.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from clipforge.errors import ClipforgeError, ConfigError

MAX_JSON_BYTES = 16 * 2**20  # configs, preprocessor files and shard indexes are kilobytes
MAX_JSON_DEPTH = 64
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def read_regular_file(
    path: str | Path, limit: int, error: type[ClipforgeError] = ClipforgeError, what: str = "file"
) -> bytes:
    """The bytes of the regular file `path` (symlinks followed), at most `limit` of them.

    The file is opened non-blocking and checked on the open descriptor, so a FIFO or a device is refused
    without waiting on it and the check cannot race with a rename.

    Args:
        path: the file.
        limit: the largest size accepted, in bytes.
        error: the ClipforgeError subclass raised (so each caller keeps its own error type).
        what: how to name the file in errors, e.g. "image file".

    Raises:
        error: the file is missing, not a regular file, unreadable or larger than `limit`.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as err:
        raise error(f"{what} not found: {path}") from err
    except OSError as err:
        raise error(f"cannot read {what} ({err.strerror or err}): {path}") from err
    try:
        _refuse_special(os.fstat(fd).st_mode, path, error, what)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(limit + 1)
        except OSError as err:
            raise error(f"cannot read {what} ({err.strerror or err}): {path}") from err
    if len(data) > limit:
        raise error(f"{what} is larger than the {_size(limit)} allowed: {path}")
    return data


def check_regular_file(
    path: str | Path, error: type[ClipforgeError] = ClipforgeError, what: str = "file"
) -> int:
    """The size of the regular file `path` (symlinks followed), for readers that open it themselves.

    Raises:
        error: the file is missing, unreadable, or a directory, FIFO, device or socket.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError as err:
        raise error(f"{what} not found: {path}") from err
    except OSError as err:
        raise error(f"cannot read {what} ({err.strerror or err}): {path}") from err
    _refuse_special(info.st_mode, path, error, what)
    return info.st_size


def _refuse_special(mode: int, path: str | Path, error: type[ClipforgeError], what: str) -> None:
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _FILE_KINDS if test(mode)), "a special file")
        raise error(f"{what} is {kind}, not a regular file: {path}")


def read_json(
    path: str | Path, error: type[ClipforgeError] = ClipforgeError, limit: int = MAX_JSON_BYTES
) -> Any:
    """Parses the JSON file `path`, refusing files over `limit` bytes or nested over MAX_JSON_DEPTH levels.

    Raises:
        error: the file is missing, not a regular file, too large, not UTF-8, not JSON or nested too deeply.
    """
    raw = read_regular_file(path, limit, error, "JSON file")
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text (byte {err.start})") from err
    except json.JSONDecodeError as err:
        raise error(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from err
    except RecursionError as err:
        raise error(f"{path}: JSON nested more than {MAX_JSON_DEPTH} levels deep") from err
    if _depth(data) > MAX_JSON_DEPTH:
        raise error(f"{path}: JSON nested more than {MAX_JSON_DEPTH} levels deep")
    return data


def read_json_object(
    path: str | Path, error: type[ClipforgeError] = ClipforgeError, limit: int = MAX_JSON_BYTES
) -> dict[str, Any]:
    """`read_json` for files that must hold one JSON object (not a list, a string or a number)."""
    data = read_json(path, error, limit)
    if not isinstance(data, dict):
        raise error(f"{path}: expected a JSON object, found a JSON {_json_kind(data)}")
    return data


def _depth(data: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (a deep document must not overflow the stack)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _json_kind(data: Any) -> str:
    kinds = ((list, "list"), (str, "string"), (bool, "boolean"), (int | float, "number"))
    return next((name for kind, name in kinds if isinstance(data, kind)), "null")


def _size(limit: int) -> str:
    return f"{limit / 2**20:.0f} MiB" if limit >= 2**20 else f"{limit} bytes"


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[IO[bytes]]:
    """A binary file to write `path` through, atomically: it replaces `path` when the block ends normally.

    For files too large to hold in memory as one `bytes`; an exception in the block, or a kill,
    leaves the previous version of `path` (and, after a kill, a temporary `.NAME.*.tmp` beside it
    that `remove_stale_temps` deletes).

    Raises:
        ClipforgeError: the file or its folder cannot be written (names the path and the reason).
    """
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        raise ClipforgeError(f"cannot write {out}: {err.strerror or err}") from err


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Writes `data` to `path` atomically, creating the parent folder (see `atomic_writer`).

    Raises:
        ClipforgeError: the file or its folder cannot be written (names the path and the reason).
    """
    with atomic_writer(path) as f:
        f.write(data)
    return Path(path)


def remove_stale_temps(path: str | Path) -> int:
    """Deletes the temporary files that killed atomic writers of `path` left; returns how many.

    Only safe while no other process may be writing `path` (callers hold a lock).
    """
    out = Path(path)
    stale = list(out.parent.glob(f".{out.name}.*.tmp"))
    for temp in stale:
        temp.unlink(missing_ok=True)
    return len(stale)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Writes UTF-8 `text` to `path` atomically (see `write_bytes_atomic`)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json(data: Any, path: str | Path) -> Path:
    """Writes `data` as indented, NaN-free JSON (missing numbers must be null), atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def check_writable(path: str | Path) -> Path:
    """Fails early, before a long run, when the file `path` could not be written (its folder is created).

    Raises:
        ConfigError: the file or its folder cannot be written.
    """
    out = Path(path)
    try:
        _probe(out.parent, out.name)
        if out.exists() and not os.access(out, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as err:
        raise ConfigError(f"cannot write {out}: {err.strerror or err}") from err
    return out


def check_writable_dir(folder: str | Path) -> Path:
    """Creates the output folder `folder`, failing early, before a long run, when it cannot be written.

    Raises:
        ConfigError: the folder cannot be created or written.
    """
    out = Path(folder)
    try:
        _probe(out, ".write-test")
    except OSError as err:
        raise ConfigError(f"cannot write to output folder {out}: {err.strerror or err}") from err
    return out


def _probe(folder: Path, name: str) -> None:
    """Creates `folder` and a temporary file in it, then removes the file (OSError when either fails)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".probe", dir=folder)
    os.close(fd)
    os.unlink(tmp)
