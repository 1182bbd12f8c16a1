"""deploy(): run the passes in order, verify against the original, count what was gained."""

from __future__ import annotations

import copy

import torch
import torch.fx as fx
import torch.nn as nn

from gsdeploy.metrics import count_macs, count_params
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
from gsdeploy.transforms.verify import verify_modules

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
    input_shape = tuple(int(s) for s in input_shape)
    original = module
    # evaluated in eval mode; the caller's training flags are put back afterwards
    was_training = {name: m.training for name, m in original.named_modules()}
    threads = torch.get_num_threads()
    set_eval(original)
    try:
        torch.set_num_threads(min(threads, DEPLOY_THREADS))
        check_input_shape(original, input_shape)
        # New tensors the passes create (biases, fused weights, example inputs) follow the
        # float64 graph; see _deploy.
        dtype = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            result = _deploy(original, input_shape, options)
        finally:
            torch.set_default_dtype(dtype)
    finally:
        torch.set_num_threads(threads)
        for name, m in original.named_modules():
            m.training = was_training.get(name, m.training)
    return result


def _deploy(original: nn.Module, input_shape: tuple[int, ...], options: DeployOptions) -> DeployResult:
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

    verification = verify_modules(reference, gm, input_shape, options.verify_batches, options.seed, options.tolerance)
    if not verification.passed:
        against = "the thresholded original" if options.prune_threshold is not None else "the original"
        raise NumericMismatchError(f"deployed model differs from {against}: {verification.describe()}")
    gm.float()
    # What the user runs: both in float32. Reported, not judged: it includes float32 rounding of
    # the folded weights, as large as the original's own float32 error on ill-conditioned nets.
    fp32 = verify_modules(reference, gm, input_shape, options.verify_batches, options.seed, options.tolerance,
                          dtype=torch.float32)
    return DeployResult(module=gm, plan=plan,
                        macs_before=count_macs(original, input_shape), macs_after=count_macs(gm, input_shape),
                        params_before=count_params(original), params_after=count_params(gm),
                        verification=verification, threshold_error=threshold_error, fp32_error=fp32,
                        reference=original if reference is original else _float32_copy(reference),
                        kept_zeros=kept)


def _float32_copy(module: nn.Module) -> nn.Module:
    m = copy.deepcopy(module).float()
    set_eval(m)
    return m
