"""Width alignment: zero filters + zero consumer columns pad a width exactly, for any width and multiple."""

from __future__ import annotations

import torch
import torch.nn as nn
from hypothesis import given
from hypothesis import strategies as st

from gsdeploy.transforms import DeployOptions, deploy, trace, verify_modules
from gsdeploy.transforms.align import find_width_sites, pad_width
from test_transforms_nets import SETTINGS, init


class Branchy(nn.Module):
    """conv -> act -> two consumer convs (a width read by two layers), then a pair at the end."""

    def __init__(self, cin: int, mid: int, rank: int, k: int, act: nn.Module, bias: bool) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, cin, 1)
        self.p = nn.Conv2d(cin, mid, k, padding=k // 2, bias=bias)
        self.act = act
        self.c1 = nn.Conv2d(mid, cin, 3, padding=1)
        self.c2 = nn.Conv2d(mid, cin, 1, bias=bias)
        self.a = nn.Conv2d(cin, rank, 3, padding=1, bias=bias)  # a factorized pair a -> b
        self.b = nn.Conv2d(rank, 4, 1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        h = self.act(self.p(x))
        return self.b(self.a(self.c1(h) + self.c2(h)))


@st.composite
def branchy(draw):
    act = draw(st.sampled_from([nn.ReLU(), nn.LeakyReLU(0.1), nn.Sigmoid(), nn.Identity()]))
    net = Branchy(draw(st.integers(1, 6)), draw(st.integers(1, 20)), draw(st.integers(1, 20)),
                  draw(st.sampled_from([1, 3])), act, draw(st.booleans()))
    init(net, draw(st.integers(0, 10_000)))
    return net.eval()


@SETTINGS
@given(branchy(), st.integers(1, 24), st.integers(0, 3))
def test_padding_any_width_to_any_multiple_is_exact(net, multiple, extra_blocks):
    gm = trace(net)
    sites = {s.producer: s for s in find_width_sites(gm)}
    assert set(sites) >= {"p", "a"}
    assert sites["p"].consumers == ("c1", "c2") and not sites["p"].pair
    assert sites["a"].pair and sites["a"].consumers == ("b",)
    for s in sites.values():
        pad_width(gm, s, s.padded(multiple) + extra_blocks * multiple)
    gm.recompile()
    assert gm.get_submodule("p").out_channels % multiple == 0
    assert gm.get_submodule("c1").in_channels == gm.get_submodule("p").out_channels
    x = torch.randn(3, 2, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), net(x), rtol=1e-5, atol=1e-6)


@SETTINGS
@given(branchy(), st.sampled_from([8, 16]))
def test_deploy_pads_the_chosen_sites_and_still_verifies(net, multiple):
    gm = trace(net)
    sites = {s.producer: s for s in find_width_sites(gm)}
    choices = {n: f"pad:{s.padded(multiple)}" for n, s in sites.items() if s.padded(multiple) > s.width}
    r = deploy(net, (2, 6, 6), DeployOptions(fuse="always", choices=choices))
    for name, choice in choices.items():
        assert r.module.get_submodule(name).out_channels == int(choice[4:])
        assert any(d.action == "pad width" and d.layers[0] == name for d in r.plan)
    # a padded pair is not fused, whatever `fuse` says
    if "a" in choices:
        assert isinstance(r.module.get_submodule("b"), nn.Conv2d)
    assert verify_modules(net, r.module, (2, 6, 6), batches=1, seed=1).max_rel_err <= 1e-5


def test_a_width_that_reaches_an_add_or_the_output_is_not_a_site():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 5, 1), nn.Conv2d(3, 5, 1), nn.Conv2d(5, 2, 1)

        def forward(self, x):
            return self.c(self.a(x) + self.b(x))

    gm = trace(Net().eval())
    assert [s.producer for s in find_width_sites(gm)] == []


def test_grouped_convs_are_not_padded():
    net = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    assert find_width_sites(trace(net)) == []


def test_bad_choice_is_refused():
    import pytest

    with pytest.raises(ValueError):
        DeployOptions(choices={"a": "pad:x"})


class Dense(nn.Module):
    """A small DenseNet: pre-activation layers (BN -> act -> conv) whose outputs concat onto the
    running features, a transition (BN -> act -> 1x1 conv -> pool), a second block, then BN -> act ->
    global pool -> flatten -> linear. Every growth width reaches later layers through concats, BNs
    and the flatten, so no layer alone can be timed for it."""

    def __init__(self, stem: int, growths: list[int], trans: int, growths2: list[int], act: nn.Module,
                 prelu: bool) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, stem, 3, padding=1)
        width = stem
        self.block1 = nn.ModuleList()
        for g in growths:
            self.block1.append(nn.Sequential(nn.BatchNorm2d(width), act, nn.Conv2d(width, g, 3, padding=1, bias=False)))
            width += g
        self.trans = nn.Sequential(nn.BatchNorm2d(width), nn.PReLU(width) if prelu else act,
                                   nn.Conv2d(width, trans, 1), nn.AvgPool2d(2))
        width = trans
        self.block2 = nn.ModuleList()
        for g in growths2:
            self.block2.append(nn.Sequential(nn.BatchNorm2d(width), act, nn.Conv2d(width, g, 3, padding=1)))
            width += g
        self.head = nn.Sequential(nn.BatchNorm2d(width), act, nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(width, 3)

    def forward(self, x):
        x = self.stem(x)
        for layer in self.block1:
            x = torch.cat([x, layer(x)], 1)
        x = self.trans(x)
        for layer in self.block2:
            x = torch.cat((x, layer(x)), dim=1)
        return self.fc(torch.flatten(self.head(x), 1))


def _randomize_bn(net: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g))
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=g))
            m.bias.data.copy_(torch.randn(n, generator=g))


@st.composite
def dense_nets(draw):
    widths = st.integers(1, 13)
    act = draw(st.sampled_from([nn.ReLU(), nn.LeakyReLU(0.1), nn.Identity()]))
    net = Dense(draw(widths), draw(st.lists(widths, min_size=1, max_size=4)), draw(widths),
                draw(st.lists(widths, min_size=0, max_size=3)), act, draw(st.booleans()))
    seed = draw(st.integers(0, 10_000))
    init(net, seed)
    _randomize_bn(net, seed)
    return net.eval()


@SETTINGS
@given(dense_nets(), st.sampled_from([2, 4, 8, 16]), st.sampled_from(["always", "never", "flops"]))
def test_align_pads_widths_read_through_concats_exactly(net, align, fuse):
    r = deploy(net, (2, 8, 8), DeployOptions(fuse=fuse, align=align))
    convs = {n: m for n, m in r.module.named_modules() if isinstance(m, nn.Conv2d)}
    # every conv but the stem (which reads the graph's input) now reads a multiple of `align`
    for name, m in convs.items():
        if name == "stem":
            continue
        assert m.in_channels % align == 0, (name, m.in_channels)
    assert r.module.get_submodule("fc").in_features % align == 0
    pads = [d for d in r.plan if d.action == "pad width"]
    assert all(d.macs_after >= d.macs_before for d in pads)
    assert verify_modules(net, r.module, (2, 8, 8), batches=2, seed=3).max_rel_err <= 1e-5


def test_a_width_in_a_concat_twice_or_added_is_not_a_site():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 5, 1), nn.Conv2d(10, 2, 1)

        def forward(self, x):
            y = self.a(x)
            return self.b(torch.cat([y, y], 1))

    class Added(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.s, self.b = nn.Conv2d(3, 5, 1), nn.Conv2d(3, 2, 1), nn.Conv2d(7, 2, 1)

        def forward(self, x):
            y = torch.cat([self.a(x), self.s(x)], 1)
            return self.b(y) + y[:, :2]

    for net in (Twice().eval(), Added().eval()):
        gm = trace(net)
        from gsdeploy.transforms.context import PassContext

        shapes = PassContext((3, 4, 4)).shapes(gm)
        assert [s.producer for s in find_width_sites(gm, shapes)] == []
        r = deploy(net, (3, 4, 4), DeployOptions(align=8))
        assert not [d for d in r.plan if d.action == "pad width"]


def test_align_must_be_a_known_multiple():
    import pytest

    for bad in (3, -4, 64, 1):
        with pytest.raises(ValueError):
            DeployOptions(align=bad)


def test_a_pad_choice_that_names_no_width_site_is_said_not_dropped():
    class Summed(nn.Module):  # a's output also feeds a channel sum: not a width site
        def __init__(self):
            super().__init__()
            self.a, self.c = nn.Conv2d(4, 5, 3, padding=1), nn.Conv2d(5, 3, 1)

        def forward(self, x):
            y = torch.relu(self.a(x))
            return self.c(y) + y.sum(1, keepdim=True)

    r = deploy(Summed().eval(), (4, 6, 6), DeployOptions(choices={"a": "pad:8"}))
    [d] = [d for d in r.plan if d.layers == ["a"]]
    assert d.action == "keep" and d.reason.startswith("plan chose pad:8") and d.shape_before == "3x3 4->5"
    assert r.module.get_submodule("a").out_channels == 5
