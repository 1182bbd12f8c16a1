"""Pass 3: remove dead channels physically, using the coupling analysis of channels.py.

Each layer's class in layer_channels cuts its own parameters (conv/linear rows = outputs,
columns = inputs, grouped convs and GroupNorm whole groups; BN parameters and buffers; PReLU
weights); this pass cuts channel-pad amounts itself. Runs to a fixpoint: removing a filter can
leave an input column that nothing reads any more.
"""

from __future__ import annotations

import numpy as np
import torch.fx as fx

from gsdeploy.transforms import ops
from gsdeploy.transforms.channels import Analysis, analyze, channel_pad_slots, pad_spec
from gsdeploy.transforms.context import PassContext
from gsdeploy.transforms.decisions import Decision
from gsdeploy.transforms.fxutil import layer_macs
from gsdeploy.transforms.layer_channels import channel_layer, mixing_layer

MAX_ROUNDS = 20


def _cut_pad(node: fx.Node, a: Analysis, shapes: dict) -> None:
    x, pads, _, _ = pad_spec(node)
    slots = channel_pad_slots(pads, len(shapes[x]))
    if slots is None:
        return
    before = pads[slots[0]]
    keep = a.keep(node)
    cin = a.graph.width[x]
    # surviving output channels below `before` are pad channels before x, those past x's end after it
    pads[slots[0]] = int(np.sum(keep < before))
    pads[slots[1]] = int(np.sum(keep >= before + cin))
    args = list(node.args)
    if len(args) > 1:
        args[1] = pads
        node.args = tuple(args)
    else:
        node.kwargs = {**node.kwargs, "pad": pads}


def apply(gm: fx.GraphModule, a: Analysis, shapes: dict, log: dict[str, dict]) -> int:
    """Cut every node the analysis touches; returns how many channels went."""
    removed = 0
    for node in gm.graph.nodes:
        if node not in a.graph.offset:
            continue
        if node.op == "call_module":
            m = gm.get_submodule(node.target)
            layer = channel_layer(m)
            if layer is not None and not layer.pointwise:
                x = node.args[0]
                if not (a.changes(node) or a.changes(x)):
                    continue
                entry = log.setdefault(node.target, {"before": layer.describe(m),
                                                     "macs_before": layer_macs(m, shapes[node]),
                                                     "shape": shapes[node], "out": [0, 0], "in": [0, 0]})
                keep_in, keep_out = a.keep(x), a.keep(node)
                for side, n in (("out", node), ("in", x)):
                    gone = a.classes(n)[a.removed(n)]
                    entry[side][0] += int(a.zero[gone].sum())  # zero everywhere: removal changes no value
                    entry[side][1] += int((~a.zero[gone]).sum())  # not zero, but no consumer reads it
                layer.cut(m, keep_in, keep_out)
                entry["layer"] = m
            elif layer is not None and a.changes(node):
                layer.cut(m, a.keep(node), a.keep(node))
        elif ops.is_fn(node, ops.PAD_FNS) and a.changes(node):
            _cut_pad(node, a, shapes)
        if a.changes(node):
            removed += len(a.removed(node))
    return removed


def silence_dead_groups(gm: fx.GraphModule, a: Analysis) -> int:
    """Let every group that goes only whole (a grouped conv's, a GroupNorm's) and reads only channels
    all of whose producers write exact zero (a depthwise channel behind a zero expand filter) write
    zero too, where its layer class can do that without changing a value (a conv's weights multiply
    zeros). The group's outputs then count as zero, and it can go with its inputs. Returns how many
    groups were silenced."""
    count = 0
    for node in gm.graph.nodes:
        if node.op != "call_module" or node not in a.graph.offset or not node.args or node.args[0] not in a.graph.offset:
            continue
        m = gm.get_submodule(node.target)
        layer = mixing_layer(m)
        if layer is None or layer.whole_groups(m) <= 1:  # one group: it could never go whole
            continue
        roots = a.classes(node.args[0])
        dead = a.zero[roots] & ~a.pinned[roots]  # pinned: a graph input or opaque producer may write anything
        groups = layer.whole_groups(m)
        cin_g = layer.in_channels(m) // groups
        for j in range(groups):
            if dead[j * cin_g:(j + 1) * cin_g].all() and layer.silence_group(m, j):
                count += 1
    return count


def prune_zero(gm: fx.GraphModule, ctx: PassContext) -> list[Decision]:
    log: dict[str, dict] = {}
    for _ in range(MAX_ROUNDS):
        shapes = ctx.shapes(gm)
        analysis = analyze(gm, shapes, 0.0)
        if silence_dead_groups(gm, analysis):
            analysis = analyze(gm, shapes, 0.0)
        if apply(gm, analysis, shapes, log) == 0:
            break
        gm.recompile()
    shapes = ctx.shapes(gm)
    by_name = {n.target: n for n in gm.graph.nodes if n.op == "call_module"}
    decisions = []
    for name, e in log.items():
        m = e["layer"]
        after = channel_layer(m).describe(m)
        if after == e["before"]:
            continue
        parts = []
        for side, label in (("out", "outputs"), ("in", "inputs")):
            zero, unused = e[side]
            said = [f"{zero} zero in every producer"] if zero else []
            said += [f"{unused} read by no consumer"] if unused else []
            if said:
                parts.append(f"{label}: " + ", ".join(said))
        decisions.append(Decision(site=name, action="remove zero groups", layers=[name], shape_before=e["before"],
                                  shape_after=after, macs_before=e["macs_before"],
                                  macs_after=layer_macs(m, shapes.get(by_name.get(name), e["shape"])),
                                  reason="; ".join(parts)))
    return decisions


def zero_small_groups(gm: fx.GraphModule, ctx: PassContext, threshold: float) -> int:
    """Make groups whose weights are at most `threshold` exactly zero, where that lets them go.

    Only groups that the coupling analysis would remove at this threshold are touched: for a
    class zero everywhere, the producing rows (and biases) are zeroed; for a class no consumer
    needs, the reading columns are zeroed. The model after this step is the reference that the
    exact passes are verified against; the planner reports its error vs the original.
    """
    total = 0
    for _ in range(MAX_ROUNDS):
        shapes = ctx.shapes(gm)
        a = analyze(gm, shapes, threshold)
        exact = analyze(gm, shapes, 0.0)
        if np.array_equal(a.removable[a.roots], exact.removable[exact.roots]):
            break
        count = 0
        for node in gm.graph.nodes:
            if node.op != "call_module" or node not in a.graph.offset:
                continue
            m = gm.get_submodule(node.target)
            layer = mixing_layer(m)
            if layer is None or node.args[0] not in a.graph.offset:
                continue
            x = node.args[0]
            out_roots = a.classes(node)
            rows = np.nonzero(a.removable[out_roots] & a.zero[out_roots])[0]
            in_roots = a.classes(x)
            cols = np.nonzero(a.removable[in_roots] & ~a.zero[in_roots])[0]
            if len(rows):
                layer.zero_out(m, rows)
            if len(cols):
                layer.zero_in(m, cols)
            count += len(rows) + len(cols)
        total += count
        if count == 0:
            break
    return total
