"""fold_bn: eval BatchNorm after a conv (BatchNorm1d after a Linear) folds into its weights."""

from __future__ import annotations

import torch
import torch.nn as nn
from hypothesis import given
from hypothesis import strategies as st

from gsdeploy.transforms import deploy, trace
from gsdeploy.transforms.context import PassContext
from gsdeploy.transforms.fold_bn import fold_bn
from test_transforms_nets import SETTINGS, check_deploy, init


def _randomize_bn(net: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                c = m.num_features
                if m.affine:
                    m.weight.copy_(torch.randn(c, generator=g))  # any sign, like trained BN
                    m.bias.copy_(torch.randn(c, generator=g))
                m.running_mean.copy_(torch.randn(c, generator=g))
                m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.01)


@st.composite
def conv_bn(draw):
    g = draw(st.integers(1, 3))
    cin, cout = g * draw(st.integers(1, 3)), g * draw(st.integers(1, 3))
    conv = nn.Conv2d(cin, cout, draw(st.sampled_from([1, 3])), padding=1, groups=g, bias=draw(st.booleans()),
                     stride=draw(st.sampled_from([1, 2])))
    bn = nn.BatchNorm2d(cout, affine=draw(st.booleans()), eps=draw(st.sampled_from([1e-5, 1e-3])))
    lin = nn.Linear(cout, 5, bias=draw(st.booleans()))
    net = nn.Sequential(conv, bn, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), lin, nn.BatchNorm1d(5))
    seed = draw(st.integers(0, 10_000))
    init(net, seed)
    _randomize_bn(net, seed)
    return net.eval(), (cin, 8, 8)


@SETTINGS
@given(conv_bn())
def test_bn_folds_exactly(case):
    net, shape = case
    r = check_deploy(net, shape, fuse="never")
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in r.module.modules())
    folds = [d for d in r.plan if d.action == "fold BN"]
    assert [d.layers for d in folds] == [["0", "1"], ["5", "6"]]
    assert all(d.macs_before == d.macs_after for d in folds)


def _bn_count(gm) -> int:
    return sum(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in gm.modules())


def test_bn_after_relu_stays():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4)).eval()
    _randomize_bn(net, 0)
    r = deploy(net, (3, 8, 8))
    assert _bn_count(r.module) == 1


def test_conv_with_two_users_does_not_fold():
    class TwoUsers(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    net = TwoUsers().eval()
    _randomize_bn(net, 0)
    gm = trace(net)
    assert fold_bn(gm, PassContext((3, 8, 8))) == []
    assert _bn_count(gm) == 1


def test_training_mode_bn_is_not_folded_by_the_pass():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    gm = trace(net)
    gm.get_submodule("1").train()
    assert fold_bn(gm, PassContext((3, 8, 8))) == []
