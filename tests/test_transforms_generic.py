"""Models gsdeploy has no template for: random traceable CNNs written the way users write them
(in-place activations, `x += y`, depthwise and grouped convs, concats), as modules and as
torch.export programs, and a MobileNetV2-style inverted-residual net deployed from a .pt2."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gsdeploy.metrics import count_macs
from gsdeploy.load import load_model
from gsdeploy.transforms import DeployOptions, deploy, verify_modules
from test_transforms_nets import divisors, init, removable_left, well_conditioned, zero_groups

SPATIAL = 8
FEW = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Unit(nn.Module):
    """conv + BN + activation; `inplace` picks the in-place spelling of the same computation."""

    def __init__(self, conv: nn.Conv2d, act: str, inplace: bool) -> None:
        super().__init__()
        self.conv, self.bn, self.act, self.inplace = conv, nn.BatchNorm2d(conv.out_channels), act, inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        if self.act == "relu":
            return y.relu_() if self.inplace else torch.relu(y)
        if self.act == "relu6":
            return F.hardtanh(y, 0.0, 6.0, inplace=self.inplace)
        if self.act == "relu_fn":
            return F.relu(y, inplace=self.inplace)
        return y


class Block(nn.Module):
    def __init__(self, kind: str, parts: list[nn.Module], inplace: bool) -> None:
        super().__init__()
        self.kind, self.parts, self.inplace = kind, nn.ModuleList(parts), inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "seq":
            return self.parts[0](x)
        if self.kind == "res":  # out += identity, as torchvision writes it
            out = self.parts[1](self.parts[0](x))
            if self.inplace:
                out += x
            else:
                out = out + x
            return out.relu_() if self.inplace else out.relu()
        if self.kind == "cat":
            return torch.cat([self.parts[0](x), self.parts[1](x)], 1)
        if self.kind == "scale":  # a scalar multiply, in place or not
            y = self.parts[0](x)
            return y.mul_(0.5) if self.inplace else y * 0.5
        raise AssertionError(self.kind)


class UserNet(nn.Module):
    def __init__(self, blocks: list[nn.Module], classes: int, cin: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(x).mean((2, 3)))


acts = st.sampled_from(["relu", "relu6", "relu_fn", "none"])


@st.composite
def unit_spec(draw, cin: int, cout: int | None = None):
    kind = draw(st.sampled_from(["dense", "grouped", "depthwise"]))
    if kind == "depthwise":
        cout = cin * draw(st.integers(1, 2)) if cout is None else cout
        if cout % cin:
            kind = "dense"
    cout = cout or draw(st.integers(2, 8))
    groups = {"dense": 1, "depthwise": cin, "grouped": draw(st.sampled_from(
        [d for d in divisors(cin) if cout % d == 0]))}[kind]
    k = draw(st.sampled_from([1, 3]))
    return (cin, cout, k, groups, draw(st.booleans()), draw(acts)), cout


@st.composite
def user_net_spec(draw):
    cin = draw(st.integers(1, 4))
    in_ch, blocks = cin, []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["seq", "res", "cat", "scale"]))
        if kind == "res":
            a, mid = draw(unit_spec(cin))
            b, _ = draw(unit_spec(mid, cin))
            blocks.append(("res", [a, (b[0], b[1], b[2], b[3], b[4], "none")]))
        elif kind == "cat":
            a, ca = draw(unit_spec(cin))
            b, cb = draw(unit_spec(cin))
            blocks.append(("cat", [a, b]))
            cin = ca + cb
        else:
            a, cin = draw(unit_spec(cin))
            blocks.append((kind, [a]))
    return in_ch, blocks, cin, draw(st.integers(2, 5)), draw(st.integers(0, 2**16)), draw(
        st.sampled_from([0.3, 0.6, 1.0]))


def build(spec, inplace: bool) -> tuple[nn.Module, tuple[int, ...]]:
    """The same network (same weights, same zero groups) in its in-place or out-of-place spelling."""
    in_ch, blocks, cout, classes, seed, rate = spec

    def unit(u):
        cin, c, k, groups, bias, act = u
        return Unit(nn.Conv2d(cin, c, k, padding=k // 2, groups=groups, bias=bias), act, inplace)

    net = UserNet([Block(kind, [unit(u) for u in units], inplace) for kind, units in blocks], classes, cout)
    init(net, seed)
    zero_groups(net, seed + 1, rate)
    return net.eval(), (in_ch, SPATIAL, SPATIAL)


def _export(net: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    batch = torch.export.Dim("batch", min=1, max=64)
    return torch.export.export(net, (torch.randn(2, *shape),), dynamic_shapes=({0: batch},)).module()


@FEW
@given(user_net_spec())
def test_inplace_spelling_deploys_like_the_out_of_place_one(spec):
    """relu_, hardtanh(inplace=True), `out += x`, mul_ change nothing in what is removed, and the
    result is exact. (torch.export of the in-place spelling is the next test.)"""
    plain, shape = build(spec, inplace=False)
    inplace, _ = build(spec, inplace=True)
    assume(well_conditioned(plain, shape))
    a, b = deploy(plain, shape), deploy(inplace, shape)
    assert (b.macs_after, b.params_after) == (a.macs_after, a.params_after)
    assert verify_modules(plain, b.module, shape, batches=1, seed=3).max_rel_err <= 1e-5
    assert not removable_left(b.module, shape)
    assert [k.channels for k in b.kept_zeros] == [k.channels for k in a.kept_zeros]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(user_net_spec())
def test_torch_export_program_deploys_like_the_module(spec):
    """aten.relu_ / aten.hardtanh_ / aten.add_ / aten.mul_ in an exported program: same MACs as
    the fx path of the module it came from."""
    net, shape = build(spec, inplace=True)
    assume(well_conditioned(net, shape))
    program = _export(net, shape)
    a, b = deploy(net, shape), deploy(program, shape)
    assert (b.macs_after, b.params_after) == (a.macs_after, a.params_after)
    assert verify_modules(net, b.module, shape, batches=1, seed=3).max_rel_err <= 1e-5


# ---- a family with no template: MobileNetV2-style inverted residuals --------------------------


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


# (expand, cout, repeats, stride): a small MobileNetV2 schedule
SCHEDULE = [(1, 8, 1, 1), (4, 12, 2, 2), (4, 16, 2, 2), (4, 24, 1, 1)]


class MobileNetV2ish(nn.Module):
    def __init__(self, hidden_keep: dict[int, int] | None = None, classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8),
                                                 nn.ReLU6(inplace=True))]
        cin = 8
        for t, c, n, s in SCHEDULE:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


def _zero_hidden(net: MobileNetV2ish, fraction: float) -> dict[str, int]:
    """Zero a fraction of every expansion's hidden channels as group sparsity leaves them: the 1x1
    expand filter with its BN (the folded channel is exactly 0; ReLU6(0) = 0), and the depthwise
    conv's BN shift of that channel (a zero channel's running mean is 0; its beta went to 0)."""
    removed = {}
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, m in net.features.named_children():
            if not isinstance(m, InvertedResidual):
                continue
            expand, bn = m.conv[0], m.conv[1]
            hidden = expand.out_channels
            dead = torch.randperm(hidden, generator=g)[: int(fraction * hidden)]
            expand.weight[dead] = 0
            bn.weight[dead] = 0
            bn.bias[dead] = 0
            m.conv[4].bias[dead] = 0
            m.conv[4].running_mean[dead] = 0
            removed[name] = len(dead)
    return removed


def test_mobilenetv2_style_pt2_loses_exactly_its_zero_channels(tmp_path):
    torch.manual_seed(0)
    net = MobileNetV2ish()
    init(net, 5)
    net.eval()
    removed = _zero_hidden(net, 0.25)
    shape = (3, 32, 32)
    path = tmp_path / "mbv2.pt2"
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(net, (torch.randn(2, *shape),), dynamic_shapes=({0: batch},))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert "aten.hardtanh_.default" in targets  # ReLU6(inplace=True) as torch.export writes it
    torch.export.save(program, str(path))
    loaded = load_model(str(path))
    r = deploy(loaded.module, loaded.input_shape, DeployOptions())
    assert r.verification.passed and not r.kept_zeros, [k.describe() for k in r.kept_zeros]

    # The same architecture built narrow by hand: each block's hidden width minus its zeroed channels.
    hidden = [m.conv[0].out_channels - removed[name] for name, m in net.features.named_children()
              if isinstance(m, InvertedResidual)]
    narrow = MobileNetV2ish().eval()
    blocks = [m for m in narrow.features if isinstance(m, InvertedResidual)]
    for m, h in zip(blocks, hidden):
        cin, cout = m.conv[0].in_channels, m.conv[6].out_channels
        stride = m.conv[3].stride
        m.conv[0], m.conv[1] = nn.Conv2d(cin, h, 1, bias=False), nn.BatchNorm2d(h)
        m.conv[3], m.conv[4] = nn.Conv2d(h, h, 3, stride, 1, groups=h, bias=False), nn.BatchNorm2d(h)
        m.conv[6] = nn.Conv2d(h, cout, 1, bias=False)
    assert r.macs_after == count_macs(narrow, shape)  # exactly the zero channels went, nothing else
    assert r.macs_after < r.macs_before == count_macs(net, shape)
    depthwise = [m for m in r.module.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert [m.groups for m in depthwise] == hidden
    assert math.isclose(r.verification.max_rel_err, 0.0, abs_tol=1e-5)


def test_depthwise_channel_with_a_bn_shift_is_kept_and_reported():
    """Without the depthwise BN's shift zeroed, the hidden channel after the depthwise conv is a
    non-zero constant: it cannot go, and the plan says which conv held it."""
    torch.manual_seed(0)
    net = MobileNetV2ish()
    init(net, 5)
    net.eval()
    with torch.no_grad():
        block = net.features[2]
        block.conv[0].weight[:3] = 0
        block.conv[1].weight[:3] = 0
        block.conv[1].bias[:3] = 0
    r = deploy(net, (3, 32, 32))
    [k] = r.kept_zeros
    assert k.site == "features.2.conv.3" and k.channels == 3 and "not zero" in k.why


def test_pt2_in_half_or_double_loads_as_float32(tmp_path):
    """A program exported in float16 or float64 is loaded as the float32 model gsdeploy runs (as a
    trusted pickle is), not refused because a float32 input met its weights."""
    for dtype in (torch.float16, torch.float64):
        net = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 2, 1)).eval().to(dtype)
        batch = torch.export.Dim("batch", min=1, max=64)
        program = torch.export.export(net, (torch.randn(2, 3, 6, 6, dtype=dtype),), dynamic_shapes=({0: batch},))
        path = tmp_path / f"net_{dtype}.pt2".replace("torch.", "")
        torch.export.save(program, str(path))
        loaded = load_model(str(path))
        assert all(p.dtype == torch.float32 for p in loaded.module.parameters())
        assert deploy(loaded.module, loaded.input_shape).verification.passed


def test_pt2_with_adaptive_max_pool_loses_its_zero_channels(tmp_path):
    """torch.export writes AdaptiveMaxPool2d as aten.adaptive_max_pool2d (values, indices), like
    max_pool2d_with_indices: the values keep channels apart, so a zero channel before it goes."""
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
                        nn.Linear(6, 2)).eval()
    with torch.no_grad():
        net[0].weight[[1, 4]] = 0
        net[0].bias[[1, 4]] = 0
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(net, (torch.randn(2, 3, 6, 6),), dynamic_shapes=({0: batch},))
    assert "aten.adaptive_max_pool2d.default" in {str(n.target) for n in program.graph.nodes}
    torch.export.save(program, str(tmp_path / "amp.pt2"))
    loaded = load_model(str(tmp_path / "amp.pt2"))
    r = deploy(loaded.module, loaded.input_shape)
    assert r.verification.passed and not r.kept_zeros
    assert [m.out_channels for m in r.module.modules() if isinstance(m, nn.Conv2d)] == [4]


class SqueezeExcite(nn.Module):
    """conv -> ReLU -> x * gate(x), gate = act(fc2(relu(fc1(pool(x))))) broadcast over the plane
    (MobileNetV3 with hardsigmoid, EfficientNet with sigmoid). `leak`: the gate is an output too."""

    def __init__(self, act: nn.Module, leak: bool = False) -> None:
        super().__init__()
        self.leak = leak
        self.conv, self.fc1, self.fc2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 3, 1), nn.Conv2d(3, 8, 1)
        self.act, self.out = act, nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        g = self.act(self.fc2(torch.relu(self.fc1(F.adaptive_avg_pool2d(y, 1)))))
        out = self.out(y * g)
        return (out, g) if self.leak else out


def _se(act: nn.Module, leak: bool = False) -> nn.Module:
    net = SqueezeExcite(act, leak)
    init(net, 3)
    with torch.no_grad():
        net.conv.weight[[2, 5]] = 0
        net.conv.bias[[2, 5]] = 0
    return net.eval()


@pytest.mark.parametrize("act", [nn.Sigmoid(), nn.Hardsigmoid()])
def test_squeeze_excitation_loses_the_zero_channels_it_gates(act, tmp_path):
    """y * g: a zero channel of y is a zero channel of the product whatever g is, and g's channel
    (fc2's filter) matters only through it: both go, as a module and as a .pt2 (aten.mul.Tensor)."""
    net = _se(act)
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.export.save(torch.export.export(net, (torch.randn(2, 3, 6, 5),), dynamic_shapes=({0: batch},)),
                      str(tmp_path / "se.pt2"))
    for module in (net, load_model(str(tmp_path / "se.pt2")).module):
        r = deploy(module, (3, 6, 5))
        assert r.verification.passed and not r.kept_zeros, [k.describe() for k in r.kept_zeros]
        widths = sorted((m.in_channels, m.out_channels) for m in r.module.modules() if isinstance(m, nn.Conv2d))
        assert widths == [(3, 6), (3, 6), (6, 3), (6, 4)]  # conv, fc2 lose 2 rows; fc1, out 2 columns


def test_a_gate_read_elsewhere_keeps_the_channel_and_says_why():
    r = deploy(_se(nn.Sigmoid(), leak=True), (3, 6, 5))
    assert r.verification.passed
    [k] = r.kept_zeros
    assert k.channels == 2 and "gate" in k.why
