"""A benchmark sweep: subjects × targets × batches → one DataFrame of result rows.

For each (target, batch) every subject gets its own runner and all of them are timed in
ONE interleaved measurement, so the baseline and the compressed models share the machine's
state and their ratio is meaningful. A `Target` (gsdeploy/target.py) says which engine and
how; `RUNNERS` maps each engine name to the factory that builds its runner from a subject
and a target. Rows carry `target.label` as their engine, so two entries of one engine
(`trt-gpu`, `trt-dla0`) stay two rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import pandas as pd
import torch
import torch.nn as nn
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from gsdeploy.bench.env import capture_env, dist_version, gpu_clocks
from gsdeploy.bench.measure import MeasureConfig, measure_interleaved
from gsdeploy.bench.memory import activation_estimate, ort_peak_rss
from gsdeploy.bench.runners.base import Runner
from gsdeploy.bench.rows import COLUMNS, GROUP_KEYS, ROLES, add_speedups, make_row, utc_now
from gsdeploy.bench.runners.ort import OrtRunner
from gsdeploy.bench.runners.torch_runner import TorchRunner
from gsdeploy.bench.runners.trt import TrtRunner
from gsdeploy.errors import GsdeployError
from gsdeploy.loaders import torch_runner_kwargs
from gsdeploy.target import ENGINES, Target

# (target label, precision, batch or None for a dynamic engine) -> a built TensorRT engine
EngineKey = tuple[str, str, "int | None"]


@dataclass
class Subject:
    """One model to time. `macs` are per sample; `module` is needed by torch engines,
    `onnx_path` by ORT engines, `trt_engines` by TensorRT ones. `input_shape` is one sample
    without the batch axis (torch engines need it unless the ONNX file fixes it)."""

    name: str
    role: str  # "baseline" | "compressed"
    macs: int | None
    params: int | None
    max_rel_err: float | None
    module: nn.Module | None
    onnx_path: Path | None
    weights_bytes: int | None
    artifact_bytes: int | None
    input_shape: tuple[int, ...] | None = None
    trt_engines: Mapping[EngineKey, Path] = field(default_factory=dict)
    # Set for reduced-precision ONNX subjects (bench/precision.py): a Q/DQ int8 model has fp32
    # inputs, so the runner alone cannot tell its precision. `origin`: the fp32 subject it came from.
    precision: str | None = None
    origin: str | None = None
    top1: float | None = None  # percent, on --eval-data
    top1_agreement: float | None = None  # percent of samples whose top-1 equals the original module's


# (subject, target, batch) -> a Runner for that subject on that target
RunnerFactory = Callable[[Subject, Target, int], Runner]


def onnx_input_shape(path: Path) -> tuple[int, ...] | None:
    """Per-sample input shape from an ONNX file's first input, when it is static."""
    try:
        import onnx  # heavy-ish; only needed when a subject has no shape of its own

        model = onnx.load(str(path), load_external_data=False)
        dims = model.graph.input[0].type.tensor_type.shape.dim[1:]
        shape = tuple(d.dim_value for d in dims)
        return shape if shape and all(s > 0 for s in shape) else None
    except Exception:
        return None


def _ort_runner(subject: Subject, target: Target, batch: int) -> Runner:
    if subject.onnx_path is None:
        raise GsdeployError(f"engine '{target.label}' needs an ONNX file for '{subject.name}'; export it first")
    return OrtRunner(subject.onnx_path, target, input_shape=subject.input_shape)


def _torch_runner(subject: Subject, target: Target, batch: int) -> Runner:
    if subject.module is None:
        raise GsdeployError(f"engine '{target.label}' needs the torch module of '{subject.name}'")
    shape = subject.input_shape or (onnx_input_shape(Path(subject.onnx_path)) if subject.onnx_path else None)
    return TorchRunner(subject.module, **torch_runner_kwargs(target), input_shape=shape)


def _trt_runner(subject: Subject, target: Target, batch: int) -> Runner:
    engines = subject.trt_engines
    path = engines.get((target.label, target.precision, batch)) or engines.get((target.label, target.precision, None))
    if path is None:
        raise GsdeployError(f"engine '{target.label}' needs a TensorRT engine for '{subject.name}' "
                            f"({target.precision}, batch {batch}); build it first")
    return TrtRunner(path)


RUNNERS: dict[str, RunnerFactory] = {"ort": _ort_runner, "torch": _torch_runner, "trt": _trt_runner}
assert set(RUNNERS) == set(ENGINES), "every engine of the vocabulary has a runner"


def make_runner(subject: Subject, target: Target, batch: int) -> Runner:
    factory = RUNNERS.get(target.engine)
    if factory is None:
        raise GsdeployError(f"unknown engine '{target.engine}'; choose from {', '.join(RUNNERS)}")
    return factory(subject, target, batch)


def measure_config(target: Target) -> MeasureConfig:
    """The timing budget of `target` (warm-up, minimum iterations and duration)."""
    return MeasureConfig(warmup_s=target.warmup_s, min_iterations=target.min_iterations,
                         min_duration_s=target.min_duration_s)


def _progress(enabled: bool):
    return Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), disable=not enabled, transient=False,
                    # The refresh thread competes with the timed runs for a core; a few
                    # redraws per second are enough for a human.
                    refresh_per_second=4)


def _activation_bytes(s: Subject, batch: int) -> int | None:
    """Peak live activations of the deployed torch module at `batch` (None without a module)."""
    if s.module is None or s.input_shape is None:
        return None

    try:
        return activation_estimate(s.module, tuple(s.input_shape), batch)
    except Exception:  # an estimate must never cost the latency measurement
        return None


def _reset_cuda_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _cuda_peak() -> int | None:
    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None


def _peak_rss(s: Subject, batch: int, target: Target) -> int | None:
    """Peak RSS of an ORT CPU session of the subject's ONNX file at `batch` (child process)."""
    if s.onnx_path is None:
        return None

    return ort_peak_rss(s.onnx_path, batch, input_shape=s.input_shape, target=target)


def _power(runner: Runner, batch: int, factory: Callable[[], object], duration_s: float) -> dict:
    """One extra pass of `duration_s` inside a power sampler (a TegrastatsSampler or alike):
    average power and energy per inference, or the reason there are none."""
    runner.prepare(batch)
    runs = 0
    with factory() as sampler:
        end = time.perf_counter() + duration_s
        while runs == 0 or time.perf_counter() < end:
            runner.run_once()
            runs += 1
    r = sampler.result(inferences=runs * batch)
    return {"avg_power_w": r.avg_power_w, "energy_per_inference_mj": r.energy_per_inference_mj,
            "power_skipped": r.skipped}


GroupKey = tuple  # (model, engine label, provider, batch, precision) of one row a group would produce


def run_sweep(subjects: list[Subject], targets: list[Target], command: str, progress: bool = True,
              on_group: Callable[[pd.DataFrame], None] | None = None, memory: bool = False,
              skip_group: Callable[[list[GroupKey]], bool] | None = None,
              power_sampler_factory: Callable[[], object] | None = None,
              power_duration_s: float = 5.0) -> pd.DataFrame:
    """Time every subject on every target and each of its batches; rows in COLUMNS order with
    speedups. Each target brings its own batches, threads and timing budget.

    `on_group`, if given, receives the rows of each finished (target, batch) group (with
    speedups), e.g. to append them to a CSV as the sweep goes. `skip_group` receives the
    (model, engine label, provider, batch, precision) keys a group would produce, from its
    runners, and returns True to skip it (e.g. already measured, for --resume).

    activation_bytes is estimated for every subject with a torch module; `memory=True` also
    measures peak_rss_bytes of ORT CPU rows in a child process (~1.5 s per subject and
    batch). `power_sampler_factory` (e.g. a TegrastatsSampler constructor) adds one extra
    pass of `power_duration_s` per subject and group, untimed, for avg_power_w and
    energy_per_inference_mj; where the sampler cannot measure, power_skipped says why.
    """
    if not subjects:
        raise ValueError("run_sweep needs at least one subject")
    if not targets:
        raise ValueError("run_sweep needs at least one target")
    names = [s.name for s in subjects]
    if len(set(names)) != len(names):
        raise ValueError(f"subject names must be unique, got {names}")
    for s in subjects:
        if s.role not in ROLES:
            raise ValueError(f"subject '{s.name}' has role {s.role!r}; expected one of {ROLES}")
    keys = [(t.label, t.precision) for t in targets]
    if len(set(keys)) != len(keys):
        raise ValueError(f"targets must differ in label or precision, got {keys}")
    env = {**capture_env(), "tensorrt": dist_version("tensorrt", "tensorrt-cu12", "tensorrt-cu11")[0]}
    frames: list[pd.DataFrame] = []
    activations: dict[tuple[str, int], int | None] = {}
    rss: dict[tuple[str, int, str], int | None] = {}

    def title(t: Target, b: int) -> str:
        return f"{t.label}{'' if t.precision == 'fp32' else ' ' + t.precision} batch {b}"

    with _progress(progress) as bar:
        tasks = {(i, b): bar.add_task(title(t, b), total=1.0) for i, t in enumerate(targets) for b in t.batches}
        for i, target in enumerate(targets):
            cfg = measure_config(target)
            for batch in target.batches:
                task = tasks[(i, batch)]
                runners: dict[str, Runner] = {}
                try:
                    for s in subjects:
                        runners[s.name] = make_runner(s, target, batch)
                    keys = [(s.name, target.label, runners[s.name].provider, batch,
                             s.precision or runners[s.name].precision) for s in subjects]
                    if skip_group is not None and skip_group(keys):
                        bar.update(task, completed=1.0, description=f"{title(target, batch)} (done before)")
                        continue
                    cuda = target.on_gpu
                    if cuda:
                        _reset_cuda_peak()
                    stats = measure_interleaved(runners, batch, cfg,
                                                on_progress=lambda f, t=task: bar.update(t, completed=f))
                    # torch's allocator sees only torch engines' memory; one peak per interleaved group
                    cuda_peak = _cuda_peak() if cuda and target.engine == "torch" else None
                    clocks = gpu_clocks() if cuda else {}
                    power = {s.name: (_power(runners[s.name], batch, power_sampler_factory, power_duration_s)
                                      if power_sampler_factory is not None else {}) for s in subjects}
                    stamp = utc_now()
                    rows = []
                    for s in subjects:
                        r = runners[s.name]
                        if (s.name, batch) not in activations:
                            activations[(s.name, batch)] = _activation_bytes(s, batch)
                        peak = None
                        if memory and target.engine == "ort" and r.provider == "CPUExecutionProvider":
                            if (s.name, batch, target.key()) not in rss:
                                rss[(s.name, batch, target.key())] = _peak_rss(s, batch, target)
                            peak = rss[(s.name, batch, target.key())]
                        rows.append(make_row(
                            model=s.name, role=s.role, engine=target.label, provider=r.provider,
                            precision=s.precision or r.precision, batch=batch, device=r.device, threads=r.threads,
                            macs=s.macs, params=s.params, stats=stats[s.name], max_rel_err=s.max_rel_err,
                            weights_bytes=s.weights_bytes, artifact_bytes=s.artifact_bytes, env=env,
                            command=command, timestamp=stamp, activation_bytes=activations[(s.name, batch)],
                            peak_rss_bytes=peak, cuda_peak_bytes=cuda_peak, profile=target.profile,
                            max_cov=target.max_cov, top1=s.top1, top1_agreement=s.top1_agreement, gpu_clocks=clocks, **power[s.name]))
                finally:
                    # Reverse order: TorchRunner restores the process-wide thread count it found.
                    for r in reversed(list(runners.values())):
                        r.close()
                # One interleaved run: every row is compared with its one dense fp32 baseline,
                # whatever its own precision (int8 and fp16 subjects are timed beside it).
                group = add_speedups(pd.DataFrame(rows), keys=[k for k in GROUP_KEYS if k != "precision"])
                if on_group is not None:
                    on_group(group)
                frames.append(group)
    if not frames:  # every group was skipped
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True)
