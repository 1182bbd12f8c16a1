"""Input samples from the user's files: calibration data (`--calib-data`) and labelled evaluation
data (`--eval-data`).

These files are untrusted input, so everything is checked before any of it is used:
- arrays are read with `allow_pickle=False` (a pickled array would run code from the file);
- the decoded size is bounded *before* decoding (a .npz is a zip: a few kB can inflate to GB);
- every array is a real numeric type, of one sample (C,H,W) or a stack (N,C,H,W) of the model's
  input shape, and finite once converted to float32;
- labels (`y` in a .npz) are integers, one per sample, non-negative.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from gsdeploy.errors import GsdeployError
from gsdeploy.limits import short

# A calibration or evaluation set is a few hundred to a few thousand images; 2 GiB of float32 is
# ~2700 ImageNet images at 224x224, far more than either needs, and still fits this machine.
MAX_BYTES = 2 << 30


class SampleDataError(GsdeployError, ValueError):
    """Calibration or evaluation data that cannot be used as it is."""


@dataclass(frozen=True)
class Samples:
    """float32 inputs (N, *input_shape), optional int64 labels (N,), and where they came from."""

    x: np.ndarray
    y: np.ndarray | None
    source: str
    files: int

    def __len__(self) -> int:
        return int(self.x.shape[0])


def _sample_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 for d in shape):
        raise SampleDataError(f"input shape must be positive integers without the batch axis, got {shape}")
    return tuple(int(d) for d in shape)


def _as_inputs(arr: np.ndarray, shape: tuple[int, ...], where: str) -> np.ndarray:
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise SampleDataError(f"{where} has dtype {arr.dtype}; expected a real numeric array")
    if arr.shape == shape:
        arr = arr[None]
    elif not (arr.ndim == len(shape) + 1 and arr.shape[1:] == shape and arr.shape[0] > 0):
        raise SampleDataError(f"{where} has shape {arr.shape}; expected one sample {shape} or a stack "
                              f"(N, {', '.join(map(str, shape))})")
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf, refused just below
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.all(np.isfinite(arr)):
        raise SampleDataError(f"{where} contains NaN or infinite values (after conversion to float32)")
    return arr


def _as_labels(arr: np.ndarray, n: int, where: str) -> np.ndarray:
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise SampleDataError(f"{where} has dtype {arr.dtype}; labels must be integers (class indices)")
    if arr.shape != (n,):
        raise SampleDataError(f"{where} has shape {arr.shape}; expected one label per sample, ({n},)")
    if n and int(arr.min()) < 0:
        raise SampleDataError(f"{where} has negative labels (min {int(arr.min())}); labels are class indices")
    return arr.astype(np.int64)


def _npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a .npy header, without reading the data."""
    with path.open("rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    return tuple(shape), dtype


def _load_npy(path: Path) -> np.ndarray:
    try:
        shape, dtype = _npy_header(path)
    except (ValueError, OSError, EOFError) as e:
        raise SampleDataError(f"cannot read {path}: {short(str(e))}") from None
    if dtype.hasobject:
        raise SampleDataError(f"cannot read {path}: it holds Python objects (pickled arrays are refused)")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise SampleDataError(f"cannot read {path}: {short(str(e))} (pickled arrays are refused)") from None


def _from_dir(directory: Path, shape: tuple[int, ...], max_bytes: int) -> Samples:
    files = sorted(p for p in directory.iterdir() if p.suffix == ".npy" and p.is_file())
    if not files:
        raise SampleDataError(f"no .npy files in {directory}")
    total = sum(p.stat().st_size for p in files)
    if total > max_bytes:
        raise SampleDataError(f"{directory} holds {total / 2**20:.0f} MiB of .npy files; the limit is "
                              f"{max_bytes / 2**20:.0f} MiB")
    parts = [_as_inputs(_load_npy(f), shape, f"{f}") for f in files]
    return Samples(np.concatenate(parts), None, str(directory), len(files))


def _from_npz(path: Path, shape: tuple[int, ...], max_bytes: int, labels: bool) -> Samples:
    try:
        with zipfile.ZipFile(path) as z:
            sizes = {i.filename: i.file_size for i in z.infolist()}
    except (zipfile.BadZipFile, OSError) as e:
        raise SampleDataError(f"cannot read {path}: not a .npz archive ({short(str(e))})") from None
    if "x.npy" not in sizes:
        found = ", ".join(sorted(n.removesuffix(".npy") for n in sizes)) or "nothing"
        raise SampleDataError(f"{path} has no array 'x' (found: {found}); save it with np.savez(PATH, x=..., y=...)")
    wanted = ["x.npy"] + (["y.npy"] if labels and "y.npy" in sizes else [])
    decoded = sum(sizes[n] for n in wanted)
    if decoded > max_bytes:
        raise SampleDataError(f"{path} decodes to {decoded / 2**20:.0f} MiB; the limit is {max_bytes / 2**20:.0f} MiB")
    try:
        with np.load(path, allow_pickle=False) as npz:
            x = npz["x"]
            y = npz["y"] if "y.npy" in wanted else None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise SampleDataError(f"cannot read {path}: {short(str(e))} (pickled arrays are refused)") from None
    x = _as_inputs(x, shape, f"{path} array 'x'")
    y = _as_labels(y, len(x), f"{path} array 'y'") if y is not None else None
    return Samples(x, y, str(path), 1)


def load_samples(path: Path, input_shape: Sequence[int], *, labels: bool = False,
                 max_bytes: int = MAX_BYTES) -> Samples:
    """Samples from a directory of .npy files (each C,H,W or N,C,H,W; sorted by name) or one .npz
    holding `x` (and, read only when `labels` is true, an optional `y`)."""
    shape = _sample_shape(input_shape)
    path = Path(path)
    if path.is_dir():
        return _from_dir(path, shape, max_bytes)
    if not path.exists():
        raise SampleDataError(f"{path} does not exist: not a directory of .npy files or a .npz file")
    if path.suffix != ".npz":
        raise SampleDataError(f"{path} is not a directory of .npy files or a .npz file")
    return _from_npz(path, shape, max_bytes, labels)


def random_samples(input_shape: Sequence[int], n: int = 8, seed: int = 0) -> Samples:
    """Seeded N(0,1) inputs: for latency-only work, never for accuracy (callers record that)."""
    shape = _sample_shape(input_shape)
    x = np.random.default_rng(seed).standard_normal((n, *shape), dtype=np.float32)
    return Samples(x, None, "random", 0)
