"""Random CNNs of the kinds users bring and gsdeploy has no template for (hypothesis builds them):
depthwise and grouped convs, dilation, stride, 'same'/reflect/circular padding, bias-less convs,
BN without affine or running statistics, GroupNorm, SiLU/GELU/Hardswish/Sigmoid/Tanh, in-place
ReLU and `x += y`, SE gates (also made of the tensor itself), spatial attention, channel shuffle, split/chunk on channels, concats of a tensor with
itself, a tensor read by a conv and by a flatten -> linear, two outputs, non-square inputs.

`odd_nets()` draws (net, input_shape): a net is a list of blocks drawn one after another (each
knows its input width and plane), weights from a drawn seed, then zero groups the way
group-sparsity training leaves them (tests/test_transforms_nets.zero_groups).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import strategies as st

from test_transforms_nets import divisors, init, zero_groups

ACTS = ("relu", "relu_inplace", "sigmoid", "silu", "gelu", "hardswish", "tanh", "hardsigmoid", "none")
NORMS = ("bn", "bn_plain", "bn_batch_stats", "gn", "none")


def make_act(kind: str) -> nn.Module:
    return {"relu": nn.ReLU(), "relu_inplace": nn.ReLU(inplace=True), "sigmoid": nn.Sigmoid(), "silu": nn.SiLU(),
            "gelu": nn.GELU(), "hardswish": nn.Hardswish(), "tanh": nn.Tanh(), "hardsigmoid": nn.Hardsigmoid(),
            "none": nn.Identity()}[kind]


def make_norm(kind: str, c: int, groups: int) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(c)
    if kind == "bn_plain":
        return nn.BatchNorm2d(c, affine=False)
    if kind == "bn_batch_stats":  # normalizes with the batch's statistics even in eval
        return nn.BatchNorm2d(c, track_running_stats=False)
    if kind == "gn":
        return nn.GroupNorm(groups, c)
    return nn.Identity()


class Block(nn.Module):
    """One block of an odd net; `kind` says how its parts are wired."""

    def __init__(self, kind: str, parts: dict[str, nn.Module], meta: dict | None = None) -> None:
        super().__init__()
        self.kind, self.parts, self.meta = kind, nn.ModuleDict(parts), dict(meta or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, kind = self.parts, self.kind
        if kind == "seq":
            return p["body"](x)
        if kind == "res":  # out += identity, then an (in-place) ReLU, as torchvision writes it
            out = p["body"](x)
            if self.meta["inplace"]:
                out += x
                return out.relu_()
            return torch.relu(out + x)
        if kind == "dense":  # DenseNet: the input, then what a layer made of it
            return torch.cat([x, p["body"](x)], 1)
        if kind == "self_cat":  # one tensor twice in a concat
            y = p["body"](x)
            return torch.cat([y, y], 1)
        if kind == "se":  # squeeze-and-excitation: a per-channel gate broadcast over the plane
            y = p["body"](x)
            return y * torch.sigmoid(p["fc2"](torch.relu(p["fc1"](F.adaptive_avg_pool2d(y, 1)))))
        if kind == "gate_self":  # a gate made of the tensor itself, per channel (SE without fcs)
            y = p["body"](x)
            return y * torch.sigmoid(y.mean((2, 3), keepdim=True))
        if kind == "spatial":  # spatial attention (CBAM): one map over every channel
            y = p["body"](x)
            return y * torch.sigmoid(y.mean(1, keepdim=True))
        if kind == "shuffle":  # ShuffleNet's channel shuffle: a view, a transpose, a reshape
            n, c, h, w = x.shape
            g = self.meta["groups"]
            return x.view(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)
        if kind == "split":  # two halves of the channels, each through its own conv, concatenated
            a, b = torch.chunk(x, 2, dim=1) if self.meta["chunk"] else torch.split(x, self.meta["sizes"], 1)
            return torch.cat([p["a"](a), p["b"](b)], 1)
        if kind == "pool":
            return F.max_pool2d(x, 2, ceil_mode=True)
        raise AssertionError(kind)


class OddNet(nn.Module):
    """Blocks, then a head: none (the feature map is the output), global pool -> linear, flatten ->
    linear, or two outputs (a 1 x 1 conv of the features and a linear of their flattened plane)."""

    def __init__(self, blocks: list[Block], head: str, width: int, plane: tuple[int, int], classes: int) -> None:
        super().__init__()
        self.blocks, self.head = nn.Sequential(*blocks), head
        if head == "pool":
            self.fc = nn.Linear(width, classes)
        elif head in ("flatten", "two"):
            self.fc = nn.Linear(width * plane[0] * plane[1], classes)
        if head == "two":
            self.side = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor):
        x = self.blocks(x)
        if self.head == "pool":
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        if self.head == "flatten":
            return self.fc(x.flatten(1))
        if self.head == "two":
            return self.side(x), self.fc(torch.flatten(x, 1))
        return x


def _out(size: int, k: int, stride: int, pad: int, dil: int) -> int:
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1


@st.composite
def conv_unit(draw, cin: int, plane: tuple[int, int], cout: int | None = None, dense_only: bool = False):
    """conv -> norm -> act; returns (module, cout, plane)."""
    cout = cout if cout is not None else draw(st.integers(1, 8))
    groups = 1
    if not dense_only:
        shared = [d for d in divisors(cin) if cout % d == 0]
        groups = draw(st.sampled_from(shared))
    k = draw(st.sampled_from([1, 3]))
    dil = draw(st.sampled_from([1, 2])) if k == 3 else 1
    stride = draw(st.sampled_from([1, 2])) if min(plane) >= 3 else 1
    small = min(plane) <= dil * (k // 2)  # reflect/circular padding needs a pad below the plane's size
    mode = draw(st.sampled_from(["zeros", "same"] + ([] if small else ["reflect", "circular"])))
    if mode == "same":
        stride = 1
        padding, padding_mode = "same", "zeros"
    else:
        padding, padding_mode = dil * (k // 2), mode
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=padding, dilation=dil, groups=groups,
                     bias=draw(st.booleans()), padding_mode=padding_mode)
    pad = dil * (k // 2)
    out_plane = plane if padding == "same" else tuple(_out(s, k, stride, pad, dil) for s in plane)
    # statistics of one value (batch 1, a 1 x 1 plane: per channel, or per group of one channel)
    # are undefined: the model itself cannot run there
    norm = draw(st.sampled_from([n for n in NORMS if n not in ("bn_batch_stats", "gn") or math.prod(out_plane) > 1]))
    norm_groups = draw(st.sampled_from(divisors(cout)))
    return nn.Sequential(conv, make_norm(norm, cout, norm_groups), make_act(draw(st.sampled_from(ACTS)))), cout, \
        out_plane


@st.composite
def block(draw, cin: int, plane: tuple[int, int]):
    """One block; returns (Block, cout, plane)."""
    kinds = ["conv", "pair", "res", "dense", "self_cat", "se", "gate_self", "spatial", "pool"]
    if cin % 2 == 0:
        kinds += ["shuffle", "split"]
    kind = draw(st.sampled_from(kinds))
    if kind == "conv":
        m, cout, plane = draw(conv_unit(cin, plane))
        return Block("seq", {"body": m}), cout, plane
    if kind == "pair":  # a factorized pair: k x k (any groups) straight into a 1 x 1
        g = draw(st.sampled_from(divisors(cin)))
        rank = g * draw(st.integers(1, 3))
        cout = draw(st.integers(1, 8))
        k = draw(st.sampled_from([1, 3]))
        body = nn.Sequential(nn.Conv2d(cin, rank, k, padding=k // 2, groups=g, bias=draw(st.booleans())),
                             nn.Conv2d(rank, cout, 1, bias=draw(st.booleans())), make_act(draw(st.sampled_from(ACTS))))
        return Block("seq", {"body": body}), cout, plane
    if kind == "res":
        a, mid, _ = draw(conv_unit(cin, plane, dense_only=True).filter(lambda r: r[2] == plane))
        b = nn.Conv2d(mid, cin, 3, padding=1, bias=draw(st.booleans()))
        return Block("res", {"body": nn.Sequential(a, b)}, {"inplace": draw(st.booleans())}), cin, plane
    if kind == "dense":
        m, grow, _ = draw(conv_unit(cin, plane).filter(lambda r: r[2] == plane))
        return Block("dense", {"body": m}), cin + grow, plane
    if kind == "self_cat":
        m, cout, plane = draw(conv_unit(cin, plane))
        return Block("self_cat", {"body": m}), 2 * cout, plane
    if kind == "se":
        m, cout, plane = draw(conv_unit(cin, plane))
        squeeze = draw(st.integers(1, 4))
        return Block("se", {"body": m, "fc1": nn.Conv2d(cout, squeeze, 1), "fc2": nn.Conv2d(squeeze, cout, 1)}), \
            cout, plane
    if kind in ("gate_self", "spatial"):
        m, cout, plane = draw(conv_unit(cin, plane))
        return Block(kind, {"body": m}), cout, plane
    if kind == "pool":
        return Block("pool", {}), cin, tuple(math.ceil(s / 2) for s in plane)
    if kind == "shuffle":
        return Block("shuffle", {}, {"groups": draw(st.sampled_from([d for d in divisors(cin) if 1 < d < cin] or [1]))}), \
            cin, plane
    chunk = draw(st.booleans())
    at = cin // 2 if chunk else draw(st.integers(1, cin - 1))
    a, ca, _ = draw(conv_unit(at, plane).filter(lambda r: r[2] == plane))
    b, cb, _ = draw(conv_unit(cin - at, plane).filter(lambda r: r[2] == plane))
    return Block("split", {"a": a, "b": b}, {"chunk": chunk, "sizes": [at, cin - at]}), ca + cb, plane


@st.composite
def odd_nets(draw, max_blocks: int = 4):
    cin = draw(st.integers(1, 4))
    plane = (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    shape = (cin, *plane)
    blocks = []
    for _ in range(draw(st.integers(1, max_blocks))):
        b, cin, plane = draw(block(cin, plane))
        blocks.append(b)
    net = OddNet(blocks, draw(st.sampled_from(["none", "pool", "flatten", "two"])), cin, plane, draw(st.integers(1, 4)))
    seed = draw(st.integers(0, 2**16))
    init(net, seed)
    _init_norms(net, seed)
    zero_groups(net, seed + 1, draw(st.sampled_from([0.0, 0.5, 1.0])))
    return net.eval(), shape


def _init_norms(net: nn.Module, seed: int) -> None:
    """GroupNorm affine parameters away from their identity defaults (BN gets its own in init)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.GroupNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
