"""The sweep file: what to benchmark where, as untrusted data checked in full before any job starts.

A sweep file names models (each with its dense baseline and plan options), target profiles,
batches and optionally precisions and timing overrides; `expand` turns it into one `Job` per
model × profile × batch × precision. The file may come from anyone: it is read with a safe
loader that also refuses YAML aliases (a few lines of aliases can expand to gigabytes), its size
and every list are bounded, every number must be finite and in range, and nothing in it can ask
for code to run (no `--trust`, no pickled modules, no ONNX files timed as is).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gsdeploy.errors import GsdeployError
from gsdeploy.limits import MAX_PRUNE_THRESHOLD, brief
from gsdeploy.plan.cache import read_table
from gsdeploy.profiles import ANY, Profile, check_keys, load_profile
from gsdeploy.target import MAX_BATCH, PRECISIONS, Target, TargetFlags, apply_flags
from gsdeploy.yaml_file import read_yaml

MAX_FILE_BYTES = 256 * 1024
MAX_MODELS, MAX_PROFILES, MAX_BATCHES, MAX_JOBS = 200, 50, 32, 5000
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class SweepFileError(GsdeployError):
    """The sweep file is unreadable, malformed or out of range."""


@dataclass(frozen=True)
class Timing:
    """Overrides of the profiles' timing budget; None keeps the profile's value."""

    warmup_s: float | None = None
    min_iterations: int | None = None
    min_duration_s: float | None = None
    threads: int | None = None


# name: (kind, low, high); kind "int" or "num"; bounds inclusive
TIMING_RANGES = {
    "warmup_s": ("num", 0.0, 600.0),
    "min_iterations": ("int", 1, 1_000_000),
    "min_duration_s": ("num", 0.0, 3600.0),
    "threads": ("int", 1, 1024),
}
RETRIES_RANGE = ("int", 0, 10)
TIMEOUT_RANGE = ("num", 1.0, 86400.0)


@dataclass(frozen=True)
class ModelEntry:
    """One model of the sweep and how to deploy it. `model`/`baseline` are zoo names or absolute
    paths of checkpoint files (relative ones are resolved against the sweep file's folder)."""

    model: str
    baseline: str | None = None
    arch: str | None = None
    baseline_arch: str | None = None
    input_shape: str | None = None  # "3x32x32"; the profile's input_shape applies when None
    fuse: str = "flops"
    prune_threshold: float | None = None
    # the plan stage, as `bench --plan/--lut/--refresh` (gsdeploy/plan/stage.py): auto takes the
    # latency plan where the target's engine runs (measured on the device that times the job)
    plan: str = "auto"
    lut: str | None = None  # absolute path of a LUT measured on the target (`gsdeploy plan --save-lut`)
    refresh: bool = False

    @property
    def key(self) -> str:
        parts = [f"model={self.model}"]
        for k in ("baseline", "arch", "baseline_arch", "input_shape", "prune_threshold"):
            v = getattr(self, k)
            if v is not None:
                parts.append(f"{k}={v}")
        if self.fuse != "flops":
            parts.append(f"fuse={self.fuse}")
        if self.plan != "auto":  # the default keeps the keys (and --resume) of sweeps written before plans
            parts.append(f"plan={self.plan}")
        if self.lut is not None:
            parts.append(f"lut={self.lut}")
        return ";".join(parts)


@dataclass(frozen=True)
class Job:
    """One timing job: a model and its baseline, interleaved, on one device kind at one batch."""

    entry: ModelEntry
    profile: str
    batch: int
    precision: str | None = None  # TensorRT engines; None = bench's default (fp16)

    @property
    def key(self) -> str:
        """Stable across runs: --resume finds a job's rows by it (the sweep_job column)."""
        return f"{self.entry.key};profile={self.profile};batch={self.batch}" + (
            f";precision={self.precision}" if self.precision else "")


# The tail of Job.key (profile names cannot hold ';': profiles._NAME_RE)
_JOB_KEY_TAIL = re.compile(r";profile=([^;]+);batch=([0-9]+)(?:;precision=[^;]+)?\Z")


def job_key_fields(key: str) -> tuple[str, int] | None:
    """(profile, batch) of a Job.key, or None when `key` is not one (a hand-edited ledger)."""
    m = _JOB_KEY_TAIL.search(key)
    return (m.group(1), int(m.group(2))) if m and key.startswith("model=") else None


@dataclass(frozen=True)
class SweepSpec:
    name: str
    source: Path
    models: tuple[ModelEntry, ...]
    profiles: dict[str, Profile] = field(hash=False)
    batches: tuple[int, ...] | None  # None: each profile's own batches
    precisions: tuple[str, ...] | None
    timing: Timing = Timing()
    retries: int = 2
    timeout_s: float = 1800.0

    def targets(self, job: Job) -> tuple[Target, ...]:
        """The job's targets: its profile's, at the job's batch (and precision), with the sweep's
        timing overrides; validated (gsdeploy.target)."""
        t = self.timing
        flags = TargetFlags(batches=(job.batch,), precision=job.precision, threads=t.threads, warmup_s=t.warmup_s,
                            min_iterations=t.min_iterations, min_duration_s=t.min_duration_s)
        prof = self.profiles[job.profile]
        return apply_flags(prof.targets, flags, prof.name)

    def input_files(self) -> list[Path]:
        """Every file the sweep reads (the sweep file, profile files, checkpoints, LUTs): what its
        outputs must never replace."""
        names = [self.source, *(p.source for p in self.profiles.values())]
        names += [v for e in self.models for v in (e.model, e.baseline, e.lut)]
        return [Path(n) for n in names if n is not None and Path(n).is_file()]

    def jobs(self) -> list[Job]:
        out = []
        for entry in self.models:
            for pname, prof in self.profiles.items():
                for batch in (self.batches or prof.batches):
                    for precision in (self.precisions or (None,)):
                        out.append(Job(entry, pname, int(batch), precision))
        return out


# ---- reading ---------------------------------------------------------------------------------


class _NoAliasLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses aliases (`*name`): a sweep has no need for them and they are
    how a few hundred bytes of YAML become gigabytes in memory."""

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a sweep file", mark)
        return super().compose_node(parent, index)


def read_sweep_yaml(path: Path) -> Any:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise SweepFileError(f"cannot read sweep file {path}: {e.strerror or e}") from None
    if not path.is_file():
        raise SweepFileError(f"sweep file {path} is not a file")
    if size > MAX_FILE_BYTES:
        raise SweepFileError(f"{path}: {size} bytes is too large for a sweep file (at most {MAX_FILE_BYTES})")
    return read_yaml(path, SweepFileError, "sweep file", loader=_NoAliasLoader)


# ---- checking --------------------------------------------------------------------------------


def _number(value: Any, what: str, kind: str, low: float, high: float) -> int | float:
    """A finite int (kind "int") or number (kind "num") in [low, high], else SweepFileError
    naming `what`. bool is not a number here (`threads: true` is a mistake, not 1)."""
    ok_type = isinstance(value, int) if kind == "int" else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        words = "an integer" if kind == "int" else "a number"
        raise SweepFileError(f"{what} must be {words} in [{low:g}, {high:g}], got {brief(value)}")
    # ints are compared exactly (math.isfinite overflows on 10**400); floats must be finite first
    if (isinstance(value, float) and not math.isfinite(value)) or not low <= value <= high:
        raise SweepFileError(f"{what} must be finite and in [{low:g}, {high:g}], got {brief(value)}")
    return value


def _str(value: Any, what: str, max_len: int = 1000) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > max_len or "\x00" in value:
        raise SweepFileError(f"{what} must be a non-empty string of at most {max_len} characters, got {brief(value)}")
    return value.strip()


def _list(value: Any, what: str, max_len: int) -> list:
    if not isinstance(value, list) or not value:
        raise SweepFileError(f"{what} must be a non-empty list, got {type(value).__name__} {brief(value)}")
    if len(value) > max_len:
        raise SweepFileError(f"{what} lists {len(value)} items; at most {max_len}")
    return value


def _keys(data: Any, what: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict:
    if not isinstance(data, dict):
        raise SweepFileError(f"{what} must be a mapping, got {type(data).__name__}")
    check_keys(what, data, dict.fromkeys(allowed, ANY), "", required, SweepFileError)
    return data


PLAN_KEYS = ("plan", "fuse", "prune_threshold", "lut", "refresh")
MODEL_KEYS = ("model", "baseline", "arch", "baseline_arch", "input_shape") + PLAN_KEYS
TOP_KEYS = ("name", "description", "models", "profiles", "batches", "precisions", "plan", "timing",
            "retries", "timeout_s")


def _model_ref(value: Any, what: str, base_dir: Path) -> str:
    """A zoo name, or a checkpoint file that exists (relative to the sweep file's folder)."""
    from gsdeploy.zoo import list_entries  # heavy: torch; a sweep file with no model entry is checked without it

    text = _str(value, what)
    if text in {e.name for e in list_entries()}:
        return text
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    if text.lower().endswith(".onnx"):
        raise SweepFileError(f"{what}: {text} is an ONNX file; a sweep deploys models from zoo names or checkpoints")
    if not path.is_file():
        raise SweepFileError(f"{what}: {text!r} is neither a zoo model (`gsdeploy zoo`) nor an existing file")
    return str(path.resolve())


def _arch(value: Any, what: str, model: str | None) -> str:
    """A known checkpoint layout (`gsdeploy zoo --archs`), for a checkpoint file: a job must not
    start only to find the name wrong."""
    from gsdeploy.load import ARCHS  # heavy: imports torch

    text = _str(value, what, 100)
    if text not in ARCHS:
        raise SweepFileError(f"{what}: unknown arch {text!r} (known: {', '.join(sorted(ARCHS))})")
    if model is None or not Path(model).is_absolute():
        raise SweepFileError(f"{what}: an arch applies to a checkpoint file, and {model or 'the zoo baseline'} is "
                             "a zoo model")
    return text


def _input_shape(value: Any, what: str) -> str:
    from gsdeploy.load import parse_input_shape  # heavy: torch

    if isinstance(value, list):  # [3, 32, 32]: integers, not '32' or 32.0 spelled into a shape
        value = [_number(v, f"{what}[{i}]", "int", 1, 16384) for i, v in enumerate(value[:8])] + value[8:]
    text = "x".join(str(v) for v in value) if isinstance(value, list) else _str(value, what, 64)
    try:
        dims = parse_input_shape(text)
    except GsdeployError as e:
        raise SweepFileError(f"{what}: {e}") from None
    for d in dims:
        _number(d, what, "int", 1, 16384)
    return "x".join(map(str, dims))


def _plan(data: dict, what: str, defaults: dict, base_dir: Path) -> dict:
    """The plan settings of `data` over `defaults` (the file's `plan:` mapping), unresolved: a key
    set to null drops an inherited value (`fuse: null` in a model under `plan: {fuse: always}`)."""
    out = dict(defaults)
    for k in PLAN_KEYS:
        if k not in data:
            continue
        v = data[k]
        if v is None:
            out.pop(k, None)
        elif k in ("plan", "fuse"):
            out[k] = _str(v, f"{what}.{k}", 20)
        elif k == "prune_threshold":
            out[k] = float(_number(v, f"{what}.prune_threshold", "num", 0.0, MAX_PRUNE_THRESHOLD))
        elif k == "refresh":
            if not isinstance(v, bool):
                raise SweepFileError(f"{what}.refresh must be true or false, got {v!r}"[:300])
            out[k] = v
        else:  # lut: a regular file, read and checked (bounded JSON, finite numbers) before any job
            out[k] = _lut_file(v, f"{what}.lut", base_dir)
    return out


def _lut_file(value: Any, what: str, base_dir: Path) -> str:

    path = Path(_str(value, what)).expanduser()
    path = path if path.is_absolute() else base_dir / path
    try:
        read_table(path)
    except GsdeployError as e:
        raise SweepFileError(f"{what}: {e}") from None
    return str(path.resolve())


def _resolve_plan(raw: dict, what: str) -> dict:
    """ModelEntry's plan fields, in bench's vocabulary (gsdeploy.plan.stage.resolve_modes)."""
    from gsdeploy.plan.stage import resolve_modes  # heavy: imports torch

    names = tuple(f"{what}.{k}" for k in ("plan", "fuse", "lut", "refresh"))
    try:
        plan, fuse = resolve_modes(raw.get("plan", "auto"), raw.get("fuse"), lut=raw.get("lut") is not None,
                                   refresh=bool(raw.get("refresh")), names=names)
    except SweepFileError:
        raise
    except GsdeployError as e:
        raise SweepFileError(str(e)) from None
    return {"plan": plan, "fuse": fuse, "prune_threshold": raw.get("prune_threshold"), "lut": raw.get("lut"),
            "refresh": bool(raw.get("refresh"))}


def _model_entry(raw: Any, i: int, base_dir: Path, plan: dict) -> ModelEntry:
    what = f"models[{i}]"
    raw = _keys(raw, what, MODEL_KEYS, ("model",))
    fields: dict[str, Any] = {"model": _model_ref(raw["model"], f"{what}.model", base_dir)}
    if raw.get("baseline") is not None:
        fields["baseline"] = _model_ref(raw["baseline"], f"{what}.baseline", base_dir)
    for k, ref in (("arch", "model"), ("baseline_arch", "baseline")):
        if raw.get(k) is not None:
            fields[k] = _arch(raw[k], f"{what}.{k}", fields.get(ref))
    if raw.get("input_shape") is not None:
        fields["input_shape"] = _input_shape(raw["input_shape"], f"{what}.input_shape")
    fields.update(_resolve_plan(_plan(raw, what, plan, base_dir), what))
    return ModelEntry(**fields)


def parse_sweep(data: Any, source: Path, timing_flags: Timing | None = None, retries: int | None = None,
                timeout_s: float | None = None) -> SweepSpec:
    """Check the parsed YAML and build the SweepSpec; flags given on the command line override the
    file (as `bench`'s flags override a profile). Every profile is loaded (so a typo fails here)."""
    where = str(source)
    data = _keys(data, where, TOP_KEYS, ("models", "profiles"))
    name = data.get("name", source.stem)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SweepFileError(f"{where}: name must be letters, digits, '.', '_' or '-' (it names the CSV), "
                             f"got {brief(name)}")
    if data.get("description") is not None:
        _str(data["description"], f"{where}: description")
    base_dir = source.resolve().parent
    # `plan: latency` is short for `plan: {plan: latency}`; the mapping sets every model's defaults
    raw_plan = data.get("plan")
    raw_plan = {"plan": raw_plan} if isinstance(raw_plan, str) else (raw_plan if raw_plan is not None else {})
    plan = _plan(_keys(raw_plan, f"{where}: plan", PLAN_KEYS), f"{where}: plan", {}, base_dir)
    _resolve_plan(plan, f"{where}: plan")  # a bad default fails even where every model overrides it
    models = tuple(_model_entry(m, i, base_dir, plan)
                   for i, m in enumerate(_list(data["models"], f"{where}: models", MAX_MODELS)))
    if len({m.key for m in models}) != len(models):
        raise SweepFileError(f"{where}: models lists the same model (with the same options) twice")
    profiles: dict[str, Profile] = {}
    for i, p in enumerate(_list(data["profiles"], f"{where}: profiles", MAX_PROFILES)):
        ref = _str(p, f"{where}: profiles[{i}]")
        path = Path(ref).expanduser()
        if ("/" in ref or ref.endswith((".yaml", ".yml"))) and not path.is_absolute():
            ref = str(base_dir / path)
        prof = load_profile(ref)
        if prof.name in profiles:
            raise SweepFileError(f"{where}: profile '{prof.name}' is listed twice")
        profiles[prof.name] = prof
    batches = None
    if data.get("batches") is not None:
        batches = tuple(int(_number(b, f"{where}: batches[{i}]", "int", 1, MAX_BATCH))
                        for i, b in enumerate(_list(data["batches"], f"{where}: batches", MAX_BATCHES)))
        if len(set(batches)) != len(batches):
            raise SweepFileError(f"{where}: batches lists a batch size twice: {list(batches)}")
    precisions = None
    if data.get("precisions") is not None:
        precisions = tuple(_list(data["precisions"], f"{where}: precisions", len(PRECISIONS)))
        bad = [p for p in precisions if p not in PRECISIONS]
        if bad or len(set(precisions)) != len(precisions):
            raise SweepFileError(f"{where}: precisions must be distinct values of {', '.join(PRECISIONS)}, got "
                                 f"{list(precisions)!r}")
    timing = {}
    raw_timing = _keys(data.get("timing") or {}, f"{where}: timing", tuple(TIMING_RANGES))
    for k, v in raw_timing.items():
        if v is not None:
            timing[k] = _number(v, f"{where}: timing.{k}", *TIMING_RANGES[k])
    for k, v in vars(timing_flags or Timing()).items():
        if v is not None:
            timing[k] = _number(v, f"--{k.replace('_', '-')}", *TIMING_RANGES[k])
    spec = SweepSpec(
        name=name, source=source, models=models, profiles=profiles, batches=batches, precisions=precisions,
        timing=Timing(**timing),
        retries=int(_number(retries if retries is not None else data.get("retries", 2),
                                 "--retries" if retries is not None else f"{where}: retries", *RETRIES_RANGE)),
        timeout_s=float(_number(timeout_s if timeout_s is not None else data.get("timeout_s", 1800.0),
                                     "--timeout-s" if timeout_s is not None else f"{where}: timeout_s",
                                     *TIMEOUT_RANGE)))
    n = sum(len(batches or p.batches) for p in profiles.values()) * len(models) * len(precisions or (None,))
    if n > MAX_JOBS:
        raise SweepFileError(f"{where}: the sweep expands to {n} jobs; at most {MAX_JOBS}")
    seen = set()
    for job in spec.jobs():  # every profile × batch × precision must make valid targets
        if (job.profile, job.batch, job.precision) not in seen:
            seen.add((job.profile, job.batch, job.precision))
            targets = spec.targets(job)
            if job.entry.lut is not None:
                _check_lut(job.entry, targets[0])
    _check_batches(spec)
    return spec


def _check_batches(spec: SweepSpec) -> None:
    """A batch whose input alone is beyond gsdeploy's limit fails here where the input shape is
    known without loading (given, the profile's, a zoo model's); a checkpoint's own shape is
    checked when it is loaded (stages.prepare), still before any deploy."""
    from gsdeploy.zoo import list_entries  # heavy: imports torch

    zoo_shapes = {e.name: tuple(e.input_shape) for e in list_entries()}
    for job in spec.jobs():
        _check_batch(job, spec, zoo_shapes)


def _check_batch(job: Job, spec: SweepSpec, zoo_shapes: dict[str, tuple[int, ...]]) -> None:
    from gsdeploy.load import parse_input_shape  # heavy: imports torch
    from gsdeploy.pipeline import check_batch_size  # heavy: imports torch

    prof = spec.profiles[job.profile]
    shape = (tuple(parse_input_shape(job.entry.input_shape)) if job.entry.input_shape else
             tuple(prof.input_shape) if prof.input_shape else zoo_shapes.get(job.entry.model))
    try:
        check_batch_size(shape, [job.batch])
    except GsdeployError as e:
        raise SweepFileError(f"{spec.source}: model {job.entry.model}, profile {job.profile}: {e}") from None


def _check_lut(entry: ModelEntry, target: Target) -> None:
    """A LUT must be for the target the model is planned for: its engine and settings, checked
    here (the device and engine version are checked where the plan is made, on the device)."""
    from gsdeploy.plan.stage import load_lut  # heavy: imports torch

    try:
        load_lut(Path(entry.lut), target, here=False)
    except GsdeployError as e:
        raise SweepFileError(f"model {entry.model}, profile {target.profile}: {e}") from None


def load_sweep(path: str | Path, timing_flags: Timing | None = None, retries: int | None = None,
               timeout_s: float | None = None) -> SweepSpec:
    path = Path(path)
    return parse_sweep(read_sweep_yaml(path), path, timing_flags, retries, timeout_s)
