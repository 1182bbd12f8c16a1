"""--fuse latency: each candidate pair is timed against its fused conv and the faster form is kept."""

from __future__ import annotations

import re

import torch
import torch.nn as nn

from gsdeploy.transforms import DeployOptions, deploy


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(8, 3, 3, padding=1), nn.Conv2d(3, 8, 1),  # thin pair: few MACs
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=4), nn.Conv2d(8, 16, 1),  # grouped pair
        nn.ReLU(),
    ).eval()


def test_latency_mode_follows_its_own_measurements():
    r = deploy(net(), (8, 16, 16), DeployOptions(fuse="latency"))
    timed = [d for d in r.plan if d.reason.startswith("by latency")]
    assert len(timed) == 2
    for d in timed:
        pair_us, fused_us = map(float, re.findall(r"pair ([\d.]+) us vs fused ([\d.]+) us", d.reason)[0])
        assert d.action == ("fuse pair" if fused_us < pair_us else "keep")
    assert r.verification.passed and r.verification.max_rel_err <= 1e-5
    assert next(r.module.parameters()).dtype == torch.float32
    assert torch.get_default_dtype() == torch.float32


def test_identical_sites_are_timed_once(monkeypatch):
    from gsdeploy.transforms import latency

    calls = []
    real = latency.PairTimer._measure

    def counting(self, *args):
        calls.append(args[-1])
        return real(self, *args)

    monkeypatch.setattr(latency.PairTimer, "_measure", counting)
    twice = nn.Sequential(nn.Conv2d(8, 3, 3, padding=1), nn.Conv2d(3, 8, 1), nn.ReLU(),
                          nn.Conv2d(8, 3, 3, padding=1), nn.Conv2d(3, 8, 1)).eval()
    deploy(twice, (8, 8, 8), DeployOptions(fuse="latency"))
    assert len(calls) == 1
