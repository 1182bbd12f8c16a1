"""The stages glued for one user job: load -> deploy -> export -> bench -> tables."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

import onnx
import pandas as pd

from gsdeploy import zoo
from gsdeploy.atomic import check_out_dir, files_in, scratch_dir, write_text_atomic
from gsdeploy.bench import stats
from gsdeploy.bench.layers import can_profile, decisions_of, layers_markdown, profile_pair
from gsdeploy.bench.memory import artifact_bytes
from gsdeploy.bench.precision import add_accuracy, bench_scheme, reduced_subjects
from gsdeploy.bench.results_file import ResultsFile, check_stem, default_stem
from gsdeploy.bench.rows import utc_now
from gsdeploy.bench.sweep import Subject, onnx_input_shape, run_sweep
from gsdeploy.bench.tegrastats import TegrastatsSampler
from gsdeploy.errors import GsdeployError, NumericMismatchError
from gsdeploy.export.onnx import check_onnx, export_onnx
from gsdeploy.export.tensorrt import export_trt
from gsdeploy.limits import MAX_BATCH_ELEMENTS
from gsdeploy.load import load_model
from gsdeploy.loaders import trt_build_options, trt_engine_batches
from gsdeploy.metrics import count_macs, count_params, weight_bytes
from gsdeploy.model import LoadedModel
from gsdeploy.plan.stage import PlanOutcome, load_lut, make_plan
from gsdeploy.report.claims import claim_target
from gsdeploy.sample_data import load_samples, random_samples
from gsdeploy.target import Target, require_available
from gsdeploy.transforms import DeployOptions, DeployResult, deploy
from gsdeploy.transforms.decisions import plan_record


@dataclass
class BenchRequest:
    """One bench job: a model, its dense baseline and the targets to time them on.

    `targets` come from `gsdeploy.target.resolve_targets` (profile + flags, validated); their
    batches, threads, timing budget, input shape and power sampling are the job's. `fuse` and
    `prune_threshold` deploy the compressed model; the dense baseline is deployed with the
    same fuse mode and never with the threshold (its groups are not the model's to cut)."""

    model: str
    targets: tuple[Target, ...]
    out_dir: Path = Path("results")
    arch: str | None = None
    baseline: str | None = None
    baseline_arch: str | None = None
    fuse: str = "flops"  # pairs the plan has no measured choice for (and every pair under plan "flops")
    plan: str = "auto"  # "auto" | "latency" | "flops" (see gsdeploy/plan/stage.py)
    lut: Path | None = None  # timings measured on the target elsewhere (gsdeploy plan --save-lut)
    refresh: bool = False  # re-measure the latency plan instead of using the timing cache
    prune_threshold: float | None = None
    trust: bool = False
    name: str | None = None  # file stem of the tables (default bench_<model>)
    command: str = "gsdeploy bench"
    memory: bool = False  # also measure peak RSS of ORT CPU sessions (child process, ~1.5 s each)
    resume: bool = False  # keep the rows of an existing <stem>.csv and skip the groups it has
    power_duration_s: float = 5.0  # the extra untimed pass per model and group inside the sampler
    per_layer: bool = False  # after timing, profile both models per layer in a separate run (bench/layers.py)
    per_layer_runs: int = 20
    progress: bool = True  # a progress bar on stderr
    # ORT targets: the fp16/int8 ONNX of both models timed beside the fp32 ones (bench/precision.py)
    reduced: tuple[str, ...] = ()
    calib_data: Path | None = None
    random_calibration: bool = False
    eval_data: Path | None = None

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        return self.targets[0].input_shape if self.targets else None


@dataclass
class BenchResult:
    """What a bench job produced: its rows (this run's and, with resume, the kept ones), the
    files written, and one warning per row measured now whose CoV is above its target's limit."""

    rows: pd.DataFrame
    files: list[Path]
    warnings: list[str] = field(default_factory=list)


def resolve_baseline(loaded: LoadedModel, baseline: str | None, baseline_arch: str | None,
                     input_shape: tuple[int, ...] | None, trust: bool) -> LoadedModel:
    """The dense model to compare against: given explicitly, known from the zoo, or the zoo model of
    the official dense arch (its weights are random, which does not change latency)."""
    shape = tuple(input_shape) if input_shape else loaded.input_shape
    if baseline is not None:
        return load_model(baseline, arch=baseline_arch, trust=trust, input_shape=shape)
    name = loaded.baseline or loaded.notes.get("baseline_arch")
    if name and zoo.is_model(name):
        base = load_model(name, input_shape=shape)
        base.notes["baseline_weights"] = "zoo (random) weights; latency does not depend on weight values"
        return base
    raise GsdeployError(f"no known dense baseline for {loaded.name}; pass --baseline MODEL [--baseline-arch ARCH]")


def build_trt_engines(loaded: LoadedModel, onnx_path: Path, workdir: Path, role: str,
                      targets: tuple[Target, ...], reference=None) -> dict:
    """Build the TensorRT engines the TensorRT targets need from the verified ONNX (checked
    against the original module at the precision's tolerance by export_trt): one dynamic engine
    per target, or one static engine per batch for DLA. Build options come from the target
    (`gsdeploy.loaders.trt_build_options`: precision, workspace, DLA core, GPU fallback, ...).
    `reference` is what the engine is checked against (default the loaded module; with
    --prune-threshold, the thresholded original the deploy was verified against)."""
    engines = {}
    for t in targets:
        if t.engine != "trt":
            continue
        for batch in trt_engine_batches(t):
            path = workdir / f"{role}-{t.label}-{t.precision}-{batch or 'dynamic'}.engine"
            export_trt(loaded.module if reference is None else reference, onnx_path, loaded.input_shape, trt_build_options(t, batch), path,
                       {"source": loaded.name, "target": t.label})
            engines[(t.label, t.precision, batch)] = path
    return engines


def _variant_name(name: str, role: str, options, plan: str = "auto") -> str:
    """Rows of one model deployed with non-default options must not merge with the default's in
    reports: the compressed model's name carries them (the dense baseline has nothing to fuse).
    `plan` is what was asked for (--plan): the default latency plan's winner varies with the
    machine, so its rows keep the model's own name."""
    if role != "compressed":
        return name
    tags = [f"plan={plan}"] if plan == "flops" else []
    tags += [f"fuse={options.fuse}"] if options.fuse != "flops" and plan == "flops" else []
    if options.prune_threshold is not None:
        tags.append(f"threshold={options.prune_threshold:g}")
    return f"{name}[{','.join(tags)}]" if tags else name


def deploy_subject(loaded: LoadedModel, role: str, options, workdir: Path, targets: tuple[Target, ...],
                   plans: dict | None = None, build_engines: bool = True, deployed=None, plan: str = "auto"):
    """Deploy (verified against the original) unless `deployed` is the plan stage's result, export
    and check the ONNX file when an ORT or TensorRT target needs it, and build the TensorRT engines
    (unless `build_engines` is False: a sweep builds them on the device that times them); a
    bench.sweep.Subject. `plan` is the --plan asked for (it names the rows)."""
    result = deployed or deploy(loaded.module, loaded.input_shape, options)
    if plans is not None:  # the plan goes into the results (report) and the per-layer join
        plans[role] = (result, options)
    onnx_path, artifact_bytes, err = None, None, result.verification.max_rel_err
    if any(t.engine in ("ort", "trt") for t in targets):
        onnx_path = workdir / f"{role}.onnx"
        export_onnx(result.module, loaded.input_shape, onnx_path)
        check = check_onnx(onnx_path, result.reference, loaded.input_shape).verification
        if not check.passed:
            against = "the thresholded original" if result.threshold_error is not None else "the original"
            raise NumericMismatchError(f"{loaded.name}: ONNX model differs from {against} by max rel "
                                       f"{check.max_rel_err:.3e} (tolerance {check.tolerance:.0e})")
        artifact_bytes = onnx_path.stat().st_size
        err = max(err, check.max_rel_err)
    engines = (build_trt_engines(loaded, onnx_path, workdir, role, targets, result.reference)
               if onnx_path is not None and build_engines else {})
    return Subject(name=_variant_name(loaded.name, role, options, plan), role=role,
                   macs=count_macs(result.module, loaded.input_shape),
                   params=count_params(result.module), max_rel_err=err, module=result.module, onnx_path=onnx_path,
                   weights_bytes=weight_bytes(result.module), artifact_bytes=artifact_bytes,
                   input_shape=tuple(loaded.input_shape), trt_engines=engines)


def is_onnx(source: str | None) -> bool:
    return source is not None and source.lower().endswith(".onnx")


def _onnx_subject(source: str, role: str, input_shape: tuple[int, ...] | None):
    """An ONNX file benchmarked as is (ORT engines only): no deploy, no export. MACs are not
    counted (that needs the torch module), so flop_speedup stays NaN."""
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
    shape = tuple(input_shape) if input_shape else onnx_input_shape(path)
    return Subject(name=path.stem, role=role, macs=None, params=params, max_rel_err=None, module=None,
                   onnx_path=path, weights_bytes=weights, artifact_bytes=artifact_bytes(path), input_shape=shape)


def noisy_rows(df: pd.DataFrame, max_cov: float | None = None) -> list[str]:
    """One warning per row whose latency CoV is above `max_cov` (default stats.NOISY_COV)."""
    limit = stats.NOISY_COV if max_cov is None else max_cov
    lines = []
    for r in df.to_dict("records"):
        cov = pd.to_numeric(pd.Series([r.get("latency_cov")]), errors="coerce").iloc[0]
        if cov > limit:
            lines.append(f"warning: {r['model']} on {r['engine']} batch {r['batch']}: latency CoV {cov:.1%} > "
                         f"{limit:.1%} (noisy machine or unlocked clocks); repeat before trusting it")
    return lines


def deploy_options(req: BenchRequest, role: str):
    """The compressed model gets the request's fuse mode and threshold; the dense baseline the
    fuse mode only."""
    threshold = req.prune_threshold if role == "compressed" else None
    return DeployOptions(fuse=req.fuse, prune_threshold=threshold)


def plan_compressed(req: BenchRequest, loaded: LoadedModel, dense: LoadedModel | None):
    """The compressed model's plan on the first target (the latency plan where it can be timed)."""
    return make_plan(loaded.module, tuple(loaded.input_shape), req.targets[0], deploy_options(req, "compressed"),
                     req.plan, dense=dense.module if dense is not None else None, lut_path=req.lut,
                     refresh=req.refresh)


def power_factory(power):
    """A tegrastats sampler constructor for a PowerSpec (Jetson profiles), or None without one."""
    if power is None:
        return None

    return lambda: TegrastatsSampler(power.tegrastats_interval_ms, power.module)


def check_batch_size(shape: tuple[int, ...] | None, batches: list[int]) -> None:
    """A batch whose input alone exceeds MAX_BATCH_ELEMENTS fails here, before any deploy or
    export, rather than as an allocation failure minutes later."""
    if not shape:
        return
    per_sample = math.prod(shape)
    for b in sorted(set(batches), reverse=True):
        if b * per_sample > MAX_BATCH_ELEMENTS:
            raise GsdeployError(f"batch {b} at input shape {'x'.join(map(str, shape))} is {b * per_sample:.3g} input "
                                f"values ({b * per_sample * 4 / 2**30:.1f} GiB in fp32); the limit is "
                                f"{MAX_BATCH_ELEMENTS:.3g} per batch")


def run_bench_job(req: BenchRequest) -> BenchResult:
    """Deploy, export and time; returns the rows and the files written. DIR/<stem>.csv and .md
    are rewritten as each (target, batch) group finishes, so an interrupted sweep keeps what it
    measured, and are not touched before the first group is done (bench/results_file.py: the
    lock, the --resume checks). Without `req.resume` the new rows replace an existing
    <stem>.csv; with it, its rows are kept and the groups it already has (both models, same
    engine label, provider, batch, precision) are not timed again."""
    if not req.targets:
        raise GsdeployError("a bench job needs at least one target")
    if req.name is not None:
        check_stem(req.name)  # before any work
    shape = req.input_shape
    onnx_sides = [s for s in (req.model, req.baseline) if is_onnx(s)]
    if onnx_sides:
        bad = [t.label for t in req.targets if t.engine != "ort"]
        if bad:
            raise GsdeployError(f"{onnx_sides[0]} is an ONNX file, which only ORT engines run as is; engine(s) "
                                f"{', '.join(bad)} need a torch model (pass --engine ort, or the checkpoint)")
    if req.per_layer:
        if not any(can_profile(t) for t in req.targets):  # else it would time everything, then profile nothing
            raise GsdeployError(f"--per-layer: no per-layer profiler for engine(s) "
                                f"{', '.join(t.label for t in req.targets)} (ORT engines and trt have one)")
    if req.lut is not None:  # a bad or foreign LUT fails before any load or deploy
        load_lut(req.lut, req.targets[0])
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
    samples = _precision_inputs(req, tuple(shape or base_shape))  # files checked before any work
    name = loaded.name if loaded is not None else comp_subject.name
    base_name = base.name if base is not None else base_subject.name
    if name == base_name:
        raise GsdeployError(f"the model and its baseline are both named '{name}'; rename one file")
    check_batch_size(shape, [b for t in req.targets for b in t.batches])
    check_out_dir(req.out_dir)
    comp_name = comp_subject.name if comp_subject is not None else \
        _variant_name(name, "compressed", deploy_options(req, "compressed"), req.plan)
    results = ResultsFile(req.out_dir, req.name or default_stem(name), resume=req.resume,
                          models={"baseline": base_name, "compressed": comp_name},
                          inputs=files_in(p for p in (req.model, req.baseline, req.lut, req.calib_data, req.eval_data)
                                          if p))  # everything the run reads: never replaced by its tables
    with results:
        return _bench_into(results, req, loaded, base, comp_subject, base_subject, samples)


def _bench_into(results, req: BenchRequest, loaded, base, comp_subject, base_subject, samples) -> BenchResult:
    done = results.done()
    outcome = plan_compressed(req, loaded, base) if loaded is not None else None
    with scratch_dir("bench") as tmp:
        plans: dict = {}
        subjects = [base_subject or deploy_subject(base, "baseline", deploy_options(req, "baseline"), tmp,
                                             req.targets, plans),
                    comp_subject or deploy_subject(loaded, "compressed", outcome.options, tmp, req.targets, plans,
                                                   deployed=outcome.result, plan=req.plan)]
        if req.reduced or samples[1] is not None:
            subjects = _with_precisions(subjects, req, samples, {"baseline": base, "compressed": loaded}, tmp)
        extra_files = _write_plan(plans, subjects[1].name, req, results, outcome)
        # One sweep per model the plan found fastest at some batch: the plan's winner times the
        # batches it won (and any batch the plan did not see), each other batch's winner its own.
        runs = [(subjects, list(req.targets), plans)]
        if outcome is not None and not (req.reduced or samples[1] is not None):
            runs = _per_batch_runs(req, loaded, outcome, subjects, plans, tmp)
        frames = []
        for run_subjects, run_targets, _ in runs:
            frames.append(run_sweep(run_subjects, run_targets, command=req.command, progress=req.progress,
                                    on_group=results.add, memory=req.memory,
                                    skip_group=(lambda keys: all(k in done for k in keys)) if done else None,
                                    power_sampler_factory=power_factory(req.targets[0].power),
                                    power_duration_s=req.power_duration_s))
        df = pd.concat([f for f in frames if not f.empty], ignore_index=True) if any(not f.empty for f in frames) \
            else frames[0]
        warnings = ([outcome.warning] if outcome is not None and outcome.warning else []) + \
            [line for t in req.targets if not df.empty
                    for line in noisy_rows(df[(df["engine"] == t.label) & (df["precision"] == t.precision)],
                                           t.max_cov)]
        threshold = plans["compressed"][0].threshold_error if "compressed" in plans else None
        if threshold is not None:  # the threshold's own error, apart from the deploy/export check in the rows
            warnings.append(f"note: --prune-threshold {req.prune_threshold:g} changed {subjects[1].name}'s outputs by "
                            f"max rel {threshold.max_rel_err:.2e} (max abs {threshold.max_abs_err:.2e}); its rows "
                            "time the thresholded model and max_rel_err is measured against it")
        reduced_rows = df[df["model"].isin([s.name for s in subjects if s.origin])] if not df.empty else df
        warnings += noisy_rows(reduced_rows, req.targets[0].max_cov) if not reduced_rows.empty else []
        if req.per_layer:
            extra_files += _per_layer(runs, req, results.stem, warnings)
    files = results.finish() + extra_files
    return BenchResult(rows=results.rows(), files=files, warnings=warnings)


def _per_batch_runs(req: BenchRequest, loaded, outcome, subjects: list, plans: dict, tmp: Path) -> list:
    """(subjects, targets, plans) per model the plan chose for some batch; one entry when every
    batch has the same fastest model."""
    runs = []
    for comp, own, chosen in batch_subjects(loaded, outcome, subjects[1], [b for t in req.targets for b in t.batches],
                                            req.targets, tmp, req.plan):
        targets = [replace(t, batches=tuple(b for b in t.batches if b in own)) for t in req.targets]
        targets = [t for t in targets if t.batches]
        if comp is subjects[1]:
            runs.append((subjects, targets, plans))
            continue
        group_plans = {"baseline": plans["baseline"]} if "baseline" in plans else {}
        runs.append(([subjects[0], comp], targets, {**group_plans, "compressed": chosen}))
    return runs


def batch_subjects(loaded: LoadedModel, outcome: PlanOutcome, winner: Subject, batches: Iterable[int],
                   targets: tuple[Target, ...], workdir: Path, plan: str = "auto", build_engines: bool = True
                   ) -> list[tuple[Subject, tuple[int, ...], tuple[DeployResult, DeployOptions]]]:
    """The compressed model to time at each of `batches`: one Subject per model the plan chose
    for some batch (PlanOutcome.batch_groups), with its batches and (result, options). `winner`
    is the overall winner (the model `export` writes), already deployed by `deploy_subject`; it
    takes the batches it is fastest at and any the plan did not measure (a batch-32 server and a
    batch-1 one are different targets, and a batch outside the plan gets what export writes).
    Every other model is deployed and exported for `targets` here, in a folder of its own."""
    out = []
    for result, options, own in outcome.batch_groups(tuple(sorted(set(batches)))):
        if result is outcome.result:
            out.append((winner, own, (result, options)))
            continue
        work = Path(workdir) / f"batch{'-'.join(map(str, own))}"
        work.mkdir()
        comp = deploy_subject(loaded, "compressed", options, work, tuple(targets), build_engines=build_engines,
                              deployed=result, plan=plan)
        out.append((comp, own, (result, options)))
    return out


def _precision_inputs(req: BenchRequest, shape: tuple[int, ...]):
    """(calibration, evaluation) Samples for --precision int8 / --eval-data, or None each."""
    calib = None
    if req.reduced:
        bench_scheme(req.targets)  # ORT targets only, one scheme: fails before any work
        if req.resume:
            # a resumed file is checked for one baseline and one compressed row per group; the
            # int8/fp16 rows are two more compressed models, so such runs are not resumable yet
            raise GsdeployError("--resume does not combine with --precision fp16/int8 (several models per group); "
                                "run without --resume")
    if "int8" in req.reduced:
        if req.calib_data is not None and req.random_calibration:
            raise GsdeployError("--calib-data and --random-calibration exclude each other")
        if req.calib_data is None and not req.random_calibration:
            raise GsdeployError("int8 needs calibration data: pass --calib-data DIR|FILE.npz with real inputs "
                                "(or --random-calibration for latency-only work)")
        calib = load_samples(req.calib_data, shape) if req.calib_data else random_samples(shape)
    evaluation = load_samples(req.eval_data, shape, labels=True) if req.eval_data else None
    return calib, evaluation


def _with_precisions(subjects: list, req: BenchRequest, samples, loaded: dict, workdir: Path) -> list:
    """The fp32 subjects, then their fp16/int8 ONNX; with --eval-data each one's top-1."""
    calib, evaluation = samples
    if req.reduced:
        subjects = subjects + reduced_subjects(subjects, list(req.reduced), bench_scheme(req.targets), calib, workdir)
    if evaluation is not None:
        originals = {s.name: loaded[s.role].module for s in subjects[:2] if loaded.get(s.role) is not None}
        subjects = add_accuracy(subjects, originals, evaluation)
    return subjects


def _write_plan(plans: dict, name: str, req: BenchRequest, results, outcome=None) -> list[Path]:
    """DIR/<stem>.plan.json: the compressed model's deployment plan (and how the plan stage chose
    it), for the report; published with the first rows of this run (an earlier run's plan stays
    beside its rows till then)."""
    if "compressed" not in plans:  # an ONNX file benched as is has no plan
        return []
    result, options = plans["compressed"]
    extra = {"plan_stage": outcome.summary()} if outcome is not None else {}
    record = plan_record(result, name, options, command=req.command, timestamp=utc_now(), **extra)
    return [results.attach(".plan.json", json.dumps(record, indent=1, default=str) + "\n")]


def _per_layer(runs: list, req: BenchRequest, stem: str, warnings: list[str]) -> list[Path]:
    """Profile both models layer by layer on each target that has a profiler, in runs of their
    own after the timed ones (profilers slow inference down), and write DIR/<stem>.layers.{csv,md}.
    `runs`: (subjects, targets, plans) per model the plan chose for some batch."""
    frames = []
    for target in req.targets:
        if not can_profile(target):
            warnings.append(f"warning: --per-layer: no per-layer profiler for engine {target.label} "
                            "(ORT engines and trt have one)")
    for subjects, targets, plans in runs:
        base, comp = subjects[:2]
        for target in targets:
            if not can_profile(target):
                continue
            for batch in target.batches:
                frames.append(profile_pair(comp, base, decisions_of(plans["compressed"][0].plan),
                                           decisions_of(plans["baseline"][0].plan), target, batch,
                                           runs=req.per_layer_runs))
    if not frames:
        return []
    df = pd.concat(frames, ignore_index=True).assign(command=req.command, timestamp=utc_now())
    csv_path, md_path = req.out_dir / f"{stem}.layers.csv", req.out_dir / f"{stem}.layers.md"
    write_text_atomic(csv_path, df.to_csv(index=False, lineterminator="\n"))
    write_text_atomic(md_path, layers_markdown(df))
    return [csv_path, md_path]


def measure_claim(claim, trust: bool = False) -> float:
    """Time one claim (report/claims.Claim) on its profile's target, engine, precision and
    batch; returns the compressed model's speedup or median latency (ms), by the claim's metric."""
    target = claim_target(claim)
    require_available([target])
    with scratch_dir("claim") as tmp:
        request = BenchRequest(model=claim.model, targets=(target,), out_dir=tmp,
                               arch=getattr(claim, "arch", None), baseline=claim.baseline,
                               baseline_arch=getattr(claim, "baseline_arch", None), name="claim", trust=trust,
                               command=f"gsdeploy validate ({claim.id})", progress=False)
        df = run_bench_job(request).rows
    row = df[df["role"] == "compressed"].iloc[0]
    return float(row["speedup_vs_baseline"] if claim.metric == "speedup" else row["latency_ms_median"])
