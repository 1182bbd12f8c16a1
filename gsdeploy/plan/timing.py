"""Time modules on a target: export, load with the target's runner, measure with the bench's scheduler.

No timing loop of its own: every number comes from `bench.measure.measure_interleaved` on
runners built from the Target, the same code `gsdeploy bench` reports with.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import importlib
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from gsdeploy.bench.env import cpu_isa, cpu_name
from gsdeploy.bench.measure import MeasureConfig, measure_interleaved
from gsdeploy.bench.sweep import Subject, make_runner
from gsdeploy.export.onnx import export_onnx
from gsdeploy.plan.cache import Timing
from gsdeploy.target import Target, usable_cpus
from gsdeploy.transforms.deployment import default_dtype

# Per-site timing: a site runs in tens of microseconds to a few milliseconds, and a model has
# tens of distinct sites, so each gets a short budget; the whole-model run that follows is
# what decides, so per-site noise can only propose, never ship, a slower model. The settle
# wait is what makes short turns honest: an ORT session's intra-op threads spin 30-70 ms
# after its last run (docs/measuring.md), and with a 30 ms cap the next candidate's turn
# shared the cores with them: batch-32 medians of one site swung 2x from run to run
# (CoV 80-230%). Waiting up to 150 ms made them repeat within about 10%.
SITE_CONFIG = MeasureConfig(warmup_s=0.02, min_iterations=20, min_duration_s=0.08, block=10, pause_s=0.005,
                            settle_max_s=0.15, block_max_s=0.08, block_min_s=0.04)
# Whole models: two short rounds, each with fresh sessions, rather than one long one. Two
# sessions of the same ONNX file read 3-5% apart within one run here, persistently (where the
# engine happened to place their buffers): more samples do not average that out, new sessions do.
MODEL_CONFIG = MeasureConfig(warmup_s=0.05, min_iterations=10, min_duration_s=0.25, settle_max_s=0.15)
MODEL_ROUNDS = 2

# TensorRT candidates are built into engines with the target's own build options (the bench's
# build_trt_engines) and timed by the bench's TensorRT runner: planned on the device, where
# TensorRT is installed (never here: it cannot be installed on this project's CPU machines).
PLANNABLE_ENGINES = ("ort", "torch", "trt")


def engine_version(target: Target) -> str:
    """The engine's name and version, or 'not installed' (a LUT may be read where it is missing)."""
    module = {"ort": "onnxruntime", "torch": "torch", "trt": "tensorrt"}.get(target.engine, target.engine)
    try:
        return f"{module} {importlib.import_module(module).__version__}"
    except ImportError:
        return f"{module} not installed"


def device_name(target: Target) -> str:
    if target.on_gpu and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)

    return cpu_name()


def fingerprint(target: Target) -> dict[str, Any]:
    """What changes a timing on this target, as short scalars (see plan/cache.py)."""
    return {"engine": target.engine, "engine_version": engine_version(target), "device": device_name(target),
            "isa": cpu_isa() or "unknown", "threads": int(target.threads or usable_cpus()),
            "threads_setting": target.threads, "precision": target.precision,
            "providers": ",".join(target.providers), "graph_opt": target.graph_optimization_level,
            "spinning": target.allow_spinning, "engine_options": engine_options(target)}


MAX_OPTIONS_CHARS = 120  # a fingerprint holds short strings (plan/cache.py); longer ones are hashed


def engine_options(target: Target) -> str:
    """The engine's own settings that change a timing, as one short string: ORT's provider
    options (a TensorRT EP in fp16 or fp32), torch's CUDA graph and memory format, TensorRT's
    DLA core, GPU fallback, workspace and builder level (a DLA engine is another target than the
    GPU of the same board: their timings must never be mixed)."""
    if target.engine == "ort":
        opts: dict[str, Any] = {"provider_options": [dict(o) for o in target.provider_options]}
    elif target.engine == "torch":
        opts = {"cuda_graph": target.cuda_graph, "channels_last": target.channels_last}
    else:
        opts = {"dla_core": target.dla_core, "gpu_fallback": target.gpu_fallback, "workspace_mb": target.workspace_mb,
                "builder_optimization_level": target.builder_optimization_level}
    text = json.dumps(opts, sort_keys=True, default=str, separators=(",", ":"))
    return text if len(text) <= MAX_OPTIONS_CHARS else "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def preferred_multiples(target: Target) -> tuple[int, ...]:
    """Widths the target's kernels like, best first. ORT and torch on the CPU block convs by the
    SIMD width (16 channels on AVX-512, 8 on AVX2, 4 on NEON) and take a slow path for input
    widths that are not a multiple of 8 (docs/measuring.md); GPU tensor cores want multiples
    of 8 in fp16/fp32 (tf32) and 32 in int8."""
    if target.on_gpu or target.engine == "trt":
        return (32, 16) if target.precision == "int8" else (8,)

    return {"avx512": (16, 8), "avx2": (8,), "neon": (4, 8)}.get(cpu_isa() or "", (8,))


def input_multiple(target: Target) -> int:
    """The multiple a conv's input width must be for the target's fast kernels, used to align widths
    that only a whole-model timing can judge (DeployOptions.align). ORT on the CPU moves a conv to its
    blocked NCHWc kernels only when the input width is a multiple of 4 (measured on ORT 1.32, AVX-512:
    BN -> ReLU -> 3x3 conv to 12 channels, 8 x 8, batch 32: 263 inputs 8.0 ms, 264 inputs 3.4 ms,
    270 8.2 ms, 272 4.6 ms; the optimized graph reorders to NCHWc for multiples of 4 only)."""
    if target.engine == "ort" and not target.on_gpu:
        return 4
    return min(preferred_multiples(target))


def _subject(target: Target, module: nn.Module, input_shape: tuple[int, ...], workdir: Path, name: str):
    """What the bench's runner factory takes: the module, its ONNX file for ORT and TensorRT
    targets, and the TensorRT engines built from that file the way `gsdeploy bench` builds them."""
    path, engines = None, {}
    if target.engine in ("ort", "trt"):
        path = workdir / f"{name}.onnx"
        export_onnx(module, input_shape, path)  # TorchScript first; torch.export where that fails
    if target.engine == "trt":
        from gsdeploy.model import LoadedModel
        from gsdeploy.pipeline import build_trt_engines  # the pipeline imports the plan stage

        engines = build_trt_engines(LoadedModel(module=module, input_shape=tuple(input_shape), name=name), path,
                                    workdir, name, (target,))
    return Subject(name=name, role="compressed", macs=None, params=None, max_rel_err=None, module=module,
                   onnx_path=path, weights_bytes=None, artifact_bytes=None, input_shape=tuple(input_shape),
                   trt_engines=engines)


def _float32():
    # deploy() works in float64 and may leave that as the default; the target runs float32
    return default_dtype(torch.float32)


@contextlib.contextmanager
def frozen_heap():
    """Collect once, then keep what is alive now out of every later collection until the outer
    frozen_heap ends (nested ones freeze what is new and leave the unfreezing to it).

    measure_interleaved collects garbage before each series so the collector cannot pause a
    timed run; with models and fx graphs in memory a full collection took 0.2 s, twelve times
    per plan. Around a whole plan it also spares the collections that deploys and exports set
    off (tens of full ones per cold plan, each walking torch's and onnx's objects): cyclic
    garbage made meanwhile waits for the end of the plan (refcounting still frees the rest).
    """
    outer = gc.get_freeze_count() == 0
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        if outer:
            gc.unfreeze()


def time_modules(target: Target, modules: Mapping[str, nn.Module], input_shape: tuple[int, ...],
                 batches: tuple[int, ...], cfg: MeasureConfig, rounds: int = 1) -> dict[str, dict[int, Timing]]:
    """Median and CoV of each module at each batch, interleaved in one run per batch; with
    `rounds` > 1 the runs repeat with fresh sessions and each module's median is the median of
    its rounds' medians (its CoV the median of theirs)."""
    per_round: dict[str, dict[int, list[Timing]]] = {n: {b: [] for b in batches} for n in modules}
    with _float32(), frozen_heap(), tempfile.TemporaryDirectory(prefix="gsdeploy-plan-") as tmp:
        subjects = {n: _subject(target, m.float().eval(), tuple(input_shape), Path(tmp), f"m{i}")
                    for i, (n, m) in enumerate(modules.items())}
        for _ in range(rounds):
            for b in batches:
                runners = {}
                try:
                    for n, s in subjects.items():
                        runners[n] = make_runner(s, target, b)
                    for n, st in measure_interleaved(runners, b, cfg).items():
                        per_round[n][b].append(Timing(st.median_ms, st.cov))
                finally:
                    for r in reversed(list(runners.values())):  # torch runners restore threads in reverse order
                        r.close()
    return {n: {b: Timing(statistics.median(t.median_ms for t in ts), statistics.median(t.cov for t in ts))
                for b, ts in bs.items()} for n, bs in per_round.items()}
