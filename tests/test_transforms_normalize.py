"""normalize: functional and torch.export (aten) graphs meet the same passes as nn.Module graphs."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings

from gsdeploy.transforms import deploy, trace, verify_modules
from gsdeploy.transforms.context import PassContext
from gsdeploy.transforms.normalize import normalize
from gsdeploy.zoo import create_model
from test_transforms_nets import init, random_net, well_conditioned


class Functional(nn.Module):
    """The same net twice: with modules, and with F.* calls on parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        y = F.conv2d(x, self.conv.weight, self.conv.bias, 1, 1, 1, 1)
        y = F.batch_norm(y, self.bn.running_mean, self.bn.running_var, self.bn.weight, self.bn.bias, False, 0.1, 1e-5)
        y = F.max_pool2d(F.relu(y), 2)
        return F.linear(y.view(y.size(0), -1), self.fc.weight, self.fc.bias)


def _zero_filter(net: Functional) -> None:
    with torch.no_grad():
        net.bn.weight[[1, 4]] = 0
        net.bn.bias[[1, 4]] = 0


def test_functional_calls_become_modules():
    net = Functional().eval()
    init(net, 0)
    gm = trace(net)
    normalize(gm, PassContext((3, 8, 8)))
    kinds = {type(gm.get_submodule(n.target)) for n in gm.graph.nodes if n.op == "call_module"}
    assert {nn.Conv2d, nn.BatchNorm2d, nn.Linear} <= kinds
    assert not [n for n in gm.graph.nodes if n.target in (F.conv2d, F.linear, F.batch_norm)]
    assert any(n.target is torch.flatten for n in gm.graph.nodes)  # the view(N, -1) was a flatten
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(gm(x), net(x))


def test_functional_net_prunes_like_a_module_net():
    net = Functional().eval()
    init(net, 0)
    _zero_filter(net)
    r = deploy(net, (3, 8, 8))
    convs = [m for m in r.module.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 and convs[0].out_channels == 4
    fcs = [m for m in r.module.modules() if isinstance(m, nn.Linear)]
    assert len(fcs) == 1 and fcs[0].in_features == 4 * 16


def _export(module: nn.Module, shape, decompose: bool) -> nn.Module:
    ep = torch.export.export(module, (torch.randn(1, *shape),))
    return (ep.run_decompositions() if decompose else ep).module()


@pytest.mark.parametrize("decompose", [False, True])
def test_exported_program_deploys_like_the_module(decompose):
    lm = create_model("resnet20_dwgl_masked")
    compact = create_model("resnet20_dwgl")
    exported = _export(lm.module, lm.input_shape, decompose)
    r = deploy(exported, lm.input_shape)
    ref = deploy(compact.module, compact.input_shape)
    assert r.macs_after == ref.macs_after
    assert not any(isinstance(m, nn.BatchNorm2d) for m in r.module.modules())
    v = verify_modules(lm.module, r.module, lm.input_shape)
    assert v.max_rel_err <= 1e-5


def test_exported_linear_chain_folds():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 10), nn.Linear(10, 10), nn.Linear(10, 3)).eval()
    r = deploy(_export(net, (12, 1, 1), decompose=True), (12, 1, 1))
    assert sum(isinstance(m, nn.Linear) for m in r.module.modules()) == 1


def test_unknown_aten_ops_are_opaque():
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            y = self.conv(x)
            return torch.roll(y, 1, dims=1)  # moves channels: not understood, so nothing is cut

    net = Odd().eval()
    with torch.no_grad():
        net.conv.weight[2] = 0
        net.conv.bias[2] = 0
    r = deploy(_export(net, (3, 8, 8), decompose=True), (3, 8, 8))
    assert [m.out_channels for m in r.module.modules() if isinstance(m, nn.Conv2d)] == [4]


def test_exported_hinge_model_gets_its_drelu_folded():
    lm = create_model("resnet20_hinge50")
    r = deploy(_export(lm.module, lm.input_shape, decompose=True), lm.input_shape)
    ref = deploy(lm.module, lm.input_shape)
    assert sum(d.action == "fold DReLU" for d in r.plan) == 9
    assert (r.macs_after, r.params_after) == (ref.macs_after, ref.params_after)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_net(max_steps=3))
def test_exported_random_nets_deploy_like_their_modules(case):
    net, shape = case
    assume(well_conditioned(net, shape))
    r = deploy(_export(net, shape, decompose=True), shape)
    ref = deploy(net, shape)
    assert r.macs_after == ref.macs_after
    assert verify_modules(net, r.module, shape).max_rel_err <= 1e-5
