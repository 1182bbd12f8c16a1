"""What the passes could not remove: zero channels kept alive by an op the channel analysis does
not understand, a module shared between calls, or a grouped conv that only drops whole groups.

Run on the final graph: every class of channels that is zero in every producer (or read by no
consumer) and still there is attributed to the node that blocked it, with the channels it kept
and the MACs spent on them. A deploy that removed less than the checkpoint allows must say so.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch.fx as fx

from gsdeploy.transforms.channels import analyze
from gsdeploy.transforms.context import PassContext
from gsdeploy.transforms.fxutil import fmt_macs, layer_macs
from gsdeploy.transforms.inplace import after_inplace
from gsdeploy.transforms.decisions import Decision
from gsdeploy.transforms.layer_channels import mixing_layer


@dataclass(frozen=True)
class KeptZeros:
    op: str  # what the blocking node is, e.g. "aten.hardtanh_.default", "Tensor.relu_", "SqueezeExcite"
    site: str  # where: module path or node name
    why: str  # why it blocks
    channels: int  # channel classes kept (a class spans every tensor coupled to it)
    macs: int  # MACs per sample spent on those channels by conv/linear layers
    layers: tuple[str, ...]  # the conv/linear layers that keep them

    def describe(self) -> str:
        return (f"{self.channels} zero channel{'s' if self.channels != 1 else ''} kept ({fmt_macs(self.macs)} MACs) by "
                f"{self.op} at {self.site}: {self.why}")


def _op_name(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.target is after_inplace and isinstance(node.args[1], fx.Node):  # name the in-place op itself
        return _op_name(gm, node.args[1])
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    name = getattr(node.target, "__name__", None)
    if hasattr(node.target, "_opname"):  # an aten OpOverload prints as aten.relu_.default
        return str(node.target)
    module = getattr(node.target, "__module__", None) or ""
    return f"{module.replace('torch._C._nn', 'torch.nn.functional').lstrip('_')}.{name}".lstrip(".") if name else str(node.target)


def _site(node: fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack")
    if stack:
        path = list(stack.values())[-1][0]
        if path:
            return f"{path} ({node.name})"
    return node.name


def kept_zeros(gm: fx.GraphModule, ctx: PassContext) -> list[KeptZeros]:
    """Exactly-zero filters (rows with zero bias) and zero input columns of conv/linear layers (of
    every mixing layer in layer_channels) that are still in the graph because an opaque node or a
    grouped conv or GroupNorm holds their channels."""
    shapes = ctx.shapes(gm)
    a = analyze(gm, shapes, 0.0)
    if not a.blocked:
        return []
    per_blocker: dict[fx.Node, dict] = defaultdict(lambda: {"classes": set(), "macs": 0, "layers": []})
    for n in gm.graph.nodes:
        if n.op != "call_module" or n not in a.graph.offset or not n.args or n.args[0] not in a.graph.offset:
            continue
        m = gm.get_submodule(n.target)
        layer = mixing_layer(m)
        if layer is None:
            continue
        zero_rows = ~np.broadcast_to(layer.writes(m, 0.0), (layer.out_channels(m),))
        zero_cols = ~layer.reads(m, 0.0)
        hits: dict[fx.Node, list[np.ndarray]] = defaultdict(lambda: [np.zeros(len(zero_rows), bool),
                                                                     np.zeros(len(zero_cols), bool)])
        for side, (zeros, classes) in enumerate(((zero_rows, a.classes(n)), (zero_cols, a.classes(n.args[0])))):
            for i in np.nonzero(zeros)[0]:
                r = int(classes[i])
                if r in a.blocked and not a.removable[r]:
                    hits[a.blocked[r]][side][i] = True
                    per_blocker[a.blocked[r]]["classes"].add(r)
        for blocker, (rows, cols) in hits.items():
            kept_share = 1 - (1 - rows.mean()) * (1 - cols.mean())  # weights that touch a kept zero channel
            per_blocker[blocker]["macs"] += int(round(layer_macs(m, shapes[n]) * kept_share))
            per_blocker[blocker]["layers"].append(str(n.target))
    out = [KeptZeros(op=_op_name(gm, node), site=_site(node.args[1] if node.target is after_inplace else node),
                     why=_why(a, node),
                     channels=len(e["classes"]), macs=e["macs"], layers=tuple(e["layers"]))
           for node, e in per_blocker.items()]
    return sorted(out, key=lambda k: (-k.macs, -k.channels))


def _why(a, node: fx.Node) -> str:
    if node.target is after_inplace:
        return "it writes in place into a tensor that may share storage with another"
    return a.graph.blocker_why.get(node) or ("a grouped conv drops a group's inputs and outputs together, "
                                                "and the rest of the group is not zero")


def as_decisions(kept: list[KeptZeros]) -> list[Decision]:
    return [Decision(site=k.site, action="keep", layers=list(k.layers), shape_before=k.op, shape_after=k.op,
                     macs_before=k.macs, macs_after=k.macs, reason=k.describe()) for k in kept]


def warning_line(kept: list[KeptZeros], hint: bool = True) -> str:
    """One line for the CLI: how much was left and the biggest cause."""
    channels, macs = sum(k.channels for k in kept), sum(k.macs for k in kept)
    worst = kept[0]
    more = f" and {len(kept) - 1} more site{'s' if len(kept) > 2 else ''}" if len(kept) > 1 else ""
    return (f"{channels} zero channel{'s' if channels != 1 else ''} ({fmt_macs(macs)} MACs) could not be removed: "
            f"{worst.op} at {worst.site} ({worst.why}){more}"
            + ("; see the plan (`gsdeploy inspect`), --strict makes this an error" if hint else ""))
