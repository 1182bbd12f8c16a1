"""Latency decides where FLOPs cannot: time a factorized pair against its fused conv on the target.

A pair that saves MACs can still be slower than one dense conv (each node costs a fixed
overhead, thin or grouped convs run far below peak, ORT pads channels to its block size), so
`--fuse latency` measures both forms of each distinct site in ONNX Runtime on this machine at
batch 1 and keeps the faster. Identical sites (same shapes and config) are timed once.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from gsdeploy.atomic import scratch_dir
from gsdeploy.loaders import cpu_target, import_ort, ort_session
from gsdeploy.target import Target

ROUNDS, RUNS_PER_ROUND, WARMUP_RUNS = 5, 40, 20


@dataclass(frozen=True)
class PairTiming:
    pair_us: float
    fused_us: float
    runtime: str

    @property
    def fuse(self) -> bool:
        return self.fused_us < self.pair_us

    def reason(self) -> str:
        return (f"by latency ({self.runtime}, batch 1): pair {self.pair_us:.1f} us vs fused "
                f"{self.fused_us:.1f} us")


def _config(conv: nn.Conv2d) -> tuple:
    return (conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
            conv.groups, conv.bias is not None)


@contextlib.contextmanager
def _float32_default():
    # deploy() folds in float64; timing must run the float32 graph users deploy
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)


class PairTimer:
    """Times pair vs fused conv per distinct site on `target` (default: ORT CPU, every core);
    one instance per deploy() call. ORT sessions come from gsdeploy.loaders, so they run with
    the target's providers, threads, spinning and optimisation level."""

    def __init__(self, target: Target | None = None) -> None:
        self._cache: dict[tuple, PairTiming] = {}
        self.target = target or cpu_target()

    def time(self, a: nn.Conv2d, b: nn.Conv2d, fused: nn.Conv2d, in_shape: tuple[int, ...]) -> PairTiming:
        key = (_config(a), _config(b), tuple(in_shape[1:]))
        if key not in self._cache:
            with _float32_default():
                self._cache[key] = self._measure(a, b, fused, tuple(in_shape[1:]))
        return self._cache[key]

    def _measure(self, a: nn.Conv2d, b: nn.Conv2d, fused: nn.Conv2d, sample: tuple[int, ...]) -> PairTiming:
        pair = nn.Sequential(copy.deepcopy(a), copy.deepcopy(b)).float().eval()
        single = copy.deepcopy(fused).float().eval()
        x = torch.randn((1, *sample), dtype=torch.float32)
        if self.target.engine != "ort" or importlib.util.find_spec("onnxruntime") is None:
            return self._measure_torch(pair, single, x)
        return self._measure_ort(pair, single, x)

    def _measure_ort(self, pair: nn.Module, single: nn.Module, x: torch.Tensor) -> PairTiming:
        ort = import_ort()
        sessions = []
        with scratch_dir("latency") as tmp:
            for i, m in enumerate((pair, single)):
                path = Path(tmp) / f"{i}.onnx"
                with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(m, (x,), str(path), dynamo=False, opset_version=17,
                                      input_names=["input"], output_names=["output"])
                sessions.append(ort_session(path, self.target))
        feed = {"input": x.numpy()}
        runs = [lambda s=s: s.run(None, feed) for s in sessions]
        pair_us, fused_us = _interleaved_medians(runs)
        return PairTiming(pair_us, fused_us, f"onnxruntime {ort.__version__} {self.target.label}")

    def _measure_torch(self, pair: nn.Module, single: nn.Module, x: torch.Tensor) -> PairTiming:
        def run(m: nn.Module):
            def f():
                with torch.inference_mode():
                    m(x)
            return f

        pair_us, fused_us = _interleaved_medians([run(pair), run(single)])
        return PairTiming(pair_us, fused_us, f"torch {torch.__version__} CPU")


def _interleaved_medians(runs) -> tuple[float, float]:
    """Median time in microseconds of each callable, alternating in blocks so both see the same
    machine state (see docs/measuring.md on interleaving)."""
    samples: list[list[float]] = [[] for _ in runs]
    for f in runs:
        for _ in range(WARMUP_RUNS):
            f()
    for _ in range(ROUNDS):
        for i, f in enumerate(runs):
            f()  # untimed: wakes the runtime's threads after the other one ran
            for _ in range(RUNS_PER_ROUND):
                t = time.perf_counter()
                f()
                samples[i].append(time.perf_counter() - t)
    return tuple(float(np.median(s)) * 1e6 for s in samples)  # type: ignore[return-value]
