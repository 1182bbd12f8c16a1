"""Pass 6: Linear -> Linear with nothing between becomes one Linear: W = W2 W1, b = W2 b1 + b2.

Folding a low-rank chain (in -> r -> out with small r) would raise MACs, so options.fuse
applies here as for conv pairs: "flops" folds when MACs do not rise, "always", "never".
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

from gsdeploy.transforms.context import PassContext
from gsdeploy.transforms.fxutil import call_counts, common_prefix, fmt_macs, linear_macs
from gsdeploy.transforms.decisions import Decision


def folded_linear(l1: nn.Linear, l2: nn.Linear) -> nn.Linear:
    w1, w2 = l1.weight.detach().double(), l2.weight.detach().double()
    b = torch.zeros(l2.out_features, dtype=torch.float64)
    if l1.bias is not None:
        b += w2 @ l1.bias.detach().double()
    if l2.bias is not None:
        b += l2.bias.detach().double()
    has_bias = l1.bias is not None or l2.bias is not None
    f = nn.Linear(l1.in_features, l2.out_features, bias=has_bias)
    with torch.no_grad():
        f.weight.copy_((w2 @ w1).to(l1.weight.dtype))
        if has_bias:
            f.bias.copy_(b.to(l1.weight.dtype))
    return f


def fold_linear(gm: fx.GraphModule, ctx: PassContext) -> list[Decision]:
    mode = ctx.options.fuse
    # chain bookkeeping: the deployed module name -> (layers folded into it, shape before, MACs before)
    chains: dict[str, tuple[list[str], list[int], int]] = {}
    decisions: dict[str, Decision] = {}
    kept: set[tuple[str, str]] = set()
    changed = True
    while changed:
        changed = False
        calls = call_counts(gm)
        for n1 in list(gm.graph.nodes):
            if n1.op != "call_module" or calls[n1.target] != 1 or not isinstance(gm.get_submodule(n1.target), nn.Linear):
                continue
            if len(n1.users) != 1:
                continue
            n2 = next(iter(n1.users))
            if n2.op != "call_module" or calls[n2.target] != 1 or n2.args != (n1,) or n2.kwargs:
                continue
            l1, l2 = gm.get_submodule(n1.target), gm.get_submodule(n2.target)
            if not isinstance(l2, nn.Linear) or (n1.target, n2.target) in kept:
                continue
            layers1, dims1, macs1 = chains.get(n1.target, ([n1.target], [l1.in_features, l1.out_features],
                                                          linear_macs(l1)))
            layers2, dims2, macs2 = chains.get(n2.target, ([n2.target], [l2.in_features, l2.out_features],
                                                          linear_macs(l2)))
            before_now = linear_macs(l1) + linear_macs(l2)
            after = l1.in_features * l2.out_features
            fold = mode == "always" or (mode == "flops" and after <= before_now)
            layers, dims = layers1 + layers2, dims1 + dims2[1:]
            shape_before = "linear " + "->".join(str(d) for d in dims)
            if not fold:
                kept.add((n1.target, n2.target))
                reason = f"by FLOPs: {fmt_macs(before_now)} -> {fmt_macs(after)}" if mode == "flops" else f"fuse={mode}"
                decisions[f"keep:{n1.target}:{n2.target}"] = Decision(
                    n2.target, "keep", [n1.target, n2.target],
                    f"linear {l1.in_features}->{l1.out_features}->{l2.out_features}",
                    f"linear {l1.in_features}->{l1.out_features}->{l2.out_features}", before_now, before_now, reason)
                continue
            f = folded_linear(l1, l2)
            parent, _, attr = n1.target.rpartition(".")
            setattr(gm.get_submodule(parent) if parent else gm, attr, f)
            n2.replace_all_uses_with(n1)
            gm.graph.erase_node(n2)
            decisions.pop(n2.target, None)
            chains.pop(n2.target, None)
            macs_before = macs1 + macs2
            chains[n1.target] = (layers, dims, macs_before)
            reason = (f"by FLOPs: {fmt_macs(macs_before)} -> {fmt_macs(linear_macs(f))}" if mode == "flops"
                      else f"fuse={mode}")
            decisions[n1.target] = Decision(common_prefix(layers), "fold linear chain", layers, shape_before,
                                            f"linear {f.in_features}->{f.out_features}", macs_before,
                                            linear_macs(f), reason)
            changed = True
            break
    gm.delete_all_unused_submodules()
    gm.recompile()
    return list(decisions.values())
