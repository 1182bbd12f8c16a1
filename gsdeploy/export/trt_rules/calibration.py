"""int8 calibration data: real samples from `--calib-data DIR` (.npy) or, with a warning, random ones."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from gsdeploy.errors import TrtConfigError
from gsdeploy.export.trt_rules.batches import check_sample_shape

log = logging.getLogger(__name__)


RANDOM_CALIBRATION_WARNING = (
    "int8 calibration without --calib-data uses RANDOM inputs: the int8 scales, and so the "
    "engine's accuracy, are NOT representative of real data. Pass --calib-data DIR with .npy "
    "samples of real inputs for a usable int8 engine.")


def load_calibration_batches(directory: Path, input_shape: Sequence[int], batch: int) -> list[np.ndarray]:
    """Every .npy file in `directory` (sorted by name), as float32 batches of exactly `batch`.

    A file holds one sample (C,H,W) or a stack (N,C,H,W). Calibration feeds TensorRT buffers of
    the calibration profile's opt shape, so every batch has the same size and a remainder that
    does not fill one is dropped (logged). Files are read with allow_pickle=False: calibration
    data is user input and must never run code.
    """
    directory = Path(directory)
    shape = check_sample_shape(input_shape)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise TrtConfigError(f"calibration batch must be a positive integer, got {batch!r}")
    if not directory.is_dir():
        raise TrtConfigError(f"calibration data {directory} is not a directory")
    files = sorted(p for p in directory.iterdir() if p.suffix == ".npy" and p.is_file())
    if not files:
        raise TrtConfigError(f"no .npy files in calibration directory {directory}")
    samples: list[np.ndarray] = []
    for f in files:
        try:
            arr = np.load(f, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise TrtConfigError(f"cannot read calibration file {f}: {e} (pickled arrays are refused)") from None
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise TrtConfigError(f"calibration file {f} has dtype {arr.dtype}; expected a real numeric array")
        if arr.shape == shape:
            arr = arr[None]
        elif not (arr.ndim == len(shape) + 1 and arr.shape[1:] == shape and arr.shape[0] > 0):
            raise TrtConfigError(
                f"calibration file {f} has shape {arr.shape}; expected one sample {shape} or a stack "
                f"(N, {', '.join(map(str, shape))})")
        arr = arr.astype(np.float32, copy=False)
        if not np.all(np.isfinite(arr)):
            raise TrtConfigError(f"calibration file {f} contains NaN or infinite values")
        samples.append(arr)
    data = np.concatenate(samples)
    n = data.shape[0]
    if n < batch:
        raise TrtConfigError(f"calibration needs at least {batch} samples (one batch of the opt batch size); "
                             f"{directory} holds {n}")
    usable = n - n % batch
    if usable != n:
        log.warning("calibration uses %d of %d samples: the last %d do not fill a batch of %d",
                    usable, n, n - usable, batch)
    return [np.ascontiguousarray(data[i:i + batch]) for i in range(0, usable, batch)]


def random_calibration_batches(input_shape: Sequence[int], batch: int, n_batches: int = 8,
                               seed: int = 0) -> list[np.ndarray]:
    """Seeded N(0,1) batches, used only when no --calib-data is given (see RANDOM_CALIBRATION_WARNING)."""
    shape = check_sample_shape(input_shape)
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((batch, *shape), dtype=np.float32) for _ in range(n_batches)]
