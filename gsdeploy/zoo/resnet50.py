"""ImageNet ResNet-50 in the torchvision key layout (conv1, bn1, layer1.0.conv1, ..., downsample.0/1,
fc), with the inner widths of each bottleneck optionally narrowed (channel pruning)."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

from gsdeploy.zoo.torchvision_resnet import TorchvisionResNet, standard_stages

BLOCKS = [3, 4, 6, 3]

InnerFn = Callable[[int, int, int], int]  # (stage, block, planes) -> inner width


def build_resnet50(num_classes: int = 1000, inner: InnerFn | None = None, in_channels: int = 3) -> TorchvisionResNet:
    stages = standard_stages(BLOCKS, bottleneck=True)
    if inner is not None:
        stages = [[replace(b, widths=(mid, mid, b.widths[2]))
                   for j, b in enumerate(stage) for mid in [inner(s, j, b.widths[0])]]
                  for s, stage in enumerate(stages)]
    return TorchvisionResNet(stages, num_classes=num_classes, in_channels=in_channels)
