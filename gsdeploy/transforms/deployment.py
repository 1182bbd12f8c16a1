"""deploy(): run the passes in order, verify against the original, count what was gained."""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, fields
from typing import Iterator

import torch
import torch.fx as fx
import torch.nn as nn

from gsdeploy.metrics import count_macs, count_params
from gsdeploy.numerics import Verification
from gsdeploy.errors import InputShapeError, NumericMismatchError, UnremovedZerosError
from gsdeploy.transforms.align import align_widths
from gsdeploy.transforms.context import PassContext
from gsdeploy.transforms.fold_bn import fold_bn
from gsdeploy.transforms.fold_drelu import fold_drelu
from gsdeploy.transforms.fold_linear import fold_linear
from gsdeploy.transforms.fuse_pairs import fuse_pairs
from gsdeploy.transforms.fxutil import drop_unused_attrs, set_eval
from gsdeploy.transforms.inplace import functionalize
from gsdeploy.transforms.leftovers import as_decisions, kept_zeros, warning_line
from gsdeploy.transforms.normalize import normalize
from gsdeploy.transforms.decisions import Decision, DeployOptions, DeployResult
from gsdeploy.transforms.prune_zero import prune_zero, zero_small_groups
from gsdeploy.transforms.trace import trace
from gsdeploy.transforms.verify import Reference, verify_modules

# The passes after BN folding, in order; pruning runs again after them when any of them
# changed the graph (a fused pair can have zero rows of its own).
STRUCTURAL_PASSES = (prune_zero, fold_drelu, fuse_pairs, fold_linear)
MAX_ROUNDS = 4
# deploy's own forwards (shapes at batch 1, verification at batch 2) are small ops where handing
# work between intra-op threads dominates: one thread is about as fast on an idle machine and
# 10-30x faster on a loaded one (measured on a shared 2-core box). The caller's setting is put back.
DEPLOY_THREADS = 1


def check_input_shape(module: nn.Module, input_shape: tuple[int, ...]) -> None:
    """One clear line if the model cannot take the input shape (a wrong channel count, too small)."""
    try:
        with torch.no_grad():
            module(torch.zeros((1, *input_shape)))
    except Exception as e:  # noqa: BLE001 - any failure of the forward is the user's shape
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputShapeError(f"{type(module).__name__} cannot take input shape {tuple(input_shape)}: {msg}") from None


def _signature(gm: fx.GraphModule) -> tuple:
    """What changes when a pass does something: the nodes and the module shapes."""
    mods = tuple((n, tuple(p.shape)) for n, p in gm.named_parameters())
    return (len(gm.graph.nodes), mods)


def _merge(plan: list[Decision], new: list[Decision]) -> None:
    """Later rounds may meet a site again: keep one decision per (site, layers). The same action
    again keeps the first 'before' and takes the last 'after'; a different one (a pair kept in
    round 1, fused after pruning in round 2) replaces the old decision."""
    for d in new:
        for i, old in enumerate(plan):
            if old.site == d.site and old.layers == d.layers:
                if old.action == d.action:
                    d = Decision(d.site, d.action, d.layers, old.shape_before, d.shape_after, old.macs_before,
                                 d.macs_after, d.reason)
                plan[i] = d
                break
        else:
            plan.append(d)


def deploy(module: nn.Module, input_shape: tuple[int, ...], options: DeployOptions = DeployOptions()) -> DeployResult:
    """Make the compression of `module` real; never mutates `module`.

    Raises InputShapeError if the module cannot take `input_shape`, NumericMismatchError if
    the deployed module differs from the reference by more than options.tolerance.
    """
    return Deployer(module, input_shape, options).deploy(options, last=True)


# What may differ between the deploys of one Deployer: the passes after the shared start read
# only these (fuse_pairs, fold_linear and align_widths) and deploy() itself reads `strict`.
PER_DEPLOY_FIELDS = ("fuse", "choices", "reasons", "align", "strict")


@dataclass
class _Start:
    """What every deploy of one model with one threshold shares (see Deployer)."""

    gm: fx.GraphModule  # traced, float64, functionalized, normalized, BN folded, thresholded
    plan: list[Decision]
    reference: nn.Module  # what the deployed model is checked against
    checks: Reference  # `reference` with its copies, inputs and outputs kept for verification
    threshold_error: Verification | None
    macs_before: int
    params_before: int


class Deployer:
    """deploy() of one model with several option sets that differ only in PER_DEPLOY_FIELDS.

    A latency plan deploys one model four ways (as given, the FLOP plan, all pairs fused, its
    per-site choices). Tracing, BN folding, the threshold, the original's MACs and its outputs on
    the verification inputs do not depend on those options, and were a third of each deploy's
    time: here they are done once, in the constructor, and each deploy() works on a copy. The
    module must not change while its Deployer is in use.
    """

    def __init__(self, module: nn.Module, input_shape: tuple[int, ...], options: DeployOptions = DeployOptions()):
        self.module = module
        self.input_shape = tuple(int(s) for s in input_shape)
        self.options = options
        with _deploying(module):
            # weights in float16/bfloat16/float64: deployed (and verified) as the float32 model every
            # deployment is, not refused as an input shape the model "cannot take" (a float32 input)
            self.original = module if _is_float32(module) else _float32_copy(module)
            check_input_shape(self.original, self.input_shape)
            with _float64_default():
                self._start: _Start | None = _start(self.original, self.input_shape, options)

    def deploy(self, options: DeployOptions | None = None, *, last: bool = False) -> DeployResult:
        """Deploy with `options` (default: the constructor's). `last`: no deploy follows, so the
        shared graph is edited in place instead of copied."""
        options = self.options if options is None else options
        different = [f.name for f in fields(DeployOptions) if f.name not in PER_DEPLOY_FIELDS
                     and getattr(options, f.name) != getattr(self.options, f.name)]
        if different:
            raise ValueError(f"a Deployer's deploys may differ in {', '.join(PER_DEPLOY_FIELDS)} only, "
                             f"not in {', '.join(different)}")
        if self._start is None:
            raise ValueError("this Deployer's last deploy is done")
        start = self._start
        if last:
            self._start = None
        with _deploying(self.module), _float64_default():
            return _finish(start, self.original, self.input_shape, options, copy_graph=not last)


@contextlib.contextmanager
def _deploying(original: nn.Module):
    """Eval mode and DEPLOY_THREADS while deploy works; the caller's flags and threads put back."""
    was_training = {name: m.training for name, m in original.named_modules()}
    threads = torch.get_num_threads()
    set_eval(original)
    try:
        torch.set_num_threads(min(threads, DEPLOY_THREADS))
        yield
    finally:
        torch.set_num_threads(threads)
        for name, m in original.named_modules():
            m.training = was_training.get(name, m.training)


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """torch's default dtype set to `dtype` for the block, the caller's put back."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _float64_default():
    # New tensors the passes create (biases, fused weights, example inputs) follow the
    # float64 graph; see _start.
    return default_dtype(torch.float64)


def _start(original: nn.Module, input_shape: tuple[int, ...], options: DeployOptions) -> _Start:
    ctx = PassContext(input_shape, options)
    gm = trace(original)
    # The passes fold in float64 so that the deployed weights are the exact result rounded once
    # to float32 at the end; folding in float32 rounds every intermediate and deep random nets
    # (ResNet-164) amplified that past 1e-5.
    gm.double()
    plan: list[Decision] = []
    plan += functionalize(gm, ctx)
    plan += normalize(gm, ctx)
    plan += fold_bn(gm, ctx)

    reference: nn.Module = original
    threshold_error = None
    if options.prune_threshold is not None:
        zero_small_groups(gm, ctx, options.prune_threshold)
        reference = copy.deepcopy(gm)  # the original with the small groups made exactly zero
        threshold_error = verify_modules(original, reference, input_shape, options.verify_batches, options.seed,
                                         options.tolerance)
    return _Start(gm, plan, reference, Reference(reference), threshold_error, count_macs(original, input_shape),
                  count_params(original))


def _finish(start: _Start, original: nn.Module, input_shape: tuple[int, ...], options: DeployOptions,
            copy_graph: bool) -> DeployResult:
    ctx = PassContext(input_shape, options)
    gm = copy.deepcopy(start.gm) if copy_graph else start.gm
    plan = list(start.plan)
    reference = start.reference
    for _ in range(MAX_ROUNDS):
        before = _signature(gm)
        for p in STRUCTURAL_PASSES:
            _merge(plan, p(gm, ctx))
        if _signature(gm) == before:
            break
    gm.graph.eliminate_dead_code()
    drop_unused_attrs(gm)
    gm.graph.lint()
    gm.recompile()
    set_eval(gm)
    kept = kept_zeros(gm, ctx)
    if kept and options.strict:
        raise UnremovedZerosError(warning_line(kept, hint=False) + " (--strict)")
    plan += as_decisions(kept)
    # last, and after the leftover check: its zero filters are the point, and pruning would
    # take them out again
    plan += align_widths(gm, ctx)

    verification = verify_modules(start.checks, gm, input_shape, options.verify_batches, options.seed,
                                  options.tolerance)
    if not verification.passed:
        against = "the thresholded original" if options.prune_threshold is not None else "the original"
        raise NumericMismatchError(f"deployed model differs from {against}: {verification.describe()}")
    gm.float()
    # What the user runs: both in float32. Reported, not judged: it includes float32 rounding of
    # the folded weights, as large as the original's own float32 error on ill-conditioned nets.
    fp32 = verify_modules(start.checks, gm, input_shape, options.verify_batches, options.seed, options.tolerance,
                          dtype=torch.float32)
    return DeployResult(module=gm, plan=plan,
                        macs_before=start.macs_before, macs_after=count_macs(gm, input_shape),
                        params_before=start.params_before, params_after=count_params(gm),
                        verification=verification, threshold_error=start.threshold_error, fp32_error=fp32,
                        reference=original if reference is original else _float32_copy(reference),
                        kept_zeros=kept)


def _is_float32(module: nn.Module) -> bool:
    tensors = [*module.parameters(), *module.buffers()]
    return all(t.dtype == torch.float32 for t in tensors if t.is_floating_point())


def _float32_copy(module: nn.Module) -> nn.Module:
    m = copy.deepcopy(module).float()
    set_eval(m)
    return m
