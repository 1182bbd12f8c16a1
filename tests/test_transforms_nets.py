"""Random small networks for the transforms tests (hypothesis builds them), plus shared checks.

A net is a list of steps drawn by hypothesis; weights come from a drawn seed; then groups are
zeroed at random the way group-sparsity training leaves them: zero filters (with the BN after
them zero too, or not), zero input columns, zero in only some addends of a residual add.
The other tests/test_transforms_*.py import from here.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gsdeploy.transforms import DeployOptions, deploy, trace, verify_modules
from gsdeploy.transforms.channels import analyze
from gsdeploy.transforms.context import PassContext
from gsdeploy.zoo.layers import DReLU

SPATIAL = 8
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---- building blocks -------------------------------------------------------------------------


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def make_act(kind: str, c: int, p: float = 1.0, n: float = 0.0) -> nn.Module:
    if kind == "relu":
        return nn.ReLU()
    if kind == "leaky":
        return nn.LeakyReLU(0.1)
    if kind == "prelu":
        m = nn.PReLU(c)
        with torch.no_grad():
            m.weight.uniform_(-0.5, 0.5)
        return m
    if kind == "drelu":
        return DReLU(p, n)
    return nn.Identity()


class Step(nn.Module):
    """One step of a random net: a conv (+BN, +act), a residual block, a concat or a grouped block."""

    def __init__(self, kind: str, parts: nn.ModuleDict, meta: dict) -> None:
        super().__init__()
        self.kind, self.parts, self.meta = kind, parts, meta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.parts
        if self.kind == "seq":
            return p["body"](x)
        if self.kind == "res":
            short = x
            if "short" in p:
                short = p["short"](x)
            elif self.meta.get("pad"):
                before, after = self.meta["pad"]
                short = F.pad(F.avg_pool2d(x, 2), [0, 0, 0, 0, before, after])
            return p["act"](p["body"](x) + short)
        if self.kind == "cat":
            return torch.cat([p["a"](x), p["b"](x)], 1)
        raise AssertionError(self.kind)


class Head(nn.Module):
    def __init__(self, pool: bool, linears: nn.Sequential) -> None:
        super().__init__()
        self.pool, self.linears = pool, linears

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool:
            x = F.adaptive_avg_pool2d(x, 1)
        return self.linears(torch.flatten(x, 1))


class Net(nn.Module):
    def __init__(self, steps: list[nn.Module], head: nn.Module | None) -> None:
        super().__init__()
        self.steps = nn.Sequential(*steps)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.steps(x)
        return self.head(x) if self.head is not None else x


# ---- hypothesis strategies -------------------------------------------------------------------


@st.composite
def conv_unit(draw, cin: int, cout: int | None = None, stride: int = 1, allow_groups: bool = True):
    """conv [+BN] [+act]; returns (module, cout)."""
    if cout is None:
        cout = draw(st.integers(1, 8))
    g = 1
    if allow_groups:
        common = [d for d in divisors(cin) if cout % d == 0]
        g = draw(st.sampled_from(common))
    k = draw(st.sampled_from([1, 3]))
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=g, bias=draw(st.booleans()))
    layers: list[nn.Module] = [conv]
    if draw(st.booleans()):
        layers.append(nn.BatchNorm2d(cout))
    act = draw(st.sampled_from(["relu", "leaky", "prelu", "drelu", "none"]))
    layers.append(make_act(act, cout, draw(slope), draw(slope)))
    return nn.Sequential(*layers), cout


slope = st.sampled_from([1.0, 0.7, -0.6, 1.3, 0.0, -0.2, 0.25])


@st.composite
def step(draw, cin: int, spatial: int):
    kind = draw(st.sampled_from(["conv", "res", "res_down", "cat", "grouped", "pair"]))
    if kind == "res_down" and (spatial < 2 or spatial % 2):
        kind = "res"
    if kind == "conv":
        stride = draw(st.sampled_from([1, 2])) if spatial >= 4 else 1
        m, cout = draw(conv_unit(cin, stride=stride))
        return Step("seq", nn.ModuleDict({"body": m}), {}), cout, math.ceil(spatial / stride)
    if kind in ("res", "res_down"):
        down = kind == "res_down"
        before, after = (draw(st.integers(0, 3)), draw(st.integers(0, 3))) if down else (0, 0)
        cout = cin + before + after
        mid = draw(st.integers(1, 8))
        a, _ = draw(conv_unit(cin, mid, stride=2 if down else 1, allow_groups=False))
        b, _ = draw(conv_unit(mid, cout, allow_groups=False))
        parts = {"body": nn.Sequential(a, b), "act": make_act(draw(st.sampled_from(["relu", "none"])), cout)}
        meta = {"pad": (before, after)} if down else {}
        if not down and draw(st.booleans()):
            parts["short"] = nn.Conv2d(cin, cout, 1, bias=False)  # a projection shortcut
        return Step("res", nn.ModuleDict(parts), meta), cout, spatial // 2 if down else spatial
    if kind == "cat":
        a, ca = draw(conv_unit(cin))
        b, cb = draw(conv_unit(cin))
        return Step("cat", nn.ModuleDict({"a": a, "b": b}), {}), ca + cb, spatial
    if kind == "grouped":
        g = draw(st.integers(2, 4))
        width = g * draw(st.integers(1, 3))
        outw = g * draw(st.integers(1, 2))
        cout = draw(st.integers(1, 8))
        body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, outw, 3, padding=1, groups=g, bias=draw(st.booleans())), nn.BatchNorm2d(outw), nn.ReLU(),
            nn.Conv2d(outw, cout, 1, bias=False),
        )
        return Step("seq", nn.ModuleDict({"body": body}), {"groups": g}), cout, spatial
    # pair: k x k A (any groups) then 1 x 1 B, nothing between
    common = divisors(cin)
    g = draw(st.sampled_from(common))
    r = g * draw(st.integers(1, 3))
    cout = draw(st.integers(1, 8))
    k = draw(st.sampled_from([1, 3]))
    stride = draw(st.sampled_from([1, 2])) if spatial >= 4 else 1
    pair = nn.Sequential(nn.Conv2d(cin, r, k, stride=stride, padding=k // 2, groups=g, bias=draw(st.booleans())),
                         nn.Conv2d(r, cout, 1, bias=draw(st.booleans())))
    return Step("seq", nn.ModuleDict({"body": pair}), {}), cout, math.ceil(spatial / stride)


@st.composite
def head(draw, cin: int, spatial: int):
    pool = draw(st.booleans())
    feats = cin if pool else cin * spatial * spatial
    dims = [feats] + [draw(st.integers(1, 8)) for _ in range(draw(st.integers(1, 3)))]
    return Head(pool, nn.Sequential(*[nn.Linear(a, b, bias=draw(st.booleans())) for a, b in zip(dims, dims[1:])]))


@st.composite
def random_net(draw, max_steps: int = 4):
    cin, spatial = draw(st.integers(1, 4)), SPATIAL
    in_ch = cin
    steps = []
    for _ in range(draw(st.integers(1, max_steps))):
        m, cin, spatial = draw(step(cin, spatial))
        steps.append(m)
    net = Net(steps, draw(head(cin, spatial)) if draw(st.booleans()) else None)
    init(net, draw(st.integers(0, 2**16)))
    zero_groups(net, draw(st.integers(0, 2**16)), draw(st.sampled_from([0.0, 0.3, 0.6, 1.0])))
    return net.eval(), (in_ch, SPATIAL, SPATIAL)


# ---- weights and zero groups -----------------------------------------------------------------


def init(net: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / math.sqrt(m.weight[0].numel()))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                if m.affine:
                    m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                if m.track_running_stats:
                    m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                    m.running_var.copy_(torch.rand(c, generator=g) + 0.5)


def zero_groups(net: nn.Module, seed: int, rate: float) -> None:
    """Zero output filters (with the BN after them, so the folded channel is exactly zero) and
    input columns at random; `rate` is the chance that a layer gets any."""
    g = torch.Generator().manual_seed(seed)
    mods = list(net.modules())
    with torch.no_grad():
        for i, m in enumerate(mods):
            if not isinstance(m, (nn.Conv2d, nn.Linear)) or torch.rand((), generator=g) >= rate:
                continue
            out = m.weight.shape[0]
            rows = torch.rand(out, generator=g) < 0.5
            if torch.rand((), generator=g) < 0.5:
                m.weight[rows] = 0
                if m.bias is not None:
                    m.bias[rows] = 0
                nxt = mods[i + 1] if i + 1 < len(mods) else None
                if isinstance(nxt, nn.BatchNorm2d) and nxt.affine and torch.rand((), generator=g) < 0.8:
                    nxt.weight[rows] = 0
                    nxt.bias[rows] = 0
            else:
                cols = torch.rand(m.weight.shape[1], generator=g) < 0.5
                m.weight[:, cols] = 0


# ---- checks ---------------------------------------------------------------------------------


def well_conditioned(net: nn.Module, shape: tuple[int, ...]) -> bool:
    """False for the rare random net whose outputs nearly vanish (ReLUs and zeroed groups cut
    almost everything): relative to such an output scale, the float32 rounding of folded weights
    alone exceeds 1e-5, so the tolerance says nothing about the transforms there."""
    with torch.no_grad():
        y = net(torch.randn(2, *shape, generator=torch.Generator().manual_seed(0)))
    return bool(y.abs().max() >= 1e-3)


def check_deploy(net: nn.Module, shape: tuple[int, ...], **opts):
    """Deploy, check numerics independently, MACs/params never rise under fuse='flops', and no
    removable group survives. Returns the DeployResult."""
    assume(well_conditioned(net, shape))
    options = DeployOptions(**opts)
    r = deploy(net, shape, options)
    v = verify_modules(net, r.module, shape, batches=1, seed=1)
    assert v.max_rel_err <= 1e-5, v
    if options.fuse == "flops":
        assert r.macs_after <= r.macs_before  # (a fused pair may gain a bias: params can rise by a few)
    if options.fuse == "never":
        # A BN without affine parameters folds into a new conv/linear bias: params rise by its width.
        plain_bn = sum(m.num_features for m in net.modules()
                       if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.affine)
        assert r.macs_after <= r.macs_before and r.params_after <= r.params_before + plain_bn
    assert not removable_left(r.module, shape)
    return r


def removable_left(gm: nn.Module, shape: tuple[int, ...]) -> bool:
    ctx = PassContext(tuple(shape))
    a = analyze(gm, ctx.shapes(gm))
    return a.any_removable()


def channels_of(gm: nn.Module) -> dict[str, tuple]:
    return {n: tuple(m.weight.shape) for n, m in gm.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


# ---- tests of the generator itself ---------------------------------------------------------------


@SETTINGS
@given(random_net())
def test_random_nets_trace_and_run(case):
    net, shape = case
    gm = trace(net)
    x = torch.randn(2, *shape)
    torch.testing.assert_close(gm(x), net(x))

