"""The latency plan: propose per site from measured candidates, then let whole models decide.

1. Deploy as given (pairs kept) and list the sites (plan/sites.py).
2. Time each distinct site's candidates (keep / fuse / pad to the target's multiples) as an
   isolated subgraph with its real input shape, on the target's runner, at the target's
   batches; measurements come from the cache of this target's fingerprint when present.
3. Per site, take the candidate with the lowest time relative to keeping it, averaged over
   the batches (a change must win by MIN_GAIN to be proposed: noise should not flip it).
4. Time the whole models interleaved in one run per batch: dense (when given), as given
   (`never`), the FLOP plan, all pairs fused, and the proposed plan. At each batch the fastest
   whole model wins (a batch-1 server and a batch-32 one are different targets: fusing can win
   at batch 1 where fixed costs dominate and lose at batch 32), so per-site noise cannot ship a
   slower model; the fastest by geometric mean over the batches is the one artifact `export`
   writes. The result is cached, so the same command gives the same plan.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import torch.nn as nn

from gsdeploy.errors import GsdeployError
from gsdeploy.plan import cache as lut
from gsdeploy.plan.cache import Timing, TimingTable
from gsdeploy.plan.sites import KEEP, Site, candidate_module, find_sites
from gsdeploy.plan.timing import (MODEL_CONFIG, MODEL_ROUNDS, SITE_CONFIG, fingerprint,
                                  input_multiple, preferred_multiples, time_modules)
from gsdeploy.target import Target
from gsdeploy.transforms import Deployer, DeployOptions, DeployResult, deploy
from gsdeploy.transforms.align import find_width_sites
from gsdeploy.transforms.context import PassContext

# Part of every plan's cache key: a plan cached by a planner that proposed other whole models
# (before aligned concat widths: 1) is made again, not replayed. Site timings stay valid.
PLANNER_VERSION = 2
MIN_GAIN = 0.03  # a candidate must be this much faster than keeping the site to be proposed
# A batch gets its own model only when that is this much faster there than the overall winner:
# two identical models read 3-5% apart in one short run here (docs/measuring.md).
BATCH_MARGIN = 0.05
VARIANTS = lut.PLAN_VARIANTS
VARIANT_LABELS = {"dense": "dense baseline", "never": "as given (pairs kept)", "flops": "FLOP plan",
                  "always": "all pairs fused", "latency": "per-site latency choices"}


@dataclass
class SitePlan:
    site: Site
    choice: str
    timings: dict[str, dict[int, Timing]]  # candidate -> batch -> timing
    cached: bool

    def score(self, candidate: str) -> float:
        """Mean over batches of time relative to keeping the site."""
        keep = self.timings[KEEP]
        return sum(self.timings[candidate][b].median_ms / keep[b].median_ms for b in keep) / len(keep)


@dataclass
class VariantTiming:
    name: str
    options: DeployOptions | None  # None for the dense baseline
    measured: dict[int, Timing]
    predicted_ms: dict[int, float] | None = None


@dataclass
class LatencyPlan:
    mode: str  # "latency" or "flops"
    options: DeployOptions  # what to deploy with
    winner: str  # the variant chosen
    sites: list[SitePlan] = field(default_factory=list)
    variants: list[VariantTiming] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    batches: tuple[int, ...] = ()
    notes: list[str] = field(default_factory=list)
    measured_sites: int = 0
    cached_sites: int = 0
    models_cached: bool = False
    seconds: float = 0.0
    table: TimingTable | None = None  # every timing used (what --save-lut writes)
    result: DeployResult | None = None  # the winner, deployed and verified
    # The fastest whole model at each batch (the winner above is the fastest over all of them)
    batch_winners: dict[int, str] = field(default_factory=dict)
    variant_options: dict[str, DeployOptions] = field(default_factory=dict)
    deployed: dict[str, DeployResult] = field(default_factory=dict)  # variants deployed so far
    module: nn.Module | None = None  # what the variants deploy (kept to deploy a batch's winner on demand)
    input_shape: tuple[int, ...] = ()

    def winner_at(self, batch: int) -> str:
        return self.batch_winners.get(batch, self.winner)

    def result_at(self, batch: int) -> DeployResult:
        """The fastest model at `batch`, deployed and verified (deployed once, when first asked)."""
        name = self.winner_at(batch)
        if name == self.winner and self.result is not None:
            return self.result
        if name not in self.deployed:
            self.deployed[name] = deploy(self.module, self.input_shape, self.variant_options[name])
        return self.deployed[name]

    def variant(self, name: str) -> VariantTiming | None:
        return next((v for v in self.variants if v.name == name), None)

    def speedup(self, name: str, batch: int) -> float | None:
        d, v = self.variant("dense"), self.variant(name)
        if d is None or v is None:
            return None
        return d.measured[batch].median_ms / v.measured[batch].median_ms


def _structure(module: nn.Module) -> str:
    """What a model is to an engine: its graph (or module types) and its tensor shapes, not the values."""
    code = getattr(module, "code", None) or repr([(n, type(m).__name__) for n, m in module.named_modules()])
    shapes = sorted((n, tuple(p.shape)) for n, p in module.state_dict().items())
    return hashlib.sha256(repr((code, shapes)).encode()).hexdigest()[:20]


def _plan_key(module: nn.Module, input_shape: tuple[int, ...], base: DeployOptions, batches: tuple[int, ...]) -> str:
    """The model and what shapes its plan; not the dense baseline, so that `export` (which may not
    know one) replays the plan `bench` made."""
    h = hashlib.sha256(_structure(module).encode())
    for name, t in module.state_dict().items():  # which entries are exactly zero decides what deploy removes
        if t.is_floating_point():
            h.update(name.encode())
            h.update(np.packbits(t.detach().cpu().eq(0).numpy().ravel()).tobytes())
    what = [h.hexdigest(), list(input_shape), base.prune_threshold, base.tolerance, list(batches), PLANNER_VERSION]
    return hashlib.sha256(json.dumps(what, default=str).encode()).hexdigest()[:20]


def _options_key(o: DeployOptions) -> list:
    return [o.fuse, sorted(o.choices.items()), o.align]


def _geomean_ratio(v: dict[int, Timing], ref: dict[int, Timing]) -> float:
    return math.exp(sum(math.log(v[b].median_ms / ref[b].median_ms) for b in ref) / len(ref))


def variant_options(base: DeployOptions, choices: dict[str, str], reasons: dict[str, str],
                    align: int = 0) -> dict[str, DeployOptions]:
    """The whole-model variants as deploy options; `choices` are the per-site latency choices. The
    two proposals that restructure the model (all pairs fused, the per-site choices) also align
    the widths no site timing can judge to `align`; as given and the FLOP plan stay the references
    they are. Where aligning changes nothing (no concat or flatten carries an odd width) a variant
    is the same model as without it, and the whole-model run times it once."""
    # pairs all have a choice; "flops" still folds linear chains (tiny next to the convs)
    return {"never": replace(base, fuse="never", choices={}, reasons={}, align=0),
            "flops": replace(base, fuse="flops", choices={}, reasons={}, align=0),
            "always": replace(base, fuse="always", choices={}, reasons={}, align=align),
            "latency": replace(base, fuse="flops", choices=dict(choices), reasons=dict(reasons), align=align)}


def _batch_winners(measured: dict[str, dict[int, Timing]], batches: tuple[int, ...], overall: str) -> dict[int, str]:
    """At each batch, the fastest variant if it beats the overall winner there by BATCH_MARGIN, else
    the overall winner: a batch gets a model of its own only for a difference above the noise."""
    out = {}
    for b in batches:
        best = min(VARIANTS, key=lambda n: (measured[n][b].median_ms, VARIANTS.index(n)))
        beats = measured[best][b].median_ms < (1 - BATCH_MARGIN) * measured[overall][b].median_ms
        out[b] = best if beats else overall
    return out


def _confirm_splits(plan: LatencyPlan, target: Target, results: dict[str, DeployResult]) -> None:
    """A batch keeps a model of its own only if a second run agrees. One short whole-model run can
    be hit by a burst of noise on a shared machine: a cold plan of ResNet-56 once read its
    per-site model at 43.6 ms at batch 32 (31.7-33.5 ms in every other run) and shipped the
    as-given model there, 1.04x dense instead of 1.25x. Only batches whose winner differs from the
    overall one are timed again, the two models alone."""
    for b, name in list(plan.batch_winners.items()):
        if name == plan.winner:
            continue
        again = time_modules(target, {n: results[n].module for n in (plan.winner, name)}, plan.input_shape, (b,),
                             MODEL_CONFIG, MODEL_ROUNDS)
        if again[name][b].median_ms < (1 - BATCH_MARGIN) * again[plan.winner][b].median_ms:
            continue
        plan.batch_winners[b] = plan.winner
        plan.notes.append(f"at batch {b}, {VARIANT_LABELS.get(name, name)} read more than {BATCH_MARGIN:.0%} faster than "
                          f"{VARIANT_LABELS.get(plan.winner, plan.winner)} in the whole-model run but not when the two "
                          f"were timed again ({again[name][b].median_ms:.3g} vs {again[plan.winner][b].median_ms:.3g} ms): "
                          "the overall winner runs there too")


def _choose(sp: SitePlan) -> str:
    best = min(sp.timings, key=lambda c: (sp.score(c), c != KEEP))
    return best if sp.score(best) <= 1.0 - MIN_GAIN else KEEP


def _reason(sp: SitePlan, batches: tuple[int, ...]) -> str:
    parts = []
    for c in sp.timings:
        ts = "/".join(f"{sp.timings[c][b].median_ms * 1e3:.0f}" for b in batches)
        parts.append(f"{c} {ts}")
    where = "cached" if sp.cached else "measured"
    return f"by latency ({where}, us at batch {'/'.join(map(str, batches))}): " + ", ".join(parts)


def plan_latency(module: nn.Module, input_shape: tuple[int, ...], target: Target, *,
                 base: DeployOptions = DeployOptions(), dense: nn.Module | None = None,
                 table: TimingTable | None = None, refresh: bool = False,
                 progress: Callable[[str], None] | None = None) -> LatencyPlan:
    """Measure on `target` and choose how to deploy `module`.

    `table`: timings to use instead of measuring (a LUT); then nothing is measured and a
    timing it lacks is an error. Otherwise timings come from (and go to) the user's cache for
    the target's fingerprint; `refresh` re-measures them all.
    """
    start = time.perf_counter()
    say = progress or (lambda _msg: None)
    batches = tuple(target.batches)
    fp = fingerprint(target)
    from_lut = table is not None
    if table is None:
        table = TimingTable(dict(fp)) if refresh else lut.load_cached(fp)
    plan_key = _plan_key(module, input_shape, base, batches)
    record = table.plans.get(plan_key)
    if record is not None and not refresh:
        return _replay(record, table, module, input_shape, base, dense, batches, fp, start, from_lut)
    # one model deployed up to five ways (as given, the variants, the winner): the work they share is done once
    deployer = Deployer(module, input_shape, base)
    as_given = deployer.deploy(replace(base, fuse="never", choices={}, reasons={}))
    sites = find_sites(as_given.module, input_shape, preferred_multiples(target))
    plan = LatencyPlan("latency", base, "never", fingerprint=fp, batches=batches, table=table)

    # 2-3: per-site candidates
    by_sig: dict[str, SitePlan] = {}
    for s in sites:
        if s.signature in by_sig:
            plan.sites.append(SitePlan(s, by_sig[s.signature].choice, by_sig[s.signature].timings, True))
            continue
        have = {c: {b: table.site(s.signature, c, b) for b in batches} for c in s.candidates}
        cached = all(t is not None for bs in have.values() for t in bs.values())
        if not cached:
            if from_lut:
                raise lut.LutError(_missing_timing(table, s, batches))
            say(f"timing {s.name}: {', '.join(s.candidates)}")
            mods = {c: candidate_module(as_given.module, s, c) for c in s.candidates}
            got = time_modules(target, mods, s.in_shape, batches, SITE_CONFIG)
            for c, bs in got.items():
                for b, t in bs.items():
                    table.put_site(s.signature, c, b, t)
            have = got
            plan.measured_sites += 1
        else:
            plan.cached_sites += 1
        sp = SitePlan(s, KEEP, have, cached)
        sp.choice = _choose(sp)
        by_sig[s.signature] = sp
        plan.sites.append(sp)

    reasons = {sp.site.name: _reason(sp, batches) for sp in plan.sites}
    align = input_multiple(target)
    candidates = variant_options(base, {sp.site.name: sp.choice for sp in plan.sites}, reasons, align)
    latency_opts = candidates["latency"]
    plan.variant_options, plan.module, plan.input_shape = candidates, module, tuple(input_shape)
    if not plan.sites and not _aligns(as_given, input_shape, align):
        plan.notes.append("no site has a choice (no factorized pair, no width to align): deployed as given")
        plan.options, plan.winner, plan.result = candidates["never"], "never", as_given
        plan.seconds = time.perf_counter() - start
        return plan

    # 4: whole models
    key = hashlib.sha256(json.dumps([_structure(as_given.module), _structure(dense) if dense is not None else None,
                                     {k: _options_key(o) for k, o in candidates.items()}],
                                    default=str).encode()).hexdigest()[:20]
    results: dict[str, DeployResult] = {"never": as_given}
    measured = table.model(key)
    if measured is not None and all(b in bs for bs in measured.values() for b in batches) and \
            set(measured) >= set(VARIANTS):
        plan.models_cached = True
    elif from_lut:
        measured = None
        plan.notes.append("the LUT has no whole-model timing for this model: chosen by per-site timings only")
    else:
        say("timing whole models: " + ", ".join((["dense"] if dense is not None else []) + list(VARIANTS)))
        for name in VARIANTS[1:]:
            results[name] = deployer.deploy(candidates[name])
        mods: dict[str, nn.Module] = {}
        if dense is not None:
            mods["dense"] = dense
        same: dict[str, str] = {}
        seen: dict[str, str] = {}
        for name in VARIANTS:
            st = _structure(results[name].module)
            if st in seen:
                same[name] = seen[st]  # the same model twice: time it once
            else:
                seen[st] = name
                mods[name] = results[name].module
        measured = time_modules(target, mods, input_shape, batches, MODEL_CONFIG, MODEL_ROUNDS)
        for name, twin in same.items():
            measured[name] = measured[twin]
        table.put_model(key, measured)

    predicted = {b: (measured["never"][b].median_ms if measured else 0.0) + sum(
        sp.timings[sp.choice][b].median_ms - sp.timings[KEEP][b].median_ms for sp in plan.sites) for b in batches}
    if measured is not None:
        if dense is not None and "dense" in measured:
            plan.variants.append(VariantTiming("dense", None, measured["dense"]))
        for name in VARIANTS:
            plan.variants.append(VariantTiming(name, candidates[name], measured[name],
                                               predicted if name == "latency" else None))
        ref = measured["never"]
        plan.winner = min(VARIANTS, key=lambda n: (_geomean_ratio(measured[n], ref), VARIANTS.index(n)))
        plan.batch_winners = _batch_winners(measured, batches, plan.winner)
        if not plan.models_cached:
            _confirm_splits(plan, target, results)
    else:
        plan.variants.append(VariantTiming("latency", latency_opts, {}, predicted))
        plan.winner = "latency"
        plan.batch_winners = {b: "latency" for b in batches}
    plan.options = candidates[plan.winner]
    plan.result = results.get(plan.winner) or deployer.deploy(plan.options)
    plan.deployed = {n: r for n, r in results.items() if n in plan.batch_winners.values()}
    table.plans[plan_key] = {"winner": plan.winner, "model": key, "choices": dict(latency_opts.choices),
                             "reasons": dict(latency_opts.reasons), "align": latency_opts.align,
                             "batch_winners": {str(b): n for b, n in plan.batch_winners.items()}}
    _align_note(plan)
    _batch_note(plan)
    _dense_note(plan)
    if not from_lut:
        lut.save_cached(table)
    plan.seconds = time.perf_counter() - start
    return plan


def _aligns(as_given: DeployResult, input_shape: tuple[int, ...], align: int) -> bool:
    """Whether aligning to `align` changes any width of the model (a site no timing can judge alone)."""
    shapes = PassContext(tuple(input_shape)).shapes(as_given.module)
    return any(not s.local and s.width % align for s in find_width_sites(as_given.module, shapes))


def _align_note(plan: LatencyPlan) -> None:
    """Say which widths the winner aligned without a site timing (they show as "pad width" rows)."""
    if plan.result is None or not plan.options.align:
        return
    pads = [d for d in plan.result.plan if d.action == "pad width" and d.layers[0] not in plan.options.choices]
    if pads:
        plan.notes.append(f"{len(pads)} width(s) read through concats or flattens aligned to multiples of "
                          f"{plan.options.align} (the target's kernels want input widths in multiples of it; "
                          "judged by the whole-model run): " + ", ".join(f"{d.site} {d.shape_before.split(' (')[0]} -> "
                                                                        f"{d.shape_after.split(' (')[0]}" for d in pads))


def _missing_timing(table: TimingTable, s: Site, batches: tuple[int, ...]) -> str:
    """Why a LUT cannot plan this site: made at other batches (say which), or for another model."""
    site = f"site {s.name} ({s.shape}, input {'x'.join(map(str, s.in_shape))})"
    has = sorted({b for bs in table.sites.get(s.signature, {}).values() for b in bs})
    if has and not set(batches) <= set(has):
        need = ",".join(map(str, batches))
        return (f"the LUT has timings for {site} at batch {', '.join(map(str, has))}, not at batch "
                f"{', '.join(str(b) for b in batches if b not in has)}; make one for these batches on the device "
                f"(`gsdeploy plan MODEL --batch {need} --save-lut F.json`) or plan for the LUT's")
    return (f"the LUT has no timing for {site}: it was made for another model (or another input shape); run "
            "`gsdeploy plan` with this model on the device and save its LUT")


def _batch_note(plan: LatencyPlan) -> None:
    if len(set(plan.batch_winners.values())) > 1:
        per = ", ".join(f"batch {b}: {VARIANT_LABELS.get(n, n)}" for b, n in plan.batch_winners.items())
        plan.notes.append(f"the fastest model differs by batch ({per}): bench times each batch with its own; "
                          f"export writes the fastest over all batches ({VARIANT_LABELS.get(plan.winner, plan.winner)})"
                          "; `export --batch B` writes the one for batch B")


def _dense_note(plan: LatencyPlan) -> None:
    d = plan.variant("dense")
    if d is None:
        return
    fastest = {b: plan.variant(plan.winner_at(b)) for b in plan.batches}
    if any(v is None or b not in v.measured for b, v in fastest.items()):
        return
    # Beyond BATCH_MARGIN dense is faster; within it the two are tied as far as one short plan run
    # can tell (two identical models read 3-5% apart): saying "dense is faster" there would be noise.
    ratio = {b: v.measured[b].median_ms / d.measured[b].median_ms for b, v in fastest.items()}
    slower = [b for b, r in ratio.items() if r > 1 / (1 - BATCH_MARGIN)]
    tied = [b for b, r in ratio.items() if 1.0 <= r <= 1 / (1 - BATCH_MARGIN)]
    if slower:
        plan.notes.append(f"nothing beats dense at batch {', '.join(map(str, slower))}: the dense model is faster "
                          "there than every deployment of this compressed model")
    if tied:
        plan.notes.append(f"at batch {', '.join(map(str, tied))} no deployment beat dense by more than this run's "
                          f"noise ({BATCH_MARGIN:.0%}): " + ", ".join(f"{1 / ratio[b]:.2f}x at batch {b}" for b in tied)
                          + "; `gsdeploy bench` measures it longer")


def _replay(record: dict, table: TimingTable, module: nn.Module, input_shape: tuple[int, ...], base: DeployOptions,
            dense: nn.Module | None, batches: tuple[int, ...], fp: dict, start: float, from_lut: bool) -> LatencyPlan:
    """The plan this target already made for this model: deploy it again, measure nothing."""
    candidates = variant_options(base, record["choices"], record["reasons"], record.get("align", 0))
    winners = {int(b): n for b, n in record.get("batch_winners", {}).items()}
    measured = table.model(record["model"]) or {}
    if "batch_winners" not in record:
        # written before the per-batch winners: recompute them from its whole-model timings; its
        # choices were the winner's own, so a "latency" winner is known only when it was the winner
        if all(n in measured and all(b in measured[n] for b in batches) for n in VARIANTS):
            winners = _batch_winners(measured, batches, record["winner"])
        if record["winner"] != "latency":
            candidates["latency"] = replace(candidates["latency"], choices={}, reasons={})
            winners = {b: n if n != "latency" else record["winner"] for b, n in winners.items()}
    options = candidates[record["winner"]]
    plan = LatencyPlan("latency", options, record["winner"], fingerprint=fp, batches=batches, table=table,
                       models_cached=True, batch_winners={b: winners.get(b, record["winner"]) for b in batches},
                       variant_options=candidates, module=module, input_shape=tuple(input_shape))
    for name in (["dense"] if dense is not None else []) + list(VARIANTS):
        if name in measured and all(b in measured[name] for b in batches):
            plan.variants.append(VariantTiming(name, None, measured[name]))
    plan.notes.append("plan " + ("from the LUT" if from_lut else "from the timing cache (--refresh re-measures)"))
    plan.result = deploy(module, input_shape, options)
    _align_note(plan)
    _batch_note(plan)
    _dense_note(plan)
    plan.seconds = time.perf_counter() - start
    return plan


__all__ = ["LatencyPlan", "SitePlan", "VariantTiming", "plan_latency", "variant_options",
           "GsdeployError"]
