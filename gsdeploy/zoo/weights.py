"""Deterministic weights for zoo models: seeded, with non-trivial BatchNorm statistics.

Zoo models are for measuring speed and checking numerics, not accuracy; BN statistics and
affine parameters are random so that folding BN is really exercised.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from gsdeploy.zoo.layers import DReLU


def init_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    if any(p.is_meta for p in model.parameters()):
        return model.eval()  # architecture only (zoo listing): nothing to initialise
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(1.0 / fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.05)
            elif isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.3)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
            elif isinstance(m, DReLU):
                m.slope_p.copy_(torch.rand((), generator=g) * 0.5 + 0.75)
                m.slope_n.copy_(torch.rand((), generator=g) * 0.4 - 0.2)
    return model.eval()
