"""fuse_pairs: k x k conv (any groups) -> 1 x 1 conv becomes one conv, decided by MACs or forced."""

from __future__ import annotations

import torch
import torch.nn as nn
from hypothesis import given
from hypothesis import strategies as st

from gsdeploy.transforms import DeployOptions, deploy
from gsdeploy.transforms.fuse_pairs import fused_conv
from gsdeploy.zoo import create_model
from test_transforms_nets import SETTINGS, check_deploy, init


@st.composite
def pair_net(draw):
    g = draw(st.integers(1, 4))
    cin = g * draw(st.integers(1, 3))
    mid = g * draw(st.integers(1, 4))
    cout = draw(st.integers(1, 8))
    k = draw(st.sampled_from([1, 3, 5]))
    stride = draw(st.sampled_from([1, 2]))
    dilation = draw(st.sampled_from([1, 2])) if k == 3 else 1
    padding = draw(st.integers(0, 2))
    a = nn.Conv2d(cin, mid, k, stride=stride, padding=padding, dilation=dilation, groups=g, bias=draw(st.booleans()))
    b = nn.Conv2d(mid, cout, 1, bias=draw(st.booleans()))
    net = nn.Sequential(nn.Conv2d(2, cin, 1), nn.ReLU(), nn.Sequential(a, b), nn.ReLU())
    init(net, draw(st.integers(0, 10_000)))
    return net.eval()


@SETTINGS
@given(pair_net(), st.sampled_from(["flops", "always", "never"]))
def test_pairs_fuse_exactly_and_by_the_mode(net, mode):
    r = check_deploy(net, (2, 8, 8), fuse=mode)
    pairs = [d for d in r.plan if d.layers == ["2.0", "2.1"]]
    assert len(pairs) == 1
    d = pairs[0]
    fused_macs = d.macs_after if d.action == "fuse pair" else None
    if mode == "always":
        assert d.action == "fuse pair"
    elif mode == "never":
        assert d.action == "keep"
    else:  # by FLOPs: fuse exactly when it lowers MACs
        a, b = net[2][0], net[2][1]
        pair_per_px = a.out_channels * a.in_channels // a.groups * a.kernel_size[0] ** 2 + b.out_channels * b.in_channels
        fused_per_px = b.out_channels * a.in_channels * a.kernel_size[0] ** 2
        assert (d.action == "fuse pair") == (fused_per_px < pair_per_px)
        assert "by FLOPs" in d.reason
    if fused_macs is not None:
        fused = r.module.get_submodule("2.0")
        assert fused.groups == 1 and fused.kernel_size == net[2][0].kernel_size
        assert fused.stride == net[2][0].stride and fused.padding == net[2][0].padding


def test_fused_conv_matches_pair_for_grouped_a():
    torch.manual_seed(0)
    a = nn.Conv2d(8, 12, 3, padding=1, groups=4)
    b = nn.Conv2d(12, 5, 1)
    x = torch.randn(2, 8, 9, 9)
    torch.testing.assert_close(fused_conv(a, b)(x), b(a(x)), rtol=1e-5, atol=1e-5)


def test_relu_between_is_not_a_pair():
    net = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 4, 1)).eval()
    r = deploy(net, (3, 8, 8), DeployOptions(fuse="always"))
    assert not [d for d in r.plan if d.action in ("fuse pair", "keep")]


def test_fga_resnet_pairs_follow_macs():
    lm = create_model("resnet20_fga")
    by_flops = deploy(lm.module, lm.input_shape)
    pairs = [d for d in by_flops.plan if d.action in ("fuse pair", "keep")]
    assert len(pairs) == 18
    # grouped 3x3 (group size 4) + 1x1 costs 9*4*C + C*C per pixel, the dense 3x3 9*C*C: keep all
    assert all(d.action == "keep" and d.reason.startswith("by FLOPs") for d in pairs)
    assert by_flops.macs_after == by_flops.macs_before
    always = deploy(lm.module, lm.input_shape, DeployOptions(fuse="always"))
    assert sum(d.action == "fuse pair" for d in always.plan) == 18
    # grouped 3x3 + 1x1 is cheaper than the dense 3x3 it fuses to: fusing raises MACs
    assert always.macs_after > by_flops.macs_after
    assert not any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in always.module.modules())
