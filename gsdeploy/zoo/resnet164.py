"""CIFAR bottleneck ResNet (ResNet-164) in the module layout of the official Hinge code.

Layout (official model/resnet.py with depth > 56, downsample type C, `--no_bias` stem):
features.0 = stem (3x3 conv, BN, ReLU); features.1..3 = stages of bottlenecks whose `body` is
[1x1 conv, BN, ReLU, 3x3 conv (stride), BN, ReLU, 1x1 conv, BN]; the first block of each stage has
`downsample` = [1x1 conv (stride), BN]; features.4 = AvgPool2d(8); classifier = Linear.
Hinge ResNet-164 keeps this layout and only thins the two inner widths of a block (they may differ).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from gsdeploy.zoo.cifar_resnet import CifarResNet
from gsdeploy.zoo.layers import conv

EXPANSION = 4
InnerFn = Callable[[int, int, int], tuple[int, int]]  # (stage, block, planes) -> (mid1, mid2)


class Bottleneck(nn.Module):
    def __init__(self, cin: int, mid1: int, mid2: int, cout: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv(cin, mid1, 1), nn.BatchNorm2d(mid1), nn.ReLU(),
            conv(mid1, mid2, 3, stride), nn.BatchNorm2d(mid2), nn.ReLU(),
            conv(mid2, cout, 1), nn.BatchNorm2d(cout),
        )
        self.downsample = downsample
        self.act_out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act_out(self.body(x) + shortcut)


def build_cifar_bottleneck_resnet(depth: int = 164, num_classes: int = 10, inner: InnerFn | None = None,
                                  stem_bias: bool = False, in_channels: int = 3) -> CifarResNet:
    if (depth - 2) % 9:
        raise ValueError(f"bottleneck CIFAR ResNet depth must be 9n+2, got {depth}")
    n = (depth - 2) // 9
    stages: list[nn.Module] = [nn.Sequential(conv(in_channels, 16, 3, bias=stem_bias), nn.BatchNorm2d(16), nn.ReLU())]
    cin = 16
    for s, planes in enumerate((16, 32, 64)):
        blocks = []
        cout = planes * EXPANSION
        for b in range(n):
            stride = 2 if (s > 0 and b == 0) else 1
            ds = None
            if stride != 1 or cin != cout:
                ds = nn.Sequential(conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))
            mid1, mid2 = inner(s, b, planes) if inner else (planes, planes)
            blocks.append(Bottleneck(cin, mid1, mid2, cout, stride, ds))
            cin = cout
        stages.append(nn.Sequential(*blocks))
    stages.append(nn.AvgPool2d(8))
    return CifarResNet(nn.Sequential(*stages), nn.Linear(cin, num_classes))
