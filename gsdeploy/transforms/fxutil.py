"""Small helpers over torch.fx graphs shared by the passes: module lookup, shapes, MACs, names."""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn


def call_counts(gm: fx.GraphModule) -> Counter:
    """How many call_module nodes call each submodule: a module called twice cannot be edited for one call."""
    return Counter(n.target for n in gm.graph.nodes if n.op == "call_module")


def set_module(gm: fx.GraphModule, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = gm.get_submodule(parent_name) if parent_name else gm
    setattr(parent, attr, module)


def fresh_name(gm: fx.GraphModule, base: str) -> str:
    """A submodule path not used yet, close to `base`."""
    base = base.replace(".", "_") if "." in base and not _parent_exists(gm, base) else base
    name, i = base, 1
    while _exists(gm, name):
        name, i = f"{base}_{i}", i + 1
    return name


def _exists(gm: fx.GraphModule, name: str) -> bool:
    try:
        gm.get_submodule(name)
        return True
    except AttributeError:
        pass
    parent, _, attr = name.rpartition(".")
    try:
        owner = gm.get_submodule(parent) if parent else gm
    except AttributeError:
        return False
    return hasattr(owner, attr)


def _parent_exists(gm: fx.GraphModule, name: str) -> bool:
    parent = name.rpartition(".")[0]
    try:
        gm.get_submodule(parent)
        return True
    except AttributeError:
        return False


class _ShapeRecorder(fx.Interpreter):
    """Runs the graph once and remembers each tensor node's shape (lighter than ShapeProp)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.shapes: dict[fx.Node, torch.Size] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        if isinstance(result, torch.Tensor):
            self.shapes[n] = result.shape
        return result


def shape_prop(gm: fx.GraphModule, example: torch.Tensor, fake_mode: Any = None) -> dict[fx.Node, torch.Size]:
    """Shapes of every tensor-valued node for one example input (batch 1).

    With a FakeTensorMode the graph runs on fake tensors (no arithmetic; the passes ask for
    shapes often and a loaded CPU makes real convs slow); a graph fake tensors cannot run
    falls back to real tensors.
    """
    if fake_mode is not None:
        rec = _ShapeRecorder(gm)
        try:
            with torch.no_grad(), fake_mode:
                rec.run(fake_mode.from_tensor(example))
            return rec.shapes
        except Exception:  # noqa: BLE001 - any fake-mode failure: do it for real
            pass
    rec = _ShapeRecorder(gm)
    with torch.no_grad():
        rec.run(example)
    return rec.shapes


def conv_macs(conv: nn.Conv2d, out_shape: torch.Size | tuple[int, ...]) -> int:
    kh, kw = conv.kernel_size
    hw = int(out_shape[-1]) * int(out_shape[-2])
    return conv.out_channels * (conv.in_channels // conv.groups) * kh * kw * hw


def linear_macs(lin: nn.Linear, out_shape: torch.Size | tuple[int, ...] | None = None) -> int:
    rows = 1
    if out_shape is not None and len(out_shape) > 2:
        for d in out_shape[1:-1]:
            rows *= int(d)
    return lin.in_features * lin.out_features * rows


def layer_macs(m: nn.Module, out_shape) -> int:
    if isinstance(m, nn.Conv2d):
        return conv_macs(m, out_shape)
    if isinstance(m, nn.Linear):
        return linear_macs(m, out_shape)
    return 0


def chained_bias(w2: torch.Tensor, first: nn.Module, second: nn.Module) -> torch.Tensor | None:
    """The bias of second(first(x)) for two affine layers, w2 the second's (out, in) matrix in
    float64: w2 @ b1 + b2, in float64 so the fused layer rounds once; None when neither has a bias."""
    if first.bias is None and second.bias is None:
        return None
    bias = torch.zeros(w2.shape[0], dtype=torch.float64)
    if first.bias is not None:
        bias += w2 @ first.bias.detach().double()
    if second.bias is not None:
        bias += second.bias.detach().double()
    return bias


def describe(m: nn.Module) -> str:
    """'3x3 16->7', '3x3/g4 16->16', 'linear 512->10' — for plans a person reads."""
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        g = f"/g{m.groups}" if m.groups > 1 else ""
        s = f"/s{m.stride[0]}" if m.stride != (1, 1) else ""
        return f"{kh}x{kw}{g}{s} {m.in_channels}->{m.out_channels}"
    if isinstance(m, nn.Linear):
        return f"linear {m.in_features}->{m.out_features}"
    if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
        return f"BN {m.num_features}"
    return type(m).__name__


def fmt_macs(x: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return str(int(x))


def common_prefix(names: list[str]) -> str:
    """'features.1.0.body.0' from 'features.1.0.body.0.0' and 'features.1.0.body.0.1'."""
    parts = [n.split(".") for n in names]
    out: list[str] = []
    for segs in zip(*parts):
        if all(s == segs[0] for s in segs):
            out.append(segs[0])
        else:
            break
    return ".".join(out) if out else names[0]


def bind(node: fx.Node, names: tuple[str, ...], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Arguments of a call node by name (positional then keyword), with defaults filled in.

    Small and explicit on purpose: torch's normalize_function refuses overloaded builtins
    such as torch.conv2d (int or str padding), which is exactly what traced graphs contain.
    """
    out = dict(defaults or {})
    for name, value in zip(names, node.args):
        out[name] = value
    out.update(node.kwargs)
    return out


def attr_value(gm: fx.GraphModule, node: Any) -> torch.Tensor | None:
    """The tensor a get_attr node fetches; None when `node` is not a constant."""
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    obj: Any = gm
    for part in node.target.split("."):
        obj = getattr(obj, part)
    return obj if isinstance(obj, torch.Tensor) else None


def drop_unused_attrs(gm: fx.GraphModule) -> None:
    """Erase get_attr nodes nobody uses and delete their tensors, so params are counted right."""
    targets_in_use = {n.target for n in gm.graph.nodes if n.op == "get_attr" and n.users}
    called = [n.target for n in gm.graph.nodes if n.op == "call_module"]
    for n in list(gm.graph.nodes):
        if n.op == "get_attr" and not n.users:
            gm.graph.erase_node(n)
            if n.target not in targets_in_use:
                owner_name, _, attr = n.target.rpartition(".")
                try:
                    owner = gm.get_submodule(owner_name) if owner_name else gm
                except AttributeError:
                    continue
                inside_called = any(owner_name == c or owner_name.startswith(c + ".") for c in called)
                if not inside_called and hasattr(owner, attr) and not isinstance(getattr(owner, attr), nn.Module):
                    delattr(owner, attr)
    gm.delete_all_unused_submodules()


def set_eval(m: nn.Module) -> None:
    """m.eval(), also for modules of torch.export, whose eval() raises (their graph is fixed)."""
    try:
        m.eval()
    except NotImplementedError:
        for sub in m.modules():
            sub.training = False


def set_train(m: nn.Module, mode: bool) -> None:
    try:
        m.train(mode)
    except NotImplementedError:
        for sub in m.modules():
            sub.training = mode
