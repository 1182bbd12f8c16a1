"""Batch ranges: the `--batch` / `--min-batch` flags -> one TensorRT optimisation profile and the
batches a built engine is checked at."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from gsdeploy.errors import TrtConfigError
from gsdeploy.limits import parse_batches


@dataclass(frozen=True)
class BatchRange:
    """One optimisation profile's batch dimension: TensorRT tunes kernels for `opt` and accepts
    any batch in [min, max] at run time."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        for name in ("min", "opt", "max"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TrtConfigError(f"batch {name} must be an integer, got {v!r}")
            if v < 1:
                raise TrtConfigError(f"batch {name} must be at least 1, got {v}")
        if not self.min <= self.opt <= self.max:
            raise TrtConfigError(
                f"batch range must satisfy min <= opt <= max, got min={self.min} opt={self.opt} max={self.max}")

    @property
    def static(self) -> bool:
        return self.min == self.max

    def contains(self, batch: int) -> bool:
        return self.min <= batch <= self.max

    def __str__(self) -> str:
        return str(self.min) if self.static else f"{self.min}..{self.max} (opt {self.opt})"


def batch_range(batches: Sequence[int] | None, min_batch: int | None = None, opt_batch: int | None = None,
                max_batch: int | None = None) -> BatchRange:
    """The profile for `--batch 1,8,32` or `--min-batch/--opt-batch/--max-batch`.

    A list covers [smallest, largest] and is tuned at its median element (1,8,32 -> opt 8): one
    profile cannot be optimal at every batch, and the median is the least-bad single choice;
    pass --opt-batch (or build one engine per batch) to tune for a particular one. A single
    batch gives a static profile (min = opt = max), which is also what DLA requires.
    With the three flags, a missing min is 1, a missing max is opt (or min), a missing opt is max.
    Nothing given: a static batch of 1 (the latency case, MLPerf's SingleStream).
    """
    explicit = (min_batch, opt_batch, max_batch)
    if batches is not None and any(v is not None for v in explicit):
        raise TrtConfigError("give either --batch or --min-batch/--opt-batch/--max-batch, not both")
    if batches is not None:
        values = list(batches)
        if not values:
            raise TrtConfigError("--batch needs at least one batch size")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise TrtConfigError(f"batch sizes must be positive integers, got {v!r}")
        uniq = sorted(set(int(v) for v in values))
        return BatchRange(uniq[0], uniq[(len(uniq) - 1) // 2], uniq[-1])
    if all(v is None for v in explicit):
        return BatchRange(1, 1, 1)
    lo = 1 if min_batch is None else min_batch
    hi = max_batch if max_batch is not None else (opt_batch if opt_batch is not None else lo)
    opt = opt_batch if opt_batch is not None else hi
    return BatchRange(lo, opt, hi)


def parse_batch_list(text: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32], for the CLI's --batch option (checked as every --batch is)."""
    return list(parse_batches(text, error=TrtConfigError))


def check_sample_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 for d in shape):
        raise TrtConfigError(f"input shape must be positive integers without the batch axis, got {shape}")
    return tuple(int(d) for d in shape)


Shape = tuple[int, ...]


def profile_shapes(input_shape: Sequence[int], r: BatchRange) -> tuple[Shape, Shape, Shape]:
    """(min, opt, max) full shapes for IOptimizationProfile.set_shape; `input_shape` is one
    sample without the batch axis (the project's convention, e.g. (3, 32, 32))."""
    s = check_sample_shape(input_shape)
    return (r.min, *s), (r.opt, *s), (r.max, *s)


def verification_batches(r: BatchRange) -> list[int]:
    """Batches the built engine is checked at: both ends of the profile and the tuned one, since
    TensorRT may pick different kernels across the range."""
    return sorted({r.min, r.opt, r.max})
