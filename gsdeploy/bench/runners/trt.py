"""The TensorRT bench runner: a gsdeploy-built engine on an NVIDIA GPU.

It implements gsdeploy's Runner interface (`base.py`): prepare(batch) puts a fixed seeded input
on the device, run_once() is one synchronous inference on it, infer(x) is host-in/host-out for
numeric checks. On a GPU the interesting number is the device time, so:

- TrtRunner.time_once() times the engine with CUDA events recorded on the inference stream
  (GPU compute only, what trtexec calls "GPU Compute Time"), and time_end_to_end() reports the
  host->device copy, compute and device->host copy separately plus the host wall time of the
  whole, like trtexec's H2D / GPU Compute / D2H / Latency lines (docs/measuring.md). Copies use pinned
  host memory, as trtexec does, so the copy times are the hardware's and not pageable staging.

ONNX Runtime's TensorRT and CUDA providers run in the ORT runner (`ort.py`), configured by the
profile's target through `gsdeploy.loaders.ort_session`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gsdeploy.bench.runners.base import Runner
from gsdeploy.export.tensorrt import load_engine
from gsdeploy.inputs import seeded_input
from gsdeploy.errors import GsdeployError
from gsdeploy.export.trt_rules.batches import BatchRange


@dataclass(frozen=True)
class EndToEndTiming:
    """One inference including copies, in seconds. Device times come from CUDA events."""

    h2d_s: float
    compute_s: float
    d2h_s: float
    total_s: float  # host wall clock from before the H2D copy to the synchronised D2H copy

    @property
    def latency_s(self) -> float:
        """trtexec's definition of latency: H2D + compute + D2H."""
        return self.h2d_s + self.compute_s + self.d2h_s


class TrtRunner(Runner):
    """A gsdeploy-built TensorRT engine (OUT.engine + OUT.manifest.json)."""

    engine = "trt"
    provider = "tensorrt"

    def __init__(self, engine_path: Path, device: int = 0) -> None:
        self._torch = torch
        self.path = Path(engine_path)
        self.trt, manifest = load_engine(self.path, device)  # checks TensorRT version and GPU first
        self.manifest = manifest or {}
        self.precision = str(self.manifest.get("precision", "unknown"))
        self.device = self.trt.gpu_name
        # One host thread enqueues work; GPU parallelism is not a host-thread setting.
        self.threads = 1
        self.batch_range: BatchRange = self.trt.batch
        self._host_in: Any = None
        self._host_out: Any = None
        self._events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]

    def prepare(self, batch: int) -> None:
        torch = self._torch
        self.trt.bind(batch)
        x = seeded_input((batch, *self.trt.sample_shape))
        self._host_in = torch.from_numpy(x).to(self.trt.input.dtype).pin_memory()
        first = self.trt.outputs[self.trt.output_names[0]]
        self._host_out = torch.empty(first.shape, dtype=first.dtype).pin_memory()
        with torch.cuda.stream(self.trt.stream):
            self.trt.input.copy_(self._host_in, non_blocking=True)
        self.trt.stream.synchronize()

    def _require_prepared(self) -> None:
        if self._host_in is None:
            raise GsdeployError("TrtRunner: call prepare(batch) before running")

    def run_once(self) -> None:
        self._require_prepared()
        self.trt.execute()
        self.trt.stream.synchronize()

    def time_once(self) -> float:
        """GPU compute seconds of one inference, from CUDA events around execute_async_v3."""
        self._require_prepared()
        start, end = self._events[0], self._events[1]
        start.record(self.trt.stream)
        self.trt.execute()
        end.record(self.trt.stream)
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    def time_end_to_end(self) -> EndToEndTiming:
        """H2D copy, compute and D2H copy of one inference, each from CUDA events, plus host wall time."""
        self._require_prepared()
        torch = self._torch
        e0, e1, e2, e3 = self._events
        first = self.trt.outputs[self.trt.output_names[0]]
        t0 = time.perf_counter()
        with torch.cuda.stream(self.trt.stream):
            e0.record(self.trt.stream)
            self.trt.input.copy_(self._host_in, non_blocking=True)
            e1.record(self.trt.stream)
            self.trt.execute()
            e2.record(self.trt.stream)
            self._host_out.copy_(first, non_blocking=True)
            e3.record(self.trt.stream)
        e3.synchronize()
        total = time.perf_counter() - t0
        return EndToEndTiming(h2d_s=e0.elapsed_time(e1) / 1e3, compute_s=e1.elapsed_time(e2) / 1e3,
                              d2h_s=e2.elapsed_time(e3) / 1e3, total_s=total)

    def infer(self, x: np.ndarray) -> np.ndarray:
        out = self.trt.infer(x)[0]
        if self._host_in is not None and self.trt.bound_batch != self._host_in.shape[0]:
            self.prepare(int(self._host_in.shape[0]))  # infer rebound the engine to another batch
        return out

    def close(self) -> None:
        if getattr(self, "trt", None) is not None:
            self.trt.close()
            self.trt = None
        self._host_in = self._host_out = None

    def details(self) -> dict:
        """Engine facts beyond describe()'s row keys: TensorRT version, profile, build flags."""
        trt_meta = self.manifest.get("tensorrt", {})
        return {"tensorrt_version": trt_meta.get("version"), "profile": str(self.batch_range),
                "builder_flags": trt_meta.get("builder_flags"), "device_type": trt_meta.get("device")}
