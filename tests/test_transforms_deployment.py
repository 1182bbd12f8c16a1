"""deploy(): its contract — never mutates, verifies, refuses on mismatch, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.fx as fx
import torch.nn as nn

from gsdeploy.errors import InputShapeError, NumericMismatchError
from gsdeploy.inputs import sample_inputs
from gsdeploy.numerics import compare_outputs
from gsdeploy.transforms import ACTIONS, DeployOptions, TraceError, deploy, trace, verify_modules
from gsdeploy.transforms import deployment
from gsdeploy.zoo import create_model
from gsdeploy.zoo.layers import DReLU
from test_transforms_nets import init


def small() -> nn.Module:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), DReLU(0.9, -0.1), nn.Conv2d(4, 2, 1))
    init(net, 0)
    return net.eval()


def test_deploy_does_not_mutate_the_module():
    net = small()
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    r = deploy(net, (3, 8, 8))
    assert net.training  # training flags put back
    after = net.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(net[2], DReLU)
    assert isinstance(r.module, fx.GraphModule) and not r.module.training
    assert all(p.dtype == torch.float32 for p in r.module.parameters())


def test_result_fields_on_hinge_resnet():
    lm = create_model("resnet20_hinge50")
    r = deploy(lm.module, lm.input_shape)
    assert r.verification.passed and r.verification.max_rel_err <= 1e-5
    assert r.threshold_error is None
    assert r.macs_after <= r.macs_before and r.params_after < r.params_before
    assert {d.action for d in r.plan} <= set(ACTIONS)
    keep = [d for d in r.plan if d.action == "keep" and d.site == "features.1.0.body.0"]
    assert keep and keep[0].shape_before == "3x3 16->7 + 1x1 7->16" and "by FLOPs" in keep[0].reason


def test_numeric_mismatch_is_an_error_with_both_numbers(monkeypatch):
    def corrupt(gm, ctx):
        for m in gm.modules():
            if isinstance(m, nn.Conv2d):
                with torch.no_grad():
                    m.weight.mul_(1.01)
                break
        return []

    monkeypatch.setattr(deployment, "STRUCTURAL_PASSES", deployment.STRUCTURAL_PASSES + (corrupt,))
    with pytest.raises(NumericMismatchError) as e:
        deploy(small(), (3, 8, 8))
    msg = str(e.value)
    assert "max relative error" in msg and "exceeds tolerance 1e-05" in msg and "max abs" in msg


def test_wrong_input_shape_is_one_clear_line():
    with pytest.raises(InputShapeError) as e:
        deploy(small(), (5, 8, 8))
    assert "(5, 8, 8)" in str(e.value) and "\n" not in str(e.value)


def test_compare_outputs_is_relative_to_output_scale():
    ref = np.array([[10.0, -20.0], [0.0, 5.0]])
    v = compare_outputs(ref, ref + np.array([[0.0, 0.0], [0.002, 0.0]]), 1e-5)
    assert v.max_abs_err == pytest.approx(0.002) and v.max_rel_err == pytest.approx(1e-4) and not v.passed
    v = compare_outputs((torch.ones(2), torch.zeros(3)), (torch.ones(2), torch.zeros(3)), 1e-5)
    assert v.passed and v.max_rel_err == 0.0


def test_verify_modules_catches_a_change():
    a, b = small(), small()
    with torch.no_grad():
        b[3].bias.add_(1e-3)
    assert verify_modules(a, a, (3, 8, 8)).passed
    assert not verify_modules(a, b, (3, 8, 8)).passed


def test_inputs_are_randn_and_image_like():
    xs = sample_inputs((3, 16, 16), batch=2, seed=0)
    assert len(xs) == 2 and all(x.shape == (2, 3, 16, 16) for x in xs)
    noise, smooth = xs
    # neighbouring pixels of the image-like input are strongly correlated, unlike randn
    def corr(x):
        return torch.corrcoef(torch.stack([x[..., :-1].flatten(), x[..., 1:].flatten()]))[0, 1]
    assert corr(smooth) > 0.6 and abs(corr(noise)) < 0.2
    assert torch.equal(sample_inputs((3, 16, 16), 2, 0)[1], smooth)


class Untraceable(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow
            return x * 2
        return x


def test_trace_keeps_drelu_and_untraceable_submodules_as_leaves():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), DReLU(), Untraceable(), nn.Conv2d(4, 2, 1)).eval()
    gm = trace(net)
    leaves = [type(gm.get_submodule(n.target)) for n in gm.graph.nodes if n.op == "call_module"]
    assert leaves == [nn.Conv2d, DReLU, Untraceable, nn.Conv2d]
    with torch.no_grad():
        net[0].weight[1] = 0
        net[0].bias[1] = 0
    r = deploy(net, (3, 8, 8))  # the opaque leaf pins its channels: nothing is cut across it
    assert r.module.get_submodule("0").out_channels == 4


def test_untraceable_model_is_a_trace_error():
    with pytest.raises(TraceError):
        trace(Untraceable())


def test_threshold_result_reports_both_errors():
    net = small()
    with torch.no_grad():
        net[3].weight[:, 1] = 1e-6
    r = deploy(net, (3, 8, 8), DeployOptions(prune_threshold=1e-4))
    assert r.module.get_submodule("3").in_channels == 3
    assert r.threshold_error is not None and r.threshold_error.max_rel_err > 0
    assert r.verification.passed


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_a_model_in_another_float_type_deploys_as_float32(dtype):
    """Weights in float64/float16/bfloat16 are deployed as the float32 model every deployment is,
    not refused as an input shape the model 'cannot take' (the float32 input met other weights)."""
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 1))
    init(net, 0)
    with torch.no_grad():
        net[0].weight[2] = 0
        net[0].bias[2] = 0
        net[1].weight[2] = net[1].bias[2] = 0
    net = net.eval().to(dtype)
    r = deploy(net, (3, 5, 7))
    assert r.verification.passed and all(p.dtype == torch.float32 for p in r.module.parameters())
    assert r.module.get_submodule("0").out_channels == 5
    assert all(p.dtype == dtype for p in net.parameters()) and not net.training  # the caller's module as it was
