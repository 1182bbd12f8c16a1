"""Channel coupling as data: a union-find over (tensor node, channel) elements.

Every tensor-valued node with a channel axis (dim 1, ndim >= 2) owns one element per
channel. Rules, one small function per kind of op, say how elements relate:

* `union`   — two elements must live or die together (an activation's input and output
              channel c; every operand of a residual add; a concat's output k and its source).
* `nonzero` — a source writes something non-zero there (a conv filter or bias that is not
              zero; a constant pad value; an op such as a BN with shift that does not map 0 to 0).
* `used`    — a consumer reads it (a conv/linear input column that is not zero).
* `pin`     — never removed (graph inputs/outputs, constants, anything not understood).

A class (a set of unioned elements) is removable iff it is not pinned and either nothing in
it is non-zero (every producer writes zero and every op keeps zero: removing it changes no
value) or nothing in it is used (every consumer ignores it). Grouped convs and GroupNorm add
one more constraint: a group goes only as a whole; so does a gate's pair (x * g with g broadcast
over the plane, an SE block: output channel c is x's, and g's channel c goes with it). What each layer type writes, reads and
groups is said by its class in layer_channels. The DWGL intersection rule across a residual
add falls out of the union: the class is zero only if every addend's producer is zero.

What keeps a class is data too: an opaque node that pinned it (`blockers`) or a grouped conv
or GroupNorm that keeps a whole group for it; `Analysis.blocked` names that node, so the plan
can say which op kept which zero channels.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from gsdeploy.transforms import ops
from gsdeploy.transforms.fxutil import attr_value, bind, call_counts
from gsdeploy.transforms.layer_channels import ChannelLayer, channel_layer
from gsdeploy.zoo.layers import DReLU

# Modules without per-channel state; those with it (conv, BN, PReLU, ...) have a class in layer_channels.
ZERO_PRESERVING_MODULES: tuple[type, ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, DReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Hardswish,
    nn.Hardtanh, nn.Dropout, nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
)
NOT_ZERO_PRESERVING_MODULES: tuple[type, ...] = (nn.Sigmoid, nn.Hardsigmoid)


@dataclass
class ChannelGraph:
    offset: dict[fx.Node, int] = field(default_factory=dict)
    width: dict[fx.Node, int] = field(default_factory=dict)
    parent: list[int] = field(default_factory=list)
    pinned: list[bool] = field(default_factory=list)
    nonzero: list[bool] = field(default_factory=list)
    used: list[bool] = field(default_factory=list)
    groups: list[np.ndarray] = field(default_factory=list)  # element ids that go only together
    # the node of each entry of `groups`: a grouped conv, a GroupNorm, a gate's multiply
    group_owner: list[fx.Node] = field(default_factory=list)
    # element -> the opaque node that pinned it (graph inputs/outputs pin without a blocker)
    blockers: dict[int, fx.Node] = field(default_factory=dict)
    blocker_why: dict[fx.Node, str] = field(default_factory=dict)
    io: set[int] = field(default_factory=set)  # elements pinned as graph inputs, outputs or constants
    # elements of a gate read only by its multiply (x * g): what they hold reaches nothing but a
    # product that is zero wherever x is, so they do not make their class non-zero (SE's
    # sigmoid(mean(x)) is 0.5 where x is zero, yet x * 0.5 is zero)
    absorbed: set[int] = field(default_factory=set)

    # ---- building -------------------------------------------------------------------------
    def add_tensor(self, node: fx.Node, width: int) -> None:
        self.offset[node] = len(self.parent)
        self.width[node] = width
        start = len(self.parent)
        self.parent.extend(range(start, start + width))
        self.pinned.extend([False] * width)
        self.nonzero.extend([False] * width)
        self.used.extend([False] * width)

    def tracked(self, x: Any) -> bool:
        return isinstance(x, fx.Node) and x in self.offset

    def ids(self, node: fx.Node) -> range:
        o = self.offset[node]
        return range(o, o + self.width[node])

    def span(self, node: fx.Node) -> slice:
        o = self.offset[node]
        return slice(o, o + self.width[node])

    def find(self, e: int) -> int:
        parent = self.parent
        while parent[e] != e:
            parent[e] = parent[parent[e]]
            e = parent[e]
        return e

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def union_channels(self, a: fx.Node, b: fx.Node) -> None:
        for ea, eb in zip(self.ids(a), self.ids(b)):
            self.union(ea, eb)

    def pin(self, node: fx.Node, blocker: fx.Node | None = None) -> None:
        if node in self.offset:
            for e in self.ids(node):
                self.pinned[e] = True
                if blocker is not None:
                    self.blockers.setdefault(e, blocker)
                else:
                    self.io.add(e)

    def mark(self, flags: list[bool], node: fx.Node, mask: np.ndarray | torch.Tensor | bool) -> None:
        ids = self.ids(node)
        if isinstance(mask, bool):
            mask = np.full(len(ids), mask)
        for e, m in zip(ids, np.asarray(mask, dtype=bool)):
            if m:
                flags[e] = True

    # ---- deciding -------------------------------------------------------------------------
    def roots(self) -> np.ndarray:
        return np.fromiter((self.find(e) for e in range(len(self.parent))), dtype=np.int64, count=len(self.parent))


@dataclass
class Analysis:
    graph: ChannelGraph
    roots: np.ndarray
    removable: np.ndarray  # per root id: the class goes
    zero: np.ndarray  # per root id: the class is zero everywhere (removal changes no value)
    # per root id of a class an opaque node pins, or a grouped conv keeps: that node
    blocked: dict[int, fx.Node] = field(default_factory=dict)
    pinned: np.ndarray | None = None  # per root id: an input, output, constant or opaque node holds it

    def any_removable(self) -> bool:
        return bool(self.removable[self.roots].any())

    def classes(self, node: fx.Node) -> np.ndarray:
        """The class (root id) of each channel of `node`."""
        return self.roots[self.graph.span(node)]

    def keep(self, node: fx.Node) -> np.ndarray:
        """Indices of the channels of `node` that stay."""
        return np.nonzero(~self.removable[self.classes(node)])[0]

    def removed(self, node: fx.Node) -> np.ndarray:
        return np.nonzero(self.removable[self.classes(node)])[0]

    def changes(self, node: fx.Node) -> bool:
        return node in self.graph.offset and bool(self.removable[self.classes(node)].any())


# ---- per-op rules ----------------------------------------------------------------------------
# Each rule records what one node does to channels and returns False when it does not
# understand the node (the node is then opaque: its channels are pinned).


def _pin_all(cg: ChannelGraph, node: fx.Node, why: str = "not understood by the channel analysis") -> bool:
    for a in node.all_input_nodes:
        cg.pin(a, node)
    cg.pin(node, node)
    cg.blocker_why.setdefault(node, why)
    return True


def _first(node: fx.Node) -> Any:
    return node.args[0] if node.args else None


def _same_width(cg: ChannelGraph, x: Any, node: fx.Node) -> bool:
    return cg.tracked(x) and node in cg.offset and cg.width[x] == cg.width[node]


def _pointwise(cg: ChannelGraph, node: fx.Node, x: Any, zero_preserving: bool) -> bool:
    """Channel c of the output depends on channel c of x only."""
    if not _same_width(cg, x, node) or any(a is not x for a in node.all_input_nodes):
        return False
    cg.union_channels(x, node)
    if not zero_preserving:
        cg.mark(cg.nonzero, node, True)
    return True


def rule_layer(cg: ChannelGraph, node: fx.Node, m: nn.Module, layer: ChannelLayer, shapes: dict, tol: float) -> bool:
    """A module with a class in layer_channels: that class says what it writes, reads and couples."""
    x = _first(node)
    if len(node.all_input_nodes) != 1 or not cg.tracked(x) or node not in cg.offset:
        return False
    if not layer.understands(m, shapes[x], cg.width[node]):
        return False
    if layer.pointwise:
        if not _pointwise(cg, node, x, True):
            return False
        cg.mark(cg.nonzero, node, layer.writes(m, tol))
        return True
    cg.mark(cg.nonzero, node, layer.writes(m, tol))
    cg.mark(cg.used, x, layer.reads(m, tol))
    g = layer.whole_groups(m)
    if g:
        cin_g, cout_g = layer.in_channels(m) // g, layer.out_channels(m) // g
        xi, yi = cg.ids(x), cg.ids(node)
        for j in range(g):
            cg.groups.append(np.array(list(xi[j * cin_g:(j + 1) * cin_g]) + list(yi[j * cout_g:(j + 1) * cout_g])))
            cg.group_owner.append(node)
        if layer.group_why:
            cg.blocker_why.setdefault(node, layer.group_why)
    return True


def rule_module(cg: ChannelGraph, gm: fx.GraphModule, node: fx.Node, shapes: dict, tol: float) -> bool:
    m = gm.get_submodule(node.target)
    layer = channel_layer(m)
    if layer is not None:
        return rule_layer(cg, node, m, layer, shapes, tol)
    if isinstance(m, nn.Dropout) and m.training:
        return False
    if isinstance(m, ZERO_PRESERVING_MODULES):
        return _pointwise(cg, node, _first(node), True)
    if isinstance(m, NOT_ZERO_PRESERVING_MODULES):
        return _pointwise(cg, node, _first(node), False)
    if isinstance(m, nn.Flatten):
        return _flatten(cg, node, _first(node), m.start_dim, m.end_dim, shapes)
    return False


def _flatten(cg: ChannelGraph, node: fx.Node, x: Any, start: int, end: int, shapes: dict) -> bool:
    if not cg.tracked(x) or node not in cg.offset:
        return False
    nd = len(shapes[x])
    start, end = start % nd, end % nd
    if start >= 2 or nd == 2:
        return _pointwise(cg, node, x, True)  # channel axis untouched
    if start != 1 or end != nd - 1:
        return False
    hw = math.prod(int(s) for s in shapes[x][2:])
    xi = cg.ids(x)
    for f, e in enumerate(cg.ids(node)):  # feature f of the flat vector comes from channel f // hw
        cg.union(e, xi[f // hw])
    return True


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _scalar(gm: fx.GraphModule, v: Any) -> Any:
    """A one-element constant tensor (torch.export keeps DReLU's slopes as such) as a number."""
    t = attr_value(gm, v)
    return float(t.detach().reshape(())) if t is not None and t.numel() == 1 else v


def _binary(cg: ChannelGraph, gm: fx.GraphModule, node: fx.Node, shapes: dict, kind: str) -> bool:
    a, b = node.args[0], node.args[1] if len(node.args) > 1 else node.kwargs.get("other")
    a, b = (a if cg.tracked(a) else _scalar(gm, a)), (b if cg.tracked(b) else _scalar(gm, b))
    if cg.tracked(a) and cg.tracked(b):
        if kind == "mul" and _gate(cg, node, a, b, shapes):
            return True
        if kind == "div" or not (shapes[a] == shapes[b] == shapes.get(node)):
            return False  # other broadcasting, or 0/0: not understood here
        cg.union_channels(a, node)
        cg.union_channels(b, node)
        return True
    x, v = (a, b) if cg.tracked(a) else (b, a)
    if not _is_number(v) or any(n is not x for n in node.all_input_nodes if n.op != "get_attr"):
        return False
    if not _same_width(cg, x, node) or (kind == "div" and (x is b or v == 0)):
        return False  # v / x and x / 0 do not keep zeros
    cg.union_channels(x, node)
    if kind == "add" and v != 0:  # x + v, x - v, v - x: zero stays zero only for v == 0
        cg.mark(cg.nonzero, node, True)
    return True


GATE_WHY = ("a per-channel gate (x * g, g broadcast over the plane: squeeze-and-excitation) drops a channel of x "
            "and of g together, and one of the two stays")


def _gate(cg: ChannelGraph, node: fx.Node, a: fx.Node, b: fx.Node, shapes: dict) -> bool:
    """x * g with g of shape (N, C, 1, 1) broadcast over x's (N, C, H, W) plane (an SE block's gate):
    output channel c is x_c * g_c. It is x_c's channel (zero where x_c is zero, read where x_c is
    read); g_c matters only through it, so g's channel c goes exactly when the output's does."""
    out = shapes.get(node)
    for x, g in ((a, b), (b, a)):
        sx, sg = shapes[x], shapes[g]
        if len(sx) >= 3 and sx == out and len(sg) == len(sx) and sg[:2] == sx[:2] and sg[2:] != sx[2:] \
                and all(int(d) == 1 for d in sg[2:]):
            cg.union_channels(x, node)
            if list(g.users) == [node] and node.args.count(g) == 1:
                cg.absorbed.update(cg.ids(g))
            for eg, eo in zip(cg.ids(g), cg.ids(node)):
                cg.groups.append(np.array([eg, eo]))
                cg.group_owner.append(node)
            cg.blocker_why.setdefault(node, GATE_WHY)
            return True
    return False


def _cat(cg: ChannelGraph, node: fx.Node, shapes: dict) -> bool:
    a = bind(node, ("tensors", "dim"), {"dim": 0})
    xs = list(a["tensors"])
    if node not in cg.offset or not all(cg.tracked(x) for x in xs):
        return False
    nd = len(shapes[node])
    dim = a["dim"] % nd
    out = cg.ids(node)
    if dim == 1:
        k = 0
        for x in xs:
            for e in cg.ids(x):
                cg.union(out[k], e)
                k += 1
        return True
    if not all(cg.width[x] == cg.width[node] for x in xs):
        return False
    for x in xs:
        cg.union_channels(x, node)
    return True


def pad_spec(node: fx.Node) -> tuple[fx.Node, list[int], str, float]:
    if node.target is ops.aten.constant_pad_nd.default:
        a = bind(node, ("input", "pad", "value"), {"value": 0})
        return a["input"], list(a["pad"]), "constant", a["value"]
    a = bind(node, ("input", "pad", "mode", "value"), {"mode": "constant", "value": None})
    return a["input"], list(a["pad"]), a["mode"], a["value"] or 0


def channel_pad_slots(pads: list[int], ndim: int) -> tuple[int, int] | None:
    """Positions in an F.pad list of (before, after) for dim 1; None if the channels are not padded."""
    pairs = len(pads) // 2
    k = ndim - 2  # F.pad lists pads from the last dim backwards: pair k is dim ndim-1-k = 1
    if pairs <= k:
        return None
    return 2 * k, 2 * k + 1


def _pad(cg: ChannelGraph, node: fx.Node, shapes: dict) -> bool:
    x, pads, mode, value = pad_spec(node)
    if not cg.tracked(x) or node not in cg.offset or any(not isinstance(p, int) for p in pads):
        return False
    nd = len(shapes[x])
    if len(pads) // 2 > nd - 1:
        return False  # pads the batch axis
    slots = channel_pad_slots(pads, nd)
    if slots is None:
        return _pointwise(cg, node, x, value == 0 or mode != "constant")
    before, after = pads[slots[0]], pads[slots[1]]
    if mode != "constant" or before < 0 or after < 0:
        return False
    out, xi = cg.ids(node), cg.ids(x)
    for c, e in enumerate(xi):
        cg.union(out[before + c], e)
    # channels outside [before, before + C) are written by the pad itself, with `value`
    if value != 0:
        cg.mark(cg.nonzero, node, True)
    return True


def _mean(cg: ChannelGraph, node: fx.Node, shapes: dict) -> bool:
    a = bind(node, ("input", "dim", "keepdim", "dtype"), {"dim": None, "keepdim": False})
    x, dims = a["input"], a["dim"]
    if not cg.tracked(x) or dims is None:
        return False
    nd = len(shapes[x])
    dims = [int(d) % nd for d in ([dims] if isinstance(dims, int) else dims)]
    if 0 in dims or 1 in dims:
        return False
    return _pointwise(cg, node, x, True)


def _flatten_fn(cg: ChannelGraph, node: fx.Node, shapes: dict) -> bool:
    a = bind(node, ("input", "start_dim", "end_dim"), {"start_dim": 0, "end_dim": -1})
    return _flatten(cg, node, a["input"], a["start_dim"], a["end_dim"], shapes)


def _zero_preserving(cg: ChannelGraph, gm: fx.GraphModule, node: fx.Node, shapes: dict) -> bool:
    if node.target in (torch.nn.functional.dropout, ops.aten.dropout.default) and \
            bind(node, ("input", "p", "training"), {"training": True}).get("training"):
        return False  # a training-mode dropout is random
    return _pointwise(cg, node, _first(node), True)


def _not_zero_preserving(cg: ChannelGraph, gm: fx.GraphModule, node: fx.Node, shapes: dict) -> bool:
    return _pointwise(cg, node, _first(node), False)


def _pool_with_indices(cg: ChannelGraph, gm: fx.GraphModule, node: fx.Node, shapes: dict) -> bool:
    # (values, indices): fine when only the values are used; the getitem rule links them
    return all(u.target is operator.getitem and u.args[1] == 0 for u in node.users)


def _getitem(cg: ChannelGraph, gm: fx.GraphModule, node: fx.Node, shapes: dict) -> bool:
    src = node.args[0]
    if not (isinstance(src, fx.Node) and ops.is_fn(src, ops.POOL_WITH_INDICES_FNS) and node.args[1] == 0):
        return False
    x = src.args[0]
    if not _same_width(cg, x, node):
        return False
    cg.union_channels(x, node)
    return True


def _batch_size(cg: ChannelGraph, gm: fx.GraphModule, node: fx.Node, shapes: dict) -> bool:
    return node.args[1:2] == (0,)  # x.size(0) reads the batch size only


def _metadata(cg: ChannelGraph, gm: fx.GraphModule, node: fx.Node, shapes: dict) -> bool:
    return len(node.args) == 2 and node.args[1] in ops.METADATA_ATTRS  # x.shape: no channel is read


FunctionRule = Callable[[ChannelGraph, fx.GraphModule, fx.Node, dict], bool]

# (call_function targets, call_method names, rule): the coupling table; one line per kind of op.
FUNCTION_RULES: list[tuple[set, set[str], FunctionRule]] = [
    (ops.ZERO_PRESERVING_FNS, ops.ZERO_PRESERVING_METHODS, _zero_preserving),
    (ops.NOT_ZERO_PRESERVING_FNS, ops.NOT_ZERO_PRESERVING_METHODS, _not_zero_preserving),
    (ops.ADD_FNS, ops.ADD_METHODS, lambda cg, gm, n, s: _binary(cg, gm, n, s, "add")),
    (ops.MUL_FNS, ops.MUL_METHODS, lambda cg, gm, n, s: _binary(cg, gm, n, s, "mul")),
    (ops.DIV_FNS, ops.DIV_METHODS, lambda cg, gm, n, s: _binary(cg, gm, n, s, "div")),
    (ops.CAT_FNS, set(), lambda cg, gm, n, s: _cat(cg, n, s)),
    (ops.PAD_FNS, set(), lambda cg, gm, n, s: _pad(cg, n, s)),
    (ops.FLATTEN_FNS, ops.FLATTEN_METHODS, lambda cg, gm, n, s: _flatten_fn(cg, n, s)),
    (ops.MEAN_FNS, ops.MEAN_METHODS, lambda cg, gm, n, s: _mean(cg, n, s)),
    (ops.POOL_WITH_INDICES_FNS, set(), _pool_with_indices),
    ({operator.getitem}, set(), _getitem),
    (set(), {"size"}, _batch_size),
    ({getattr}, set(), _metadata),
]


def rule_function(cg: ChannelGraph, gm: fx.GraphModule, node: fx.Node, shapes: dict, tol: float) -> bool:
    for fns, methods, rule in FUNCTION_RULES:
        if ops.is_fn(node, fns, methods):
            return rule(cg, gm, node, shapes)
    return False


def _has_channel_state(m: nn.Module) -> bool:
    return any(t.numel() > 1 for t in list(m.parameters()) + list(m.buffers()))


def build(gm: fx.GraphModule, shapes: dict[fx.Node, torch.Size], tol: float = 0.0) -> ChannelGraph:
    cg = ChannelGraph()
    calls = call_counts(gm)
    for node in gm.graph.nodes:
        shape = shapes.get(node)
        if node.op != "output" and shape is not None and len(shape) >= 2:
            cg.add_tensor(node, int(shape[1]))
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "get_attr"):
            cg.pin(node)
            continue
        if node.op == "output":
            for a in node.all_input_nodes:
                cg.pin(a)
            continue
        ok = False
        why = "not understood by the channel analysis"
        try:  # a rule meeting an argument form it does not expect treats the node as opaque
            if node.op == "call_module":
                # a module with per-channel state called twice cannot be cut for one call only;
                # stateless ones (a ReLU reused across a block) can
                shared = calls[node.target] > 1 and _has_channel_state(gm.get_submodule(node.target))
                if shared:
                    why = f"called {calls[node.target]} times with the same weights"
                ok = not shared and rule_module(cg, gm, node, shapes, tol)
            else:
                ok = rule_function(cg, gm, node, shapes, tol)
        except Exception:  # noqa: BLE001
            ok = False
        if not ok:
            _pin_all(cg, node, why)
    return cg


def decide(cg: ChannelGraph) -> Analysis:
    roots = cg.roots()
    n = len(cg.parent)
    pinned = np.zeros(n, dtype=bool)
    nonzero = np.zeros(n, dtype=bool)
    used = np.zeros(n, dtype=bool)
    np.logical_or.at(pinned, roots, np.asarray(cg.pinned, dtype=bool))
    writes = np.asarray(cg.nonzero, dtype=bool)
    writes[list(cg.absorbed)] = False
    np.logical_or.at(nonzero, roots, writes)
    np.logical_or.at(used, roots, np.asarray(cg.used, dtype=bool))
    zero = ~nonzero
    removable = ~pinned & (zero | ~used)
    blocked = _blocked_by_pins(cg, roots)
    changed = True
    while changed:
        changed = False
        for elems, owner in zip(cg.groups, cg.group_owner):  # a group goes as a whole or not at all
            r = roots[elems]
            if removable[r].any() and not removable[r].all():
                for root in np.unique(r[removable[r]]):
                    blocked.setdefault(int(root), owner)
                removable[r] = False
                changed = True
        for node in cg.offset:  # never leave a tensor with no channels: keep its first one
            r = roots[cg.span(node)]
            if len(r) and removable[r].all():
                removable[r[0]] = False
                changed = True
    return Analysis(cg, roots, removable, zero, blocked, pinned)


def _blocked_by_pins(cg: ChannelGraph, roots: np.ndarray) -> dict[int, fx.Node]:
    """Classes an opaque node pinned: root -> that node. A class that a graph input or output
    pins as well stays for that reason alone and is left out."""
    io_pinned = np.zeros(len(roots), dtype=bool)
    io_pinned[np.unique(roots[list(cg.io)]) if cg.io else []] = True
    out: dict[int, fx.Node] = {}
    for e, node in cg.blockers.items():
        r = int(roots[e])
        if not io_pinned[r]:
            out.setdefault(r, node)
    return out


def analyze(gm: fx.GraphModule, shapes: dict[fx.Node, torch.Size], tol: float = 0.0) -> Analysis:
    return decide(build(gm, shapes, tol))
