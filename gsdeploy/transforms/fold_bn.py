"""Pass 2: an eval BatchNorm right after a conv (or BatchNorm1d after a Linear) folds into it.

y = gamma * (W x + b - mean) / sqrt(var + eps) + beta  =  (s W) x + (s (b - mean) + beta),
s = gamma / sqrt(var + eps). Computed in float64 so the folded weights round once.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn

from gsdeploy.transforms.context import PassContext
from gsdeploy.transforms.decisions import Decision
from gsdeploy.transforms.fxutil import describe, layer_macs
from gsdeploy.transforms.patterns import Match, fuse


def bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, shift) of an eval BN, float64: bn(x) = scale * x + shift."""
    var = bn.running_var.double()
    mean = bn.running_mean.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + bn.eps)
    return scale, beta - mean * scale


def foldable_bn(bn: nn.Module) -> bool:
    return (isinstance(bn, nn.BatchNorm1d | nn.BatchNorm2d) and not bn.training
            and bn.running_mean is not None and bn.running_var is not None)


def fold_into(layer: nn.Conv2d | nn.Linear, bn: nn.Module) -> None:
    """Scale rows of `layer` and set its bias so that layer' = bn o layer (creates a bias if absent)."""
    scale, shift = bn_scale_shift(bn)
    w = layer.weight.detach().double()
    b = layer.bias.detach().double() if layer.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    shape = (-1,) + (1,) * (w.dim() - 1)
    dtype = layer.weight.dtype
    with torch.no_grad():
        layer.weight.copy_((w * scale.view(shape)).to(dtype))
        if layer.bias is None:
            layer.bias = nn.Parameter(torch.zeros(w.shape[0], dtype=dtype))
        layer.bias.copy_((b * scale + shift).to(dtype))


def fold_bn(gm: fx.GraphModule, ctx: PassContext) -> list[Decision]:
    shapes = ctx.shapes(gm)
    decisions: list[Decision] = []

    def build(match: Match) -> nn.Module | None:
        src, node = match.nodes
        layer, bn = match.modules
        pair_ok = (isinstance(layer, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)) or \
                  (isinstance(layer, nn.Linear) and isinstance(bn, nn.BatchNorm1d) and len(shapes.get(src, ())) == 2)
        if not pair_ok or bn.num_features != layer.weight.shape[0]:
            return None
        before = describe(layer)
        fold_into(layer, bn)
        macs = layer_macs(layer, shapes.get(src, ()))
        decisions.append(Decision(site=src.target, action="fold BN", layers=[src.target, node.target],
                                  shape_before=f"{before} + BN {bn.num_features}", shape_after=describe(layer),
                                  macs_before=macs, macs_after=macs,
                                  reason="eval BatchNorm is an affine map per output channel"))
        return layer  # folded in place: the layer's node now computes the BN's output

    # ordered by the BN node, as this pass always walked the graph; a folded layer can meet a
    # second BN (conv -> BN -> BN) in the next round
    fuse(gm, ((nn.Conv2d, nn.Linear), foldable_bn), build, order_by=-1)
    return decisions
