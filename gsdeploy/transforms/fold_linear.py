"""Pass 6: Linear -> Linear with nothing between becomes one Linear: W = W2 W1, b = W2 b1 + b2.

Folding a low-rank chain (in -> r -> out with small r) would raise MACs, so options.fuse
applies here as for conv pairs: "flops" folds when MACs do not rise, "always", "never".
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

from gsdeploy.transforms.context import PassContext
from gsdeploy.transforms.decisions import Decision
from gsdeploy.transforms.fxutil import chained_bias, common_prefix, fmt_macs, linear_macs
from gsdeploy.transforms.patterns import Match, fuse


def folded_linear(l1: nn.Linear, l2: nn.Linear) -> nn.Linear:
    w1, w2 = l1.weight.detach().double(), l2.weight.detach().double()
    b = chained_bias(w2, l1, l2)
    f = nn.Linear(l1.in_features, l2.out_features, bias=b is not None)
    with torch.no_grad():
        f.weight.copy_((w2 @ w1).to(l1.weight.dtype))
        if b is not None:
            f.bias.copy_(b.to(l1.weight.dtype))
    return f


def fold_linear(gm: fx.GraphModule, ctx: PassContext) -> list[Decision]:
    mode = ctx.options.fuse
    # chain bookkeeping: the deployed module name -> (layers folded into it, shape before, MACs before)
    chains: dict[str, tuple[list[str], list[int], int]] = {}
    decisions: dict[str, Decision] = {}

    def build(match: Match) -> nn.Linear | None:
        n1, n2 = match.names
        l1, l2 = match.modules
        layers1, dims1, macs1 = chains.get(n1, ([n1], [l1.in_features, l1.out_features], linear_macs(l1)))
        layers2, dims2, macs2 = chains.get(n2, ([n2], [l2.in_features, l2.out_features], linear_macs(l2)))
        before_now = linear_macs(l1) + linear_macs(l2)
        after = l1.in_features * l2.out_features
        if not (mode == "always" or (mode == "flops" and after <= before_now)):
            reason = f"by FLOPs: {fmt_macs(before_now)} -> {fmt_macs(after)}" if mode == "flops" else f"fuse={mode}"
            shape = f"linear {l1.in_features}->{l1.out_features}->{l2.out_features}"
            decisions[f"keep:{n1}:{n2}"] = Decision(n2, "keep", [n1, n2], shape, shape, before_now, before_now, reason)
            return None
        f = folded_linear(l1, l2)
        # n2 is folded into n1's place: its own chain (if any) becomes part of n1's
        decisions.pop(n2, None)
        chains.pop(n2, None)
        layers, dims, macs_before = layers1 + layers2, dims1 + dims2[1:], macs1 + macs2
        chains[n1] = (layers, dims, macs_before)
        reason = (f"by FLOPs: {fmt_macs(macs_before)} -> {fmt_macs(linear_macs(f))}" if mode == "flops"
                  else f"fuse={mode}")
        decisions[n1] = Decision(common_prefix(layers), "fold linear chain", layers,
                                 "linear " + "->".join(str(d) for d in dims), f"linear {f.in_features}->{f.out_features}",
                                 macs_before, linear_macs(f), reason)
        return f

    fuse(gm, (nn.Linear, nn.Linear), build)
    return list(decisions.values())
