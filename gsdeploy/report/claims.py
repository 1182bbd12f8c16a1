"""Claims from papers, checked: PASS, FAIL, SKIP (cannot be checked here, and why) or ERROR.

A claim file (claims/*.yaml) lists what a paper says, where it says it, and what it is measured on:

    paper: "Li et al., Group Sparsity: The Hinge ..., CVPR 2020"
    claims:
      - id: hinge-resnext20-flops
        claimed: 0.59              # the paper's own value
        source: "CIFAR-10 results, ResNeXt-20 row (FLOP ratio)"   # where in the paper
        model: ../../shared/fixtures/hinge/hinge_resnext20_cifar10.pt   # checkpoint (relative to this file) or zoo name
        arch: hinge_resnext20
        baseline: resnext20        # the dense network the paper compares with
        metric: flop_ratio         # speedup | flop_ratio | params_ratio | latency_ms | top1_error
        counting: paper            # flop/params ratios: paper (the method's own convention) | deployed
        tolerance: {abs: 0.01}

A claim is measured on the checkpoint or zoo model it names, never on a number gsdeploy built a
model to reach. A checkpoint, baseline or eval data file that is not there makes the claim SKIP
with the reason; nothing missing ever PASSes.

Metrics:
  flop_ratio    FLOPs of the model / FLOPs of the baseline. `counting: paper` counts both networks as
                loaded with the paper's convention (metrics.paper_flops: the Hinge code's counter);
                `counting: deployed` (default) counts conv/linear MACs of both deployed graphs
                (BN folded, zero groups removed). No timing.
  params_ratio  the same for parameters.
  speedup       baseline latency / model latency (> 1 is faster), measured by the caller's
                `measure_fn` on the claim's profile, engine, precision and batch. `paper_target`
                says what the paper measured on, so the report states the hardware difference.
  latency_ms    the model's median latency in ms, measured likewise.
  top1_error    top-1 error in % of the model on `eval_data` (a .npz with `x`: float32 N,C,H,W
                inputs as the model expects them, `y`: integer labels).

Tolerance, with d the allowed deviation: `{abs: a}` gives d = a (in the metric's own unit);
`{rel: r}` gives d = r × |claimed|. `direction` says which deviations count:
  both      PASS when |measured − claimed| <= d   (default for ratios and top1_error)
  at_least  PASS when measured >= claimed − d     (default for speedup: faster is no failure)
  at_most   PASS when measured <= claimed + d     (default for latency_ms)
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

import pandas as pd
import torch
import torch.nn as nn

from gsdeploy import transforms
from gsdeploy.accuracy import top1_predictions, torch_logits
from gsdeploy.atomic import write_text_atomic
from gsdeploy.errors import GsdeployError, MissingDependencyError
from gsdeploy.load import load_model
from gsdeploy.metrics import count_macs, count_params, paper_flops
from gsdeploy.profiles import (BATCH, DEFAULT_PROFILE, INPUT_SHAPE, MAPPING, STR, KeyType, Profile, check_keys,
                               load_profile, unavailable_reason)
from gsdeploy.sample_data import load_samples
from gsdeploy.target import Target, validate
from gsdeploy.yaml_file import read_yaml

METRICS = ("speedup", "flop_ratio", "params_ratio", "latency_ms", "top1_error")
TIMED = ("speedup", "latency_ms")
RATIOS = ("flop_ratio", "params_ratio")
COUNTINGS = ("deployed", "paper")
DIRECTIONS = ("both", "at_least", "at_most")
DEFAULT_DIRECTION = {"flop_ratio": "both", "params_ratio": "both", "speedup": "at_least", "latency_ms": "at_most",
                     "top1_error": "both"}
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".pt2", ".ckpt", ".bin", ".onnx")
STATUSES = ("PASS", "FAIL", "SKIP", "ERROR")


class ClaimError(GsdeployError):
    """A claim file is missing, malformed, or does not follow the schema."""


@dataclass(frozen=True)
class Tolerance:
    kind: str  # "abs" | "rel"
    value: float

    def allowed(self, claimed: float) -> float:
        return self.value if self.kind == "abs" else self.value * abs(claimed)

    def __str__(self) -> str:
        return f"±{self.value:g}" if self.kind == "abs" else f"±{self.value:.0%}"


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    model: str  # zoo name or checkpoint path
    metric: str
    claimed: float
    tolerance: Tolerance
    direction: str
    baseline: str | None = None
    arch: str | None = None
    baseline_arch: str | None = None
    batch: int | None = None
    engine: str | None = None  # an engine name or label of the profile
    precision: str | None = None
    profile: str | None = None
    input_shape: tuple[int, ...] | None = None
    note: str | None = None
    file: str | None = None  # the claim file
    source: str = ""  # where in the paper the claimed value stands (table, figure, section)
    counting: str = "deployed"  # ratios: "paper" (the method's own convention) | "deployed"
    eval_data: str | None = None  # top1_error: .npz with x, y
    paper_target: str | None = None  # timed claims: the hardware/setting the paper measured on


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    status: str  # PASS | FAIL | SKIP | ERROR
    measured: float | None
    reason: str

    @property
    def claimed(self) -> float:
        return self.claim.claimed

    def __str__(self) -> str:
        m = "–" if self.measured is None else f"{self.measured:.4g}"
        return (f"{self.status:5s} {self.claim.id}: measured {m}, paper {self.claimed:g} ({self.claim.source}) "
                f"— {self.reason}")


# ---- loading --------------------------------------------------------------------------------

_NUM = KeyType("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
_TOL = KeyType("a mapping with exactly one of abs or rel and a finite number >= 0, e.g. {rel: 0.1}",
          lambda v: isinstance(v, dict) and len(v) == 1 and next(iter(v)) in ("abs", "rel")
          and isinstance(next(iter(v.values())), (int, float)) and not isinstance(next(iter(v.values())), bool)
          and math.isfinite(next(iter(v.values()))) and next(iter(v.values())) >= 0)
CLAIM_KEYS: dict[str, KeyType] = {
    "id": STR, "paper": STR, "model": STR, "arch": STR, "baseline": STR, "baseline_arch": STR,
    "metric": KeyType("one of " + ", ".join(METRICS), lambda v: v in METRICS),
    "claimed": _NUM, "tolerance": _TOL,
    "direction": KeyType("one of " + ", ".join(DIRECTIONS), lambda v: v in DIRECTIONS),
    "batch": BATCH, "engine": STR, "precision": STR, "profile": STR, "input_shape": INPUT_SHAPE,
    "note": STR, "source": STR,
    "counting": KeyType("one of " + ", ".join(COUNTINGS), lambda v: v in COUNTINGS),
    "eval_data": STR, "paper_target": STR,
}
CLAIM_REQUIRED = ("id", "model", "metric", "claimed", "tolerance", "source")
FILE_KEYS: dict[str, KeyType] = {
    "paper": STR, "url": STR,
    "defaults": MAPPING,
    "claims": KeyType("a non-empty list of claims", lambda v: isinstance(v, list) and len(v) > 0),
}


def parse_claims(data: Any, where: str) -> list[Claim]:
    if not isinstance(data, dict):
        raise ClaimError(f"{where}: a claim file must be a YAML mapping with a 'claims' list")
    check_keys(where, data, FILE_KEYS, "", ("claims",), error=ClaimError)
    defaults = data.get("defaults") or {}
    check_keys(where, defaults, CLAIM_KEYS, "defaults.", error=ClaimError)
    out: list[Claim] = []
    for i, raw in enumerate(data["claims"]):
        prefix = f"claims[{i}]."
        if not isinstance(raw, dict):
            raise ClaimError(f"{where}: key 'claims[{i}]' must be a mapping, got {type(raw).__name__}")
        merged = {**defaults, **raw}
        check_keys(where, merged, CLAIM_KEYS, prefix, CLAIM_REQUIRED, error=ClaimError)
        paper = merged.get("paper", data.get("paper"))
        if not paper:
            raise ClaimError(f"{where}: missing key '{prefix}paper' (or a top-level 'paper')")
        metric = merged["metric"]
        if "counting" in raw and metric not in RATIOS:
            raise ClaimError(f"{where}: key '{prefix}counting' applies to flop_ratio and params_ratio only")
        if metric == "top1_error" and not merged.get("eval_data"):
            raise ClaimError(f"{where}: missing key '{prefix}eval_data' (metric top1_error needs labelled inputs)")
        if metric in ("speedup", "flop_ratio", "params_ratio") and not merged.get("baseline"):
            raise ClaimError(f"{where}: missing key '{prefix}baseline' (metric {metric} compares with a baseline)")
        if metric not in TIMED:
            for k in ("batch", "engine", "precision", "profile"):
                if k in raw:
                    raise ClaimError(f"{where}: key '{prefix}{k}' does not apply to metric {metric} "
                                     "(computed from the deployed graphs, without timing)")
        (kind, value), = merged["tolerance"].items()
        out.append(Claim(
            id=merged["id"], paper=paper, model=merged["model"], metric=metric, claimed=float(merged["claimed"]),
            tolerance=Tolerance(kind, float(value)), direction=merged.get("direction", DEFAULT_DIRECTION[metric]),
            baseline=merged.get("baseline"), arch=merged.get("arch"), baseline_arch=merged.get("baseline_arch"),
            batch=merged.get("batch"), engine=merged.get("engine"), precision=merged.get("precision"),
            profile=merged.get("profile") if metric in TIMED else None,
            input_shape=tuple(merged["input_shape"]) if merged.get("input_shape") else None,
            note=(merged.get("note") or "").strip() or None, file=where, source=merged["source"].strip(),
            counting=merged.get("counting", "deployed"), eval_data=merged.get("eval_data"),
            paper_target=merged.get("paper_target")))
    out = [replace(c, model=_resolve(c.model, where), baseline=_resolve(c.baseline, where),
                   eval_data=_resolve(c.eval_data, where, always=True)) for c in out]
    ids = [c.id for c in out]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ClaimError(f"{where}: claim id(s) used twice: {', '.join(dup)}")
    return out


def is_file_ref(name: str | None) -> bool:
    """A claim's model/baseline names a file (not a zoo model) when it has a path separator or
    a checkpoint suffix."""
    return name is not None and ("/" in name or "\\" in name or name.lower().endswith(CHECKPOINT_SUFFIXES))


def _resolve(name: str | None, where: str, always: bool = False) -> str | None:
    """A relative file path in a claim file is relative to that file (claims travel with the repo,
    checkpoints sit beside it, e.g. ../../shared/fixtures/...)."""
    if name is None or not (always or is_file_ref(name)):
        return name
    path = Path(os.path.expandvars(name)).expanduser()
    if not path.is_absolute():
        path = Path(where).resolve().parent / path
    return os.path.normpath(path)


def load_claims(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Claim]:
    """Claims from one YAML file, several, or a directory of them (*.yaml)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.yaml")) + sorted(p.glob("*.yml"))
            if not found:  # a CI gate pointed at the wrong folder must not pass
                raise ClaimError(f"{p} holds no claim files (*.yaml, *.yml)")
            files.extend(found)
        elif os.path.lexists(p):  # read_yaml names FIFOs, devices and link loops
            files.append(p)
        else:
            raise ClaimError(f"claim file {p} does not exist")
    claims: list[Claim] = []
    for f in files:
        claims.extend(parse_claims(read_yaml(f, ClaimError, "claim file"), str(f)))
    if not claims:
        raise ClaimError(f"no claims in {', '.join(map(str, files))}: nothing to check")
    ids = [c.id for c in claims]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ClaimError(f"claim id(s) used in two files: {', '.join(dup)}")
    return claims


# ---- evaluating -----------------------------------------------------------------------------


def judge(claim: Claim, measured: float) -> tuple[str, str]:
    """(PASS|FAIL, reason) for a measured value, by the claim's tolerance and direction."""
    d = claim.tolerance.allowed(claim.claimed)
    c = claim.claimed
    if claim.direction == "both":
        ok, rule = abs(measured - c) <= d + 1e-12, f"within {c:g} {claim.tolerance}"
    elif claim.direction == "at_least":
        ok, rule = measured >= c - d - 1e-12, f"at least {c:g} − {d:.3g}"
    else:
        ok, rule = measured <= c + d + 1e-12, f"at most {c:g} + {d:.3g}"
    return ("PASS" if ok else "FAIL"), f"{claim.metric} {measured:.4g} {'is' if ok else 'is not'} {rule}"


def claim_target(claim: Claim, profile: Profile | None = None) -> Target:
    """The target a timed claim runs on: the profile's entry the claim names (by label or
    engine name) at the claim's precision, else the profile's first target (of that precision),
    with the claim's batch (else the profile's first) as its only batch. `profile` defaults to
    the claim's own (else the default profile). Raises ClaimError when the claim names something
    the profile lacks."""
    profile = profile or load_profile(claim.profile or DEFAULT_PROFILE)
    targets = list(profile.targets)
    if claim.engine is not None:
        targets = [t for t in targets if claim.engine in (t.engine, t.label)]
        if not targets:
            raise ClaimError(f"claim {claim.id}: profile '{profile.name}' has no engine '{claim.engine}' "
                             f"(it has {', '.join(dict.fromkeys(t.label for t in profile.targets))})")
    if claim.precision is not None:
        targets = [t for t in targets if t.precision == claim.precision]
        if not targets:
            raise ClaimError(f"claim {claim.id}: no engine of profile '{profile.name}' runs {claim.precision}")
    batch = claim.batch or profile.batches[0]
    changes: dict[str, Any] = {"batches": (batch,)}
    if claim.input_shape:
        changes["input_shape"] = tuple(claim.input_shape)
    return validate(replace(targets[0], **changes))


@dataclass
class _Ratios:
    """MACs/params per (model, arch, input_shape, counting), shared by the claims of one call
    (several claims use one baseline; deploying ResNet-50 takes seconds)."""

    deploy_fn: Callable | None
    load_fn: Callable | None
    cache: dict = field(default_factory=dict)

    def load(self, model: str, arch: str | None, input_shape: tuple[int, ...] | None):
        load = self.load_fn or load_model
        return load(model, arch=arch, input_shape=input_shape)

    def counts(self, model: str, arch: str | None, input_shape: tuple[int, ...] | None,
               counting: str = "deployed") -> tuple[int, int, tuple]:
        key = (model, arch, input_shape, counting)
        if key not in self.cache:
            loaded = self.load(model, arch, input_shape)
            shape = tuple(loaded.input_shape)
            if counting == "paper":  # the network as the paper counts it: loaded, not deployed
                self.cache[key] = (paper_flops(loaded.module, shape), count_params(loaded.module), shape)
                return self.cache[key]
            deploy = self.deploy_fn
            if deploy is None:
                deploy = lambda m, s: transforms.deploy(m, s, transforms.DeployOptions())  # noqa: E731
            module = deploy(loaded.module, shape).module
            self.cache[key] = (*_count(module, shape), shape)
        return self.cache[key]


def _count(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, int]:
    """(MACs, params) of `module` with gsdeploy/metrics.py's counters.

    MACs are counted on a copy on the meta device: FlopCounterMode only needs shapes, and a
    meta forward pass costs nothing, where a real ResNet-50 pass at 224x224 takes seconds on
    a busy CPU. A module that cannot run on meta (data-dependent control flow, tensors kept
    outside parameters/buffers) is counted for real.
    """
    params = count_params(module)
    try:
        on_meta = all(t.is_meta for t in (*module.parameters(), *module.buffers()))
        meta = module if on_meta else copy.deepcopy(module).to("meta")
        with torch.device("meta"):
            macs = count_macs(meta, shape)
    except Exception:  # noqa: BLE001 — any failure on meta means: count the real module
        macs = count_macs(module, shape)
    return macs, params


def _ratio(claim: Claim, ratios: _Ratios) -> float:
    macs, params, shape = ratios.counts(claim.model, claim.arch, claim.input_shape, claim.counting)
    # The baseline takes the model's input shape (a compressed model and its baseline are
    # compared on the same input).
    b_macs, b_params, _ = ratios.counts(claim.baseline, claim.baseline_arch, claim.input_shape or shape,
                                        claim.counting)
    if claim.metric == "flop_ratio":
        if b_macs <= 0:
            raise GsdeployError(f"baseline {claim.baseline} has no MACs")
        return macs / b_macs
    if b_params <= 0:
        raise GsdeployError(f"baseline {claim.baseline} has no parameters")
    return params / b_params


def evaluate_claims(claims: Iterable[Claim], measure_fn: Callable[[Claim], float] | None,
                    profile: str | None = None, *, deploy_fn: Callable | None = None, load_fn: Callable | None = None,
                    unavailable_fn: Callable[[Profile], str | None] = unavailable_reason) -> list[Verdict]:
    """Check each claim; never raises for one bad claim (it becomes an ERROR verdict).

    flop_ratio / params_ratio: load model and baseline (`load_fn`, default
    gsdeploy.load.load_model), deploy both (`deploy_fn(module, input_shape) -> result with
    .module`, default gsdeploy.transforms.deploy with DeployOptions()) and count MACs /
    params of the deployed modules — no timing.

    speedup / latency_ms: the profile is the claim's own, else `profile` (the CLI's
    --profile), else the default profile. A claim bound to another profile than an explicit
    `profile` is skipped (the user asked for that target only). When the profile cannot run
    here (`unavailable_fn`, e.g. no GPU) the claim is SKIPped with the reason; otherwise
    `measure_fn(claim)` is called with `claim.profile` filled in and returns the measured
    value (use `claim_target` for the target: engine, precision and batch). A MissingDependencyError
    from it is a SKIP too.
    """
    ratios = _Ratios(deploy_fn, load_fn)
    verdicts: list[Verdict] = []
    for claim in claims:
        try:
            verdicts.append(_evaluate_one(claim, measure_fn, profile, ratios, unavailable_fn))
        except MissingDependencyError as e:
            verdicts.append(Verdict(claim, "SKIP", None, str(e)))
        except GsdeployError as e:
            verdicts.append(Verdict(claim, "ERROR", None, str(e)))
        except ImportError as e:  # a pipeline stage not installed / not yet written
            verdicts.append(Verdict(claim, "ERROR", None, f"cannot import {e.name or e}: {e}"))
        except Exception as e:  # noqa: BLE001 — one broken claim must not hide the others' verdicts
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            verdicts.append(Verdict(claim, "ERROR", None, f"{type(e).__name__}: {first}"))
    return verdicts


def top1_error(module: nn.Module, eval_data: str, input_shape: tuple[int, ...]) -> float:
    """Top-1 error in % of `module` on a .npz of inputs `x` (N,C,H,W) and integer labels `y`, read
    as every evaluation file is (sample_data: no pickles, decoded size bounded before decoding,
    finite values of the model's input shape); a bare np.load inflated any .npz whole."""
    samples = load_samples(Path(eval_data), input_shape, labels=True)
    if samples.y is None:
        raise GsdeployError(f"eval data {eval_data} has no labels 'y'; top1_error needs them")
    pred = top1_predictions(torch_logits(module, samples.x), "the model")
    return 100.0 * float((pred != samples.y).mean())


def _missing_file(claim: Claim) -> str | None:
    for role, name in (("checkpoint", claim.model), ("baseline checkpoint", claim.baseline),
                       ("eval data", claim.eval_data)):
        if name is not None and (is_file_ref(name) or role == "eval data") and not Path(name).is_file():
            return f"{role} {os.path.relpath(name)} is not there; this claim is measured on that file only"
    return None


def _evaluate_one(claim: Claim, measure_fn: Callable[[Claim], float] | None, profile: str | None, ratios: _Ratios,
                  unavailable_fn: Callable[[Profile], str | None]) -> Verdict:
    missing = _missing_file(claim)
    if missing:
        return Verdict(claim, "SKIP", None, missing)
    if claim.metric == "top1_error":
        loaded = ratios.load(claim.model, claim.arch, claim.input_shape)
        measured = top1_error(loaded.module, claim.eval_data, tuple(loaded.input_shape))
        status, reason = judge(claim, measured)
        return Verdict(claim, status, measured, reason)
    if claim.metric in TIMED:
        if profile is not None and claim.profile is not None and claim.profile != profile:
            return Verdict(claim, "SKIP", None, f"claim is for profile '{claim.profile}', not the requested "
                                                f"'{profile}'")
        name = claim.profile or profile or DEFAULT_PROFILE
        prof = load_profile(name)
        reason = unavailable_fn(prof)
        if reason:
            return Verdict(claim, "SKIP", None, reason)
        claim_target(claim, prof)  # a claim naming an engine the profile lacks is an error, early
        if measure_fn is None:
            return Verdict(claim, "SKIP", None, "no measurement function given (timed claims need a benchmark)")
        measured = float(measure_fn(replace(claim, profile=name)))
    else:
        measured = _ratio(claim, ratios)
    if not math.isfinite(measured):
        return Verdict(claim, "ERROR", measured, f"measured value is {measured}")
    status, reason = judge(claim, measured)
    return Verdict(claim, status, measured, reason)


# ---- output ---------------------------------------------------------------------------------


def measured_on(claim: Claim) -> str:
    """What a claim is measured on, in words: the model (file name for checkpoints), its baseline,
    the counting or the profile."""
    def name(x: str | None) -> str:
        return Path(x).name if is_file_ref(x) else str(x)

    text = name(claim.model) + (f" vs {name(claim.baseline)}" if claim.baseline else "")
    if claim.metric in RATIOS:
        text += f", {claim.counting} counting"
    elif claim.metric in TIMED:
        text += f", profile {claim.profile or DEFAULT_PROFILE}"
        if claim.paper_target:
            text += f" (paper: {claim.paper_target})"
    elif claim.eval_data:
        text += f", on {name(claim.eval_data)}"
    return text


def verdicts_frame(verdicts: list[Verdict]) -> pd.DataFrame:
    return pd.DataFrame([{
        "id": v.claim.id, "status": v.status, "metric": v.claim.metric, "model": v.claim.model,
        "baseline": v.claim.baseline, "profile": v.claim.profile, "measured": v.measured,
        "claimed": v.claim.claimed, "paper_source": v.claim.source, "measured_on": measured_on(v.claim),
        "counting": v.claim.counting if v.claim.metric in RATIOS else None, "tolerance": str(v.claim.tolerance),
        "direction": v.claim.direction, "reason": v.reason, "paper": v.claim.paper,
    } for v in verdicts])


def render_verdicts(verdicts: list[Verdict]) -> str:
    """Markdown table of verdicts (measured beside the paper's value and where the paper says it)
    plus a one-line summary."""
    lines = ["| status | claim | metric | measured | paper | paper source | measured on | tolerance | reason |",
             "|---|---|---|---:|---:|---|---|---|---|"]
    for v in verdicts:
        m = "–" if v.measured is None else f"{v.measured:.4g}"
        cells = [v.status, v.claim.id, v.claim.metric, m, f"{v.claim.claimed:g}", v.claim.source,
                 measured_on(v.claim), f"{v.claim.tolerance} ({v.claim.direction})", v.reason]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    counts = {s: sum(v.status == s for v in verdicts) for s in STATUSES}
    lines.append("")
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no claims")
    return "\n".join(lines) + "\n"


def write_verdicts(verdicts: list[Verdict], path: Path, command: str) -> Path:
    """Verdicts to `path`: CSV (every field, plus the command; what `gsdeploy report` reads back)
    when it ends in .csv, else the Markdown table under a `command:` line."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        frame = verdicts_frame(verdicts).assign(command=command)
        return write_text_atomic(path, frame.to_csv(index=False, lineterminator="\n"))
    return write_text_atomic(path, f"command: {command}\n\n" + render_verdicts(verdicts))


def exit_code(verdicts: list[Verdict]) -> int:
    """0 when every claim passed or was skipped, 1 when any failed or could not be evaluated."""
    return 1 if any(v.status in ("FAIL", "ERROR") for v in verdicts) else 0
