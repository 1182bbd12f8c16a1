"""Claims from papers, checked: PASS, FAIL, SKIP (cannot be checked here, and why) or ERROR.

A claim file (claims/*.yaml) lists what a paper says about a compressed model, mapped to a
model gsdeploy can load (a zoo name, or a checkpoint path plus arch):

    paper: "Li et al., Group Sparsity: The Hinge ..., CVPR 2020"
    claims:
      - id: hinge-resnet56-flops
        model: resnet56_hinge50
        baseline: resnet56
        metric: flop_ratio        # speedup | flop_ratio | params_ratio | latency_ms
        claimed: 0.50
        tolerance: {abs: 0.02}    # or {rel: 0.10}
        paper_value: 0.50         # the paper's own figure, for reference only

Metrics:
  flop_ratio    MACs of the deployed model / MACs of the deployed baseline (the share of the
                baseline's FLOPs the model keeps; 0.5 = "50% of the FLOPs"). No timing.
  params_ratio  the same for parameters. No timing.
  speedup       baseline latency / model latency (> 1 is faster), measured by the caller's
                `measure_fn` on the claim's profile, engine, precision and batch.
  latency_ms    the model's median latency in ms, measured likewise.

Tolerance, with d the allowed deviation: `{abs: a}` gives d = a (in the metric's own unit);
`{rel: r}` gives d = r × |claimed|. `direction` says which deviations count:
  both      PASS when |measured − claimed| <= d   (default for flop_ratio / params_ratio)
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

from gsdeploy.errors import GsdeployError, MissingDependencyError
from gsdeploy.profiles import (DEFAULT_PROFILE, MAPPING, POS_INT, POS_INT_LIST, STR, KeyType, Profile, check_keys,
                               load_profile, read_yaml, unavailable_reason)
from gsdeploy.target import Target, validate

METRICS = ("speedup", "flop_ratio", "params_ratio", "latency_ms")
TIMED = ("speedup", "latency_ms")
DIRECTIONS = ("both", "at_least", "at_most")
DEFAULT_DIRECTION = {"flop_ratio": "both", "params_ratio": "both", "speedup": "at_least", "latency_ms": "at_most"}
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
    paper_value: float | None = None
    note: str | None = None
    source: str | None = None  # the claim file


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
        return f"{self.status:5s} {self.claim.id}: measured {m}, claimed {self.claimed:g} — {self.reason}"


# ---- loading --------------------------------------------------------------------------------

_NUM = KeyType("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
_TOL = KeyType("a mapping with exactly one of abs or rel and a number >= 0, e.g. {rel: 0.1}",
          lambda v: isinstance(v, dict) and len(v) == 1 and next(iter(v)) in ("abs", "rel")
          and isinstance(next(iter(v.values())), (int, float)) and not isinstance(next(iter(v.values())), bool)
          and next(iter(v.values())) >= 0)
CLAIM_KEYS: dict[str, KeyType] = {
    "id": STR, "paper": STR, "model": STR, "arch": STR, "baseline": STR, "baseline_arch": STR,
    "metric": KeyType("one of " + ", ".join(METRICS), lambda v: v in METRICS),
    "claimed": _NUM, "tolerance": _TOL,
    "direction": KeyType("one of " + ", ".join(DIRECTIONS), lambda v: v in DIRECTIONS),
    "batch": POS_INT, "engine": STR, "precision": STR, "profile": STR, "input_shape": POS_INT_LIST,
    "paper_value": _NUM, "note": STR,
}
CLAIM_REQUIRED = ("id", "model", "metric", "claimed", "tolerance")
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
            paper_value=float(merged["paper_value"]) if "paper_value" in merged else None,
            note=(merged.get("note") or "").strip() or None, source=where))
    ids = [c.id for c in out]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ClaimError(f"{where}: claim id(s) used twice: {', '.join(dup)}")
    return out


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
        elif p.is_file():
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
    """Deployed MACs/params per (model, arch, input_shape), shared by the claims of one call
    (several claims use one baseline; deploying ResNet-50 takes seconds)."""

    deploy_fn: Callable | None
    load_fn: Callable | None
    cache: dict = field(default_factory=dict)

    def counts(self, model: str, arch: str | None, input_shape: tuple[int, ...] | None) -> tuple[int, int, tuple]:
        key = (model, arch, input_shape)
        if key not in self.cache:
            load = self.load_fn
            if load is None:
                from gsdeploy.load import load_model as load
            deploy = self.deploy_fn
            if deploy is None:
                from gsdeploy.transforms import DeployOptions, deploy as _deploy

                deploy = lambda m, s: _deploy(m, s, DeployOptions())  # noqa: E731
            loaded = load(model, arch=arch, input_shape=input_shape)
            shape = tuple(loaded.input_shape)
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
    from gsdeploy.metrics import count_macs, count_params

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
    macs, params, shape = ratios.counts(claim.model, claim.arch, claim.input_shape)
    # The baseline takes the model's input shape (a compressed model and its baseline are
    # compared on the same input).
    b_macs, b_params, _ = ratios.counts(claim.baseline, claim.baseline_arch, claim.input_shape or shape)
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


def _evaluate_one(claim: Claim, measure_fn: Callable[[Claim], float] | None, profile: str | None, ratios: _Ratios,
                  unavailable_fn: Callable[[Profile], str | None]) -> Verdict:
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


def verdicts_frame(verdicts: list[Verdict]) -> pd.DataFrame:
    return pd.DataFrame([{
        "id": v.claim.id, "status": v.status, "metric": v.claim.metric, "model": v.claim.model,
        "baseline": v.claim.baseline, "profile": v.claim.profile, "measured": v.measured,
        "claimed": v.claim.claimed, "tolerance": str(v.claim.tolerance), "direction": v.claim.direction,
        "paper_value": v.claim.paper_value, "reason": v.reason, "paper": v.claim.paper,
    } for v in verdicts])


def render_verdicts(verdicts: list[Verdict]) -> str:
    """Markdown table of verdicts plus a one-line summary."""
    lines = ["| status | claim | metric | measured | claimed | tolerance | reason |",
             "|---|---|---|---:|---:|---|---|"]
    for v in verdicts:
        m = "–" if v.measured is None else f"{v.measured:.4g}"
        lines.append(f"| {v.status} | {v.claim.id} | {v.claim.metric} | {m} | {v.claim.claimed:g} | "
                     f"{v.claim.tolerance} ({v.claim.direction}) | {v.reason.replace('|', '/')} |")
    counts = {s: sum(v.status == s for v in verdicts) for s in STATUSES}
    lines.append("")
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no claims")
    return "\n".join(lines) + "\n"


def write_verdicts(verdicts: list[Verdict], path: Path, command: str) -> Path:
    """Verdicts to `path`: CSV (every field, plus the command; what `gsdeploy report` reads back)
    when it ends in .csv, else the Markdown table under a `command:` line."""
    from gsdeploy.atomic import write_text_atomic

    path = Path(path)
    if path.suffix.lower() == ".csv":
        frame = verdicts_frame(verdicts).assign(command=command)
        return write_text_atomic(path, frame.to_csv(index=False, lineterminator="\n"))
    return write_text_atomic(path, f"command: {command}\n\n" + render_verdicts(verdicts))


def exit_code(verdicts: list[Verdict]) -> int:
    """0 when every claim passed or was skipped, 1 when any failed or could not be evaluated."""
    return 1 if any(v.status in ("FAIL", "ERROR") for v in verdicts) else 0
