"""Writing files so that nothing is lost: every file a run writes is written atomically.

A writer that is killed half-way leaves the previous version (or nothing), never a torn file: the
bytes go to a temporary file in the same folder, are flushed to disk, and replace the target in one
`os.replace`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from clipforge.errors import ClipforgeError


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Writes `data` to `path` atomically, creating the parent folder.

    Raises:
        ClipforgeError: the file or its folder cannot be written (names the path and the reason).
    """
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        raise ClipforgeError(f"cannot write {out}: {err.strerror or err}") from err
    return out


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Writes UTF-8 `text` to `path` atomically (see `write_bytes_atomic`)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json(data: Any, path: str | Path) -> Path:
    """Writes `data` as indented, NaN-free JSON (missing numbers must be null), atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, allow_nan=False) + "\n")


def check_writable(path: str | Path) -> Path:
    """Fails early, before a long run, when the file `path` could not be written (its folder is created).

    Raises:
        ClipforgeError: the file or its folder cannot be written.
    """
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".probe", dir=out.parent)
        os.close(fd)
        os.unlink(tmp)
        if out.exists() and not os.access(out, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as err:
        raise ClipforgeError(f"cannot write {out}: {err.strerror or err}") from err
    return out
