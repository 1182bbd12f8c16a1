"""The data a deploy produces: per-site decisions, options, verification, the result."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch

from gsdeploy.limits import ALIGN_MULTIPLES
from gsdeploy.numerics import Verification

ACTIONS = ("remove zero groups", "fold BN", "fuse pair", "fold DReLU", "fold linear chain", "keep", "pad width")
FUSE_MODES = ("flops", "always", "never")


@dataclass
class Decision:
    site: str  # short name of the place, e.g. "features.1.0.body.0"
    action: str  # one of ACTIONS
    layers: list[str]  # module names involved
    shape_before: str  # human readable, e.g. "3x3 16->7 + 1x1 7->16"
    shape_after: str  # e.g. "3x3 16->16"
    macs_before: int  # MACs per sample of the layers involved
    macs_after: int
    reason: str  # why; for fuse/keep "by FLOPs: 1.2M -> 2.3M" (or the mode that forced it)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}; expected one of {ACTIONS}")


@dataclass
class DeployOptions:
    # pairs without a choice: "flops" (fuse when MACs drop) | "always" | "never"; measured
    # decisions come from gsdeploy.plan as `choices`
    fuse: str = "flops"
    prune_threshold: float | None = None
    tolerance: float = 1e-5  # max relative error allowed (see verify)
    verify_batches: int = 2  # random input batches used by verify
    seed: int = 0
    strict: bool = False  # zero channels the passes could not remove are an error, not a warning
    # Per-site decisions of a plan, by the producer conv's module name: "keep", "fuse" (a pair)
    # or "pad:N" (grow the width to N with zero filters); they override `fuse` at their sites.
    choices: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # why, per site, for the plan table
    # Pad every width that a concat or flatten carries into the rest of the network (so the plan
    # cannot time it alone, and no choice names it) to a multiple of this; 0: leave them.
    align: int = 0

    def __post_init__(self) -> None:
        for site, c in self.choices.items():
            if c not in ("keep", "fuse") and not (c.startswith("pad:") and c[4:].isdigit() and int(c[4:]) > 0):
                raise ValueError(f"choice for {site} must be keep, fuse or pad:N, got {c!r}")
        if self.align not in ALIGN_MULTIPLES:
            raise ValueError(f"align must be one of {ALIGN_MULTIPLES}, got {self.align!r}")
        if self.fuse not in FUSE_MODES:
            raise ValueError(f"fuse must be one of {FUSE_MODES}, got {self.fuse!r}")
        if self.prune_threshold is not None and self.prune_threshold < 0:
            raise ValueError(f"prune_threshold must be >= 0, got {self.prune_threshold}")


@dataclass
class DeployResult:
    module: torch.nn.Module  # the deployed torch.fx.GraphModule, eval mode, fp32
    plan: list[Decision]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    verification: Verification  # deployed vs reference
    threshold_error: Verification | None = None  # only with prune_threshold: thresholded vs original
    fp32_error: Verification | None = None  # deployed vs reference, both run in float32 (reported)
    # What `verification` compared against, in float32: the original module, or with
    # prune_threshold the original with its small groups zeroed. Exported artifacts are checked
    # against this one too; the threshold's own effect is threshold_error.
    reference: torch.nn.Module | None = None
    kept_zeros: list = field(default_factory=list)  # leftovers.KeptZeros: zero channels that stayed, and why


def plan_record(result: DeployResult, model: str, options: DeployOptions, **extra: object) -> dict:
    """A deploy's plan as plain data (JSON-ready) for result files and reports: every decision
    with all its fields, the options, MACs/params before and after, and the verification."""
    return {
        "kind": "gsdeploy-plan", "model": model,
        "options": {f.name: _plain(getattr(options, f.name)) for f in fields(options)},
        "macs_before": result.macs_before, "macs_after": result.macs_after,
        "params_before": result.params_before, "params_after": result.params_after,
        "verification": asdict(result.verification),
        "threshold_error": asdict(result.threshold_error) if result.threshold_error is not None else None,
        "decisions": [asdict(d) for d in result.plan],
        "kept_zero_channels": [asdict(k) for k in result.kept_zeros],
        **extra,
    }


def _plain(value: object) -> object:
    """An option as JSON-ready data: a Target as its dict, everything else as it is."""
    to_dict = getattr(value, "to_dict", None)
    return to_dict() if callable(to_dict) else value
