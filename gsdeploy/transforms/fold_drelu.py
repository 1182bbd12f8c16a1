"""Pass 4: Hinge's DReLU becomes a stock LeakyReLU with its scale folded into a neighbour.

DReLU(x) = p*relu(x) + n*relu(-x) = p * LeakyReLU(x, slope=-n/p) for any p != 0 (for
x >= 0 both give p*x; for x < 0 both give -n*x). The scalar p goes into the weights of
every consumer when all consumers are conv/linear (a linear map commutes with a scalar;
zero padding stays zero), else into the producing conv when p > 0 (LeakyReLU(p*y) =
p*LeakyReLU(y) only for p > 0), else an explicit multiply is inserted. p == 0 leaves DReLU.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn as nn

from gsdeploy.transforms.context import PassContext
from gsdeploy.transforms.fxutil import call_counts, set_module
from gsdeploy.zoo.layers import DReLU
from gsdeploy.transforms.decisions import Decision


def _scale(m: nn.Module, p: float, bias: bool) -> None:
    with torch.no_grad():
        m.weight.copy_((m.weight.double() * p).to(m.weight.dtype))
        if bias and m.bias is not None:
            m.bias.copy_((m.bias.double() * p).to(m.bias.dtype))


def _linear_layer(gm: fx.GraphModule, node: fx.Node, calls) -> nn.Module | None:
    if node.op != "call_module" or calls[node.target] != 1:
        return None
    m = gm.get_submodule(node.target)
    return m if isinstance(m, (nn.Conv2d, nn.Linear)) else None


def fold_drelu(gm: fx.GraphModule, ctx: PassContext) -> list[Decision]:
    calls = call_counts(gm)
    decisions: list[Decision] = []
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), DReLU):
            continue
        d = gm.get_submodule(node.target)
        p, n = float(d.slope_p.detach()), float(d.slope_n.detach())
        before = f"DReLU(p={p:.4g}, n={n:.4g})"
        if p == 0 or calls[node.target] != 1:
            why = "slope_p is 0: no LeakyReLU form" if p == 0 else "module is called more than once"
            decisions.append(Decision(node.target, "keep", [node.target], before, before, 0, 0, why))
            continue
        slope = -n / p
        users = list(node.users)
        consumers = [_linear_layer(gm, u, calls) for u in users]
        src = node.args[0]
        producer = _linear_layer(gm, src, calls) if isinstance(src, fx.Node) else None
        set_module(gm, node.target, nn.LeakyReLU(negative_slope=slope))
        if p == 1.0:
            where = "slope_p is 1"
        elif users and all(c is not None for c in consumers):
            for c in consumers:
                _scale(c, p, bias=False)
            where = "slope_p folded into " + ", ".join(u.target for u in users)
        elif producer is not None and p > 0 and len(src.users) == 1:
            _scale(producer, p, bias=True)
            where = f"slope_p folded into {src.target}"
        else:
            with gm.graph.inserting_after(node):
                mul = gm.graph.call_function(operator.mul, (node, p))
            node.replace_all_uses_with(mul, delete_user_cb=lambda u: u is not mul)
            where = "slope_p kept as a multiply"
        after = f"LeakyReLU({slope:.4g})"
        decisions.append(Decision(node.target, "fold DReLU", [node.target], before, after, 0, 0, where))
    gm.recompile()
    return decisions
