"""The stages glued for one user job: load -> deploy -> export -> bench -> tables."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.table import Table

from gsdeploy.errors import GsdeployError, NumericMismatchError
from gsdeploy.model import LoadedModel


@dataclass
class BenchRequest:
    model: str
    arch: str | None
    baseline: str | None
    baseline_arch: str | None
    engines: list[str]
    batches: list[int]
    out_dir: Path
    input_shape: str | None
    fuse: str
    prune_threshold: float | None
    trust: bool
    threads: int | None
    warmup_s: float
    min_iterations: int
    min_duration_s: float
    name: str | None
    command: str
    precision: str = "fp16"  # TensorRT engines only; ORT and torch run the fp32 graph
    profile: str | None = None


def resolve_baseline(loaded: LoadedModel, baseline: str | None, baseline_arch: str | None,
                     input_shape: str | None, trust: bool) -> LoadedModel:
    """The dense model to compare against: given explicitly, known from the zoo, or the zoo model of
    the official dense arch (its weights are random, which does not change latency)."""
    from gsdeploy.load import load_model, parse_input_shape
    from gsdeploy.zoo.registry import _REGISTRY as ZOO

    shape = parse_input_shape(input_shape) if input_shape else loaded.input_shape
    if baseline is not None:
        return load_model(baseline, arch=baseline_arch, trust=trust, input_shape=shape)
    name = loaded.baseline or loaded.notes.get("baseline_arch")
    if name and name in ZOO:
        base = load_model(name, input_shape=shape)
        base.notes["baseline_weights"] = "zoo (random) weights; latency does not depend on weight values"
        return base
    raise GsdeployError(f"no known dense baseline for {loaded.name}; pass --baseline MODEL [--baseline-arch ARCH]")


def _trt_engine(loaded: LoadedModel, onnx_path: Path, workdir: Path, role: str, precision: str,
                batches: list[int]) -> Path:
    """Build a TensorRT engine for the batch range from the verified ONNX (checked against the
    original module at the precision's tolerance by export_trt)."""
    from gsdeploy.export.tensorrt import export_trt
    from gsdeploy.export.trt_config import BatchRange, TrtBuildOptions

    path = workdir / f"{role}.engine"
    opts = TrtBuildOptions(precision=precision, batch=BatchRange(min(batches), max(batches), max(batches)))
    export_trt(loaded.module, onnx_path, loaded.input_shape, opts, path, {"source": loaded.name})
    return path


def _subject(loaded: LoadedModel, role: str, options, workdir: Path, need_onnx: bool,
             trt: tuple[str, list[int]] | None = None):
    from gsdeploy.bench.flops import count_macs, count_params, weight_bytes
    from gsdeploy.bench.sweep import Subject
    from gsdeploy.export.onnx import check_onnx, export_onnx
    from gsdeploy.transforms import deploy

    result = deploy(loaded.module, loaded.input_shape, options)
    onnx_path, artifact_bytes, err = None, None, result.verification.max_rel_err
    if need_onnx:
        onnx_path = workdir / f"{role}.onnx"
        export_onnx(result.module, loaded.input_shape, onnx_path)
        check = check_onnx(onnx_path, loaded.module, loaded.input_shape).verification
        if not check.passed:
            raise NumericMismatchError(f"{loaded.name}: ONNX model differs from the original by max rel "
                                       f"{check.max_rel_err:.3e} (tolerance {check.tolerance:.0e})")
        artifact_bytes = onnx_path.stat().st_size
        err = max(err, check.max_rel_err)
    engine_path = _trt_engine(loaded, onnx_path, workdir, role, *trt) if trt and onnx_path else None
    return Subject(name=loaded.name, role=role, macs=count_macs(result.module, loaded.input_shape),
                   params=count_params(result.module), max_rel_err=err, module=result.module, onnx_path=onnx_path,
                   weights_bytes=weight_bytes(result.module), artifact_bytes=artifact_bytes,
                   input_shape=tuple(loaded.input_shape), engine_path=engine_path)


def run_bench_job(req: BenchRequest, options) -> tuple[Table, list[Path]]:
    from gsdeploy.bench.measure import MeasureConfig
    from gsdeploy.bench.sweep import run_sweep
    from gsdeploy.bench.table import write_results
    from gsdeploy.load import load_model, parse_input_shape

    shape = parse_input_shape(req.input_shape) if req.input_shape else None
    loaded = load_model(req.model, arch=req.arch, trust=req.trust, input_shape=shape)
    base = resolve_baseline(loaded, req.baseline, req.baseline_arch, req.input_shape, req.trust)
    if tuple(base.input_shape) != tuple(loaded.input_shape):
        raise GsdeployError(f"baseline input shape {base.input_shape} differs from the model's {loaded.input_shape}")
    req.out_dir.mkdir(parents=True, exist_ok=True)
    cfg = MeasureConfig(warmup_s=req.warmup_s, min_iterations=req.min_iterations, min_duration_s=req.min_duration_s)
    with tempfile.TemporaryDirectory(prefix="gsdeploy-bench-") as tmp:
        trt = (req.precision, req.batches) if "trt" in req.engines else None
        need_onnx = trt is not None or any(e.startswith("ort") for e in req.engines)
        subjects = [_subject(base, "baseline", options, Path(tmp), need_onnx, trt),
                    _subject(loaded, "compressed", options, Path(tmp), need_onnx, trt)]
        df = run_sweep(subjects, req.engines, req.batches, cfg, threads=req.threads, command=req.command)
    stem = req.name or f"bench_{loaded.name}"
    files = list(write_results(df, req.out_dir, stem))
    return render(df), files


def render(df: pd.DataFrame) -> Table:
    t = Table("model", "role", "engine", "batch", "median ms", "p90 ms", "CoV", "thr/s", "speedup", "FLOP speedup",
              "efficiency", title="latency against the dense baseline")
    for _, r in df.iterrows():
        t.add_row(str(r["model"]), str(r["role"]), str(r["engine"]), str(r["batch"]),
                  f"{r['latency_ms_median']:.3f}", f"{r['latency_ms_p90']:.3f}", f"{r['latency_cov']:.1%}",
                  f"{r['throughput_per_s']:.0f}", f"{r['speedup_vs_baseline']:.2f}x", f"{r['flop_speedup']:.2f}x",
                  f"{r['efficiency']:.2f}")
    return t
