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
