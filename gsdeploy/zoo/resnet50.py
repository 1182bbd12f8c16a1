"""ImageNet ResNet-50 in the common (torchvision) key layout: conv1, bn1, layer1.0.conv1, ...,
downsample.0/1, fc. Inner widths of each bottleneck can be narrowed (channel pruning)."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (planes, blocks, stride)
EXPANSION = 4

InnerFn = Callable[[int, int, int], int]  # (stage, block, planes) -> inner width


class Bottleneck(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet50(nn.Module):
    def __init__(self, num_classes: int = 1000, inner: InnerFn | None = None, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = 64
        for s, (planes, blocks, stride) in enumerate(STAGES):
            layer = []
            for b in range(blocks):
                st = stride if b == 0 else 1
                cout = planes * EXPANSION
                ds = None
                if st != 1 or cin != cout:
                    ds = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=st, bias=False), nn.BatchNorm2d(cout))
                mid = inner(s, b, planes) if inner else planes
                layer.append(Bottleneck(cin, mid, cout, st, ds))
                cin = cout
            setattr(self, f"layer{s + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))
