"""Reading checkpoint files safely: weights_only by default, whole-module pickles only when trusted."""

from __future__ import annotations

import hashlib
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from gsdeploy.errors import LoadError
from gsdeploy.limits import check_readable, short


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_checkpoint(path: Path, trust: bool = False) -> Any:
    """torch.load with weights_only=True; a refused pickle names --trust instead of a traceback."""
    check_readable(path)
    try:
        with warnings.catch_warnings():
            # a legacy (non-zip) file in pickle protocol 3+ makes torch warn on stderr before it
            # fails or loads: the outcome is said below in one line, or not at all
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise LoadError(f"cannot read {path}: {e.strerror or e}") from None
    except MemoryError:
        raise LoadError(f"{path} declares tensors larger than this machine's memory") from None
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):
            raise LoadError(f"{path} is not a PyTorch checkpoint ({_first_line(e)})") from None
        protocol = _legacy_protocol(path)
        if not trust and "Unsupported operand" in str(e) and protocol is not None:
            raise LoadError(
                f"{path} is a legacy (non-zip) PyTorch checkpoint in pickle protocol {protocol}, which PyTorch's "
                "safe loader cannot read, and unpickling it otherwise runs code from the file, so it is refused. "
                "Re-save it with torch.save's default format, or re-run with --trust only if you trust where it "
                "came from") from None
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


def _legacy_protocol(path: Path) -> int | None:
    """The pickle protocol of a legacy torch.save file (a bare pickle stream: PROTO, then the
    protocol number), or None for anything else."""
    with open(path, "rb") as f:
        head = f.read(2)
    return head[1] if len(head) == 2 and head[0] == 0x80 else None


def _is_cut_zip(path: Path) -> bool:
    """torch.save writes a zip; a cut one still starts with the zip magic but lost its directory."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def check_tensors(state: dict[str, torch.Tensor], path: Path) -> None:
    """Every tensor must be a dense floating-point view that fits its stored bytes, checked
    before anything is copied: a zero or overlapping stride lets a 538 KB file declare a
    100000x1000x3x3 tensor that the first .clone() or .float() would materialise in 3.7 GB, and an
    int64 or complex weight would be cast silently (int64 truncation fakes a speedup). The one
    integer tensor official checkpoints hold is BatchNorm's num_batches_tracked."""
    wrong = [f"{k} ({str(t.dtype).removeprefix('torch.')})" for k, t in state.items()
             if not t.is_floating_point() and not (k.endswith("num_batches_tracked") and t.numel() == 1
                                                   and not t.is_complex() and t.dtype != torch.bool)]
    if wrong:
        raise LoadError(f"{path}: weights must be floating point; found {short(', '.join(wrong), 300)}")
    for key, t in state.items():
        if t.layout != torch.strided or t.is_quantized or t.is_meta:
            raise LoadError(f"{path}: tensor {short(key)} is {t.layout}{' quantized' if t.is_quantized else ''}; "
                            "gsdeploy reads dense floating-point weights only")
        need = t.numel() * t.element_size()
        have = t.untyped_storage().nbytes()
        if need > have:
            raise LoadError(f"{path}: tensor {short(key)} declares shape {tuple(t.shape)} ({need} bytes) but stores "
                            f"only {have} bytes (zero or overlapping strides); refusing to expand it")


def check_weights(module: torch.nn.Module, source: str) -> None:
    """Parameters must be floating point (an int64 or complex weight would be cast silently, and
    int64 truncation fakes a speedup), and every float tensor finite: NaN/Inf is named here
    rather than surfacing later as a deployment mismatch."""
    bad_dtype, non_finite = [], []
    for name, p in module.named_parameters():
        if not p.is_floating_point():
            bad_dtype.append(f"{name} ({str(p.dtype).removeprefix('torch.')})")
    for name, t in [*module.named_parameters(), *module.named_buffers()]:
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            n = int((~torch.isfinite(t)).sum())
            non_finite.append(f"{name} ({n} of {t.numel()})")
    if bad_dtype:
        raise LoadError(f"{source}: weights must be floating point; found {short(', '.join(bad_dtype), 300)}")
    if non_finite:
        raise LoadError(f"{source}: weights hold NaN or Inf values: {short(', '.join(non_finite), 300)}")


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
