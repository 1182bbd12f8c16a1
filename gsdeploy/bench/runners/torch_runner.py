"""PyTorch eager runner (CPU or CUDA), optionally replaying a CUDA graph.

On CUDA, kernels are launched asynchronously: a host timer around a forward pass measures
launch time, not inference (the classic "pruned model is not faster" mistake, nni#5008).
So `run_once` synchronises, and `time_once` uses CUDA events on the current stream.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn

from gsdeploy.bench.env import cpu_name
from gsdeploy.bench.runners.base import Runner
from gsdeploy.inputs import seeded_input
from gsdeploy.errors import InputShapeError, MissingDependencyError

# Eager iterations before a CUDA graph is captured: the first calls pick cuDNN algorithms
# and allocate workspaces, which must not happen inside the capture.
_PRE_CAPTURE_RUNS = 3


def _infer_input_shape(module: nn.Module) -> tuple[int, ...] | None:
    """Per-sample input shape if the module declares one (zoo/loader convention)."""
    shape = getattr(module, "input_shape", None)
    return tuple(shape) if shape else None


_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchRunner(Runner):
    engine = "torch"

    def __init__(self, module: nn.Module, device: str = "cpu", threads: int | None = None,
                 cuda_graph: bool = False, input_shape: tuple[int, ...] | None = None,
                 channels_last: bool = False, precision: str = "fp32") -> None:
        """`input_shape` is one sample without the batch axis, e.g. (3, 32, 32).
        `precision` fp16/bf16 (GPU only) runs a copy of the module and the input in that dtype.
        `channels_last` runs module and input in NHWC memory format (often faster for convs
        on GPUs and with oneDNN); the module is then a copy, like on the GPU."""
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise MissingDependencyError(
                f"asked for torch on {device}, but torch {torch.__version__} sees no CUDA device "
                f"(CUDA build: {torch.version.cuda or 'none'}); install a CUDA build of torch on a GPU machine")
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"unsupported torch device {device!r} (cpu or cuda)")
        if cuda_graph and dev.type != "cuda":
            raise ValueError("cuda_graph=True needs a CUDA device")
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if precision not in _DTYPES or (precision != "fp32" and dev.type != "cuda"):
            raise ValueError(f"precision must be fp32, or fp16/bf16 on a CUDA device; got {precision} on {device}")
        self.torch_device = dev
        self.provider = dev.type
        self.precision = precision
        self.cuda_graph = cuda_graph
        self.channels_last = channels_last
        self.input_shape = tuple(input_shape) if input_shape else _infer_input_shape(module)
        # torch's intra-op pool is process-wide: remember the setting to restore it on close
        # (several TorchRunners must therefore be closed in reverse order of creation).
        self._prev_threads = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(int(threads))
        self.threads = torch.get_num_threads()
        # A copy on the GPU: moving the caller's module in place would surprise the stages
        # that run after the benchmark (export, verify) on CPU.
        copied = dev.type != "cpu" or channels_last
        self.module = (copy.deepcopy(module).to(dev, _DTYPES[precision]) if copied else module).eval()
        if channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.device = torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_name()
        self._x: torch.Tensor | None = None
        self._graph = None
        self._events = None
        self._closed = False

    # -- preparation --------------------------------------------------------------------
    def prepare(self, batch: int) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        if self.input_shape is None:
            raise InputShapeError("TorchRunner needs input_shape (one sample, e.g. (3, 32, 32))")
        x = seeded_input((batch, *self.input_shape))
        self._x = torch.from_numpy(x).to(self.torch_device, _DTYPES[self.precision])
        if self.channels_last and self._x.dim() == 4:
            self._x = self._x.contiguous(memory_format=torch.channels_last)
        self._graph = None
        if self.torch_device.type == "cuda":
            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
            if self.cuda_graph:
                self._capture()
        self.batch = batch

    def _capture(self) -> None:
        """Record one forward pass into a CUDA graph (the documented torch.cuda.graph recipe):
        warm up on a side stream, then capture with static input/output tensors."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(_PRE_CAPTURE_RUNS):
                self.module(self._x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            self._static_out = self.module(self._x)  # keeps the graph's output buffer alive
        torch.cuda.synchronize()
        self._graph = graph

    # -- running ------------------------------------------------------------------------
    def _launch(self) -> None:
        if self._graph is not None:
            self._graph.replay()
        else:
            with torch.inference_mode():
                self.module(self._x)

    def run_once(self) -> None:
        self._launch()
        if self.torch_device.type == "cuda":
            torch.cuda.synchronize(self.torch_device)

    def time_once(self) -> float:
        if self.torch_device.type != "cuda":
            return super().time_once()  # host clock around run_once
        # Device time between two events on the current stream: what the GPU spent on the
        # forward pass (including gaps where it waited for the host to launch kernels).
        start, end = self._events
        start.record()
        self._launch()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    def infer(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self.module(torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32), device=self.torch_device)
                              .to(_DTYPES[self.precision]))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.detach().float().cpu().numpy()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._graph = None
        self._static_out = None
        self._x = None
        self._events = None
        torch.set_num_threads(self._prev_threads)
        if self.torch_device.type == "cuda":
            torch.cuda.empty_cache()

    def describe(self) -> dict:
        return {**super().describe(), "cuda_graph": self.cuda_graph, "channels_last": self.channels_last}
