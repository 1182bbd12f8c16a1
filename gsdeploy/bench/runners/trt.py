"""Bench runners on NVIDIA GPUs: a TensorRT engine, and ONNX Runtime's TensorRT / CUDA providers.

Both implement gsdeploy's Runner interface (`base.py`): prepare(batch) puts a fixed seeded input
on the device, run_once() is one synchronous inference on it, infer(x) is host-in/host-out for
numeric checks. On a GPU the interesting number is the device time, so:

- TrtRunner.time_once() times the engine with CUDA events recorded on the inference stream
  (GPU compute only, what trtexec calls "GPU Compute Time"), and time_end_to_end() reports the
  host->device copy, compute and device->host copy separately plus the host wall time of the
  whole, like trtexec's H2D / GPU Compute / D2H / Latency lines (MEASURING.md). Copies use pinned
  host memory, as trtexec does, so the copy times are the hardware's and not pageable staging.
- OrtGpuRunner refuses to run on a provider other than the one asked for: ONNX Runtime falls
  back to the CPU silently when CUDA/TensorRT libraries are missing, and only
  session.get_providers() tells the truth (MEASURING.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gsdeploy.bench.runners.base import Runner
from gsdeploy.inputs import seeded_input
from gsdeploy.errors import GsdeployError, MissingDependencyError
from gsdeploy.export.trt_config import ORT_PROVIDER, BatchRange, ort_gpu_providers

ORT_GPU_MISSING = ("ONNX Runtime here has no {provider}: install onnxruntime-gpu on a CUDA machine (never together "
                   "with onnxruntime: both provide the same module; on Jetson use NVIDIA's onnxruntime-gpu wheel "
                   "for your JetPack){extra}")


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
        from gsdeploy.export.tensorrt import load_engine

        import torch

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


class OrtGpuRunner(Runner):
    """An ONNX model in ONNX Runtime on the TensorRT or CUDA execution provider.

    The TensorRT provider builds its own engine on the first session (minutes) and caches it in
    `cache_dir` with its timing cache; later sessions with the same options load it. Inputs and
    outputs stay on the GPU (IO binding), so run_once() measures inference, not PCIe copies;
    Run() synchronises the providers' streams before returning (ORT's default), so run_once() is
    complete when it returns.
    """

    engine = "ort"

    def __init__(self, onnx_path: Path, ep: str = "tensorrt", precision: str = "fp32",
                 batch: BatchRange | None = None, cache_dir: Path | None = None, workspace_mb: int = 4096,
                 dla_core: int | None = None, device_id: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependencyError(ORT_GPU_MISSING.format(provider="GPU provider", extra="")) from None
        self._ort = ort
        self.path = Path(onnx_path)
        wanted = ORT_PROVIDER.get(ep)
        if wanted is None:
            raise GsdeployError(f"ORT GPU provider must be one of {', '.join(ORT_PROVIDER)}, got {ep!r}")
        if wanted not in ort.get_available_providers():
            raise MissingDependencyError(ORT_GPU_MISSING.format(
                provider=wanted, extra=f"; this build has {', '.join(ort.get_available_providers())}"))
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        probe = ort.InferenceSession(str(self.path), sess_options=opts, providers=["CPUExecutionProvider"])
        inp = probe.get_inputs()[0]
        self._input_name = inp.name
        self._output_name = probe.get_outputs()[0].name
        if not all(isinstance(d, int) for d in inp.shape[1:]):
            raise GsdeployError(f"{self.path}: input {inp.name} has shape {inp.shape}; only the batch may be dynamic")
        self._sample_shape = tuple(int(d) for d in inp.shape[1:])
        del probe
        if cache_dir is not None:
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
        providers = ort_gpu_providers(ep, precision, self._input_name, self._sample_shape, batch=batch,
                                      cache_dir=cache_dir, workspace_mb=workspace_mb, dla_core=dla_core,
                                      device_id=device_id)
        self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        actual = self.session.get_providers()
        if not actual or actual[0] != wanted:
            raise MissingDependencyError(ORT_GPU_MISSING.format(
                provider=wanted, extra=f"; the session fell back to {', '.join(actual)} (missing CUDA/TensorRT "
                                       "libraries or an unsupported GPU)"))
        self.provider = wanted
        self.precision = precision
        self.provider_options = dict(providers)
        self.device = _gpu_name(device_id)
        self.threads = 1
        self._device_id = device_id
        self._binding: Any = None
        self._keep: Any = None

    def prepare(self, batch: int) -> None:
        ort = self._ort
        x = seeded_input((batch, *self._sample_shape))
        self._keep = ort.OrtValue.ortvalue_from_numpy(x, "cuda", self._device_id)  # must outlive the binding
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self._input_name, self._keep)
        binding.bind_output(self._output_name, "cuda", self._device_id)
        self._binding = binding
        self.run_once()  # the first run on a new shape may build or load an engine: keep it out of timing

    def run_once(self) -> None:
        if self._binding is None:
            raise GsdeployError("OrtGpuRunner: call prepare(batch) before running")
        self.session.run_with_iobinding(self._binding)

    def infer(self, x: np.ndarray) -> np.ndarray:
        out = self.session.run([self._output_name], {self._input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]
        return np.asarray(out)

    def close(self) -> None:
        self._binding = None
        self._keep = None
        self.session = None

    def details(self) -> dict:
        """The provider options in effect (engine cache, profile, fp16...), beyond describe()'s row keys."""
        return {"provider_options": self.provider_options.get(self.provider, {})}


def _gpu_name(device_id: int) -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(device_id)
    except Exception:  # noqa: BLE001 - a description only; never fail a run over it
        pass
    return f"CUDA device {device_id}"
