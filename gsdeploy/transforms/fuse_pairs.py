"""Pass 5: a k x k conv A whose only user is a 1 x 1 conv B becomes one k x k conv.

B is linear and per-pixel, so B o A is a conv with A's geometry and weights
W[o, c] = sum_{r in A's group of c} B[o, r] * A[r, c - group start], bias B bA + bB.
Zero padding is exact: it applies to A's input, which the fused conv reads the same way.
Whether to fuse is a trade of MACs for one layer less: options.fuse decides.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

from gsdeploy.transforms.context import PassContext
from gsdeploy.transforms.decisions import Decision
from gsdeploy.transforms.fxutil import chained_bias, common_prefix, conv_macs, describe, fmt_macs
from gsdeploy.transforms.patterns import Match, fuse


def is_pointwise_conv(m: nn.Module) -> bool:
    return (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1 and m.stride == (1, 1)
            and m.padding in ((0, 0), "valid"))


def fused_conv(a: nn.Conv2d, b: nn.Conv2d) -> nn.Conv2d:
    """One dense conv equal to b(a(x)), computed in float64."""
    g = a.groups
    wa = a.weight.detach().double()  # (mid, cin/g, kh, kw)
    wb = b.weight.detach().double()[:, :, 0, 0]  # (cout, mid)
    mid_g, cin_g = a.out_channels // g, a.in_channels // g
    w = torch.zeros(b.out_channels, a.in_channels, *a.kernel_size, dtype=torch.float64)
    for j in range(g):
        rows = slice(j * mid_g, (j + 1) * mid_g)
        w[:, j * cin_g:(j + 1) * cin_g] = torch.einsum("or,rckl->ockl", wb[:, rows], wa[rows])
    bias = chained_bias(wb, a, b)
    f = nn.Conv2d(a.in_channels, b.out_channels, a.kernel_size, stride=a.stride, padding=a.padding,
                  dilation=a.dilation, groups=1, bias=bias is not None, padding_mode=a.padding_mode)
    with torch.no_grad():
        f.weight.copy_(w.to(a.weight.dtype))
        if bias is not None:
            f.bias.copy_(bias.to(a.weight.dtype))
    return f


# a k x k conv whose only user is a pointwise conv that reads only it
PATTERN = (nn.Conv2d, is_pointwise_conv)


def fuse_pairs(gm: fx.GraphModule, ctx: PassContext) -> list[Decision]:
    mode = ctx.options.fuse
    decisions: list[Decision] = []
    shapes = ctx.shapes(gm)  # a fusion changes no tensor shape: compute once, patch below

    def build(match: Match) -> nn.Conv2d | None:
        an, bn = match.nodes
        a, b = match.modules
        out_shape = shapes[bn]
        pair = conv_macs(a, shapes[an]) + conv_macs(b, out_shape)
        fused = b.out_channels * a.in_channels * a.kernel_size[0] * a.kernel_size[1] * \
            int(out_shape[-1]) * int(out_shape[-2])
        fuse_it = mode == "always" or (mode == "flops" and fused < pair)
        reason = f"by FLOPs: {fmt_macs(pair)} -> {fmt_macs(fused)}" if mode == "flops" else \
            f"fuse={mode} (FLOPs {fmt_macs(pair)} -> {fmt_macs(fused)})"
        # a fused pair computes its 1 x 1's output: its pair with the next 1 x 1 is that 1 x 1's site
        origin = ctx.origin(an.target)
        choice = ctx.choice(an.target)
        if choice in ("keep", "fuse"):
            fuse_it = choice == "fuse"
            reason = ctx.options.reasons.get(origin, f"plan: {choice}") + \
                f"; FLOPs {fmt_macs(pair)} -> {fmt_macs(fused)}"
        elif choice is not None:  # padded later by align_widths: the pair stays a pair
            fuse_it = False
            reason = ctx.options.reasons.get(origin, f"plan: {choice}")
        site = common_prefix([an.target, bn.target])
        before = f"{describe(a)} + {describe(b)}"
        if not fuse_it:
            decisions.append(Decision(site, "keep", [an.target, bn.target], before, before, pair, pair, reason))
            return None
        f = fused_conv(a, b)
        decisions.append(Decision(site, "fuse pair", [an.target, bn.target], before, describe(f), pair, fused,
                                  reason))
        shapes[an] = shapes.pop(bn)  # A's node computes B's output from now on
        ctx.computes[an.target] = ctx.origin(bn.target)
        return f

    fuse(gm, PATTERN, build)
    return decisions
