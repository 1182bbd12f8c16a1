"""Atomic file writes (results tables, reports, plots): a reader (or an interrupted run) sees the old
file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gsdeploy.errors import OutputPathError


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temp file in the same directory (so os.replace is a rename on one file
    system), fsync it, then replace `path`."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputPathError(f"cannot write {path}: it is a directory")
    if not parent.is_dir():
        raise OutputPathError(f"cannot write {path}: directory {parent} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise OutputPathError(f"cannot write to {parent}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise OutputPathError(f"cannot write {path}: {e.strerror or e}") from None
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))
