"""Plan sites and their candidates, each as an isolated subgraph with its real input shape.

A site is a place where the deployed graph can take more than one form with the same
numbers: a factorized pair kept or fused, a width kept or padded with zero filters to the
target's preferred multiple. Sites are found on the as-given deployment (pairs kept), keyed
by the producer conv's module name, which every later deployment of the model keeps.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, replace

import torch
import torch.fx as fx
import torch.nn as nn

from gsdeploy.transforms.align import WidthSite, find_width_sites, pad_width
from gsdeploy.transforms.context import PassContext
from gsdeploy.transforms.fuse_pairs import fused_conv, is_pointwise_conv
from gsdeploy.transforms.fxutil import call_counts, describe

KEEP, FUSE = "keep", "fuse"


@dataclass(frozen=True)
class Site:
    name: str  # the producer conv's module name
    layers: tuple[str, ...]  # producer, then consumers
    shape: str  # e.g. "3x3 16->7 + 1x1 7->16"
    in_shape: tuple[int, ...]  # per-sample input of the producer
    candidates: tuple[str, ...]  # "keep", "fuse", "pad:N"
    signature: str  # what the subgraph is (configs, ops, input shape): equal sites time alike
    width: WidthSite | None  # None for a pair that cannot be padded (a grouped 3x3)


def _conv_config(m: nn.Conv2d) -> tuple:
    return ("conv", m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
            m.bias is not None)


def _node_config(gm: fx.GraphModule, n: fx.Node) -> tuple:
    if n.op == "call_module":
        m = gm.get_submodule(n.target)
        return _conv_config(m) if isinstance(m, nn.Conv2d) else (type(m).__name__,)
    return (n.op, getattr(n.target, "__name__", str(n.target)))


def _pairs(gm: fx.GraphModule) -> dict[str, str]:
    """k x k conv (any groups) -> 1 x 1 conv, as fuse_pairs sees them: producer -> consumer."""
    calls = call_counts(gm)
    out = {}
    for n in gm.graph.nodes:
        if n.op != "call_module" or calls[n.target] != 1 or len(n.users) != 1:
            continue
        if not isinstance(gm.get_submodule(n.target), nn.Conv2d):
            continue
        u = next(iter(n.users))
        if u.op == "call_module" and calls[u.target] == 1 and u.args == (n,) and not u.kwargs and \
                is_pointwise_conv(gm.get_submodule(u.target)):
            out[n.target] = u.target
    return out


def pad_widths(width: int, multiples: tuple[int, ...]) -> list[int]:
    """Distinct widths above `width` that are multiples of one of `multiples`."""
    return sorted({-(-width // m) * m for m in multiples} - {width})


def find_sites(gm: fx.GraphModule, input_shape: tuple[int, ...], multiples: tuple[int, ...]) -> list[Site]:
    shapes = PassContext(tuple(input_shape)).shapes(gm)
    nodes = {n.target: n for n in gm.graph.nodes if n.op == "call_module"}
    pairs = _pairs(gm)
    # only sites that can be timed alone; the others (a concat or flatten on the way) are aligned
    # in the whole-model variants (DeployOptions.align)
    widths = {s.producer: s for s in find_width_sites(gm, shapes) if s.local}
    sites = []
    for name in [n.target for n in gm.graph.nodes if n.op == "call_module" and (n.target in pairs or n.target in widths)]:
        w = widths.get(name)
        layers = (name, *(w.consumers if w else (pairs[name],)))
        cands = [KEEP] + ([FUSE] if name in pairs else []) + \
            ([f"pad:{p}" for p in pad_widths(w.width, multiples)] if w else [])
        if len(cands) < 2:
            continue
        producer = nodes[name]
        in_shape = tuple(int(d) for d in shapes[producer.args[0]][1:])
        sub = _subgraph_nodes(gm, name, w, pairs)
        sig = repr((in_shape, [_node_config(gm, n) for n in sub]))
        sites.append(Site(name, layers, " + ".join(describe(gm.get_submodule(n)) for n in layers), in_shape,
                          tuple(cands), hashlib.sha256(sig.encode()).hexdigest()[:20], w))
    return sites


def _subgraph_nodes(gm: fx.GraphModule, name: str, w: WidthSite | None, pairs: dict[str, str]) -> list[fx.Node]:
    keep = {name, *(w.consumers if w else (pairs[name],))}
    between = set(w.between) if w else set()
    return [n for n in gm.graph.nodes if (n.op == "call_module" and n.target in keep) or n.name in between]


def candidate_module(gm: fx.GraphModule, site: Site, candidate: str) -> nn.Module:
    """The site's subgraph in the candidate's form, float32, eval: input = the producer's input,
    outputs = the consumers' outputs."""
    pairs = _pairs(gm)
    sub_nodes = _subgraph_nodes(gm, site.name, site.width, pairs)
    if candidate == FUSE:
        a, b = gm.get_submodule(site.name), gm.get_submodule(pairs[site.name])
        return fused_conv(a, b).float().eval()
    root = nn.Module()
    g = fx.Graph()
    x = g.placeholder("x")
    producer_input = next(n for n in sub_nodes if n.op == "call_module" and n.target == site.name).args[0]
    env: dict[fx.Node, fx.Node] = {producer_input: x}
    flat: dict[str, str] = {}
    for n in sub_nodes:
        new = g.node_copy(n, lambda a: env[a])
        if n.op == "call_module":
            flat[n.target] = n.target.replace(".", "_")
            root.add_module(flat[n.target], copy.deepcopy(gm.get_submodule(n.target)))
            new.target = flat[n.target]
        env[n] = new
    outs = [env[n] for n in sub_nodes if n.op == "call_module" and n.target in site.layers[1:]]
    g.output(outs[0] if len(outs) == 1 else tuple(outs))
    sub = fx.GraphModule(root, g).float().eval()
    if candidate.startswith("pad:"):
        w = site.width
        local = replace(w, producer=flat[w.producer], consumers=tuple(flat[c] for c in w.consumers), between=(),
                        norms=tuple((flat[n], o) for n, o in w.norms))
        pad_width(sub, local, int(candidate[4:]))
        sub.recompile()
    return sub


def check_candidate(gm: fx.GraphModule, site: Site, candidate: str, module: nn.Module) -> float:
    """Max relative difference of a candidate's output from the kept form (a test aid and a guard)."""
    x = torch.randn((2, *site.in_shape))
    with torch.no_grad():
        ref = candidate_module(gm, site, KEEP)(x)
        got = module(x)
    ref = ref if isinstance(ref, tuple) else (ref,)
    got = got if isinstance(got, tuple) else (got,)
    return max(float((r - o).abs().max() / r.abs().max().clamp_min(1e-12)) for r, o in zip(ref, got))
