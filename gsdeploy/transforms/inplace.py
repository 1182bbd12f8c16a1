"""Pass 0: make in-place ops explicit in the data flow, so channel tracking sees them.

`out += identity`, `ReLU(inplace=True)`, `x.relu_()` and torch.export's `aten.relu_` /
`aten.add_.Tensor` change a tensor that later nodes still reach through the *old* node: the
graph says `conv2(a)` while `a` was rectified in place in between. Every pass reading edges
would then misjudge what a consumer sees. Here each in-place op whose target tensor is a
private, non-aliased intermediate becomes its out-of-place twin (aten.relu_ -> aten.relu,
operator.iadd -> operator.add, inplace=True -> False), and every later reader of the old
node reads the new one. An in-place module (ReLU(inplace=True)) is left as it is and only
the later readers move to its output, which at run time is the same tensor.

An in-place op on a tensor that may alias others (a view, a graph input) stays, and every
later reader of that tensor family reads it through `after_inplace(x, op)`: an identity at run
time that makes the mutation an edge of the graph. The channel analysis treats it as opaque
(and the plan reports any zero channels it keeps); no pass fuses or cuts across it.
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from gsdeploy.transforms.context import PassContext
from gsdeploy.transforms.decisions import Decision

aten = torch.ops.aten

# in-place target -> out-of-place twin (same arguments)
INPLACE_FNS: dict = {
    operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
    torch.relu_: torch.relu, torch.sigmoid_: torch.sigmoid, torch.tanh_: torch.tanh,
    F.relu_: F.relu, F.elu_: F.elu, F.leaky_relu_: F.leaky_relu, F.hardtanh_: F.hardtanh,
}
for _name in ("relu_", "sigmoid_", "tanh_", "hardtanh_", "leaky_relu_", "elu_", "silu_", "hardswish_",
              "hardsigmoid_", "neg_", "exp_", "clamp_", "clamp_min_", "clamp_max_", "add_", "sub_", "mul_", "div_"):
    _packet = getattr(aten, _name, None)
    _twin = getattr(aten, _name[:-1], None)
    if _packet is None or _twin is None:
        continue
    for _overload in _packet.overloads():
        if _overload in _twin.overloads():
            INPLACE_FNS[getattr(_packet, _overload)] = getattr(_twin, _overload)
# Tensor methods: "relu_" -> "relu", ...
INPLACE_METHODS = {"relu_", "sigmoid_", "tanh_", "add_", "sub_", "mul_", "div_", "clamp_", "clamp_min_",
                   "clamp_max_", "neg_", "exp_", "hardtanh_", "leaky_relu_"}
# functionals that take an `inplace` flag (positional index of the flag)
INPLACE_FLAG_FNS = {F.relu: 1, F.relu6: 1, F.hardtanh: 3, F.leaky_relu: 2, F.elu: 2, F.selu: 1, F.celu: 2,
                    F.silu: 1, F.hardswish: 1, F.hardsigmoid: 1, F.mish: 1, F.dropout: 3, F.dropout2d: 3,
                    F.threshold: 3, F.rrelu: 4}

# Ops whose result may share storage with their input: an in-place op on either side would be
# seen through the other, which the data flow does not show.
_ALIAS_NAMES = ("view", "reshape", "flatten", "unflatten", "transpose", "permute", "expand", "squeeze", "unsqueeze",
                "detach", "alias", "contiguous", "narrow", "select", "slice", "split", "chunk", "unbind",
                "as_strided", "getitem", "movedim", "swapaxes", "t", "T", "dropout", "identity", "to", "type",
                "float", "double", "real", "view_as", "reshape_as", "expand_as", "diagonal")
_ALIAS_MODULES = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.Flatten, nn.Unflatten)


def _fn_name(target) -> str:
    """'relu_' for aten.relu_.default (OpOverload._opname), torch.relu_ and F.relu_ alike."""
    return str(getattr(target, "_opname", None) or getattr(target, "__name__", None) or target)


def _aliases(gm: fx.GraphModule, node: fx.Node, explicit: set[fx.Node]) -> bool:
    """Could `node`'s result share storage with another tensor (or be visible outside the graph)?
    `explicit`: in-place module calls whose later readers were already moved to their output."""
    if node.op in ("placeholder", "get_attr"):
        return True
    if node in explicit:
        return False
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        return isinstance(m, _ALIAS_MODULES) or bool(getattr(m, "inplace", False))
    if node.op == "call_method":
        return node.target in _ALIAS_NAMES or node.target.endswith("_")
    if node.op == "call_function":
        if _inplace_flag(node):
            return True
        name = _fn_name(node.target)
        return name in _ALIAS_NAMES or name.endswith("_")
    return True


def _inplace_flag(node: fx.Node) -> bool:
    try:
        pos = INPLACE_FLAG_FNS.get(node.target)
    except TypeError:  # unhashable target
        return False
    if pos is None:
        return False
    return node.kwargs.get("inplace", node.args[pos] if len(node.args) > pos else False) is True


def _inplace_kind(gm: fx.GraphModule, node: fx.Node) -> str | None:
    """'fn' (an in-place function with a twin), 'method', 'flag' (inplace=True argument),
    'module' (a module with inplace=True) or None."""
    if node.op == "call_function":
        try:
            if node.target in INPLACE_FNS:
                return "fn"
        except TypeError:  # unhashable target
            return None
        return "flag" if _inplace_flag(node) else None
    if node.op == "call_method" and node.target in INPLACE_METHODS:
        return "method"
    if node.op == "call_module" and getattr(gm.get_submodule(node.target), "inplace", False) is True:
        return "module"
    return None


def _safe_target(gm: fx.GraphModule, node: fx.Node, target: fx.Node, order: dict[fx.Node, int],
                 explicit: set[fx.Node]) -> bool:
    """The mutated tensor is a private intermediate: made by a non-aliasing op (or a chain of views
    and pass-through modules of one that nothing else reads), and nothing read before the
    mutation holds a view of it."""
    if _aliases(gm, target, explicit) and not _private_chain(gm, target, explicit):
        return False
    return all(not _aliases(gm, u, explicit) for u in target.users if u is not node and order[u] < order[node])


def _private_chain(gm: fx.GraphModule, target: fx.Node, explicit: set[fx.Node]) -> bool:
    """`target` is a view (or an Identity, an eval Dropout) of a view ... of a tensor made by a
    non-aliasing op, each link the only reader of the one before: writing into `target` changes
    no tensor that anything but this chain reads (`norm_layer=nn.Identity` before ReLU(inplace=True))."""
    node = target
    while _aliases(gm, node, explicit):
        if node.op not in ("call_function", "call_method", "call_module") or not node.args:
            return False
        source = node.args[0]
        if not isinstance(source, fx.Node) or len(source.users) != 1:
            return False
        node = source
    return node.op not in ("placeholder", "get_attr")


def after_inplace(x: torch.Tensor, op: object) -> torch.Tensor:
    """`x`, read after the in-place op `op` changed it (or a tensor sharing its storage)."""
    return x


def _alias_family(gm: fx.GraphModule, target: fx.Node, explicit: set[fx.Node]) -> list[fx.Node]:
    """The tensor `target` views (walking up through aliasing ops) and every alias made from it."""
    base = target
    while base.op in ("call_function", "call_method", "call_module") and _aliases(gm, base, explicit) \
            and base.args and isinstance(base.args[0], fx.Node):
        base = base.args[0]
    family, todo = [], [base]
    while todo:
        n = todo.pop()
        if n in family:
            continue
        family.append(n)
        todo.extend(u for u in n.users if _aliases(gm, u, explicit) and u.op != "output")
    return family


def _fence(gm: fx.GraphModule, node: fx.Node, family: list[fx.Node], order: dict[fx.Node, int]) -> None:
    """Later readers of any tensor of `family` read it through after_inplace(., node)."""
    for member in family:
        late = [u for u in member.users if order.get(u, -1) > order[node] and u not in family]
        if not late:
            continue
        # after both: a member may be made after the in-place op (a flatten of its result)
        with gm.graph.inserting_after(member if order[member] > order[node] else node):
            fenced = gm.graph.call_function(after_inplace, (member, node))
        for u in late:
            u.replace_input_with(member, fenced)


def functionalize(gm: fx.GraphModule, ctx: PassContext | None = None) -> list[Decision]:
    """Rewrite in place; returns no decisions (nothing changes in shapes or MACs)."""
    changed = False
    explicit: set[fx.Node] = set()
    for node in list(gm.graph.nodes):
        kind = _inplace_kind(gm, node)
        if kind is None or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        order = {n: i for i, n in enumerate(gm.graph.nodes)}
        target = node.args[0]
        if not _safe_target(gm, node, target, order, explicit):
            _fence(gm, node, _alias_family(gm, target, explicit), order)
            changed = True
            continue
        if kind == "fn":
            node.target = INPLACE_FNS[node.target]
        elif kind == "method":
            node.target = node.target[:-1]
        elif kind == "flag":
            pos = INPLACE_FLAG_FNS[node.target]
            if "inplace" in node.kwargs or len(node.args) <= pos:
                node.kwargs = {**node.kwargs, "inplace": False}
            else:
                node.args = node.args[:pos] + (False,) + node.args[pos + 1:]
        else:  # the module still writes into its input; its output is that same tensor
            explicit.add(node)
        # later readers of the mutated tensor read this node's result instead
        for user in list(target.users):
            if user is not node and order[user] > order[node]:
                user.replace_input_with(target, node)
        changed = True
    if changed:
        gm.recompile()
    return []
