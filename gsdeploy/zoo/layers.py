"""Layers that the seed methods use and torch does not ship."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class DReLU(nn.Module):
    """Hinge's double ReLU: slope_p * relu(x) + slope_n * relu(-x), with learnable scalar slopes.

    Parameter names match the official code so official state_dicts load unchanged.
    """

    def __init__(self, slope_p: float = 1.0, slope_n: float = 0.0) -> None:
        super().__init__()
        self.slope_p = nn.Parameter(torch.tensor(float(slope_p)))
        self.slope_n = nn.Parameter(torch.tensor(float(slope_n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.slope_p * F.relu(x) + self.slope_n * F.relu(-x)


class DownsampleA(nn.Module):
    """Option-A shortcut of the official CIFAR ResNets: 2x2 average pool, then zero channels.

    The official module pads x.size(1)//2 channels on both sides; here the two pad widths are
    explicit ints so that the graph carries them as constants and channel pruning can shrink
    them independently.
    """

    def __init__(self, pad_before: int, pad_after: int) -> None:
        super().__init__()
        self.pad_before = int(pad_before)
        self.pad_after = int(pad_after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(x, 2)
        return F.pad(pooled, [0, 0, 0, 0, self.pad_before, self.pad_after])


class FeaturesClassifier(nn.Module):
    """The official CIFAR models' top level: `features` (a Sequential ending in a pooling that
    leaves 1x1 or a fixed size), flatten, `classifier`. The attribute names are the official keys."""

    def __init__(self, features: nn.Sequential, classifier: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def conv(cin: int, cout: int, k: int = 3, stride: int = 1, bias: bool = False, groups: int = 1) -> nn.Conv2d:
    """A 'same'-padded conv, as the official default_conv builds it."""
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=bias, groups=groups)


def hinge_pair(cin: int, rank: int, cout: int, k: int = 3, stride: int = 1, bias: bool = False) -> nn.Sequential:
    """Hinge factorization: k x k conv cin->rank, then 1x1 conv rank->cout (bias on the 1x1)."""
    return nn.Sequential(conv(cin, rank, k, stride), conv(rank, cout, 1, bias=bias))


def group_pair(cin: int, cout: int, group_size: int, k: int = 3, stride: int = 1, bias: bool = False) -> nn.Sequential:
    """FGA factorization: grouped k x k conv cin->cin (groups of `group_size` channels), then 1x1 cin->cout."""
    if cin % group_size:
        raise ValueError(f"group size {group_size} does not divide {cin} channels")
    return nn.Sequential(conv(cin, cin, k, stride, groups=cin // group_size), conv(cin, cout, 1, bias=bias))
