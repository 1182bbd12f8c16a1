"""The torchvision ResNet family (ResNet-18/34/50/101/152, ResNeXt, Wide ResNet) in its key layout,
built block by block from per-block widths: conv1, bn1, layer{1..4}.{b}.conv{1,2[,3]}/bn{...},
layer{s}.{b}.downsample.0/1, fc.

torchvision's conventions that no tensor records: a 7x7/2 stem conv and a 3x3/2 max pool; stage 1
keeps the resolution and stages 2-4 halve it in their first block (on the 3x3 conv: the "v1.5"
bottleneck); ReLU after bn1/bn2 and after the residual add.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class BlockSpec:
    """One residual block. `widths`: output channels of conv1, conv2[, conv3] (the last is the block's
    output); `groups` of the 3x3 conv of a bottleneck; `downsample`: a 1x1 conv + BN shortcut."""

    bottleneck: bool
    cin: int
    widths: tuple[int, ...]
    groups: int = 1
    stride: int = 1
    downsample: bool = False


def _shortcut(s: BlockSpec, cout: int) -> nn.Sequential | None:
    """torchvision's `downsample`: a strided 1x1 conv + BN where the block changes shape, else None."""
    if not s.downsample:
        return None
    return nn.Sequential(nn.Conv2d(s.cin, cout, 1, stride=s.stride, bias=False), nn.BatchNorm2d(cout))


class _Residual(nn.Module):
    """How both block types end: the body's output plus the (downsampled) input, then ReLU."""

    relu: nn.ReLU
    downsample: nn.Sequential | None

    def add_shortcut(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class BasicBlock(_Residual):
    def __init__(self, s: BlockSpec) -> None:
        super().__init__()
        mid, cout = s.widths
        self.conv1 = nn.Conv2d(s.cin, mid, 3, stride=s.stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = _shortcut(s, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.add_shortcut(x, self.bn2(self.conv2(out)))


class Bottleneck(_Residual):
    def __init__(self, s: BlockSpec) -> None:
        super().__init__()
        mid1, mid2, cout = s.widths
        self.conv1 = nn.Conv2d(s.cin, mid1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid1)
        self.conv2 = nn.Conv2d(mid1, mid2, 3, stride=s.stride, padding=1, groups=s.groups, bias=False)
        self.bn2 = nn.BatchNorm2d(mid2)
        self.conv3 = nn.Conv2d(mid2, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = _shortcut(s, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.add_shortcut(x, self.bn3(self.conv3(out)))


class TorchvisionResNet(nn.Module):
    def __init__(self, stages: list[list[BlockSpec]], stem: int = 64, in_channels: int = 3,
                 num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        for i, blocks in enumerate(stages):
            setattr(self, f"layer{i + 1}",
                    nn.Sequential(*[(Bottleneck if b.bottleneck else BasicBlock)(b) for b in blocks]))
        self.n_stages = len(stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        last = stages[-1][-1].widths[-1]
        self.fc = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.n_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def standard_stages(blocks: list[int], bottleneck: bool, groups: int = 1, width_per_group: int = 64,
                    stem: int = 64) -> list[list[BlockSpec]]:
    """The dense torchvision configuration: ResNet-18 is ([2, 2, 2, 2], False), ResNet-50
    ([3, 4, 6, 3], True), resnext50_32x4d ([3, 4, 6, 3], True, 32, 4), wide_resnet50_2
    ([3, 4, 6, 3], True, 1, 128)."""
    stages, cin = [], stem
    for s, n in enumerate(blocks):
        planes = 64 * 2 ** s
        cout = planes * (4 if bottleneck else 1)
        stage = []
        for b in range(n):
            stride = 2 if s > 0 and b == 0 else 1
            if bottleneck:
                width = int(planes * width_per_group / 64) * groups
                widths: tuple[int, ...] = (width, width, cout)
            else:
                widths = (planes, cout)
            stage.append(BlockSpec(bottleneck, cin, widths, groups if bottleneck else 1, stride,
                                   downsample=stride != 1 or cin != cout))
            cin = cout
        stages.append(stage)
    return stages
