"""Reading checkpoint files safely: weights_only by default, whole-module pickles only when trusted."""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from gsdeploy.errors import LoadError


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_readable(path: Path) -> None:
    """A regular, non-empty file we may read. Devices and FIFOs are refused without opening them
    (reading /dev/zero never ends; opening a FIFO blocks until someone writes)."""
    import errno
    import os
    import stat

    try:
        st = path.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise LoadError(f"{path} is a symbolic link loop") from None
        if e.errno == errno.EACCES:
            raise LoadError(f"cannot read {path}: permission denied") from None
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise LoadError(f"no such file: {path}") from None
        raise LoadError(f"cannot read {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise LoadError(f"{path} is a directory, not a checkpoint file")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a device" if
                stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "not a regular file")
        raise LoadError(f"{path} is {kind}, not a checkpoint file")
    if st.st_size == 0:
        raise LoadError(f"{path} is empty")
    if not os.access(path, os.R_OK):
        raise LoadError(f"cannot read {path}: permission denied")


def read_checkpoint(path: Path, trust: bool = False) -> Any:
    """torch.load with weights_only=True; a refused pickle names --trust instead of a traceback."""
    check_readable(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise LoadError(f"cannot read {path}: {e.strerror or e}") from None
    except MemoryError:
        raise LoadError(f"{path} declares tensors larger than this machine's memory") from None
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise LoadError(f"{path} is not a PyTorch checkpoint ({_first_line(e)})") from None
        if not trust:
            raise LoadError(
                f"{path} holds pickled Python objects (such as a whole nn.Module); unpickling runs code "
                "from the file, so it is refused. Re-run with --trust only if you trust where it came from"
            ) from None
    except Exception as e:  # noqa: BLE001 - torch.load fails in many ways on foreign or cut files
        if zipfile.is_zipfile(path) or _is_cut_zip(path):
            raise LoadError(f"{path} is a truncated or corrupt PyTorch checkpoint ({_first_line(e)[:120]})") from None
        raise LoadError(f"{path} is not a PyTorch checkpoint (not a file written by torch.save)") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a trusted pickle can fail in arbitrary ways (missing classes, ...)
        raise LoadError(f"{path} could not be unpickled even with --trust: {_first_line(e)}") from None


def _is_cut_zip(path: Path) -> bool:
    """torch.save writes a zip; a cut one still starts with the zip magic but lost its directory."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def extract_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Accept a bare state_dict or the usual wrappers ({'state_dict': ...}, {'model': ...})."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "net"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return {k.removeprefix("module."): v for k, v in tensors.items()}
    raise LoadError(f"{path} holds no tensors that could be a state_dict (found {type(obj).__name__})")
