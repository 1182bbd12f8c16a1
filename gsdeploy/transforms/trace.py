"""Symbolic tracing that never gives up on the whole model because of one odd submodule."""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch.fx as fx
import torch.nn as nn

from gsdeploy.errors import GsdeployError
from gsdeploy.transforms.fxutil import set_eval
from gsdeploy.zoo.layers import DReLU

# Modules kept as single call_module nodes: the passes understand them as a whole
# (DReLU is folded by fold_drelu; tracing into it would scatter its slopes into get_attrs).
LEAF_TYPES: tuple[type, ...] = (DReLU,)


class TraceError(GsdeployError):
    """The model's own forward cannot be traced symbolically (data-dependent control flow)."""


class _LeafFallbackTracer(fx.Tracer):
    """Keeps LEAF_TYPES as leaves; a submodule whose forward cannot be traced becomes a leaf.

    The pass that meets such a leaf treats it as opaque: its channels are pinned.
    """

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, LEAF_TYPES):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        if self.is_leaf_module(m, self.path_of_module(m)):
            return super().call_module(m, forward, args, kwargs)
        last = next(iter(reversed(self.graph.nodes)), None)  # to undo a failed attempt
        stack = copy.copy(self.module_stack)
        num_calls = dict(self.num_calls)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            # Undo what the failed attempt added (reverse order: users go before what they use),
            # then emit the module as one opaque node.
            for node in reversed(list(self.graph.nodes)):
                if node is last:
                    break
                self.graph.erase_node(node)
            self.module_stack.clear()
            self.module_stack.update(stack)
            self.num_calls.clear()
            self.num_calls.update(num_calls)
            name = self.path_of_module(m)
            return self.create_proxy("call_module", name, args, kwargs)


def trace(module: nn.Module) -> fx.GraphModule:
    """A GraphModule for `module` (not mutated: the graph owns a deep copy of it).

    A GraphModule (e.g. `torch.export(...).module()`) is copied as it is rather than retraced.
    """
    if isinstance(module, fx.GraphModule):
        gm = copy.deepcopy(module)
        set_eval(gm)
        return gm
    root = copy.deepcopy(module)
    set_eval(root)
    tracer = _LeafFallbackTracer()
    try:
        graph = tracer.trace(root)
    except Exception as e:  # noqa: BLE001 - any tracing failure of the top-level forward
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TraceError(f"cannot trace {type(module).__name__}.forward with torch.fx: {first}") from None
    name = type(root).__name__
    gm = fx.GraphModule(tracer.root, graph, name)
    set_eval(gm)
    return gm
