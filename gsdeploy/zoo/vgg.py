"""CIFAR VGG-16 with BN, in the module layout of the official Hinge code.

features.i = Sequential(conv, BN, ReLU) or MaxPool2d; classifier = Linear, or three Linear
layers with nothing between them (the official 'linear3' template the Hinge VGG uses).
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from gsdeploy.zoo.layers import conv, FeaturesClassifier

VGG16_CFG: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]

# factory(index in cfg, cin, cout) -> conv module (plain conv, Hinge pair, group pair)
VggConvFactory = Callable[[int, int, int], nn.Module]


class VGG(FeaturesClassifier):
    """Named for repr and isinstance checks; the structure is FeaturesClassifier's."""


def build_vgg16(
    num_classes: int = 10,
    widths: list[int] | None = None,
    conv_factory: VggConvFactory | None = None,
    linear3: bool = True,
    bias: bool = True,
    in_channels: int = 3,
) -> VGG:
    """`widths` overrides the 13 conv widths (channel pruning); `conv_factory` the conv slots."""
    convs = [v for v in VGG16_CFG if v != "M"]
    widths = list(widths) if widths is not None else list(convs)
    if len(widths) != len(convs):
        raise ValueError(f"VGG-16 has {len(convs)} convs, got {len(widths)} widths")
    layers: list[nn.Module] = []
    cin, j = in_channels, 0
    for i, v in enumerate(VGG16_CFG):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        cout = widths[j]
        c = conv_factory(i, cin, cout) if conv_factory else conv(cin, cout, 3, bias=bias)
        layers.append(nn.Sequential(c, nn.BatchNorm2d(cout), nn.ReLU()))
        cin, j = cout, j + 1
    if linear3:
        classifier: nn.Module = nn.Sequential(nn.Linear(cin, cin), nn.Linear(cin, cin), nn.Linear(cin, num_classes))
    else:
        classifier = nn.Linear(cin, num_classes)
    return VGG(nn.Sequential(*layers), classifier)
