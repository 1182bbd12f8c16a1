"""Wide ResNet (WRN-d-k, CIFAR) in the module layout of the official Hinge code (model/wide_resnet.py).

Pre-activation blocks: out = conv1(relu(bn1(x))); out = conv2(relu(bn2(out))) (stride on conv2);
out + shortcut(x), shortcut = [] or [1x1 conv with bias (stride)]; no ReLU after the add.
Net: conv1 (3x3, 3->16, bias), layer1..3, bn1, ReLU, 8x8 average pool, `linear`.
Every conv has a bias. In the Hinge model each block conv is a pair (k x k without bias, 1x1 with
bias); the merged checkpoint (model_merge_latest.pt) has conv1 merged back into one 3x3 conv with bias.
(The official Dropout sits after conv1; it is the identity at inference and is left out.)
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gsdeploy.zoo.layers import conv


def _slot(cin: int, cout: int, stride: int, pair: bool) -> nn.Module:
    if pair:
        return nn.Sequential(conv(cin, cout, 3, stride), conv(cout, cout, 1, bias=True))
    return conv(cin, cout, 3, stride, bias=True)


class WideBasic(nn.Module):
    def __init__(self, cin: int, planes: int, stride: int, pair1: bool = False, pair2: bool = False,
                 mid: int | None = None) -> None:
        super().__init__()
        mid = planes if mid is None else mid
        self.bn1 = nn.BatchNorm2d(cin)
        if pair1:
            self.conv1 = nn.Sequential(conv(cin, planes, 3), conv(planes, mid, 1, bias=True))
        else:
            self.conv1 = conv(cin, mid, 3, bias=True)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = _slot(mid, planes, stride, pair2)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, planes, 1, stride=stride, bias=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + self.shortcut(x)


class WideResNet(nn.Module):
    def __init__(self, depth: int = 16, widen_factor: int = 2, num_classes: int = 10, pair1: bool = False,
                 pair2: bool = False, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"Wide ResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = conv(in_channels, widths[0], 3, bias=True)
        cin = widths[0]
        for s in range(3):
            blocks = []
            for b in range(n):
                stride = 2 if (s > 0 and b == 0) else 1
                blocks.append(WideBasic(cin, widths[s + 1], stride, pair1, pair2))
                cin = widths[s + 1]
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.bn1 = nn.BatchNorm2d(cin)
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        out = F.avg_pool2d(F.relu(self.bn1(out)), 8)
        return self.linear(torch.flatten(out, 1))
