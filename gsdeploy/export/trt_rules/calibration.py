"""int8 calibration data: real samples from `--calib-data DIR|FILE.npz` or, with a warning, random ones."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from gsdeploy.errors import TrtConfigError
from gsdeploy.export.trt_rules.batches import check_sample_shape
from gsdeploy.sample_data import SampleDataError, load_samples, random_samples

log = logging.getLogger(__name__)


RANDOM_CALIBRATION_WARNING = (
    "int8 calibration without --calib-data uses RANDOM inputs: the int8 scales, and so the "
    "engine's accuracy, are NOT representative of real data. Pass --calib-data DIR with .npy "
    "samples of real inputs for a usable int8 engine.")


def load_calibration_batches(directory: Path, input_shape: Sequence[int], batch: int) -> list[np.ndarray]:
    """The samples of `directory` (.npy files, or one .npz with `x`; read and checked by
    `gsdeploy.sample_data`: no pickles, bounded size, shape, dtype, finite) as float32 batches
    of exactly `batch`.

    Calibration feeds TensorRT buffers of the calibration profile's opt shape, so every batch
    has the same size and a remainder that does not fill one is dropped (logged).
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise TrtConfigError(f"calibration batch must be a positive integer, got {batch!r}")
    try:
        data = load_samples(Path(directory), check_sample_shape(input_shape)).x
    except SampleDataError as e:
        raise TrtConfigError(f"calibration data: {e}") from None
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
    x = random_samples(check_sample_shape(input_shape), batch * n_batches, seed).x
    return [np.ascontiguousarray(x[i:i + batch]) for i in range(0, batch * n_batches, batch)]
