"""Latency statistics of one series of timed runs.

Pure arithmetic on a list of durations: nothing here knows which engine or device produced
them, so every runner (ORT, torch, TensorRT) is summarised the same way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from gsdeploy.target import DEFAULT_MAX_COV as NOISY_COV  # one home for the CoV limit


@dataclass(frozen=True)
class TimingStats:
    """Summary of `n` timed runs. Times in milliseconds except `total_s` (summed run time)."""

    n: int
    total_s: float
    median_ms: float
    mean_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    std_ms: float
    cov: float  # std / mean, dimensionless

    @property
    def noisy(self) -> bool:
        return self.cov > NOISY_COV

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(samples_s: Sequence[float]) -> TimingStats:
    """Summarise durations given in seconds.

    Percentiles use numpy's default linear interpolation between order statistics (the
    same estimator as ORT's perf_test and most notebooks, so numbers are comparable). The
    standard deviation is the population one (ddof=0), as trtexec computes its CoV; for the
    50+ samples a measurement takes the difference to ddof=1 is under 1 %.
    """
    a = np.asarray(samples_s, dtype=np.float64).ravel()
    if a.size == 0:
        raise ValueError("cannot summarise an empty series of timings")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError("timings must be finite and non-negative")
    ms = a * 1e3
    p50, p90, p95, p99 = np.percentile(ms, [50, 90, 95, 99], method="linear")
    mean = float(ms.mean())
    std = float(ms.std(ddof=0))
    return TimingStats(
        n=int(a.size),
        total_s=float(a.sum()),
        median_ms=float(p50),
        mean_ms=mean,
        p90_ms=float(p90),
        p95_ms=float(p95),
        p99_ms=float(p99),
        min_ms=float(ms.min()),
        max_ms=float(ms.max()),
        std_ms=std,
        # A series of zero-length runs (only possible with a coarse clock) has no spread to
        # speak of; report 0 rather than dividing by zero.
        cov=std / mean if mean > 0 else (0.0 if std == 0 else math.inf),
    )
