"""CIFAR ResNet-20/56/110 with basic blocks, in the module layout of the official Hinge code.

Layout (so that official state_dicts load by name): features.0 = stem (conv with bias, BN,
ReLU); features.1..3 = stages of ResBlocks whose `body` is [conv1, BN, act, conv2, BN];
features.4 = AvgPool2d(8); classifier = Linear. A conv slot holds a plain conv, a Hinge pair
(Sequential of k x k and 1 x 1) or an FGA group pair, chosen by a factory.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from gsdeploy.zoo.layers import DReLU, DownsampleA, conv, FeaturesClassifier

# factory(site, cin, cout, stride) -> module; site is "s{stage}.b{block}.c{1|2}"
ConvFactory = Callable[[str, int, int, int], nn.Module]
WidthFn = Callable[[int, int], int]  # (stage, block) -> inner width of the block


def plain_conv(site: str, cin: int, cout: int, stride: int) -> nn.Module:
    return conv(cin, cout, 3, stride)


class ResBlock(nn.Module):
    def __init__(self, body: list[nn.Module], downsample: nn.Module | None) -> None:
        super().__init__()
        self.body = nn.Sequential(*body)
        self.downsample = downsample
        self.act_out = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.act_out(self.body(x) + shortcut)


class CifarResNet(FeaturesClassifier):
    """Named for repr and isinstance checks; the structure is FeaturesClassifier's."""


def blocks_per_stage(depth: int) -> int:
    if (depth - 2) % 6:
        raise ValueError(f"basic-block CIFAR ResNet depth must be 6n+2, got {depth}")
    return (depth - 2) // 6


def build_cifar_resnet(
    depth: int,
    num_classes: int = 10,
    trunk: tuple[int, int, int] = (16, 32, 64),
    inner: WidthFn | None = None,
    conv_factory: ConvFactory = plain_conv,
    act: str = "relu",
    stem_bias: bool = True,
    in_channels: int = 3,
) -> CifarResNet:
    """Basic-block CIFAR ResNet; `inner(stage, block)` narrows the middle of a block."""
    n = blocks_per_stage(depth)
    stem = nn.Sequential(conv(in_channels, trunk[0], 3, bias=stem_bias), nn.BatchNorm2d(trunk[0]), nn.ReLU())
    stages: list[nn.Module] = [stem]
    cin = trunk[0]
    for s, width in enumerate(trunk):
        blocks = []
        for b in range(n):
            stride = 2 if (s > 0 and b == 0) else 1
            mid = inner(s, b) if inner else width
            downsample = None
            if stride != 1 or cin != width:
                extra = width - cin
                downsample = DownsampleA(extra // 2, extra - extra // 2)
            body = [
                conv_factory(f"s{s}.b{b}.c1", cin, mid, stride),
                nn.BatchNorm2d(mid),
                DReLU() if act == "drelu" else nn.ReLU(),
                conv_factory(f"s{s}.b{b}.c2", mid, width, 1),
                nn.BatchNorm2d(width),
            ]
            blocks.append(ResBlock(body, downsample))
            cin = width
        stages.append(nn.Sequential(*blocks))
    stages.append(nn.AvgPool2d(8))
    return CifarResNet(nn.Sequential(*stages), nn.Linear(trunk[-1], num_classes))
