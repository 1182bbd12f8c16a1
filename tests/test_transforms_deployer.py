"""Deployer: one model deployed several ways shares the work the ways have in common, and each
deploy is exactly what deploy() makes on its own.

The sharing is what keeps a cold latency plan cheap (it deploys one model four ways); these tests
fail if it stops sharing (the original traced or run again) or if sharing changes a result.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings

import gsdeploy.transforms.deployment as deployment
from gsdeploy.transforms import Deployer, DeployOptions, deploy, verify_modules
from gsdeploy.transforms.verify import Reference
from test_transforms_nets import SETTINGS, init, random_net, well_conditioned

# as a latency plan's variants differ: fuse mode, and the restructuring ones also align widths
WAYS = [DeployOptions(fuse="never"), DeployOptions(fuse="flops"), DeployOptions(fuse="always", align=8)]


class Pairs(nn.Module):
    """Two factorized pairs with BN (rank 5 and 6) and a residual: every pass has work."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(16, 5, 3, padding=1), nn.Conv2d(5, 16, 1), nn.BatchNorm2d(16))
        self.b = nn.Sequential(nn.Conv2d(16, 6, 3, padding=1), nn.Conv2d(6, 16, 1), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(self.a(x) + x)
        x = torch.relu(self.b(x) + x)
        return self.fc(x.mean((2, 3)))


SHAPE = (3, 8, 8)


def pairs() -> nn.Module:
    m = Pairs()
    init(m, 3)
    return m.eval()


def same_result(a, b) -> None:
    assert a.plan == b.plan
    assert a.module.code == b.module.code
    sa, sb = a.module.state_dict(), b.module.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert (a.macs_before, a.macs_after, a.params_before, a.params_after) == \
        (b.macs_before, b.macs_after, b.params_before, b.params_after)
    assert (a.verification, a.fp32_error, a.threshold_error) == (b.verification, b.fp32_error, b.threshold_error)


@settings(SETTINGS, max_examples=10)  # six deploys per example
@given(random_net())
def test_each_deploy_of_a_deployer_is_what_deploy_makes(case):
    net, shape = case
    if not well_conditioned(net, shape):
        return
    deployer = Deployer(net, shape)
    for options in WAYS:
        same_result(deployer.deploy(options), deploy(net, shape, options))


def test_the_model_is_traced_and_run_once_for_all_deploys(monkeypatch):
    """The second and later deploys neither trace the original again nor run it: its outputs on
    the verification inputs, its MACs and its shape check are kept from the first."""
    m = pairs()
    traced = []
    real_trace = deployment.trace
    monkeypatch.setattr(deployment, "trace", lambda module: traced.append(1) or real_trace(module))
    runs = []
    m.register_forward_hook(lambda *args: runs.append(1))  # copies (the float64 reference) count too
    deployer = Deployer(m, SHAPE)
    first = deployer.deploy(WAYS[0])
    assert len(traced) == 1 and runs
    runs.clear()
    later = [deployer.deploy(o) for o in WAYS[1:]]
    assert len(traced) == 1 and runs == []
    assert later[-1].plan != first.plan  # the ways differ (the pairs fused in one, kept in the other)
    for r in (first, *later):
        assert r.verification.passed and verify_modules(m, r.module, SHAPE).passed


def test_plan_choices_reach_their_sites_through_a_deployer():
    m = pairs()
    options = DeployOptions(fuse="never", choices={"a.0": "fuse", "b.0": "pad:8"})
    got = Deployer(m, SHAPE).deploy(options)
    same_result(got, deploy(m, SHAPE, options))
    assert [d.action for d in got.plan if d.site == "a"] == ["fuse pair"]


def test_a_threshold_is_shared_too_and_checked_against_the_thresholded_original():
    m = pairs()
    base = DeployOptions(prune_threshold=0.05)
    deployer = Deployer(m, SHAPE, base)
    for fuse in ("never", "always"):
        options = dataclasses.replace(base, fuse=fuse)
        got = deployer.deploy(options)
        same_result(got, deploy(m, SHAPE, options))
        assert got.threshold_error is not None and got.reference is not m


def test_options_that_change_the_shared_work_are_refused():
    deployer = Deployer(pairs(), SHAPE)
    for changed in (dict(prune_threshold=0.1), dict(tolerance=1e-3), dict(seed=1), dict(verify_batches=1)):
        with pytest.raises(ValueError, match="may differ in"):
            deployer.deploy(DeployOptions(**changed))
    deployer.deploy(DeployOptions(fuse="always", strict=False), last=True)
    with pytest.raises(ValueError, match="last deploy"):
        deployer.deploy()


def test_a_reference_runs_once_per_input_for_any_number_of_candidates():
    m = pairs()
    runs = []
    m.register_forward_hook(lambda *args: runs.append(1))
    candidates = [deploy(m, SHAPE, o).module for o in WAYS]
    ref = Reference(m)
    for dtype in (torch.float64, torch.float32):
        expected = [verify_modules(m, c, SHAPE, dtype=dtype) for c in candidates]
        got = [verify_modules(ref, candidates[0], SHAPE, dtype=dtype)]
        runs.clear()
        got += [verify_modules(ref, c, SHAPE, dtype=dtype) for c in candidates[1:]]
        assert runs == []
        assert got == expected
