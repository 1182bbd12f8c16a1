"""The one interface every backend implements (Polygraphy style).

A runner owns a loaded model on one engine and device and can (1) prepare a fixed input of
a given batch, (2) run one synchronous inference on it, (3) run inference on caller data for
numeric checks. The scheduler (`measure.py`) and the statistics (`stats.py`) only ever talk
to this interface, so a TensorRT or Jetson runner slots in without touching them.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class RunnerLike(Protocol):
    """What `measure_interleaved` needs; test doubles and out-of-tree runners may just match it."""

    engine: str
    provider: str
    precision: str
    device: str
    threads: int

    def prepare(self, batch: int) -> None: ...

    def run_once(self) -> None: ...

    def infer(self, x: np.ndarray) -> np.ndarray: ...

    def close(self) -> None: ...


class Runner(ABC):
    """Base class of gsdeploy's runners.

    Attributes (set by the subclass constructor, recorded in every result row):
      engine     "ort" | "torch" | "trt"
      provider   what actually executes: "CPUExecutionProvider", "cpu", "cuda", ...
      precision  what it computes in: "fp32", "fp16", "bf16" (torch on CUDA), "int8"
      device     human-readable device, e.g. the CPU model or GPU name
      threads    intra-op threads in effect (the effective default when not set)
    """

    engine: str
    provider: str
    precision: str = "fp32"
    device: str
    threads: int

    @abstractmethod
    def prepare(self, batch: int) -> None:
        """Allocate the fixed, seeded input for `batch` samples (on the runner's device)."""

    @abstractmethod
    def run_once(self) -> None:
        """One inference on the prepared input; returns only when the result is complete
        (on a GPU that means after synchronising the device)."""

    @abstractmethod
    def infer(self, x: np.ndarray) -> np.ndarray:
        """Inference on caller data, returning the first output as a host numpy array."""

    def time_once(self) -> float:
        """Seconds taken by one `run_once`.

        Host wall clock by default. A runner with a better clock (CUDA events, which exclude
        host-side jitter around the kernels) overrides this; the scheduler always calls it.
        """
        t0 = time.perf_counter()
        self.run_once()
        return time.perf_counter() - t0

    def close(self) -> None:
        """Release the session / device memory. Idempotent."""

    def describe(self) -> dict:
        """The settings that identify this runner in a result row."""
        return {"engine": self.engine, "provider": self.provider, "precision": self.precision,
                "device": self.device, "threads": self.threads}

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
