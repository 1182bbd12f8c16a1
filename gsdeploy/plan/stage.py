"""The plan stage: a model and a Target in, a deployed model and the plan that chose it out.

`--plan latency` measures on the target (or reads a LUT measured there); `--plan flops` decides
by MACs; the default takes latency when the target's engine runs here (or a LUT is given) and
falls back to FLOPs with a one-line warning naming what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch.nn as nn

from gsdeploy.atomic import check_target, write_text_atomic
from gsdeploy.errors import GsdeployError, MissingDependencyError, OutputPathError
from gsdeploy.plan import cache as lut
from gsdeploy.plan.search import LatencyPlan, plan_latency
from gsdeploy.plan.timing import PLANNABLE_ENGINES, engine_options, fingerprint, frozen_heap
from gsdeploy.target import Target
from gsdeploy.transforms import DeployOptions, DeployResult, deploy

PLAN_MODES = ("auto", "latency", "flops")
# the deploy passes' fixed modes (transforms DeployOptions.fuse) and `latency`, the old --fuse
# spelling of the latency plan
FUSE_MODES = ("flops", "latency", "always", "never")
# What must agree between a LUT and the target it is used for. Where the target's engine runs
# here, this machine IS the target, so its device and engine version must match too; elsewhere
# (exporting for a Jetson from a laptop) only what the profile itself fixes can be compared.
SETTINGS_FIELDS = ("engine", "precision", "providers", "graph_opt", "spinning", "threads_setting", "engine_options")
MACHINE_FIELDS = ("engine_version", "device", "isa", "threads")


@dataclass
class PlanOutcome:
    result: DeployResult
    options: DeployOptions  # what `result` was deployed with
    mode: str  # "latency" | "flops"
    plan: LatencyPlan | None  # the measured plan (None for the FLOP plan)
    # one line for stderr: why the latency plan was not used, or what went wrong with its timing cache
    warning: str | None = None

    def batch_groups(self, batches: tuple[int, ...]) -> list[tuple[DeployResult, DeployOptions, tuple[int, ...]]]:
        """The models to time and the batches each is fastest at: one group unless the latency
        plan found a different fastest model at some batch."""
        p = self.plan
        if p is None or not p.batch_winners:
            return [(self.result, self.options, tuple(batches))]
        names = list(dict.fromkeys(p.winner_at(b) for b in batches))
        return [(p.result_at(next(b for b in batches if p.winner_at(b) == n)), p.variant_options.get(n, self.options),
                 tuple(b for b in batches if p.winner_at(b) == n)) for n in names]

    def choice_at(self, batch: int) -> str:
        """Which of the latency plan's whole models (search.VARIANTS) is timed at `batch`: rows name
        it, since a batch's model may differ from the one `export` writes. "" for the FLOP plan."""
        return self.plan.winner_at(batch) if self.plan is not None else ""

    def summary(self) -> dict[str, Any]:
        """JSON-ready: the mode, and for a latency plan the winner, the fingerprint, every whole-model
        timing (measured and predicted) and the notes."""
        out: dict[str, Any] = {"mode": self.mode, "warning": self.warning}
        p = self.plan
        if p is not None:
            out.update({
                "winner": p.winner, "batch_winners": {str(b): n for b, n in p.batch_winners.items()},
                "fingerprint": p.fingerprint, "batches": list(p.batches), "notes": p.notes,
                "sites_measured": p.measured_sites, "sites_cached": p.cached_sites,
                "models_cached": p.models_cached, "seconds": round(p.seconds, 2),
                "variants": {v.name: {"measured_ms": {str(b): t.median_ms for b, t in v.measured.items()},
                                      "cov": {str(b): t.cov for b, t in v.measured.items()},
                                      "predicted_ms": {str(b): x for b, x in (v.predicted_ms or {}).items()}}
                             for v in p.variants}})
        return out


def resolve_modes(plan: str, fuse: str | None, *, lut: bool = False, refresh: bool = False,
                  names: tuple[str, str, str, str] = ("--plan", "--fuse", "--lut", "--refresh")) -> tuple[str, str]:
    """(plan mode, fuse mode) from what the user asked: one vocabulary for the command line and
    the sweep file (`names` are how the four settings are spelled where they came from). `fuse`
    None means not given; a fixed fuse mode implies the FLOP plan, `fuse latency` is the old
    spelling of the latency plan. A LUT or --refresh with the FLOP plan would be silently unused,
    and a LUT with --refresh contradict each other (read the timings, or measure them), so those
    are refused: the user meant one of the two."""
    p, f, lut_name, refresh_name = names
    if lut and refresh:
        raise GsdeployError(f"{lut_name} plans from timings measured elsewhere, {refresh_name} re-measures them "
                            "here: pass one of the two")
    if plan not in PLAN_MODES:
        raise GsdeployError(f"{p} must be one of {', '.join(PLAN_MODES)}, not {plan!r}")
    if fuse is not None and fuse not in FUSE_MODES:
        raise GsdeployError(f"{f} must be one of {', '.join(FUSE_MODES)}, not {fuse!r}")
    if fuse == "latency":
        fuse = None if plan in ("auto", "latency") else fuse
        plan = "latency"
    if fuse is not None and plan == "latency":
        raise GsdeployError(f"{f} {fuse} fixes every pair, {p} latency measures them: pass one of the two")
    if fuse is not None:
        plan = "flops"
    if plan == "flops" and (lut or refresh):
        used = lut_name if lut else refresh_name
        why = f"{f} {fuse} (which plans by FLOPs)" if fuse is not None else f"{p} flops"
        raise GsdeployError(f"{used} is used by the latency plan only, and {why} would ignore it: drop one of the two")
    return plan, fuse or "flops"


def why_not_latency(target: Target) -> str | None:
    """Why the target cannot be timed from here, or None."""
    if target.engine not in PLANNABLE_ENGINES:
        return f"the latency planner runs {' and '.join(PLANNABLE_ENGINES)} targets, not {target.engine}"
    return target.unavailable_reason()


def check_plannable(target: Target, mode: str, lut_given: bool) -> None:
    """Refuse `--plan latency` that cannot be timed here and has no LUT to read: called by the
    CLI before any model is loaded (and again by make_plan)."""
    reason = None if mode != "latency" or lut_given else why_not_latency(target)
    if reason is not None:
        raise MissingDependencyError(f"--plan latency: {reason}; plan on the device with `gsdeploy plan MODEL "
                                     "--profile P --save-lut F.json` and pass --lut F.json here")


def load_lut(path: Path, target: Target, here: bool | None = None) -> lut.TimingTable:
    """Read a LUT and refuse it if it was measured on another target (naming both). `here`: whether
    this machine is the target, so its device and engine version must match too (default: whether
    the target's engine runs here; a sweep's driver checks a LUT with False before sending it to
    the device, which checks it in full)."""
    table = lut.read_table(Path(path))
    if here is None:
        here = why_not_latency(target) is None
    fp = fingerprint(target) if here else _settings_fingerprint(target)
    lut.check_matches(table, fp, str(path), SETTINGS_FIELDS + (MACHINE_FIELDS if here else ()))
    return table


def _settings_fingerprint(target: Target) -> dict[str, Any]:
    return {"engine": target.engine, "precision": target.precision, "providers": ",".join(target.providers),
            "graph_opt": target.graph_optimization_level, "spinning": target.allow_spinning,
            "threads_setting": target.threads, "engine_options": engine_options(target)}


def make_plan(module: nn.Module, input_shape: tuple[int, ...], target: Target, options: DeployOptions,
              mode: str = "auto", *, dense: nn.Module | None = None, lut_path: Path | None = None,
              refresh: bool = False, progress: Callable[[str], None] | None = None) -> PlanOutcome:
    if mode not in PLAN_MODES:
        raise GsdeployError(f"--plan must be one of {', '.join(PLAN_MODES)}, not '{mode}'")
    if mode == "flops":
        return PlanOutcome(deploy(module, input_shape, options), options, "flops", None)
    table = load_lut(lut_path, target) if lut_path is not None else None
    check_plannable(target, mode, table is not None)
    reason = None if table is not None else why_not_latency(target)
    if reason is not None:
        warning = (f"warning: FLOP plan, not measured: {reason} (a LUT from `gsdeploy plan --save-lut` on the "
                   "device can be passed with --lut)")
        return PlanOutcome(deploy(module, input_shape, options), options, "flops", None, warning)
    # a damaged or unwritable timing cache costs a re-measure, never the plan: said in one line
    cache_note = lut.cache_problem(fingerprint(target), reading=not refresh) if table is None else None
    with frozen_heap():  # a cold plan's deploys and exports set off tens of full collections otherwise
        plan = plan_latency(module, input_shape, target, base=options, dense=dense, table=table, refresh=refresh,
                            progress=progress)
    return PlanOutcome(plan.result, plan.options, "latency", plan, f"warning: {cache_note}" if cache_note else None)


def check_lut_target(path: Path, inputs: Iterable[Path] = ()) -> Path:
    """Fail before any work if --save-lut cannot be written, names an input of the command (the
    model, its baseline) or an existing file that is not a LUT: a slip of the path must not cost
    the user a checkpoint or an unrelated file. An older LUT is replaced."""
    path = check_target(path, inputs)
    if path.exists():  # a regular file: check_target refused everything else
        try:
            lut.read_table(path)
        except lut.LutError:
            raise OutputPathError(f"refusing to replace {path}: it is not a gsdeploy timing LUT (give a new file "
                                  "name, or remove the file first)") from None
    return path


def save_lut(plan: LatencyPlan, path: Path, inputs: Iterable[Path] = ()) -> Path:
    if plan.table is None:
        raise GsdeployError("this plan has no timings to save")
    return write_text_atomic(path, plan.table.to_json(), inputs)
