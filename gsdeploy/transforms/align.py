"""Width alignment: pad a conv's output width up to the engine's preferred multiple with zero filters.

ONNX Runtime on AVX-512 runs convs in blocks of 16 channels (8 on AVX2) and sends input widths
that are not a multiple of 8 down a slower general path (docs/measuring.md): a rank of 7
costs what 16 costs, and 29 can cost more than 32. Padding is exact: the new filters (and
biases) are zero, whatever sits between producer and consumers is element-wise without
per-channel parameters (so the padded channels stay finite and independent), and every
consumer reads them with zero input columns, so they contribute nothing.

A *width site* is a dense conv whose output reaches only dense convs, directly or through
such element-wise ops. A factorized pair (k x k conv -> 1 x 1 conv) is the case with one
direct 1 x 1 consumer; channel-pruned inner widths (conv -> ReLU -> conv) are the other.
Prune-zero would take the zero filters out again, so this pass runs last.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn

from gsdeploy.errors import GsdeployError
from gsdeploy.transforms import ops
from gsdeploy.transforms.context import PassContext
from gsdeploy.transforms.fxutil import bind, call_counts, common_prefix, conv_macs, describe, linear_macs
from gsdeploy.transforms.layer_channels import channel_layer
from gsdeploy.transforms.decisions import Decision

# Modules that act on each element (or each channel's plane) alone and hold no per-channel
# parameters: a padded channel passes through them without touching the others.
CHANNEL_FREE_MODULES: tuple[type, ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Hardswish, nn.Hardtanh, nn.Dropout,
    nn.Identity, nn.Sigmoid, nn.Hardsigmoid, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
)
# The most channels a plan pads a width by (the next multiple of the largest preferred multiple, 32).
MAX_PAD = 32
CHANNEL_FREE_FNS = ops.ZERO_PRESERVING_FNS | ops.NOT_ZERO_PRESERVING_FNS
CHANNEL_FREE_METHODS = ops.ZERO_PRESERVING_METHODS | ops.NOT_ZERO_PRESERVING_METHODS


@dataclass(frozen=True)
class WidthSite:
    producer: str  # module name of the conv whose output width can grow
    consumers: tuple[str, ...]  # module names of the convs (and linears) that read it
    between: tuple[str, ...]  # names of the nodes in between (graph node names)
    width: int
    pair: bool  # a factorized pair: the one consumer is a 1 x 1 conv reading the output directly
    # Where the producer's channels start in what each consumer reads: 0 unless a concat puts
    # other channels first (empty: all 0). The new channels go right after the producer's own.
    offsets: tuple[int, ...] = ()
    # Per-channel layers on the way (BN, PReLU) and where the producer's channels start in them:
    # they grow with channels that map zero to zero.
    norms: tuple[tuple[str, int], ...] = ()
    # Reached through element-wise ops and per-channel layers only, so the plan can time the site
    # as an isolated subgraph; a concat or a flatten on the way makes the site the whole rest of
    # the network, which only a whole-model timing can judge.
    local: bool = True

    def padded(self, multiple: int) -> int:
        return int(math.ceil(self.width / multiple) * multiple)


def _dense_conv(gm: fx.GraphModule, node: fx.Node, calls) -> nn.Conv2d | None:
    if node.op != "call_module" or calls[node.target] != 1:
        return None
    m = gm.get_submodule(node.target)
    if isinstance(m, nn.Conv2d) and m.groups == 1 and isinstance(m.weight, nn.Parameter | torch.Tensor):
        return m
    return None


def _channel_free(gm: fx.GraphModule, node: fx.Node, x: fx.Node) -> bool:
    if list(node.all_input_nodes) != [x]:
        return False
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), CHANNEL_FREE_MODULES)
    return ops.is_fn(node, CHANNEL_FREE_FNS, CHANNEL_FREE_METHODS)


def _sole_module_input(gm: fx.GraphModule, node: fx.Node, x: fx.Node, calls) -> nn.Module | None:
    """The module `node` calls, if it is called only here and on `x` alone."""
    if node.op != "call_module" or calls[node.target] != 1 or node.args != (x,) or node.kwargs:
        return None
    return gm.get_submodule(node.target)


def _linear_reader(gm: fx.GraphModule, node: fx.Node, x: fx.Node, calls, shapes: dict | None) -> bool:
    m = _sole_module_input(gm, node, x, calls)
    return isinstance(m, nn.Linear) and shapes is not None and len(shapes[x]) == 2


def _norm(gm: fx.GraphModule, node: fx.Node, x: fx.Node, calls) -> bool:
    """A per-channel layer (BN, PReLU) that can grow by channels mapping zero to zero."""
    m = _sole_module_input(gm, node, x, calls)
    layer = channel_layer(m) if m is not None else None
    return layer is not None and layer.pointwise and layer.can_insert(m)


def _concat_offset(node: fx.Node, x: fx.Node, shapes: dict | None) -> int | None:
    """Where x's channels start in the output of `node`, a concat along channels that holds x once."""
    if shapes is None or node.op != "call_function" or node.target not in ops.CAT_FNS:
        return None
    a = bind(node, ("tensors", "dim"), {"dim": 0})
    xs = a["tensors"]
    if not isinstance(xs, (list, tuple)) or sum(t is x for t in xs) != 1 or node not in shapes:
        return None
    if not all(isinstance(t, fx.Node) and t in shapes for t in xs) or a["dim"] % len(shapes[node]) != 1:
        return None
    i = next(i for i, t in enumerate(xs) if t is x)
    return sum(int(shapes[t][1]) for t in xs[:i])


def _flat_channels(gm: fx.GraphModule, node: fx.Node, x: fx.Node, shapes: dict | None) -> bool:
    """A flatten from dim 1 of a tensor whose planes are 1 x 1: channel c stays feature c."""
    if shapes is None or list(node.all_input_nodes) != [x] or len(shapes[x]) < 3 or \
            math.prod(int(d) for d in shapes[x][2:]) != 1:
        return False
    if node.op == "call_module":
        m = gm.get_submodule(node.target)
        return isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1
    if ops.is_fn(node, ops.FLATTEN_FNS, ops.FLATTEN_METHODS):
        a = bind(node, ("input", "start_dim", "end_dim"), {"start_dim": 0, "end_dim": -1})
        return a["start_dim"] == 1 and a["end_dim"] in (-1, len(shapes[x]) - 1)
    return False


def width_site(gm: fx.GraphModule, node: fx.Node, calls, shapes: dict | None = None) -> WidthSite | None:
    """The width site of `node` if it is a dense conv whose every reader, followed through
    element-wise ops, per-channel layers, channel concats and 1 x 1 flattens, is a dense conv or
    a linear; None otherwise (a residual add, a graph output, anything else)."""
    producer = _dense_conv(gm, node, calls)
    if producer is None or node.kwargs:
        return None
    consumers: list[str] = []
    offsets: list[int] = []
    between: list[str] = []
    norms: list[tuple[str, int]] = []
    local = True
    frontier = [(node, 0)]
    seen: set[fx.Node] = set()
    while frontier:
        x, off = frontier.pop()
        if x in seen or not x.users:  # reached twice (its channels would sit in two places), or an output
            return None
        seen.add(x)
        for user in x.users:
            if _dense_conv(gm, user, calls) is not None and user.args == (x,) and not user.kwargs:
                consumers.append(user.target)
                offsets.append(off)
            elif _linear_reader(gm, user, x, calls, shapes):
                consumers.append(user.target)
                offsets.append(off)
                local = False
            elif _channel_free(gm, user, x):
                between.append(user.name)
                frontier.append((user, off))
            elif _norm(gm, user, x, calls):
                norms.append((user.target, off))
                between.append(user.name)
                frontier.append((user, off))
            elif (at := _concat_offset(user, x, shapes)) is not None:
                between.append(user.name)
                frontier.append((user, at + off))
                local = False
            elif _flat_channels(gm, user, x, shapes):
                between.append(user.name)
                frontier.append((user, off))
                local = False
            else:
                return None
    if not consumers:
        return None
    local = local and not any(offsets)
    pair = not between and len(consumers) == 1 and isinstance(gm.get_submodule(consumers[0]), nn.Conv2d) and \
        gm.get_submodule(consumers[0]).kernel_size == (1, 1)
    return WidthSite(node.target, tuple(consumers), tuple(between), producer.out_channels, pair,
                     tuple(offsets), tuple(norms), local)


def find_width_sites(gm: fx.GraphModule, shapes: dict | None = None) -> list[WidthSite]:
    """Every dense conv whose output only dense convs (or linears) read, through ops that keep each
    channel apart. Without `shapes` concats and flattens are not followed (their widths are unknown)."""
    calls = call_counts(gm)
    return [s for n in gm.graph.nodes if (s := width_site(gm, n, calls, shapes)) is not None]


def pad_width(gm: nn.Module, site: WidthSite, width: int) -> None:
    """Grow `site`'s width to `width`: zero filters in the producer, zero input columns in its
    consumers and zero-mapping channels in the per-channel layers between, each inserted right
    after the producer's own channels."""
    p = gm.get_submodule(site.producer)
    extra = width - p.out_channels
    if extra < 0:
        raise ValueError(f"cannot pad {site.producer} from {p.out_channels} down to {width}")
    if extra == 0:
        return
    with torch.no_grad():
        channel_layer(p).insert_out(p, p.out_channels, extra)
        for name, off in zip(site.consumers, site.offsets or (0,) * len(site.consumers)):
            c = gm.get_submodule(name)
            channel_layer(c).insert_in(c, off + site.width, extra)
        for name, off in site.norms:
            m = gm.get_submodule(name)
            channel_layer(m).insert_in(m, off + site.width, extra)


def _macs(m: nn.Module, out_shape) -> int:
    return conv_macs(m, out_shape) if isinstance(m, nn.Conv2d) else linear_macs(m, out_shape)


def _pad(gm: fx.GraphModule, site: WidthSite, width: int, shapes: dict, reason: str) -> Decision:
    """Pad one site, keep `shapes` current (the channels it adds run through every node between),
    and say what changed."""
    by_target = {n.target: n for n in gm.graph.nodes if n.op == "call_module"}
    layers = [site.producer, *site.consumers]
    mods = [gm.get_submodule(n) for n in layers]
    macs_before = sum(_macs(m, shapes[by_target[n]]) for n, m in zip(layers, mods))
    if site.local:
        before = " + ".join(describe(m) for m in mods)
    else:
        before = f"{describe(mods[0])} (read by {len(site.consumers)} layers)"
    pad_width(gm, site, width)
    extra = width - site.width
    by_name = {n.name: n for n in gm.graph.nodes}
    for n in [by_target[site.producer], *(by_name[b] for b in site.between)]:
        shape = list(shapes[n])
        shape[1] += extra
        shapes[n] = torch.Size(shape)
    macs_after = sum(_macs(m, shapes[by_target[n]]) for n, m in zip(layers, mods))
    if site.local:
        # named like fuse_pairs names a pair (the common prefix), so reports line the two up
        return Decision(common_prefix(layers), "pad width", layers, before, " + ".join(describe(m) for m in mods),
                        macs_before, macs_after, reason)
    after = f"{describe(mods[0])} (read by {len(site.consumers)} layers)"
    return Decision(site.producer, "pad width", layers + [n for n, _ in site.norms], before, after,
                    macs_before, macs_after, reason)


def align_widths(gm: fx.GraphModule, ctx: PassContext) -> list[Decision]:
    """Pad the sites that options.choices marks "pad:N" (N the new width); with options.align, also
    every site that only a whole-model timing can judge (a concat or flatten on the way, so no
    choice names it) to a multiple of options.align. A "pad:N" choice that names no width site of
    this graph is said in a "keep" decision, not dropped silently."""
    wanted = {k: v for k, v in ctx.options.choices.items() if v.startswith("pad:")}
    align = ctx.options.align
    if not wanted and not align:
        return []
    shapes = dict(ctx.shapes(gm))
    calls = call_counts(gm)
    decisions = []
    met: set[str] = set()
    for node in [n for n in gm.graph.nodes if n.op == "call_module"]:
        site = width_site(gm, node, calls, shapes)  # after the pads before it: offsets are current
        if site is None:
            continue
        origin = ctx.origin(site.producer)  # a fused pair's site is its 1 x 1's in the plan
        choice = wanted.get(origin)
        if choice is not None:
            met.add(origin)
            width = int(choice.split(":", 1)[1])
            if width <= site.width:
                continue
            if width > site.width + MAX_PAD:
                # a plan proposes the next multiple of at most 32; more comes from a hand-edited or
                # hostile LUT/cache, and would allocate weights of any size
                raise GsdeployError(f"plan choice {choice!r} for {origin} (width {site.width}) pads by "
                                    f"more than {MAX_PAD} channels, which no plan proposes")
            reason = ctx.options.reasons.get(origin, f"width {site.width} -> {width}")
        elif align and not site.local and site.width % align:
            width = site.padded(align)
            reason = (f"width {site.width} -> {width}: read through a concat or flatten by {len(site.consumers)} "
                      f"layers, whose input widths the target's kernels want in multiples of {align}")
        else:
            continue
        decisions.append(_pad(gm, site, width, shapes, reason))
    gm.recompile()
    now = {ctx.origin(n.target): n.target for n in gm.graph.nodes if n.op == "call_module"}
    for name in sorted(set(wanted) - met):
        shape = describe(gm.get_submodule(now[name])) if name in now else ""
        decisions.append(Decision(name, "keep", [name], shape, shape, 0, 0,
                                  f"plan chose {wanted[name]}, but {name} is no width site of this deployment "
                                  f"(its output reaches something other than convs and linears): width kept"))
    return decisions
