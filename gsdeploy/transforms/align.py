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
from gsdeploy.transforms.fxutil import call_counts, common_prefix, conv_macs, describe
from gsdeploy.transforms.decisions import Decision

# Modules that act on each element (or each channel's plane) alone and hold no per-channel
# parameters: a padded channel passes through them without touching the others.
CHANNEL_FREE_MODULES: tuple[type, ...] = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Hardswish, nn.Hardtanh, nn.Dropout,
    nn.Identity, nn.Sigmoid, nn.Hardsigmoid, nn.MaxPool2d, nn.AvgPool2d,
)
# The most channels a plan pads a width by (the next multiple of the largest preferred multiple, 32).
MAX_PAD = 32
CHANNEL_FREE_FNS = ops.ZERO_PRESERVING_FNS | ops.NOT_ZERO_PRESERVING_FNS
CHANNEL_FREE_METHODS = ops.ZERO_PRESERVING_METHODS | ops.NOT_ZERO_PRESERVING_METHODS


@dataclass(frozen=True)
class WidthSite:
    producer: str  # module name of the conv whose output width can grow
    consumers: tuple[str, ...]  # module names of the convs that read it
    between: tuple[str, ...]  # names of the element-wise nodes in between (graph node names)
    width: int
    pair: bool  # a factorized pair: the one consumer is a 1 x 1 conv reading the output directly

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


def find_width_sites(gm: fx.GraphModule) -> list[WidthSite]:
    """Every dense conv whose output only dense convs read (through channel-free element-wise ops)."""
    calls = call_counts(gm)
    sites = []
    for node in gm.graph.nodes:
        producer = _dense_conv(gm, node, calls)
        if producer is None or node.kwargs:
            continue
        consumers: list[str] = []
        between: list[str] = []
        frontier = [node]
        ok = True
        while frontier and ok:
            x = frontier.pop()
            if not x.users:
                ok = False
            for user in x.users:
                if _dense_conv(gm, user, calls) is not None and user.args == (x,) and not user.kwargs:
                    consumers.append(user.target)
                elif _channel_free(gm, user, x):
                    between.append(user.name)
                    frontier.append(user)
                else:
                    ok = False
                    break
        if not ok or not consumers:
            continue
        pair = not between and len(consumers) == 1 and \
            gm.get_submodule(consumers[0]).kernel_size == (1, 1)
        sites.append(WidthSite(node.target, tuple(consumers), tuple(between), producer.out_channels, pair))
    return sites


def pad_width(gm: nn.Module, site: WidthSite, width: int) -> None:
    """Grow `site`'s width to `width` with zero filters in the producer and zero columns in its consumers."""
    p = gm.get_submodule(site.producer)
    extra = width - p.out_channels
    if extra < 0:
        raise ValueError(f"cannot pad {site.producer} from {p.out_channels} down to {width}")
    if extra == 0:
        return
    with torch.no_grad():
        w = p.weight
        p.weight = nn.Parameter(torch.cat([w, w.new_zeros((extra, *w.shape[1:]))], 0), requires_grad=w.requires_grad)
        if p.bias is not None:
            p.bias = nn.Parameter(torch.cat([p.bias, p.bias.new_zeros(extra)]), requires_grad=p.bias.requires_grad)
        p.out_channels = width
        for name in site.consumers:
            c = gm.get_submodule(name)
            w = c.weight
            c.weight = nn.Parameter(torch.cat([w, w.new_zeros((w.shape[0], extra, *w.shape[2:]))], 1),
                                    requires_grad=w.requires_grad)
            c.in_channels = width


def align_widths(gm: fx.GraphModule, ctx: PassContext) -> list[Decision]:
    """Pad the sites that options.choices marks "pad:N" (N the new width)."""
    wanted = {k: v for k, v in ctx.options.choices.items() if v.startswith("pad:")}
    if not wanted:
        return []
    shapes = ctx.shapes(gm)
    by_target = {n.target: n for n in gm.graph.nodes if n.op == "call_module"}
    decisions = []
    for site in find_width_sites(gm):
        choice = wanted.get(site.producer)
        if choice is None:
            continue
        width = int(choice.split(":", 1)[1])
        if width <= site.width:
            continue
        if width > site.width + MAX_PAD:
            # a plan proposes the next multiple of at most 32; more comes from a hand-edited or
            # hostile LUT/cache, and would allocate weights of any size
            raise GsdeployError(f"plan choice {choice!r} for {site.producer} (width {site.width}) pads by more than "
                                f"{MAX_PAD} channels, which no plan proposes")
        layers = [site.producer, *site.consumers]
        mods = [gm.get_submodule(n) for n in layers]
        before = " + ".join(describe(m) for m in mods)
        macs_before = sum(conv_macs(m, shapes[by_target[n]]) for n, m in zip(layers, mods))
        pad_width(gm, site, width)
        after = " + ".join(describe(m) for m in mods)
        macs_after = sum(conv_macs(m, shapes[by_target[n]]) for n, m in zip(layers, mods))
        reason = ctx.options.reasons.get(site.producer, f"width {site.width} -> {width}")
        # named like fuse_pairs names a pair (the common prefix), so reports line the two up
        decisions.append(Decision(common_prefix(layers), "pad width", layers, before, after, macs_before, macs_after, reason))
    gm.recompile()
    return decisions
