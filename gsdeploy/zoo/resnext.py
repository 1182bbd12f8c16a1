"""CIFAR ResNeXt (ResNeXt-20/164) in the module layout of the official Hinge code (model/resnext.py).

conv1 (1x1, 3->64, no bias), bn1, ReLU; layer1..3 of blocks {conv1 1x1, bn1, conv2 3x3 grouped (stride),
bn2, conv3 1x1, bn3, shortcut = [] or [1x1 conv (stride), BN]}; 8x8 average pool; `linear`.
A block's group width is cardinality x bottleneck width, doubling each stage; output = 2 x group width.
Hinge removes whole cardinality groups, so each block has its own number of groups.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

# (stage, block) -> (group width, groups) of the block's grouped 3x3 conv
BlockFn = Callable[[int, int], tuple[int, int]]


class ResNeXtBlock(nn.Module):
    def __init__(self, cin: int, width: int, groups: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNeXt(nn.Module):
    def __init__(self, depth: int = 20, cardinality: int = 32, bottleneck_width: int = 1, num_classes: int = 10,
                 block: BlockFn | None = None, base: int = 64, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 9:
            raise ValueError(f"CIFAR ResNeXt depth must be 9n+2, got {depth}")
        n = (depth - 2) // 9
        self.conv1 = nn.Conv2d(in_channels, base, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        cin, bw = base, bottleneck_width
        for s in range(3):
            blocks = []
            for b in range(n):
                stride = 2 if (s > 0 and b == 0) else 1
                width, groups = block(s, b) if block else (cardinality * bw, cardinality)
                cout = 2 * cardinality * bw
                blocks.append(ResNeXtBlock(cin, width, groups, cout, stride))
                cin = cout
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
            bw *= 2
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, 8)
        return self.linear(torch.flatten(out, 1))
