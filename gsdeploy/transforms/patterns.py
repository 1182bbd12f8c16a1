"""(pattern, builder) fusions: find single-use chains of module calls and replace each with one module.

A pattern is a tuple of steps, one per module of the chain; a step is a module class (or a tuple
or union of classes, checked with isinstance) or a predicate on the module. A chain n0 -> n1 ->
... matches when every n_i calls a submodule that fits step i and that no other node calls (a
module called twice cannot be rewritten for one call), n_i's only user is n_{i+1}, and n_{i+1}
takes n_i as its one and only argument. The single-use rule is what makes the rewrite exact: no
other node sees the intermediate tensors, so replacing the chain by one module equal to it
changes nothing else. An in-place op on an intermediate tensor is a second user, so such a
chain never matches.

A builder gets the match and returns the module that computes the whole chain, or None to leave
it alone (a fusion that would raise MACs, a plan that keeps it). `fuse` runs to a fixpoint: the
fused module sits in the first node's place, so it can start a new match (Linear -> Linear ->
Linear folds pairwise into one Linear).
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch.fx as fx
import torch.nn as nn

from gsdeploy.transforms.fxutil import call_counts, set_module

Step = Union[type, tuple, types.UnionType, Callable[[nn.Module], bool]]


@dataclass(frozen=True)
class Match:
    """One chain found in the graph: its nodes and the modules they call, in data-flow order."""

    nodes: tuple[fx.Node, ...]
    modules: tuple[nn.Module, ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The submodule paths of the chain, e.g. ('layer1.0.conv', 'layer1.0.bn')."""
        return tuple(str(n.target) for n in self.nodes)


def fits(module: nn.Module, step: Step) -> bool:
    """Whether `module` fits one step of a pattern (a class, classes, or a predicate)."""
    if isinstance(step, (type, tuple, types.UnionType)):
        return isinstance(module, step)
    return bool(step(module))


def find(gm: fx.GraphModule, pattern: Sequence[Step]) -> list[Match]:
    """Every single-use chain that fits `pattern`, in graph order of its first node."""
    if not pattern:
        raise ValueError("a pattern needs at least one step")
    calls = call_counts(gm)
    # One walk of the module tree instead of a get_submodule per node: fuse() calls find again
    # after every rewrite (~60 times per ResNet-56 deploy), and the per-node lookups were most
    # of its time. remove_duplicate=False keeps every path of a module registered twice.
    by_name = dict(gm.named_modules(remove_duplicate=False))

    def once(node: fx.Node, step: Step) -> nn.Module | None:
        if node.op != "call_module" or calls[node.target] != 1:
            return None
        m = by_name.get(node.target)
        if m is None:  # a target named_modules does not list (not a registered submodule path)
            m = gm.get_submodule(node.target)
        return m if fits(m, step) else None

    out = []
    for node in gm.graph.nodes:
        first = once(node, pattern[0])
        if first is None:
            continue
        nodes, modules = [node], [first]
        for step in pattern[1:]:
            prev = nodes[-1]
            if len(prev.users) != 1:
                break
            user = next(iter(prev.users))
            m = once(user, step)
            if m is None or user.args != (prev,) or user.kwargs:
                break
            nodes.append(user)
            modules.append(m)
        else:
            out.append(Match(tuple(nodes), tuple(modules)))
    return out


def replace(gm: fx.GraphModule, match: Match, module: nn.Module) -> fx.Node:
    """Put `module` in the first node's place and drop the rest of the chain; returns that node.

    The first node keeps its name and input, so the names in a plan stay those of the original
    model; the users of the chain's last node read the first node instead.
    """
    first, last = match.nodes[0], match.nodes[-1]
    set_module(gm, str(first.target), module)
    if last is not first:
        last.replace_all_uses_with(first)
        for node in reversed(match.nodes[1:]):  # users first: a node with users cannot be erased
            gm.graph.erase_node(node)
    return first


def fuse(gm: fx.GraphModule, pattern: Sequence[Step], builder: Callable[[Match], nn.Module | None],
         order_by: int = 0) -> int:
    """Replace every match of `pattern` by what `builder` returns, to a fixpoint; returns how many.

    Each chain (by module names) is offered to the builder once: one it declines stays declined.
    `order_by` picks the node of a chain whose graph position orders the offers (0 the first,
    -1 the last), so a pass that used to walk the graph by its chain's last node reports its
    decisions in the same order as before.
    """
    offered: set[tuple[str, ...]] = set()
    count = 0
    while True:
        position = {n: i for i, n in enumerate(gm.graph.nodes)}
        matches = sorted(find(gm, pattern), key=lambda m: position[m.nodes[order_by]])
        for match in matches:
            if match.names in offered:
                continue
            offered.add(match.names)
            module = builder(match)
            if module is not None:
                replace(gm, match, module)
                count += 1
                break  # the graph changed: find the matches again
        else:
            break
    gm.delete_all_unused_submodules()
    gm.recompile()
    return count
