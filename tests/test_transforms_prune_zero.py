"""prune_zero: dead channels go physically, coupled across adds, concats, pads, groups, flatten."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given

from gsdeploy.transforms import DeployOptions, deploy, verify_modules
from gsdeploy.zoo import create_model
from test_transforms_nets import SETTINGS, channels_of, check_deploy, random_net


@SETTINGS
@given(random_net())
def test_random_nets_prune_exactly(case):
    net, shape = case
    check_deploy(net, shape, fuse="never")


@SETTINGS
@given(random_net())
def test_random_nets_flops_mode_never_raises_macs(case):
    net, shape = case
    check_deploy(net, shape, fuse="flops")


# ---- coupling, one rule at a time ----------------------------------------------------------


class Residual(nn.Module):
    """x -> conv a -> + conv b(x) -> relu: both convs feed one add."""

    def __init__(self, c: int = 6) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, c, 3, padding=1)
        self.b = nn.Conv2d(3, c, 1)
        self.head = nn.Conv2d(c, 4, 1)

    def forward(self, x):
        return self.head(F.relu(self.a(x) + self.b(x)))


def _zero_rows(conv: nn.Conv2d, rows: list[int]) -> None:
    with torch.no_grad():
        conv.weight[rows] = 0
        if conv.bias is not None:
            conv.bias[rows] = 0


def test_channel_zero_in_only_some_addends_is_kept():
    net = Residual().eval()
    _zero_rows(net.a, [1, 4])  # only one producer of the add: the add still carries b's values
    r = deploy(net, (3, 8, 8))
    w = channels_of(r.module)
    assert w["a"][0] == 6 and w["b"][0] == 6 and w["head"][1] == 6


def test_channel_zero_in_every_addend_goes():
    net = Residual().eval()
    _zero_rows(net.a, [1, 4, 5])
    _zero_rows(net.b, [1, 4])  # the DWGL intersection: channels 1 and 4
    r = deploy(net, (3, 8, 8))
    w = channels_of(r.module)
    assert w["a"][0] == 4 and w["b"][0] == 4 and w["head"][1] == 4
    assert r.macs_after < r.macs_before


def test_channel_unused_by_every_consumer_goes_across_add():
    net = Residual().eval()
    with torch.no_grad():
        net.head.weight[:, [0, 2]] = 0  # the only consumer ignores channels 0 and 2
    r = deploy(net, (3, 8, 8))
    assert channels_of(r.module)["a"][0] == 4


def test_nonzero_bias_keeps_a_zero_filter():
    net = Residual().eval()
    _zero_rows(net.a, [3])
    _zero_rows(net.b, [3])
    with torch.no_grad():
        net.b.bias[3] = 0.5  # the channel is a constant, not zero
    r = deploy(net, (3, 8, 8))
    assert channels_of(r.module)["a"][0] == 6


class CatNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 3, 3, padding=1)
        self.b = nn.Conv2d(2, 4, 1)
        self.head = nn.Conv2d(7, 2, 1)

    def forward(self, x):
        return self.head(torch.cat([self.a(x), self.b(x)], 1))


def test_concat_maps_channels_to_their_source():
    net = CatNet().eval()
    _zero_rows(net.a, [2])
    with torch.no_grad():
        net.head.weight[:, [3, 6]] = 0  # b's channels 0 and 3
    r = deploy(net, (2, 8, 8))
    w = channels_of(r.module)
    assert w["a"][0] == 2 and w["b"][0] == 2 and w["head"][1] == 4


class PadNet(nn.Module):
    """Option-A shortcut: avg pool + channel zero pad, added to a strided body."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        s = self.stem(x)
        y = F.relu(self.body(s) + F.pad(F.avg_pool2d(s, 2), [0, 0, 0, 0, 2, 2]))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def test_channel_pad_shrinks_with_surviving_channels():
    net = PadNet().eval()
    _zero_rows(net.stem, [1, 3])
    _zero_rows(net.body, [0, 3, 5, 7])  # 0: pad-before (pad writes 0 too); 3, 5: stem 1, 3; 7: pad-after
    r = deploy(net, (3, 8, 8))
    w = channels_of(r.module)
    assert w["stem"][0] == 2 and w["body"][0] == 4 and w["head"][1] == 4
    pads = [n.args[1] for n in r.module.graph.nodes if n.target is F.pad]
    assert pads == [[0, 0, 0, 0, 1, 1]]


class FlatNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1, stride=2)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.conv(x)), 1))


def test_flatten_to_linear_slices_columns_in_blocks():
    net = FlatNet().eval()
    _zero_rows(net.conv, [1])
    with torch.no_grad():
        net.fc.weight[:, 3 * 16:4 * 16] = 0  # channel 3's whole block of 16 features
        net.fc.weight[:, 0:8] = 0  # half of channel 0's block: channel 0 stays
    r = deploy(net, (2, 8, 8))
    w = channels_of(r.module)
    assert w["conv"][0] == 2 and w["fc"][1] == 2 * 16


class GroupedNet(nn.Module):
    """ResNeXt-like: 1x1 -> grouped 3x3 (4 groups) -> 1x1."""

    def __init__(self, g: int = 4) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(3, 2 * g, 1, bias=False)
        self.grouped = nn.Conv2d(2 * g, 3 * g, 3, padding=1, groups=g, bias=False)
        self.expand = nn.Conv2d(3 * g, 5, 1)

    def forward(self, x):
        return self.expand(F.relu(self.grouped(F.relu(self.reduce(x)))))


def test_grouped_conv_loses_whole_groups_only():
    net = GroupedNet().eval()
    _zero_rows(net.reduce, [2, 3])  # group 1's inputs are zero ...
    with torch.no_grad():
        net.expand.weight[:, 3:6] = 0  # ... and nobody reads group 1's outputs: group 1 goes
        net.expand.weight[:, 9:11] = 0  # only part of group 3's outputs: group 3 stays whole
    _zero_rows(net.reduce, [4])  # half of group 2's inputs: group 2 stays whole
    r = deploy(net, (3, 8, 8))
    g = r.module.get_submodule("grouped")
    assert g.groups == 3 and g.in_channels == 6 and g.out_channels == 9
    assert channels_of(r.module)["reduce"][0] == 6 and channels_of(r.module)["expand"][1] == 9


def test_depthwise_conv_drops_dead_channels():
    net = nn.Sequential(nn.Conv2d(3, 6, 1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1, groups=6), nn.ReLU(),
                        nn.Conv2d(6, 2, 1)).eval()
    _zero_rows(net[0], [0, 5])
    _zero_rows(net[2], [0, 5])
    r = deploy(net, (3, 8, 8))
    dw = r.module.get_submodule("2")
    assert dw.groups == 4 and dw.weight.shape == (4, 1, 3, 3)


def test_graph_output_channels_are_pinned():
    net = nn.Sequential(nn.Conv2d(3, 4, 1)).eval()
    _zero_rows(net[0], [1])
    r = deploy(net, (3, 8, 8))
    assert r.module(torch.randn(1, 3, 8, 8)).shape[1] == 4


def test_unknown_op_pins_channels():
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)
            self.head = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            y = self.conv(x)
            return self.head(y * torch.sigmoid(y.mean(1, keepdim=True)))  # mixes channels: not understood

    net = Odd().eval()
    _zero_rows(net.conv, [1])
    r = deploy(net, (3, 8, 8))
    assert channels_of(r.module)["conv"][0] == 4


def test_threshold_removes_near_zero_groups_and_reports_its_error():
    net = Residual().eval()
    with torch.no_grad():
        net.head.weight[:, [0, 2]] *= 1e-4  # near-zero input columns: not exact zeros
    exact = deploy(net, (3, 8, 8))
    assert channels_of(exact.module)["a"][0] == 6
    r = deploy(net, (3, 8, 8), DeployOptions(prune_threshold=1e-3))
    assert channels_of(r.module)["a"][0] == 4
    assert r.threshold_error is not None and 0 < r.threshold_error.max_rel_err < 1e-2
    assert r.verification.max_rel_err <= 1e-5  # deployed vs the thresholded original: exact


# ---- the zoo's masked checkpoints deploy to their compressed twins ------------------------------


def _twins(masked: str, compact: str, shape=None):
    a, b = create_model(masked), create_model(compact)
    shape = shape or a.input_shape
    ra, rb = deploy(a.module, shape), deploy(b.module, shape)
    assert ra.macs_after == rb.macs_after
    assert ra.params_after == rb.params_after
    assert ra.macs_before > rb.macs_before
    v = verify_modules(rb.module, ra.module, shape)
    assert v.max_rel_err <= 1e-5, v
    return ra, rb


@pytest.mark.parametrize("masked,compact", [
    ("resnet20_pruned50_masked", "resnet20_pruned50"),
    ("resnet20_hinge50_masked", "resnet20_hinge50"),
    ("resnet20_dwgl_masked", "resnet20_dwgl"),
])
def test_masked_zoo_model_deploys_like_its_compact_twin(masked, compact):
    _twins(masked, compact)


@pytest.mark.slow
def test_masked_resnet50_deploys_like_its_compact_twin():
    _twins("resnet50_pruned50_masked", "resnet50_pruned50", (3, 64, 64))
