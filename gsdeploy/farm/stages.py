"""The two stages of a sweep job, as plain functions a Ray task or this process can run.

`prepare` deploys and verifies a model and its baseline and exports their checked ONNX files (it
may run on any machine); its `Prepared` result holds everything the timing stage needs as bytes
and picklable objects, so it travels through Ray's object store instead of a shared file system.
`time_job` runs on the device: it builds TensorRT engines there (they only run on the GPU and
TensorRT version that built them), times the pair interleaved as `bench` does and returns the rows
with the device's own environment columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from gsdeploy.atomic import scratch_dir
from gsdeploy.errors import GsdeployError
from gsdeploy.farm.spec import Job, ModelEntry, SweepSpec
from gsdeploy.profiles import Profile
from gsdeploy.target import Target, require_available, validate


@dataclass
class Prepared:
    """Deployed subjects (bench.sweep.Subject, without file paths) and their ONNX files' bytes,
    and how the plan stage deployed the compressed model. A latency plan may find a different
    fastest model at some batch: then there is one compressed subject per model it chose, and
    each batch is timed with its own, as `bench` does."""

    subjects: list  # the baseline first, then each compressed model the plan chose for some batch
    onnx: dict[int, bytes]  # index in subjects -> its ONNX file
    batch_models: dict[int, int]  # batch -> index in subjects of the compressed model timed at it
    plan: str = "flops"  # the plan the compressed model was deployed with: "latency" | "flops"
    warnings: tuple[str, ...] = ()  # the plan stage's (why not the latency plan), for the ledger
    choices: dict[int, str] = field(default_factory=dict)  # batch -> the latency plan's model (its variant)

    def timed_at(self, batch: int) -> list[int]:
        """The subjects a job at `batch` times, as indices: the baseline and that batch's model."""
        if batch not in self.batch_models:  # prepare() saw every batch of the key's jobs: a bug if not
            raise GsdeployError(f"no deployed model for batch {batch} (prepared for batches "
                                f"{', '.join(map(str, sorted(self.batch_models)))})")
        return [0, self.batch_models[batch]]


@dataclass(frozen=True)
class TimingTask:
    """What the device needs besides the prepared models, all resolved and validated on the driver."""

    job_key: str
    profile: str
    targets: tuple[Target, ...]  # each at the job's batch
    command: str
    batch: int


@dataclass
class TimedRows:
    rows: pd.DataFrame
    start: str  # ISO UTC with microseconds: when the device was taken and released
    end: str
    plan: str = ""  # Prepared.plan and .warnings, carried into the ledger beside the rows
    warnings: tuple[str, ...] = ()
    choice: str = ""  # the latency plan's model timed at this batch (Prepared.choices)


def timing_task(spec: SweepSpec, job: Job, command: str) -> TimingTask:
    return TimingTask(job_key=job.key, profile=job.profile, targets=spec.targets(job), command=command,
                      batch=job.batch)


def model_files(entry: ModelEntry) -> dict[str, bytes]:
    """The checkpoint and LUT files an entry names, read here (on the driver) so that they can travel."""
    files = {}
    for ref in (entry.model, entry.baseline, entry.lut):
        if ref is not None and Path(ref).is_absolute():
            try:
                files[ref] = Path(ref).read_bytes()
            except OSError as e:
                raise GsdeployError(f"cannot read {ref}: {e.strerror or e}") from None
    return files


def input_shape(entry: ModelEntry, profile: Profile) -> str | None:
    """The entry's own input shape, else the profile's, else None (the model's)."""
    if entry.input_shape:
        return entry.input_shape
    return "x".join(map(str, profile.input_shape)) if profile.input_shape else None


def plans_on_device(entry: ModelEntry) -> bool:
    """Whether the entry's deploy depends on the device: every plan but the FLOP plan may time
    candidates there (or read a LUT checked against it)."""
    return entry.plan != "flops"


def prepare_keys(spec: SweepSpec, jobs: list[Job]) -> dict[Job, tuple]:
    """Jobs that share a deploy/export share one: job -> its key (model entry, input shape, and
    for a plan made on the target, the profile, whose device it is made on; None otherwise)."""
    return {j: (j.entry.key, input_shape(j.entry, spec.profiles[j.profile]),
                j.profile if plans_on_device(j.entry) else None) for j in jobs}


def prepare_targets(spec: SweepSpec, jobs: list[Job], keys: dict[Job, tuple]) -> dict[tuple, tuple[Target, ...]]:
    """Per deploy/export key, every target its jobs time (the ORT/TensorRT ones ask for the ONNX
    file); the first is what the plan is made for, at every batch the key's jobs time it at."""
    out: dict[tuple, dict[str, Target]] = {}
    for j in jobs:
        seen = out.setdefault(keys[j], {})
        for t in spec.targets(j):
            seen.setdefault(t.key(), t)
    return {k: tuple(v.values()) for k, v in out.items()}


def plan_target(targets: tuple[Target, ...]) -> Target:
    """The target the plan is made for: the first, at the batches of every target with its label
    and precision (one deployed model for all of them, as `bench` plans one for its batches)."""
    first = targets[0]
    batches = sorted({b for t in targets if (t.label, t.precision) == (first.label, first.precision)
                      for b in t.batches})
    return validate(replace(first, batches=tuple(batches)))


def prepare(entry: ModelEntry, shape: str | None, targets: tuple[Target, ...],
            files: dict[str, bytes] | None = None) -> Prepared:
    """Load, plan, deploy, verify and export `entry` and its baseline at input `shape` ("3x32x32";
    None: the model's), as `targets` need them (ONNX for ORT and TensorRT; engines are built later,
    on the device). The compressed model goes through bench's plan stage (`--plan` is the entry's
    `plan`): the latency plan is measured on this machine, which is the device (locally, or the
    node of the cluster that holds it), and each batch gets the model the plan found fastest
    there (pipeline.batch_subjects, as `bench` times them); where the target cannot be timed here, the FLOP plan and
    its one-line warning, kept in the result. `files` maps the entry's checkpoint and LUT paths to
    their bytes when this runs on another machine; they are written to a temp folder under their
    own names (the file stem names the model in the rows)."""
    from gsdeploy.load import load_model, parse_input_shape  # heavy: torch, loaded in the job, not when the sweep file is read
    from gsdeploy.pipeline import (BenchRequest, batch_subjects, check_batch_size, deploy_options,  # heavy: torch
                                   deploy_subject, plan_compressed, resolve_baseline)

    dims = parse_input_shape(shape) if shape else None
    with scratch_dir("prepare") as tmp:  # swept later if this process is killed
        refs = {}
        for i, (ref, data) in enumerate((files or {}).items()):
            local = Path(tmp) / "in" / str(i) / Path(ref).name  # a LUT may share a checkpoint's name
            local.parent.mkdir(parents=True)
            local.write_bytes(data)
            refs[ref] = str(local)
        loaded = load_model(refs.get(entry.model, entry.model), arch=entry.arch, input_shape=dims)
        base = resolve_baseline(loaded, refs.get(entry.baseline, entry.baseline) if entry.baseline else None,
                                entry.baseline_arch, dims, trust=False)
        if tuple(base.input_shape) != tuple(loaded.input_shape):
            raise GsdeployError(f"baseline input shape {tuple(base.input_shape)} differs from the model's "
                                f"{tuple(loaded.input_shape)}")
        if base.name == loaded.name:
            raise GsdeployError(f"the model and its baseline are both named '{loaded.name}'; rename one file")
        check_batch_size(tuple(loaded.input_shape), [b for t in targets for b in t.batches])  # before the plan
        lut = refs.get(entry.lut, entry.lut) if entry.lut else None
        req = BenchRequest(model=entry.model, targets=(plan_target(targets),) + targets, fuse=entry.fuse,
                           prune_threshold=entry.prune_threshold, plan=entry.plan,
                           lut=Path(lut) if lut else None, refresh=entry.refresh)
        outcome = plan_compressed(req, loaded, base)
        subjects = [deploy_subject(base, "baseline", deploy_options(req, "baseline"), Path(tmp), targets,
                                   build_engines=False),
                    deploy_subject(loaded, "compressed", outcome.options, Path(tmp), targets, build_engines=False,
                                   deployed=outcome.result, plan=entry.plan)]
        batches = sorted({b for t in targets for b in t.batches})
        batch_models = {}
        for comp, own, _ in batch_subjects(loaded, outcome, subjects[1], batches, targets, Path(tmp), entry.plan,
                                           build_engines=False):
            if comp is not subjects[1]:
                subjects.append(comp)
            batch_models.update(dict.fromkeys(own, 1 if comp is subjects[1] else len(subjects) - 1))
        onnx = {i: Path(s.onnx_path).read_bytes() for i, s in enumerate(subjects) if s.onnx_path is not None}
        return Prepared([replace(s, onnx_path=None, module=picklable(s.module)) for s in subjects], onnx,
                        batch_models, plan=outcome.mode, warnings=(outcome.warning,) if outcome.warning else (),
                        choices={b: outcome.choice_at(b) for b in batches if outcome.choice_at(b)})


def picklable(module):  # noqa: ANN001, ANN201 - any nn.Module
    """The module, made safe to pickle. fx records the string annotations of a model written with
    `from __future__ import annotations` ("torch.Tensor") as node types, and GraphModule's pickling
    then fails on them; the types are annotations only, so they are dropped."""
    import torch.fx as fx  # heavy: torch

    if isinstance(module, fx.GraphModule):
        changed = False
        for node in module.graph.nodes:
            if isinstance(node.type, str):
                node.type = None
                changed = True
        if changed:
            module.recompile()
    return module


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def time_job(task: TimingTask, prepared: Prepared) -> TimedRows:
    """Time the baseline and the task's batch's compressed model (Prepared.timed_at) on this machine
    on the task's targets (TensorRT engines are built here first); raises if a target cannot run here (a misconfigured node: the sweep retries elsewhere)."""
    from gsdeploy.bench.sweep import run_sweep  # heavy: torch
    from gsdeploy.model import LoadedModel  # heavy: torch
    from gsdeploy.pipeline import build_trt_engines, power_factory  # heavy: torch

    require_available(task.targets)
    start = _now()
    with scratch_dir("time") as tmp:
        subjects = []
        for i in prepared.timed_at(task.batch):
            s, path = prepared.subjects[i], None
            if i in prepared.onnx:
                path = Path(tmp) / f"{s.role}.onnx"  # one subject per role: the baseline and this batch's model
                path.write_bytes(prepared.onnx[i])
            s = replace(s, onnx_path=path)
            if path is not None and any(t.engine == "trt" for t in task.targets):
                # checked against the deployed module, itself verified against the original
                loaded = LoadedModel(module=s.module, input_shape=tuple(s.input_shape), name=s.name)
                s = replace(s, trt_engines=build_trt_engines(loaded, path, Path(tmp), s.role, task.targets))
            subjects.append(s)
        rows = run_sweep(subjects, list(task.targets), command=task.command, progress=False,
                         power_sampler_factory=power_factory(task.targets[0].power))
    return TimedRows(rows=rows, start=start, end=_now(), plan=prepared.plan, warnings=prepared.warnings,
                     choice=prepared.choices.get(task.batch, ""))
