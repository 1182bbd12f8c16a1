"""ONNX Runtime runner.

The session comes from `gsdeploy.loaders.ort_session`, the one place sessions are made:
it applies the target's providers, options, threads and spinning, and refuses a silent
fallback to the CPU. This file only feeds the session and records what ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable
import numpy as np

from gsdeploy.bench.env import cpu_name
from gsdeploy.bench.runners.base import Runner
from gsdeploy.inputs import seeded_input
from gsdeploy.errors import InputShapeError, LoadError
from gsdeploy.loaders import cpu_target, import_ort, ort_session, ort_threads
from gsdeploy.target import CPU_PROVIDER, Target

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
               "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8,
               "tensor(int8)": np.int8}
# Providers whose inputs and outputs are bound on the GPU while timing (see _bind_on_device).
IO_BINDING_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
_PRECISION = {np.float32: "fp32", np.float16: "fp16", np.float64: "fp64", np.int8: "int8", np.uint8: "int8"}


class OrtRunner(Runner):
    engine = "ort"

    def __init__(self, onnx_path: str | Path, target: Target | None = None,
                 input_shape: tuple[int, ...] | None = None, tune: Callable[[Any], None] | None = None) -> None:
        """`target` says how (providers and their options, threads, spinning, graph
        optimisation; default: ORT CPU on every core); the session comes from
        `gsdeploy.loaders.ort_session`. `input_shape` (one sample, no batch axis) is only
        needed when the ONNX input has symbolic dimensions other than the batch.
        `tune(session_options)` may add to the options before the session is made (the
        per-layer profile turns ORT's profiler on)."""
        target = target or cpu_target()
        self.target = target
        self.onnx_path = Path(onnx_path)
        self.requested_providers = list(target.providers)
        self.spinning = target.allow_spinning
        self.graph_opt = target.graph_optimization_level
        self.threads = ort_threads(target)
        self._sess = ort_session(self.onnx_path, target, tune=tune)
        active = list(self._sess.get_providers())
        self.active_providers = active
        self.provider = active[0]
        self.device = self._device_name(active[0])

        inputs = self._sess.get_inputs()
        if not inputs:
            raise LoadError(f"{self.onnx_path} has no inputs")
        self._inputs = [(i.name, list(i.shape), _ORT_DTYPES.get(i.type)) for i in inputs]
        for name, _, dtype in self._inputs:
            if dtype is None:
                raise InputShapeError(f"input '{name}' of {self.onnx_path} has unsupported type")
        self.input_name = self._inputs[0][0]
        # The target's precision where a provider computes in it (TensorRT EP with fp16);
        # otherwise the graph's own input type says what runs.
        self.precision = target.precision if target.precision != "fp32" else \
            _PRECISION.get(self._inputs[0][2], "fp32")
        self.input_shape = input_shape
        self._out_names = [o.name for o in self._sess.get_outputs()]
        self._feed: dict[str, np.ndarray] | None = None
        self._binding: Any = None
        self._on_device: dict[str, Any] | None = None
        self.batch: int | None = None

    @staticmethod
    def _device_name(provider: str) -> str:
        if provider == CPU_PROVIDER:
            return cpu_name()
        try:  # name the GPU when torch can see it; the provider alone otherwise
            import torch  # heavy: torch, only to name the GPU

            if torch.cuda.is_available():
                return torch.cuda.get_device_name(0)
        except Exception:
            pass
        return provider.removesuffix("ExecutionProvider")

    def _shape_for(self, dims: list, batch: int) -> tuple[int, ...]:
        shape: list[int] = []
        for axis, d in enumerate(dims):
            if axis == 0:
                if isinstance(d, int) and d > 0 and d != batch:
                    raise InputShapeError(
                        f"{self.onnx_path.name} was exported with a fixed batch of {d}; cannot run "
                        f"batch {batch} (export with a dynamic batch axis)")
                shape.append(batch)
            elif isinstance(d, int) and d > 0:
                shape.append(d)
            elif self.input_shape is not None and axis - 1 < len(self.input_shape):
                shape.append(int(self.input_shape[axis - 1]))
            else:
                raise InputShapeError(
                    f"input of {self.onnx_path.name} has a symbolic dimension {d!r} at axis {axis}; "
                    "pass input_shape")
        return tuple(shape)

    def prepare(self, batch: int) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self._feed = {name: seeded_input(self._shape_for(dims, batch), dtype)
                      for name, dims, dtype in self._inputs}
        self.batch = batch
        self._binding = self._on_device = None
        if self.provider in IO_BINDING_PROVIDERS:
            self._bind_on_device()
            self.run_once()  # the first run on a new shape may build or load an engine: keep it out of timing

    def _bind_on_device(self) -> None:
        """GPU providers: inputs and outputs stay on the GPU (IO binding), so run_once measures
        inference, not PCIe copies, as the TensorRT runner does. Run() synchronises the
        providers' streams before returning (ORT's default), so a run is complete when it returns."""
        ort = import_ort()
        options = self._sess.get_provider_options().get(self.provider, {})
        device_id = int(options.get("device_id", 0) or 0)
        self._on_device = {name: ort.OrtValue.ortvalue_from_numpy(x, "cuda", device_id)  # must outlive the binding
                           for name, x in self._feed.items()}
        binding = self._sess.io_binding()
        for name, value in self._on_device.items():
            binding.bind_ortvalue_input(name, value)
        for name in self._out_names:
            binding.bind_output(name, "cuda", device_id)
        self._binding = binding

    def run_once(self) -> None:
        if self._binding is not None:
            self._sess.run_with_iobinding(self._binding)
            return
        # Plain session.run with a pre-built feed: the input is already a contiguous host
        # array, so ORT wraps it without a copy; on CPU this is what an application does.
        self._sess.run(self._out_names, self._feed)

    def infer(self, x: np.ndarray) -> np.ndarray:
        dtype = self._inputs[0][2]
        out = self._sess.run(self._out_names[:1], {self.input_name: np.ascontiguousarray(x, dtype=dtype)})
        return out[0]

    def end_profiling(self) -> Path:
        """Stop ORT's profiler (turned on through `tune`) and return its JSON trace file."""
        return Path(self._sess.end_profiling())

    def close(self) -> None:
        # Dropping the session stops its thread pool, so it cannot spin against the next one.
        self._binding = self._on_device = None
        self._sess = None
        self._feed = None

    def describe(self) -> dict:
        return {**super().describe(), "spinning": self.spinning, "graph_opt": self.graph_opt,
                "onnx": str(self.onnx_path), "active_providers": self.active_providers,
                "provider_options": self._sess.get_provider_options() if self._sess is not None else None,
                "io_binding": self._binding is not None}
