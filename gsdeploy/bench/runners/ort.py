"""ONNX Runtime runner.

Two facts about ORT shape this file (see shared/MEASURING.md):
- Asking for a GPU provider that cannot start logs an error and silently runs on CPU;
  only `session.get_providers()` tells the truth, so it is checked and a mismatch is an error.
- Idle sessions keep their intra-op threads spinning; whether spinning is allowed changes
  the numbers, so it is an explicit, recorded setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from gsdeploy.bench.env import cpu_name, usable_cpus
from gsdeploy.bench.runners.base import Runner, seeded_input
from gsdeploy.errors import InputShapeError, LoadError, MissingDependencyError

CPU_PROVIDER = "CPUExecutionProvider"
# Providers that mean "run on the GPU": if one of these was asked for and is not active,
# the numbers would be CPU numbers under a GPU label.
GPU_PROVIDERS = {"CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider",
                 "MIGraphXExecutionProvider", "DmlExecutionProvider", "CoreMLExecutionProvider",
                 "OpenVINOExecutionProvider"}

GRAPH_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "layout": "ORT_ENABLE_LAYOUT",
    "all": "ORT_ENABLE_ALL",
}

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
               "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(uint8)": np.uint8,
               "tensor(int8)": np.int8}
_PRECISION = {np.float32: "fp32", np.float16: "fp16", np.float64: "fp64", np.int8: "int8", np.uint8: "int8"}


def import_ort():
    """Import onnxruntime, or say exactly which package to install."""
    try:
        import onnxruntime
    except ImportError as e:
        raise MissingDependencyError(
            "ONNX Runtime is not installed: `pip install onnxruntime` for CPU, or "
            "`pip install onnxruntime-gpu` for CUDA/TensorRT (install one, never both: they "
            f"provide the same module and overwrite each other) ({e})") from None
    return onnxruntime


def _provider_name(p: str | tuple[str, dict]) -> str:
    return p[0] if isinstance(p, tuple) else p


class OrtRunner(Runner):
    engine = "ort"

    def __init__(self, onnx_path: str | Path, providers: Sequence[str | tuple[str, dict]] = (CPU_PROVIDER,),
                 threads: int | None = None, spinning: bool = True, graph_opt: str = "all",
                 input_shape: tuple[int, ...] | None = None, tune: Callable[[Any], None] | None = None) -> None:
        """`input_shape` (one sample, no batch axis) is only needed when the ONNX input has
        symbolic dimensions other than the batch. `tune(session_options)` may add to the
        options before the session is made (the per-layer profile turns ORT's profiler on)."""
        ort = import_ort()
        self.onnx_path = Path(onnx_path)
        if not self.onnx_path.is_file():
            raise LoadError(f"ONNX file not found: {self.onnx_path}")
        if graph_opt not in GRAPH_OPT_LEVELS:
            raise ValueError(f"graph_opt must be one of {sorted(GRAPH_OPT_LEVELS)}, got {graph_opt!r}")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        requested = [_provider_name(p) for p in providers]
        self.requested_providers = requested
        self.spinning = spinning
        self.graph_opt = graph_opt

        so = ort.SessionOptions()
        # ORT's own default (0) means "physical cores", which is not what we would record.
        # Setting the count we record makes the row true by construction.
        self.threads = int(threads) if threads is not None else usable_cpus()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPT_LEVELS[graph_opt])
        flag = "1" if spinning else "0"
        so.add_session_config_entry("session.intra_op.allow_spinning", flag)
        so.add_session_config_entry("session.inter_op.allow_spinning", flag)
        if tune is not None:
            tune(so)

        available = ort.get_available_providers()
        try:
            self._sess = ort.InferenceSession(str(self.onnx_path), sess_options=so, providers=list(providers))
        except Exception as e:  # ORT raises its own Fail/InvalidGraph/... types
            raise LoadError(f"ONNX Runtime cannot load {self.onnx_path}: {e}") from None

        active = list(self._sess.get_providers())
        self.active_providers = active
        missing = [p for p in requested if p != CPU_PROVIDER and p not in active]
        if missing:
            self.close()
            if any(p not in available for p in missing):
                why = (f"this onnxruntime build ({ort.__version__}) only has {available}; "
                       "install `onnxruntime-gpu` instead of `onnxruntime` (not both) and the "
                       "CUDA/cuDNN (and TensorRT) libraries it needs")
            else:
                why = ("the provider is built in but failed to start (see ORT's log above: usually "
                       "missing or mismatched CUDA/cuDNN/TensorRT libraries or no visible GPU)")
            raise MissingDependencyError(
                f"asked for {', '.join(missing)}, ORT is running {', '.join(active)}: {why}. "
                "Refusing to report CPU timings as GPU timings.")
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
        self.precision = _PRECISION.get(self._inputs[0][2], "fp32")
        self.input_shape = input_shape
        self._out_names = [o.name for o in self._sess.get_outputs()]
        self._feed: dict[str, np.ndarray] | None = None
        self.batch: int | None = None

    @staticmethod
    def _device_name(provider: str) -> str:
        if provider == CPU_PROVIDER:
            return cpu_name()
        try:  # name the GPU when torch can see it; the provider alone otherwise
            import torch

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

    def run_once(self) -> None:
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
        self._sess = None
        self._feed = None

    def describe(self) -> dict:
        return {**super().describe(), "spinning": self.spinning, "graph_opt": self.graph_opt,
                "onnx": str(self.onnx_path), "active_providers": self.active_providers}
