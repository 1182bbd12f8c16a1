"""Loaders: a `Target` in, the thing a runner runs out (Polygraphy's loader/runner split).

The one place that creates ONNX Runtime sessions — for the bench runner, the ONNX check of
an export, the peak-RSS child process and the latency planner — so every one of them runs
with the target's providers, provider options, threads, spinning and graph optimisation, and
every one refuses a silent fallback to the CPU. Also the TensorRT build options and the torch
runner settings a target implies.

This module imports neither torch nor onnxruntime at import time (the peak-RSS child imports
it next to onnxruntime alone); each engine is imported where it is used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from gsdeploy.errors import LoadError, MissingDependencyError
from gsdeploy.export.trt_rules.batches import BatchRange
from gsdeploy.export.trt_rules.options import TrtBuildOptions
from gsdeploy.target import CPU_PROVIDER, Target, make_target, usable_cpus


ORT_GRAPH_OPT = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "layout": "ORT_ENABLE_LAYOUT",
    "all": "ORT_ENABLE_ALL",
}
# ORT's log level 3 = errors only: its warnings about unused initializers and the like are
# not the user's to act on.
ORT_LOG_ERRORS_ONLY = 3


def import_ort():
    """Import onnxruntime, or say exactly which package to install."""
    try:
        import onnxruntime  # optional engine
    except ImportError as e:
        raise MissingDependencyError(
            "ONNX Runtime is not installed: `pip install onnxruntime` for CPU, or "
            "`pip install onnxruntime-gpu` for CUDA/TensorRT (install one, never both: they "
            f"provide the same module and overwrite each other) ({e})") from None
    return onnxruntime


def cpu_target(threads: int | None = None) -> Target:
    """ORT on the CPU with the default settings: what a numeric check runs on when no target is given."""
    return make_target("ort", threads=threads)


def ort_threads(target: Target) -> int:
    # ORT's own default (0) means "physical cores", which is not what we would record.
    # Setting the count we record makes the row true by construction.
    return int(target.threads) if target.threads is not None else usable_cpus()


def ort_session_options(target: Target):
    """The SessionOptions of `target`: threads, sequential execution, graph optimisation, spinning."""
    ort = import_ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = ort_threads(target)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_GRAPH_OPT[target.graph_optimization_level])
    # Idle sessions keep their intra-op threads spinning; whether they may changes the numbers
    # (see docs on interleaving), so it is an explicit setting of every session.
    flag = "1" if target.allow_spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", flag)
    so.add_session_config_entry("session.inter_op.allow_spinning", flag)
    so.log_severity_level = ORT_LOG_ERRORS_ONLY
    return so


def ort_session(model: str | os.PathLike | bytes, target: Target | None = None,
                tune: Callable[[Any], None] | None = None):
    """An `onnxruntime.InferenceSession` of `model` (a path or serialized bytes) configured
    by `target` (default: ORT CPU, all cores); `tune(session_options)` may add to the options
    first (e.g. ORT's profiler for the per-layer profile). Raises MissingDependencyError when a GPU
    provider the target asks for is not the one running (ORT falls back to the CPU silently;
    only `session.get_providers()` tells), LoadError when ORT cannot load the model."""
    ort = import_ort()
    target = target or cpu_target()
    if target.engine != "ort":
        raise ValueError(f"ort_session needs an ORT target, got engine {target.engine!r}")
    what = "the model" if isinstance(model, bytes) else str(model)
    if not isinstance(model, bytes) and not Path(model).is_file():
        raise LoadError(f"ONNX file not found: {model}")
    so = ort_session_options(target)
    if tune is not None:
        tune(so)
    available = ort.get_available_providers()
    try:
        session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), sess_options=so,
                                       providers=target.ort_providers())
    except Exception as e:  # ORT raises its own Fail/InvalidGraph/... types
        missing = [p for p in target.providers if p not in available]
        if missing:
            raise MissingDependencyError(_missing_provider_message(ort, missing, list(available))) from None
        raise LoadError(f"ONNX Runtime cannot load {what}: {e}") from None
    active = list(session.get_providers())
    missing = [p for p in target.providers if p != CPU_PROVIDER and p not in active]
    if missing:
        del session
        raise MissingDependencyError(_missing_provider_message(ort, missing, active, available))
    return session


def _missing_provider_message(ort, missing: list[str], active: list[str], available: list[str] | None = None) -> str:
    available = active if available is None else available
    if any(p not in available for p in missing):
        why = (f"this onnxruntime build ({ort.__version__}) only has {available}; "
               "install `onnxruntime-gpu` instead of `onnxruntime` (not both) and the "
               "CUDA/cuDNN (and TensorRT) libraries it needs")
    else:
        why = ("the provider is built in but failed to start (see ORT's log above: usually "
               "missing or mismatched CUDA/cuDNN/TensorRT libraries or no visible GPU)")
    return (f"asked for {', '.join(missing)}, ORT is running {', '.join(active)}: {why}. "
            "Refusing to report CPU timings as GPU timings.")


def trt_batch_range(target: Target, batch: int | None = None) -> "BatchRange":
    """The optimisation profile of a TensorRT engine for `target`: every batch of the target
    in one dynamic engine, or exactly `batch` (DLA engines are static: one per batch)."""
    if batch is not None:
        return BatchRange(batch, batch, batch)
    return BatchRange(min(target.batches), max(target.batches), max(target.batches))


def trt_build_options(target: Target, batch: int | None = None,
                      calib_data: Path | None = None) -> "TrtBuildOptions":
    """TensorRT build options for `target`: precision, batch range, workspace, DLA core and GPU
    fallback, timing cache, builder optimisation level. `batch` builds a static engine (DLA)."""
    if target.engine != "trt":
        raise ValueError(f"trt_build_options needs a TensorRT target, got engine {target.engine!r}")
    if target.dla_core is not None and batch is None and len(target.batches) > 1:
        raise ValueError("a DLA engine is static: pass the batch it is built for")
    extra: dict[str, Any] = {}
    if target.workspace_mb is not None:
        extra["workspace_mb"] = target.workspace_mb
    return TrtBuildOptions(precision=target.precision, batch=trt_batch_range(target, batch),
                           timing_cache=Path(target.timing_cache) if target.timing_cache else None,
                           dla_core=target.dla_core, gpu_fallback=target.gpu_fallback, calib_data=calib_data,
                           builder_optimization_level=target.builder_optimization_level, **extra)


def trt_engine_batches(target: Target) -> list[int | None]:
    """The engines a TensorRT target needs: one dynamic engine (None), or one static engine per
    batch when it runs on DLA (DLA has no dynamic shapes)."""
    return list(target.batches) if target.dla_core is not None else [None]


def torch_runner_kwargs(target: Target) -> dict[str, Any]:
    """Keyword arguments of `TorchRunner` for `target` (device, threads, CUDA graph, memory format)."""
    if target.engine != "torch":
        raise ValueError(f"torch_runner_kwargs needs a torch target, got engine {target.engine!r}")
    return {"device": target.torch_device, "threads": target.threads, "cuda_graph": target.cuda_graph,
            "channels_last": target.channels_last, "precision": target.precision}


def trt_export_settings(targets: "tuple[Target, ...] | list[Target]", **flags: Any) -> dict[str, Any]:
    """Settings of `gsdeploy export --engine trt|torch-trt`: the given flags (None = not given)
    over the profile's first TensorRT target, over the exporter's defaults. Keys: precision,
    batches, workspace_mb, timing_cache, dla_core, gpu_fallback, builder_optimization_level."""
    t = next((t for t in targets if t.engine == "trt"), None)
    profile: dict[str, Any] = {}
    if t is not None:
        profile = {"precision": t.precision, "batches": list(t.batches), "workspace_mb": t.workspace_mb,
                   "timing_cache": Path(t.timing_cache) if t.timing_cache else None, "dla_core": t.dla_core,
                   "gpu_fallback": t.gpu_fallback or None,
                   "builder_optimization_level": t.builder_optimization_level}
    defaults = {"precision": "fp16", "batches": None, "workspace_mb": 4096, "timing_cache": None, "dla_core": None,
                "gpu_fallback": False, "builder_optimization_level": None}
    out = {}
    for key, default in defaults.items():
        for source in (flags, profile):
            if source.get(key) is not None:
                out[key] = source[key]
                break
        else:
            out[key] = default
    return out
