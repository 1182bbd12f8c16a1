"""fold_drelu: DReLU = p * LeakyReLU(-n/p) for any sign of p; p goes into a neighbour or a multiply."""

from __future__ import annotations

import operator

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from gsdeploy.transforms import DeployOptions, deploy, trace
from gsdeploy.transforms.context import PassContext
from gsdeploy.transforms.fold_drelu import fold_drelu
from gsdeploy.zoo import create_model
from gsdeploy.zoo.layers import DReLU
from test_transforms_nets import SETTINGS, check_deploy, init

slopes = st.floats(-2.0, 2.0, allow_nan=False).filter(lambda v: abs(v) > 1e-3) | st.sampled_from([0.0, 1.0, -1.0])


class ConvDReLU(nn.Module):
    """conv -> DReLU -> (consumer): a conv, a pool then conv, or two convs."""

    def __init__(self, p: float, n: float, consumer: str) -> None:
        super().__init__()
        self.consumer = consumer
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = DReLU(p, n)
        self.c1 = nn.Conv2d(4, 5, 3, padding=1)
        self.c2 = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = self.act(self.conv(x))
        if self.consumer == "conv":
            return self.c1(y)
        if self.consumer == "two convs":
            return torch.cat([self.c1(y), self.c2(y)], 1)
        if self.consumer == "pool":
            return self.c1(F.max_pool2d(y, 2))
        return y  # graph output: nothing to fold into but the producer


@SETTINGS
@given(p=slopes, n=slopes, consumer=st.sampled_from(["conv", "two convs", "pool", "output"]),
       seed=st.integers(0, 1000))
def test_drelu_folds_exactly_for_any_slopes(p, n, consumer, seed):
    net = ConvDReLU(p, n, consumer)
    init(net, seed)
    net.act.slope_p.data.fill_(p)
    net.act.slope_n.data.fill_(n)
    r = check_deploy(net.eval(), (3, 8, 8), fuse="never")
    kinds = [type(m) for m in r.module.modules()]
    if p == 0:
        assert DReLU in kinds
        assert any(d.action == "keep" and d.layers == ["act"] for d in r.plan)
    else:
        assert DReLU not in kinds and nn.LeakyReLU in kinds
        assert r.module.get_submodule("act").negative_slope == pytest.approx(-n / p)


def _fold(net: nn.Module):
    gm = trace(net.eval())
    decisions = fold_drelu(gm, PassContext((3, 8, 8)))
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(gm(x), net(x), rtol=1e-5, atol=1e-5)
    return gm, decisions


def _muls(gm) -> int:
    return sum(1 for n in gm.graph.nodes if n.target is operator.mul)


def test_p_goes_into_consumers_when_all_are_convs():
    net = ConvDReLU(-0.8, 0.3, "two convs")
    gm, ds = _fold(net)
    assert _muls(gm) == 0 and "c1" in ds[0].reason and "c2" in ds[0].reason


def test_p_goes_into_producer_when_positive_and_consumers_are_not_convs():
    gm, ds = _fold(ConvDReLU(0.8, 0.3, "pool"))
    assert _muls(gm) == 0 and "conv" in ds[0].reason


def test_negative_p_without_conv_consumers_keeps_a_multiply():
    gm, ds = _fold(ConvDReLU(-0.8, 0.3, "pool"))
    assert _muls(gm) == 1 and "multiply" in ds[0].reason


def test_zero_p_keeps_drelu():
    gm, ds = _fold(ConvDReLU(0.0, 0.3, "conv"))
    assert isinstance(gm.get_submodule("act"), DReLU) and ds[0].action == "keep"


def test_hinge_resnet_has_no_drelu_left():
    lm = create_model("resnet20_hinge50")
    r = deploy(lm.module, lm.input_shape, DeployOptions())
    assert not any(isinstance(m, DReLU) for m in r.module.modules())
    assert sum(d.action == "fold DReLU" for d in r.plan) == 9
