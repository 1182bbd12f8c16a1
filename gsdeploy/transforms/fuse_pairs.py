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
from gsdeploy.transforms.fxutil import call_counts, common_prefix, conv_macs, describe, fmt_macs
from gsdeploy.transforms.decisions import Decision


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
    bias = torch.zeros(b.out_channels, dtype=torch.float64)
    if a.bias is not None:
        bias += wb @ a.bias.detach().double()
    if b.bias is not None:
        bias += b.bias.detach().double()
    has_bias = a.bias is not None or b.bias is not None
    f = nn.Conv2d(a.in_channels, b.out_channels, a.kernel_size, stride=a.stride, padding=a.padding,
                  dilation=a.dilation, groups=1, bias=has_bias, padding_mode=a.padding_mode)
    with torch.no_grad():
        f.weight.copy_(w.to(a.weight.dtype))
        if has_bias:
            f.bias.copy_(bias.to(a.weight.dtype))
    return f


def _candidates(gm: fx.GraphModule) -> list[tuple[fx.Node, fx.Node]]:
    calls = call_counts(gm)
    out = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or calls[node.target] != 1 or not isinstance(gm.get_submodule(node.target), nn.Conv2d):
            continue
        if len(node.users) != 1:
            continue
        user = next(iter(node.users))
        if user.op != "call_module" or calls[user.target] != 1 or user.args != (node,) or user.kwargs:
            continue
        if is_pointwise_conv(gm.get_submodule(user.target)):
            out.append((node, user))
    return out


def fuse_pairs(gm: fx.GraphModule, ctx: PassContext) -> list[Decision]:
    mode = ctx.options.fuse
    decisions: list[Decision] = []
    seen: set[tuple[str, str]] = set()
    shapes = ctx.shapes(gm)  # a fusion changes no tensor shape: compute once, patch below
    changed = True
    while changed:
        changed = False
        for an, bn in _candidates(gm):
            key = (an.target, bn.target)
            if key in seen:
                continue
            seen.add(key)
            a, b = gm.get_submodule(an.target), gm.get_submodule(bn.target)
            out_shape = shapes[bn]
            pair = conv_macs(a, shapes[an]) + conv_macs(b, out_shape)
            fused = b.out_channels * a.in_channels * a.kernel_size[0] * a.kernel_size[1] * \
                int(out_shape[-1]) * int(out_shape[-2])
            fuse = mode == "always" or (mode == "flops" and fused < pair)
            reason = f"by FLOPs: {fmt_macs(pair)} -> {fmt_macs(fused)}" if mode == "flops" else \
                f"fuse={mode} (FLOPs {fmt_macs(pair)} -> {fmt_macs(fused)})"
            choice = ctx.options.choices.get(an.target)
            if choice in ("keep", "fuse"):
                fuse = choice == "fuse"
                reason = ctx.options.reasons.get(an.target, f"plan: {choice}") + \
                    f"; FLOPs {fmt_macs(pair)} -> {fmt_macs(fused)}"
            elif choice is not None:  # padded later by align_widths: the pair stays a pair
                fuse = False
                reason = ctx.options.reasons.get(an.target, f"plan: {choice}")
            site = common_prefix([an.target, bn.target])
            before = f"{describe(a)} + {describe(b)}"
            if not fuse:
                decisions.append(Decision(site, "keep", [an.target, bn.target], before, before, pair, pair, reason))
                continue
            f = fused_conv(a, b)
            decisions.append(Decision(site, "fuse pair", [an.target, bn.target], before, describe(f), pair, fused,
                                      reason))
            # A's place keeps the fused conv; B goes
            parent, _, attr = an.target.rpartition(".")
            setattr(gm.get_submodule(parent) if parent else gm, attr, f)
            bn.replace_all_uses_with(an)
            shapes[an] = shapes.pop(bn)
            gm.graph.erase_node(bn)
            changed = True
            break  # shapes and candidates changed
    gm.delete_all_unused_submodules()
    gm.recompile()
    return decisions
