"""What to run on, and how: one `Target` per engine entry × precision of a profile.

A profile (profiles/*.yaml) says where and how to measure; the command line may override
parts of it. Both are resolved ONCE, up front, into frozen `Target` objects, checked before
any work starts (an unknown engine, a provider this ONNX Runtime lacks, DLA without
fp16/int8, a non-finite or out-of-range number → one `TargetError`), and then handed whole to

  * the loaders (`gsdeploy/loaders.py`), which make what a runner runs: the ORT session
    (providers + provider options, threads, spinning, graph optimisation), the TensorRT build
    options (precision, workspace, DLA core, GPU fallback, ...), the torch runner settings;
  * the bench sweep, which times every subject on every target and batch, and labels each
    row with `target.label` (`ort`, `trt-gpu`, `trt-dla0`, ...);
  * the planner, which times candidates on the target it will deploy to.

Using it::

    from gsdeploy.target import TargetFlags, resolve_targets, make_target
    targets = resolve_targets("cpu-ort", TargetFlags(threads=2))   # from a profile + flags
    t = targets[0]                  # Target(label='ort', engine='ort', precision='fp32', ...)
    t = make_target("ort", threads=1, batches=(1,))   # a CPU target without a profile
    from gsdeploy.loaders import ort_session
    session = ort_session("model.onnx", t)

`Target.to_dict()` / `Target.from_dict()` round-trip through JSON (child processes, Ray
workers, timing-cache keys). One vocabulary of engine names: `ENGINES`.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from gsdeploy.errors import GsdeployError, MissingDependencyError
from gsdeploy.limits import MAX_BATCH, MAX_SAMPLE_ELEMENTS, MAX_THREADS

# The engines the bench can run (each has a runner in bench/sweep.RUNNERS). One vocabulary:
# profiles, the CLI's --engine, claims and rows all use these names (rows add the label).
ENGINES = ("ort", "torch", "trt")
DEVICE_KINDS = ("cpu", "cuda", "jetson")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
GPU_ENGINES = ("trt",)  # need CUDA (server GPU or Jetson)
GRAPH_OPT_LEVELS = ("disable", "basic", "extended", "layout", "all")
CPU_PROVIDER = "CPUExecutionProvider"
TRT_PROVIDER = "TensorrtExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
# A row whose latency CoV is above this is flagged noisy (profiles and --max-cov may change it).
# trtexec warns when the coefficient of variation of GPU compute time exceeds 2.5 %; the same
# threshold flags a CPU series whose spread is large enough to blur speedups of a few percent.
DEFAULT_MAX_COV = 0.025
# Upper bounds that catch typos (a batch of 10**9 is not a benchmark) without limiting real use.


class TargetError(GsdeployError):
    """A profile entry plus flags that cannot mean what the user intended."""


@dataclass(frozen=True)
class PowerSpec:
    """Power sampling on Jetson: `tegrastats --interval N` during each timed loop."""

    tegrastats_interval_ms: int = 100
    module: str = "auto"  # which rails make up the module's total, see bench/tegrastats.py


@dataclass(frozen=True)
class Target:
    """One engine entry of a profile at one precision, with every setting its runner needs.

    Frozen: build it with `resolve_targets` / `make_target` (both validate) or
    `dataclasses.replace` followed by `validate`. Fields that do not apply to `engine` keep
    their defaults (e.g. `providers` is empty for torch).
    """

    engine: str  # one of ENGINES
    label: str  # unique per resolved profile, e.g. "ort", "trt-gpu", "trt-dla0"; the rows' engine column
    precision: str = "fp32"
    device: str = "cpu"  # cpu | cuda | jetson
    profile: str = "cpu-ort"  # the profile it came from (recorded, not looked up again)
    batches: tuple[int, ...] = (1,)
    threads: int | None = None  # intra-op threads; None = every core this process may use
    input_shape: tuple[int, ...] | None = None  # per sample, overrides the model's
    # timing (bench/measure.MeasureConfig) and the CoV above which a row is flagged noisy
    warmup_s: float = 0.5
    min_iterations: int = 50
    min_duration_s: float = 2.0
    max_cov: float = DEFAULT_MAX_COV
    # ONNX Runtime
    providers: tuple[str, ...] = ()
    provider_options: tuple[Mapping[str, Any], ...] = ()  # one mapping per provider
    graph_optimization_level: str = "all"
    allow_spinning: bool = True
    # torch
    cuda_graph: bool = False
    channels_last: bool = False
    # TensorRT build
    workspace_mb: int | None = None  # None = TensorRT's default through TrtBuildOptions (4096)
    dla_core: int | None = None
    gpu_fallback: bool = False
    timing_cache: str | None = None
    builder_optimization_level: int | None = None
    power: PowerSpec | None = None  # Jetson tegrastats sampling (profile-wide)

    # -- views ------------------------------------------------------------------------------
    @property
    def on_gpu(self) -> bool:
        """True when the engine computes on a GPU (TensorRT, torch on cuda, a GPU ORT provider)."""
        if self.engine == "ort":
            return bool(self.providers) and self.providers[0] != CPU_PROVIDER
        return self.device != "cpu"

    @property
    def torch_device(self) -> str:
        return "cuda" if self.device != "cpu" else "cpu"

    def ort_providers(self) -> list[str | tuple[str, dict[str, Any]]]:
        """The `providers=` argument of `onnxruntime.InferenceSession`: names, with their
        options where the profile gives any. TensorRT EP gets `trt_fp16_enable` from the
        precision (validation refuses a profile that says otherwise)."""
        out: list[str | tuple[str, dict[str, Any]]] = []
        for i, p in enumerate(self.providers):
            opts = dict(self.provider_options[i]) if i < len(self.provider_options) else {}
            if p == TRT_PROVIDER and self.precision == "fp16":
                opts.setdefault("trt_fp16_enable", True)
            out.append((p, opts) if opts else p)
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["provider_options"] = [dict(m) for m in self.provider_options]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Target":
        d = dict(d)
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise TargetError(f"unknown target field(s): {', '.join(sorted(unknown))}")
        for key in ("batches", "input_shape", "providers"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        d["provider_options"] = tuple(dict(m) for m in d.get("provider_options") or ())
        if isinstance(d.get("power"), Mapping):
            d["power"] = PowerSpec(**d["power"])
        return validate(cls(**d))

    def key(self) -> str:
        """A stable string of every setting (for caches and logs)."""
        return json.dumps(self.to_dict(), sort_keys=True, default=str)

    def unavailable_reason(self) -> str | None:
        """Why this target cannot run on this machine (missing module, provider, device), or None."""
        return unavailable_reason(self)


@dataclass(frozen=True)
class TargetFlags:
    """Command-line overrides of a profile; None (or empty) keeps the profile's value.

    `engines` selects entries by label or engine name ("ort-cuda", "trt"); an engine name the
    profile lacks adds a default entry for it on the profile's device (`--engine torch` with
    cpu-ort times torch with cpu-ort's budget)."""

    engines: tuple[str, ...] = ()
    batches: tuple[int, ...] | None = None
    threads: int | None = None
    precision: str | None = None
    input_shape: tuple[int, ...] | None = None
    warmup_s: float | None = None
    min_iterations: int | None = None
    min_duration_s: float | None = None
    max_cov: float | None = None


# ---- validation -----------------------------------------------------------------------------


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate(t: Target) -> Target:
    """Every rule that needs no probing of the machine; returns `t` or raises TargetError."""
    where = f"target {t.label}" + (f" (profile {t.profile})" if t.profile else "")

    def bad(msg: str) -> TargetError:
        return TargetError(f"{where}: {msg}")

    if t.engine not in ENGINES:
        raise bad(f"unknown engine '{t.engine}'; choose from {', '.join(ENGINES)}")
    if t.device not in DEVICE_KINDS:
        raise bad(f"device must be one of {', '.join(DEVICE_KINDS)}, got {t.device!r}")
    if t.precision not in PRECISIONS:
        raise bad(f"precision must be one of {', '.join(PRECISIONS)}, got {t.precision!r}")
    if not t.label or not isinstance(t.label, str):
        raise bad("label must be a non-empty string")
    if not t.batches or not all(_is_int(b) and 1 <= b <= MAX_BATCH for b in t.batches):
        raise bad(f"batches must be integers 1..{MAX_BATCH}, got {list(t.batches)}")
    if len(set(t.batches)) != len(t.batches):
        raise bad(f"batches lists a batch size twice: {list(t.batches)}")
    if t.threads is not None and not (_is_int(t.threads) and 1 <= t.threads <= MAX_THREADS):
        raise bad(f"threads must be an integer 1..{MAX_THREADS}, got {t.threads!r}")
    if t.input_shape is not None and not (t.input_shape and all(_is_int(d) and d > 0 for d in t.input_shape)):
        raise bad(f"input_shape must be positive integers, got {t.input_shape!r}")
    if t.input_shape and math.prod(t.input_shape) > MAX_SAMPLE_ELEMENTS:  # the bound --input-shape has
        raise bad(f"input_shape {'x'.join(map(str, t.input_shape))} has {math.prod(t.input_shape):.3g} values per "
                  f"sample; the limit is {MAX_SAMPLE_ELEMENTS:.3g}")
    for name in ("warmup_s", "min_duration_s"):
        v = getattr(t, name)
        if not (_finite(v) and 0 <= v <= 3600):
            raise bad(f"{name} must be a finite number of seconds in 0..3600, got {v!r}")
    if not (_is_int(t.min_iterations) and 1 <= t.min_iterations <= 10**7):
        raise bad(f"min_iterations must be an integer 1..10000000, got {t.min_iterations!r}")
    if not (_finite(t.max_cov) and 0 < t.max_cov <= 10):
        raise bad(f"max_cov must be a finite number in (0, 10], got {t.max_cov!r}")

    if t.device == "cpu" and t.engine in GPU_ENGINES:
        raise bad(f"engine '{t.engine}' needs a GPU; device is cpu")
    if t.device == "cpu" and t.precision != "fp32":
        raise bad(f"precision must be fp32 on a cpu device (gsdeploy's CPU engines run fp32), got {t.precision}")

    if t.engine == "ort":
        if not t.providers:
            raise bad("ORT needs providers (e.g. [CPUExecutionProvider])")
        if not all(isinstance(p, str) and p.endswith("ExecutionProvider") for p in t.providers):
            raise bad(f"providers must be ONNX Runtime provider names (…ExecutionProvider), got {list(t.providers)}")
        if t.device == "cpu" and any(p != CPU_PROVIDER for p in t.providers):
            raise bad("providers lists GPU providers on a cpu device")
        if t.device != "cpu" and t.providers[0] == CPU_PROVIDER:
            raise bad(f"the first provider on a {t.device} device must be a GPU provider, got {t.providers[0]}")
        if t.provider_options and len(t.provider_options) != len(t.providers):
            raise bad(f"provider_options must have one mapping per provider ({len(t.providers)}), "
                      f"got {len(t.provider_options)}")
        if t.graph_optimization_level not in GRAPH_OPT_LEVELS:
            raise bad(f"graph_optimization_level must be one of {', '.join(GRAPH_OPT_LEVELS)}, "
                      f"got {t.graph_optimization_level!r}")
        if t.precision not in ("fp32", "fp16"):
            raise bad(f"ORT runs fp32, or fp16 through the TensorRT provider; {t.precision} is not supported")
        if t.precision == "fp16":
            if TRT_PROVIDER not in t.providers:
                raise bad("fp16 in ORT needs TensorrtExecutionProvider (with trt_fp16_enable); the CUDA and CPU "
                          "providers run the ONNX model's own types")
            i = t.providers.index(TRT_PROVIDER)
            flag = t.provider_options[i].get("trt_fp16_enable") if i < len(t.provider_options) else None
            if flag is not None and str(flag).lower() not in ("1", "true"):
                raise bad("precision fp16 but provider_options sets trt_fp16_enable off")
    elif t.providers or t.provider_options:
        raise bad(f"providers are ONNX Runtime settings; engine {t.engine} has none")
    if t.engine == "torch" and t.precision not in ("fp32", "fp16", "bf16"):
        raise bad(f"the torch runner runs fp32, or fp16/bf16 on a GPU; {t.precision} is not supported")
    if t.cuda_graph and (t.engine != "torch" or t.device == "cpu"):
        raise bad("cuda_graph needs engine torch on a cuda or jetson device")
    if t.channels_last and t.engine != "torch":
        raise bad("channels_last is a torch setting")

    if t.engine == "trt":
        if t.precision == "bf16":
            raise bad("gsdeploy's TensorRT builds are fp32, fp16 or int8")
        if t.workspace_mb is not None and not (_is_int(t.workspace_mb) and 1 <= t.workspace_mb <= 1 << 20):
            raise bad(f"workspace_mb must be an integer 1..{1 << 20}, got {t.workspace_mb!r}")
        lvl = t.builder_optimization_level
        if lvl is not None and not (_is_int(lvl) and 0 <= lvl <= 5):
            raise bad(f"builder_optimization_level must be an integer 0-5, got {lvl!r}")
        if t.dla_core is not None:
            if not (_is_int(t.dla_core) and t.dla_core >= 0):
                raise bad(f"dla_core must be a DLA core index (0, 1, ...), got {t.dla_core!r}")
            if t.device != "jetson":
                raise bad("dla_core needs a jetson device (DLA is on Jetson only)")
            if t.precision not in ("fp16", "int8"):
                raise bad(f"DLA runs fp16 or int8 only, got {t.precision}")
        if t.gpu_fallback and t.dla_core is None:
            raise bad("gpu_fallback only applies with a dla_core")
    elif (t.workspace_mb, t.dla_core, t.timing_cache, t.builder_optimization_level) != (None, None, None, None) \
            or t.gpu_fallback:
        raise bad(f"workspace_mb, dla_core, gpu_fallback, timing_cache and builder_optimization_level are "
                  f"TensorRT settings; engine {t.engine} has none")
    if t.power is not None and t.device != "jetson":
        raise bad("power (tegrastats sampling) needs device: jetson")
    return t


# ---- availability ---------------------------------------------------------------------------


def usable_cpus() -> int:
    """Logical CPUs this process may run on (the affinity mask, which containers and
    `taskset` narrow; os.cpu_count() would report the whole host): what a target without
    `threads` runs on, and what is recorded."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _is_jetson() -> bool:
    # L4T writes /etc/nv_tegra_release; the device tree model names the board.
    if Path("/etc/nv_tegra_release").exists():
        return True
    try:
        return "jetson" in Path("/proc/device-tree/model").read_text(errors="replace").lower()
    except OSError:
        return False


def _cuda_available() -> bool:
    try:
        import torch  # heavy: only imported when a GPU target asks

        return bool(torch.cuda.is_available())
    except Exception:  # a broken CUDA install reads as "no CUDA", not as a crash
        return False


def _ort_available_providers() -> list[str] | None:
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime  # optional engine: imported only to list its providers

    return list(onnxruntime.get_available_providers())


def unavailable_reason(t: Target) -> str | None:
    """Why `t` cannot run here (device kind, engine module or tool, ORT provider), or None,
    as far as can be told without building anything."""
    if t.device == "jetson" and not _is_jetson():
        return f"target {t.label} needs a Jetson device; this machine is not one"
    if t.device != "cpu" and not _cuda_available():
        return f"target {t.label} needs a CUDA GPU; none is available here"
    if t.engine == "ort":
        available = _ort_available_providers()
        if available is None:
            return "onnxruntime is not installed"
        missing = [p for p in t.providers if p not in available]
        if missing:
            return (f"target {t.label}: this onnxruntime has no {', '.join(missing)} (it has {', '.join(available)}); "
                    "install onnxruntime-gpu instead of onnxruntime (never both) for GPU providers")
    if t.engine == "trt" and importlib.util.find_spec("tensorrt") is None:
        return "the TensorRT Python package (tensorrt) is not installed"
    return None


def require_available(targets: Iterable[Target]) -> None:
    """MissingDependencyError naming the first target that cannot run here."""
    for t in targets:
        reason = unavailable_reason(t)
        if reason:
            raise MissingDependencyError(f"profile {t.profile} cannot run here: {reason}")


# ---- building -------------------------------------------------------------------------------


def engine_defaults(engine: str, device: str) -> dict[str, Any]:
    """Settings of an engine entry that names only the engine: ORT on CPU gets the CPU
    provider; the rest keep the dataclass defaults."""
    if engine == "ort" and device == "cpu":
        return {"providers": (CPU_PROVIDER,)}
    return {}


def make_target(engine: str = "ort", **fields_: Any) -> Target:
    """A validated Target without a profile (tests, the planner's default, library users):
    `make_target("ort", threads=1, batches=(1, 32))`."""
    device = fields_.get("device", "cpu")
    base = {"label": engine, "profile": "", **engine_defaults(engine, device), **fields_}
    if "provider_options" in base:
        base["provider_options"] = tuple(dict(m) for m in base["provider_options"])
    for key in ("batches", "providers", "input_shape"):
        if base.get(key) is not None:
            base[key] = tuple(base[key])
    return validate(Target(engine=engine, **base))


def _select(targets: tuple[Target, ...], wanted: tuple[str, ...], template: Target, profile: str) -> list[Target]:
    """Entries by label or engine name, in the order asked; an engine the profile lacks gets a
    default entry on the profile's device (its precision fp32 on cpu)."""
    chosen: list[Target] = []
    for w in wanted:
        by_label = [t for t in targets if t.label == w]
        hits = by_label or [t for t in targets if t.engine == w]
        if not hits:
            if w not in ENGINES:
                labels = ", ".join(dict.fromkeys(t.label for t in targets))
                raise TargetError(f"--engine {w}: profile {profile} has no entry labelled '{w}' (it has {labels}) "
                                  f"and '{w}' is not an engine ({', '.join(ENGINES)})")
            hits = [replace(template, engine=w, label=w, precision="fp32", **_reset_engine_fields(),
                            **engine_defaults(w, template.device))]
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def _reset_engine_fields() -> dict[str, Any]:
    keep = {"engine", "label", "precision", "device", "profile", "batches", "threads", "input_shape", "warmup_s",
            "min_iterations", "min_duration_s", "max_cov", "power"}
    return {f.name: f.default for f in fields(Target) if f.name not in keep}


def apply_flags(targets: Iterable[Target], flags: TargetFlags, profile: str = "") -> tuple[Target, ...]:
    """The profile's targets with the flags' overrides applied, each validated again."""
    targets = tuple(targets)
    if not targets:
        raise TargetError(f"profile {profile} has no engines")
    chosen = _select(targets, flags.engines, targets[0], profile) if flags.engines else list(targets)
    over: dict[str, Any] = {}
    for name in ("threads", "warmup_s", "min_iterations", "min_duration_s", "max_cov"):
        v = getattr(flags, name)
        if v is not None:
            over[name] = v
    if flags.batches:
        over["batches"] = tuple(flags.batches)
    if flags.input_shape:
        over["input_shape"] = tuple(flags.input_shape)
    out = []
    for t in chosen:
        changes = dict(over)
        if flags.precision is not None:
            changes["precision"] = flags.precision
        out.append(validate(replace(t, **changes)))
    labels = [t.label for t in out]
    if len(set(labels)) != len(labels):  # e.g. --precision fp16 on an entry that lists fp16 and fp32
        out = list(dict.fromkeys(out))
    return tuple(out)


def resolve_targets(profile: str | None = None, flags: TargetFlags = TargetFlags()) -> tuple[Target, ...]:
    """Load a profile (name or YAML path; default cpu-ort), apply the flags, validate every
    target. Does not check that the targets can run here: see `require_available`."""
    from gsdeploy.profiles import DEFAULT_PROFILE, load_profile  # profiles imports this module

    prof = load_profile(profile or DEFAULT_PROFILE)
    return apply_flags(prof.targets, flags, prof.name)


__all__ = ["CPU_PROVIDER", "DEVICE_KINDS", "ENGINES", "PRECISIONS", "PowerSpec", "Target", "TargetError",
           "TargetFlags", "apply_flags", "make_target", "require_available", "resolve_targets", "unavailable_reason",
           "validate"]
