"""Pass 1: functional conv/linear/batch-norm with constant weights become call_module nodes.

Graphs from symbolic_trace of F.* code and from torch.export (aten ops, get_attr weights)
then look alike, so every later pass has one pattern to match: call_module Conv2d /
Linear / BatchNorm. Also drops identity-like nodes (Identity, eval Dropout), turns a
view/reshape that is really flatten(x, 1) into torch.flatten, which prune_zero understands,
and turns torch.export's decomposition of DReLU (p*relu(x) + n*relu(-x)) back into a DReLU.
Anything else is left as it is; later passes treat what they do not know as opaque.
"""

from __future__ import annotations

import math
import operator

import torch
import torch.fx as fx
import torch.nn as nn

from gsdeploy.transforms import ops
from gsdeploy.transforms.context import PassContext
from gsdeploy.transforms.fxutil import attr_value, bind, drop_unused_attrs, fresh_name, set_module
from gsdeploy.transforms.decisions import Decision
from gsdeploy.zoo.layers import DReLU

CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
CONV_DEFAULTS = {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1}
CONVOLUTION_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "transposed", "output_padding",
                    "groups")
F_BN_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
ATEN_BN_ARGS = ("input", "weight", "bias", "running_mean", "running_var", "training", "momentum", "eps")
LEGIT_BN_ARGS = ("input", "weight", "bias", "running_mean", "running_var", "momentum", "eps")
BN_DEFAULTS = {"weight": None, "bias": None, "training": False, "momentum": 0.1, "eps": 1e-5}


def _pair(v) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(x) for x in v)
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def _const(gm: fx.GraphModule, node) -> torch.Tensor | None | bool:
    """The constant tensor behind an argument; None for a None argument; False if not constant."""
    if node is None:
        return None
    value = attr_value(gm, node)
    return value if value is not None else False


def _place(gm: fx.GraphModule, node: fx.Node, module: nn.Module, consts: list, via: set | None = None) -> str:
    """Install `module` under the name of the weights' owner when it held nothing else (torch.export
    keeps 'layer1.0.conv1.weight' in a bare container named 'layer1.0.conv1'), else a fresh name."""
    attr_nodes = [a for a in consts if isinstance(a, fx.Node)]
    owner_name = attr_nodes[0].target.rpartition(".")[0] if attr_nodes else ""
    if owner_name and all(a.target.rpartition(".")[0] == owner_name for a in attr_nodes):
        owner = gm.get_submodule(owner_name)
        own = set(dict(owner.named_parameters(recurse=False))) | set(dict(owner.named_buffers(recurse=False)))
        wanted = {a.target.rpartition(".")[2] for a in attr_nodes}
        users_only_here = all(set(a.users) <= {node} | (via or set()) for a in attr_nodes)
        others_fetching = [n for n in gm.graph.nodes if n.op == "get_attr" and n not in attr_nodes
                           and n.target.startswith(owner_name + ".") and n.users]
        called = any(n.op == "call_module" and (n.target == owner_name or n.target.startswith(owner_name + "."))
                     for n in gm.graph.nodes)
        if (type(owner) is nn.Module and not list(owner.children()) and own - {"num_batches_tracked"} <= wanted
                and users_only_here and not others_fetching and not called):
            set_module(gm, owner_name, module)
            return owner_name
    # beside the owner, not inside it: the owner goes once nothing uses its tensors
    name = fresh_name(gm, f"{owner_name}_{node.name}" if owner_name else node.name)
    set_module(gm, name, module)
    return name


def _replace_with_module(gm: fx.GraphModule, node: fx.Node, module: nn.Module, x: fx.Node, consts: list,
                         replace: fx.Node | None = None, via: fx.Node | None = None,
                         via_set: set | None = None) -> None:
    """`replace`: the node whose uses move to the new one (a getitem of a tuple-returning op);
    `via`: a node between the weight and `node` (a transpose) that goes away with it;
    `via_set`: more such nodes, left for dead-code elimination."""
    vias = set(via_set or ()) | ({via} if via is not None else set())
    name = _place(gm, node, module, [c for c in consts if c is not None], vias or None)
    with gm.graph.inserting_before(node):
        new = gm.graph.call_module(name, (x,))
    (replace or node).replace_all_uses_with(new)
    if replace is not None:
        gm.graph.erase_node(replace)
    gm.graph.erase_node(node)
    if via is not None and not via.users:
        gm.graph.erase_node(via)


def _conv_from(gm: fx.GraphModule, node: fx.Node) -> bool:
    if ops.is_fn(node, ops.CONVOLUTION_FNS):
        a = bind(node, CONVOLUTION_ARGS)
        if a.get("transposed") or any(a.get("output_padding") or []):
            return False
    elif ops.is_fn(node, ops.CONV_FNS):
        a = bind(node, CONV_ARGS, CONV_DEFAULTS)
    else:
        return False
    w, b = _const(gm, a["weight"]), _const(gm, a.get("bias"))
    if w is False or b is False or w is None or w.dim() != 4:
        return False
    groups = int(a.get("groups", 1))
    padding = a.get("padding", 0)
    padding = padding if isinstance(padding, str) else _pair(padding)
    conv = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]), stride=_pair(a.get("stride", 1)),
                     padding=padding, dilation=_pair(a.get("dilation", 1)), groups=groups, bias=b is not None)
    with torch.no_grad():
        conv.weight.copy_(w)
        if b is not None:
            conv.bias.copy_(b)
    _replace_with_module(gm, node, conv.to(w.dtype), a["input"], [a["weight"], a.get("bias")])
    return True


def _linear_from(gm: fx.GraphModule, node: fx.Node) -> bool:
    if ops.is_fn(node, ops.LINEAR_FNS):
        a = bind(node, ("input", "weight", "bias"), {"bias": None})
        w_node, b_node, x = a["weight"], a["bias"], a["input"]
        transposed_node = None
    elif ops.is_fn(node, ops.ADDMM_FNS) or ops.is_fn(node, ops.MM_FNS):
        # torch.export's decomposition of linear: addmm(bias, x, permute(W, [1, 0])), or mm(x, permute(W))
        if node.target in ops.MM_FNS:
            a = bind(node, ("input", "mat2"))
            a.update(bias=None, beta=1, alpha=1)
        else:
            a = bind(node, ("bias", "input", "mat2", "beta", "alpha"), {"beta": 1, "alpha": 1})
        t = a["mat2"]
        if a["beta"] != 1 or a["alpha"] != 1 or not isinstance(t, fx.Node) or not ops.is_fn(t, ops.TRANSPOSE_FNS):
            return False
        if t.target is torch.ops.aten.permute.default and list(t.args[1]) != [1, 0]:
            return False
        w_node, b_node, x, transposed_node = t.args[0], a["bias"], a["input"], t
    else:
        return False
    w, b = _const(gm, w_node), _const(gm, b_node)
    if w is False or b is False or w is None or w.dim() != 2 or (b is not None and b.dim() != 1):
        return False
    lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        lin.weight.copy_(w)
        if b is not None:
            lin.bias.copy_(b)
    via = transposed_node if transposed_node is not None and len(transposed_node.users) == 1 else None
    _replace_with_module(gm, node, lin.to(w.dtype), x, [w_node, b_node], via=via)
    return True


def _bn_from(gm: fx.GraphModule, node: fx.Node, shapes: dict) -> bool:
    replace = None
    if ops.is_fn(node, ops.F_BATCH_NORM_FNS):
        a = bind(node, F_BN_ARGS, BN_DEFAULTS)
    elif ops.is_fn(node, ops.ATEN_BATCH_NORM_FNS):
        a = bind(node, ATEN_BN_ARGS, BN_DEFAULTS)
    elif ops.is_fn(node, ops.BN_LEGIT_FNS):
        a = bind(node, LEGIT_BN_ARGS, BN_DEFAULTS)
        # returns (out, save_mean, save_rstd); only out may be used
        users = list(node.users)
        if len(users) != 1 or users[0].target is not operator.getitem or users[0].args[1] != 0:
            return False
        replace = users[0]
    else:
        return False
    if a.get("training"):
        return False
    x = a["input"]
    ndim = len(shapes[x]) if x in shapes else None
    if ndim not in (2, 4):
        return False
    consts = [a.get("weight"), a.get("bias"), a["running_mean"], a["running_var"]]
    vals = [_const(gm, c) for c in consts]
    if any(v is False for v in vals) or vals[2] is None or vals[3] is None:
        return False
    w, b, mean, var = vals
    c = mean.shape[0]
    bn = (nn.BatchNorm2d if ndim == 4 else nn.BatchNorm1d)(c, eps=float(a.get("eps", 1e-5)))
    with torch.no_grad():
        bn.weight.copy_(w if w is not None else torch.ones(c))
        bn.bias.copy_(b if b is not None else torch.zeros(c))
        bn.running_mean.copy_(mean)
        bn.running_var.copy_(var)
    bn.eval()
    _replace_with_module(gm, node, bn, x, consts, replace=replace)
    return True


def _flatten_from_reshape(gm: fx.GraphModule, node: fx.Node, shapes: dict) -> bool:
    """x.view(N, -1) of a (N, C, H, W) tensor is flatten(x, 1): say so, so that channels stay prunable."""
    if not ops.is_fn(node, ops.RESHAPE_FNS, ops.RESHAPE_METHODS):
        return False
    x = node.args[0] if node.args else None
    if not isinstance(x, fx.Node) or x not in shapes or node not in shapes:
        return False
    sin, sout = tuple(shapes[x]), tuple(shapes[node])
    if len(sin) < 3 or len(sout) != 2 or sout != (sin[0], math.prod(sin[1:])):
        return False
    with gm.graph.inserting_before(node):
        new = gm.graph.call_function(torch.flatten, (x, 1))
    new.meta.update(node.meta)
    node.replace_all_uses_with(new)
    gm.graph.erase_node(node)
    return True


RELU_FNS = {torch.relu, torch.nn.functional.relu, torch.ops.aten.relu.default}
NEG_FNS = {torch.neg, operator.neg, torch.ops.aten.neg.default}
PLAIN_ADD_FNS = {operator.add, torch.add, torch.ops.aten.add.Tensor}


def _scaled_relu(gm: fx.GraphModule, node) -> tuple[fx.Node, float, fx.Node | None] | None:
    """(y, s, s_node) if node is s * relu(y) with a one-element constant s, used only here."""
    if not isinstance(node, fx.Node) or len(node.users) != 1 or not ops.is_fn(node, ops.MUL_FNS, ops.MUL_METHODS):
        return None
    if len(node.args) != 2 or node.kwargs:
        return None
    for relu, s in (node.args, node.args[::-1]):
        if isinstance(relu, fx.Node) and ops.is_fn(relu, RELU_FNS, {"relu"}) and len(relu.users) == 1:
            value = attr_value(gm, s) if isinstance(s, fx.Node) else None
            if value is not None and value.numel() == 1:
                return relu.args[0], float(value.detach().reshape(())), s
            if isinstance(s, (int, float)) and not isinstance(s, bool):
                return relu.args[0], float(s), None
    return None


def _drelu_from(gm: fx.GraphModule, node: fx.Node) -> bool:
    """p*relu(x) + n*relu(-x), as torch.export decomposes DReLU, becomes a DReLU module again,
    so that fold_drelu turns it into a LeakyReLU for exported Hinge models too."""
    if not ops.is_fn(node, PLAIN_ADD_FNS, {"add"}) or len(node.args) != 2 or node.kwargs:
        return False
    a, b = _scaled_relu(gm, node.args[0]), _scaled_relu(gm, node.args[1])
    if a is None or b is None:
        return False
    for pos, neg in ((a, b), (b, a)):
        y = neg[0]
        if isinstance(y, fx.Node) and ops.is_fn(y, NEG_FNS, {"neg"}) and len(y.users) == 1 and y.args[0] is pos[0]:
            module = DReLU(pos[1], neg[1])
            muls = {m for m in node.args if isinstance(m, fx.Node)}
            _replace_with_module(gm, node, module, pos[0], [pos[2], neg[2]], via_set=muls)
            return True
    return False


PRELU_FNS = {torch.nn.functional.prelu, torch.prelu, torch.ops.aten.prelu.default}


def _prelu_from(gm: fx.GraphModule, node: fx.Node) -> bool:
    """prelu(x, W), or torch.export's decomposition where(x > 0, x, view(W) * x), becomes nn.PReLU
    (prune_zero slices its per-channel weight)."""
    via: set = set()
    if ops.is_fn(node, PRELU_FNS):
        x, w_node = node.args[0], node.args[1]
    elif node.op == "call_function" and node.target is torch.ops.aten.where.self and len(node.args) == 3:
        cond, x, other = node.args
        if not (isinstance(cond, fx.Node) and cond.target is torch.ops.aten.gt.Scalar and cond.args == (x, 0)):
            return False
        if not (isinstance(other, fx.Node) and ops.is_fn(other, ops.MUL_FNS) and x in other.args):
            return False
        w_view = other.args[0] if other.args[1] is x else other.args[1]
        if not (isinstance(w_view, fx.Node) and w_view.target is torch.ops.aten.view.default):
            return False
        w_node = w_view.args[0]
        via = {cond, other, w_view}
    else:
        return False
    w = attr_value(gm, w_node)
    if w is None or w.dim() != 1:
        return False
    prelu = nn.PReLU(num_parameters=w.numel())
    with torch.no_grad():
        prelu.weight.copy_(w)
    _replace_with_module(gm, node, prelu, x, [w_node], via_set=via)
    return True


def _drop_identity(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        if isinstance(m, nn.Identity) or (isinstance(m, nn.Dropout) and not m.training):
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
            return True
    return False


def normalize(gm: fx.GraphModule, ctx: PassContext) -> list[Decision]:
    """Rewrite in place; returns no decisions (normalizing changes no shapes or MACs)."""
    for node in list(gm.graph.nodes):
        if node.op in ("call_function", "call_method", "call_module"):
            (_drop_identity(gm, node) or _conv_from(gm, node) or _linear_from(gm, node) or _drelu_from(gm, node)
             or _prelu_from(gm, node))
    shapes = ctx.shapes(gm)  # after the first sweep: BN needs the rank of its (new) input node
    for node in list(gm.graph.nodes):
        if node.op in ("call_function", "call_method"):
            _bn_from(gm, node, shapes) or _flatten_from_reshape(gm, node, shapes)
    gm.graph.eliminate_dead_code()
    drop_unused_attrs(gm)
    gm.recompile()
    return []
