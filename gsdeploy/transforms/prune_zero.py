"""Pass 3: remove dead channels physically, using the coupling analysis of channels.py.

Slices conv/linear weights (rows = outputs, columns = inputs; grouped convs lose whole
groups), biases, BN parameters and buffers, PReLU weights and channel-pad amounts, and
fixes the module attributes. Runs to a fixpoint: removing a filter can leave an input
column that nothing reads any more.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from gsdeploy.transforms import ops
from gsdeploy.transforms.channels import Analysis, analyze, channel_pad_slots, pad_spec
from gsdeploy.transforms.context import PassContext
from gsdeploy.transforms.fxutil import describe, layer_macs
from gsdeploy.transforms.decisions import Decision

MAX_ROUNDS = 20


def _take(t: torch.Tensor | None, dim: int, idx: np.ndarray) -> torch.Tensor | None:
    if t is None:
        return None
    return t.detach().index_select(dim, torch.as_tensor(idx, dtype=torch.long)).clone()


def _set_param(m: nn.Module, name: str, value: torch.Tensor | None) -> None:
    if value is None:
        return
    old = getattr(m, name)
    if isinstance(old, nn.Parameter):
        setattr(m, name, nn.Parameter(value, requires_grad=old.requires_grad))
    else:
        setattr(m, name, value)


def _cut_conv(conv: nn.Conv2d, keep_in: np.ndarray, keep_out: np.ndarray) -> None:
    g = conv.groups
    if g > 1:
        # whole groups only (channels.decide guarantees it): rows go, in-group columns stay
        cout_g, cin_g = conv.out_channels // g, conv.in_channels // g
        new_groups = len(keep_out) // cout_g
        if len(keep_out) % cout_g or len(keep_in) != new_groups * cin_g:
            raise AssertionError(f"grouped conv cut across a group: in {len(keep_in)}, out {len(keep_out)}")
        _set_param(conv, "weight", _take(conv.weight, 0, keep_out))
        conv.groups = new_groups
    else:
        _set_param(conv, "weight", _take(_take(conv.weight, 0, keep_out), 1, keep_in))
    _set_param(conv, "bias", _take(conv.bias, 0, keep_out))
    conv.in_channels, conv.out_channels = len(keep_in), len(keep_out)


def _cut_linear(lin: nn.Linear, keep_in: np.ndarray, keep_out: np.ndarray) -> None:
    _set_param(lin, "weight", _take(_take(lin.weight, 0, keep_out), 1, keep_in))
    _set_param(lin, "bias", _take(lin.bias, 0, keep_out))
    lin.in_features, lin.out_features = len(keep_in), len(keep_out)


def _cut_channelwise(m: nn.Module, keep: np.ndarray) -> None:
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        for name in ("weight", "bias", "running_mean", "running_var"):
            _set_param(m, name, _take(getattr(m, name), 0, keep))
        m.num_features = len(keep)
    elif isinstance(m, nn.PReLU) and m.num_parameters > 1:
        _set_param(m, "weight", _take(m.weight, 0, keep))
        m.num_parameters = len(keep)


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
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                x = node.args[0]
                if not (a.changes(node) or a.changes(x)):
                    continue
                entry = log.setdefault(node.target, {"before": describe(m), "macs_before": layer_macs(m, shapes[node]),
                                                     "shape": shapes[node], "out": [0, 0], "in": [0, 0]})
                keep_in, keep_out = a.keep(x), a.keep(node)
                for side, n in (("out", node), ("in", x)):
                    gone = a.classes(n)[a.removed(n)]
                    entry[side][0] += int(a.zero[gone].sum())  # zero everywhere: removal changes no value
                    entry[side][1] += int((~a.zero[gone]).sum())  # not zero, but no consumer reads it
                (_cut_conv if isinstance(m, nn.Conv2d) else _cut_linear)(m, keep_in, keep_out)
                entry["layer"] = m
            elif a.changes(node):
                _cut_channelwise(m, a.keep(node))
        elif ops.is_fn(node, ops.PAD_FNS) and a.changes(node):
            _cut_pad(node, a, shapes)
        if a.changes(node):
            removed += len(a.removed(node))
    return removed


def silence_dead_groups(gm: fx.GraphModule, a: Analysis) -> int:
    """Zero the weights of every grouped-conv group that reads only channels all of whose producers
    write exact zero (a depthwise channel behind a zero expand filter). The weights multiply zeros,
    so this changes no value; the group's outputs then count as zero, and the group, which goes
    only whole, can go with its inputs. Returns how many groups were silenced."""
    count = 0
    for node in gm.graph.nodes:
        if node.op != "call_module" or node not in a.graph.offset or not node.args or node.args[0] not in a.graph.offset:
            continue
        m = gm.get_submodule(node.target)
        if not isinstance(m, nn.Conv2d) or m.groups == 1:
            continue
        roots = a.classes(node.args[0])
        dead = a.zero[roots] & ~a.pinned[roots]  # pinned: a graph input or opaque producer may write anything
        cin_g, cout_g = m.in_channels // m.groups, m.out_channels // m.groups
        with torch.no_grad():
            for j in range(m.groups):
                w = m.weight[j * cout_g:(j + 1) * cout_g]
                if dead[j * cin_g:(j + 1) * cin_g].all() and w.ne(0).any():
                    w.zero_()
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
        after = describe(m)
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
            if not isinstance(m, (nn.Conv2d, nn.Linear)) or node.args[0] not in a.graph.offset:
                continue
            x = node.args[0]
            out_roots = a.classes(node)
            rows = np.nonzero(a.removable[out_roots] & a.zero[out_roots])[0]
            in_roots = a.classes(x)
            cols = np.nonzero(a.removable[in_roots] & ~a.zero[in_roots])[0]
            with torch.no_grad():
                if len(rows):
                    idx = torch.as_tensor(rows, dtype=torch.long)
                    m.weight[idx] = 0
                    if m.bias is not None:
                        m.bias[idx] = 0
                for c in cols:
                    if isinstance(m, nn.Conv2d) and m.groups > 1:
                        cin_g, cout_g = m.in_channels // m.groups, m.out_channels // m.groups
                        j = c // cin_g
                        m.weight[j * cout_g:(j + 1) * cout_g, c - j * cin_g] = 0
                    else:
                        m.weight[:, c] = 0
            count += len(rows) + len(cols)
        total += count
        if count == 0:
            break
    return total
