"""The stages glued for one user job: load -> deploy -> export -> bench -> tables."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rich.markup import escape
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
    memory: bool = False  # also measure peak RSS of ORT CPU sessions (child process, ~1.5 s each)
    resume: bool = False  # keep the rows of an existing <stem>.csv and skip the groups it has
    power: object | None = None  # profiles.PowerSpec: sample tegrastats (Jetson profiles)
    power_duration_s: float = 5.0  # the extra untimed pass per model and group inside the sampler
    per_layer: bool = False  # after timing, profile both models per layer in a separate run (bench/layers.py)
    per_layer_runs: int = 20


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


def _check_out_dir(out_dir: Path) -> None:
    """Fail before any timing if the tables cannot be written."""
    import os

    from gsdeploy.errors import OutputPathError

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputPathError(f"cannot create output directory {out_dir}: {e.strerror or e}") from None
    if not out_dir.is_dir() or not os.access(out_dir, os.W_OK):
        raise OutputPathError(f"output directory {out_dir} is not a writable directory")


def _variant_name(name: str, role: str, options) -> str:
    """Rows of one model deployed with non-default options must not merge with the default's in
    reports: the compressed model's name carries them (the dense baseline has nothing to fuse)."""
    if role != "compressed":
        return name
    tags = [f"fuse={options.fuse}"] if options.fuse != "flops" else []
    if options.prune_threshold is not None:
        tags.append(f"threshold={options.prune_threshold:g}")
    return f"{name}[{','.join(tags)}]" if tags else name


def _subject(loaded: LoadedModel, role: str, options, workdir: Path, need_onnx: bool,
             trt: tuple[str, list[int]] | None = None, plans: dict | None = None):
    from gsdeploy.bench.flops import count_macs, count_params, weight_bytes
    from gsdeploy.bench.sweep import Subject
    from gsdeploy.export.onnx import check_onnx, export_onnx
    from gsdeploy.transforms import deploy

    result = deploy(loaded.module, loaded.input_shape, options)
    if plans is not None:  # the plan goes into the results (report) and the per-layer join
        plans[role] = (result, options)
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
    return Subject(name=_variant_name(loaded.name, role, options), role=role,
                   macs=count_macs(result.module, loaded.input_shape),
                   params=count_params(result.module), max_rel_err=err, module=result.module, onnx_path=onnx_path,
                   weights_bytes=weight_bytes(result.module), artifact_bytes=artifact_bytes,
                   input_shape=tuple(loaded.input_shape), engine_path=engine_path)


def is_onnx(source: str | None) -> bool:
    return source is not None and source.lower().endswith(".onnx")


def _onnx_subject(source: str, role: str, input_shape: tuple[int, ...] | None):
    """An ONNX file benchmarked as is (ORT engines only): no deploy, no export. MACs are not
    counted (that needs the torch module), so flop_speedup stays NaN."""
    import onnx

    from gsdeploy.bench.memory import artifact_bytes
    from gsdeploy.bench.sweep import Subject, _onnx_input_shape

    path = Path(source)
    if not path.is_file():
        raise GsdeployError(f"ONNX file {path} does not exist")
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as e:  # noqa: BLE001 - onnx raises several types for a bad file
        raise GsdeployError(f"{path} is not a readable ONNX model: {e}") from None
    params = weights = 0
    for t in graph.initializer:
        n = 1
        for d in t.dims:
            n *= int(d)
        params += n
        weights += n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    shape = tuple(input_shape) if input_shape else _onnx_input_shape(path)
    return Subject(name=path.stem, role=role, macs=None, params=params, max_rel_err=None, module=None,
                   onnx_path=path, weights_bytes=weights, artifact_bytes=artifact_bytes(path), input_shape=shape)


def _resume_rows(csv_path: Path) -> pd.DataFrame | None:
    """Rows of an earlier run, in the current column schema, or None when there are none."""
    from gsdeploy.bench.table import COLUMNS

    if not csv_path.is_file() or csv_path.stat().st_size == 0:
        return None
    try:
        old = pd.read_csv(csv_path)
    except Exception as e:  # noqa: BLE001
        raise GsdeployError(f"--resume: cannot read {csv_path}: {e}") from None
    return old.reindex(columns=COLUMNS)


def _done_keys(old: pd.DataFrame | None) -> set[tuple]:
    if old is None or old.empty:
        return set()
    return {(str(m), str(e), str(p), int(b), str(pr))
            for m, e, p, b, pr in zip(old["model"], old["engine"], old["provider"], old["batch"], old["precision"])}


def noisy_rows(df: pd.DataFrame) -> list[str]:
    """One warning per row whose latency CoV is above NOISY_COV."""
    from gsdeploy.bench import stats

    lines = []
    for r in df.to_dict("records"):
        cov = pd.to_numeric(pd.Series([r.get("latency_cov")]), errors="coerce").iloc[0]
        if cov > stats.NOISY_COV:
            lines.append(f"warning: {r['model']} on {r['engine']} batch {r['batch']}: latency CoV {cov:.1%} > "
                         f"{stats.NOISY_COV:.1%} (noisy machine or unlocked clocks); repeat before trusting it")
    return lines


def run_bench_job(req: BenchRequest, options, warn=None) -> tuple[Table, list[Path]]:
    """Deploy, export and time; rows are appended to DIR/<stem>.csv as each (engine, batch)
    group finishes, so an interrupted sweep keeps what it measured. Without `req.resume` an
    existing <stem>.csv is replaced at the start; with it, its rows are kept and the groups it
    already has (both models, same engine, provider, batch, precision) are not timed again.
    `warn(line)` receives one line per noisy row measured now."""
    from gsdeploy.bench.measure import MeasureConfig
    from gsdeploy.bench.sweep import ENGINES, run_sweep
    from gsdeploy.bench.table import append_rows, write_results
    from gsdeploy.load import load_model, parse_input_shape

    shape = parse_input_shape(req.input_shape) if req.input_shape else None
    onnx_sides = [s for s in (req.model, req.baseline) if is_onnx(s)]
    if onnx_sides:
        bad = [e for e in req.engines if e not in ENGINES or ENGINES[e].family != "ort"]
        if bad:
            raise GsdeployError(f"{onnx_sides[0]} is an ONNX file, which only ORT engines run as is; engine(s) "
                                f"{', '.join(bad)} need a torch model (pass --engine ort, or the checkpoint)")
    if onnx_sides and req.per_layer:
        raise GsdeployError(f"--per-layer joins the profile to the deployment plan, which {onnx_sides[0]} (an ONNX "
                            "file benched as is) does not have: pass the checkpoint or zoo name")
    if is_onnx(req.model):
        comp_subject = _onnx_subject(req.model, "compressed", shape)
        loaded = None
        shape = shape or comp_subject.input_shape
        if req.baseline is None:
            raise GsdeployError(f"{req.model} is an ONNX file: pass its dense baseline with --baseline")
    else:
        loaded = load_model(req.model, arch=req.arch, trust=req.trust, input_shape=shape)
        comp_subject = None
        shape = tuple(loaded.input_shape)
    if is_onnx(req.baseline):
        base_subject, base = _onnx_subject(req.baseline, "baseline", shape), None
        base_shape = base_subject.input_shape
    else:
        if loaded is not None:
            base = resolve_baseline(loaded, req.baseline, req.baseline_arch, req.input_shape, req.trust)
        else:
            base = load_model(req.baseline, arch=req.baseline_arch, trust=req.trust, input_shape=shape)
        base_subject, base_shape = None, tuple(base.input_shape)
    if shape and base_shape and tuple(base_shape) != tuple(shape):
        raise GsdeployError(f"baseline input shape {tuple(base_shape)} differs from the model's {tuple(shape)}")
    name = loaded.name if loaded is not None else comp_subject.name
    base_name = base.name if base is not None else base_subject.name
    if name == base_name:
        raise GsdeployError(f"the model and its baseline are both named '{name}'; rename one file")
    _check_out_dir(req.out_dir)
    stem = req.name or f"bench_{name}"
    csv_path = req.out_dir / f"{stem}.csv"
    old = _resume_rows(csv_path) if req.resume else None
    if old is not None:
        write_results(old, req.out_dir, stem)  # the current schema, so appended rows match the header
    else:
        # side files of an earlier run of this stem go too: a report must not pair them with new rows
        for suffix in (".csv", ".md", ".plan.json", ".layers.csv", ".layers.md"):
            (req.out_dir / f"{stem}{suffix}").unlink(missing_ok=True)
    done = _done_keys(old)
    power_factory = None
    if req.power is not None:
        from gsdeploy.bench.tegrastats import TegrastatsSampler

        spec = req.power
        power_factory = lambda: TegrastatsSampler(spec.tegrastats_interval_ms, spec.module)  # noqa: E731
    cfg = MeasureConfig(warmup_s=req.warmup_s, min_iterations=req.min_iterations, min_duration_s=req.min_duration_s)
    with tempfile.TemporaryDirectory(prefix="gsdeploy-bench-") as tmp:
        trt = (req.precision, req.batches) if "trt" in req.engines else None
        need_onnx = trt is not None or any(e.startswith("ort") for e in req.engines)
        plans: dict = {}
        subjects = [base_subject or _subject(base, "baseline", options, Path(tmp), need_onnx, trt, plans),
                    comp_subject or _subject(loaded, "compressed", options, Path(tmp), need_onnx, trt, plans)]
        extra_files = _write_plan(plans, subjects[1].name, req, stem)
        df = run_sweep(subjects, req.engines, req.batches, cfg, threads=req.threads, command=req.command,
                       on_group=lambda g: append_rows(csv_path, g), memory=req.memory,
                       skip_group=(lambda keys: all(k in done for k in keys)) if done else None,
                       power_sampler_factory=power_factory, power_duration_s=req.power_duration_s)
        if req.per_layer:
            extra_files += _per_layer(subjects, plans, req, stem, warn)
    if warn is not None:
        for line in noisy_rows(df):
            warn(line)
    if old is not None and not old.empty:
        df = pd.concat([old, df], ignore_index=True) if not df.empty else old
    files = list(write_results(df, req.out_dir, stem)) + extra_files
    return render(df), files


def _write_plan(plans: dict, name: str, req: BenchRequest, stem: str) -> list[Path]:
    """DIR/<stem>.plan.json: the compressed model's deployment plan, for the report."""
    import json

    from gsdeploy.atomic import write_text_atomic
    from gsdeploy.bench.table import utc_now
    from gsdeploy.transforms.plan import plan_record

    if "compressed" not in plans:  # an ONNX file benched as is has no plan
        return []
    result, options = plans["compressed"]
    record = plan_record(result, name, options, command=req.command, timestamp=utc_now())
    path = req.out_dir / f"{stem}.plan.json"
    write_text_atomic(path, json.dumps(record, indent=1, default=str) + "\n")
    return [path]


def _per_layer(subjects: list, plans: dict, req: BenchRequest, stem: str, warn) -> list[Path]:
    """Profile both models layer by layer on each engine that has a profiler, in runs of their
    own after the timed ones (profilers slow inference down), and write DIR/<stem>.layers.{csv,md}."""
    from gsdeploy.atomic import write_text_atomic
    from gsdeploy.bench.layers import can_profile, decisions_of, layers_markdown, profile_pair
    from gsdeploy.bench.table import utc_now

    base, comp = subjects
    frames = []
    for engine in req.engines:
        if not can_profile(engine):
            if warn is not None:
                warn(f"warning: --per-layer: no per-layer profiler for engine {engine} (ORT engines and trt have one)")
            continue
        for batch in req.batches:
            frames.append(profile_pair(comp, base, decisions_of(plans["compressed"][0].plan),
                                       decisions_of(plans["baseline"][0].plan), engine, batch, threads=req.threads,
                                       runs=req.per_layer_runs))
    if not frames:
        return []
    df = pd.concat(frames, ignore_index=True).assign(command=req.command, timestamp=utc_now())
    csv_path, md_path = req.out_dir / f"{stem}.layers.csv", req.out_dir / f"{stem}.layers.md"
    write_text_atomic(csv_path, df.to_csv(index=False, lineterminator="\n"))
    write_text_atomic(md_path, layers_markdown(df))
    return [csv_path, md_path]


def render(df: pd.DataFrame) -> Table:
    t = Table("model", "role", "engine", "batch", "median ms", "p90 ms", "CoV", "thr/s", "speedup", "FLOP speedup",
              "efficiency", title="latency against the dense baseline")
    for _, r in df.iterrows():
        t.add_row(escape(str(r["model"])), str(r["role"]), str(r["engine"]), str(r["batch"]),
                  f"{r['latency_ms_median']:.3f}", f"{r['latency_ms_p90']:.3f}", f"{r['latency_cov']:.1%}",
                  f"{r['throughput_per_s']:.0f}", f"{r['speedup_vs_baseline']:.2f}x", f"{r['flop_speedup']:.2f}x",
                  f"{r['efficiency']:.2f}")
    return t
