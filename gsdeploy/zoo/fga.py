"""FGA (filter group approximation) models in the module layout of github ofsoundof/learning_filter_basis
(model/resnet_group.py, vgg_group.py, densenet_group.py).

A conv slot becomes a module whose `conv` is a Sequential:
- ResNet: [grouped k x k conv cin->cin (stride, bias), 1x1 conv cin->cout (bias)]  (nothing between)
- VGG:    [grouped k x k conv cin->cin (bias), BN, ReLU, 1x1 conv cin->cout (bias), BN, ReLU]
- DenseNet: [k x k conv cin->k with `groups` groups (no bias), 1x1 conv k->k (no bias)]
Group sizes are per layer (the official code picks them by width), so builders take them per slot.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from gsdeploy.zoo.cifar_resnet import CifarResNet, build_cifar_resnet
from gsdeploy.zoo.densenet import DenseNet, build_cifar_densenet
from gsdeploy.zoo.layers import conv
from gsdeploy.zoo.vgg import VGG, VGG16_CFG


class GroupConv(nn.Module):
    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def resnet_group_conv(cin: int, cout: int, groups: int, stride: int = 1) -> GroupConv:
    return GroupConv([conv(cin, cin, 3, stride, bias=True, groups=groups), conv(cin, cout, 1, bias=True)])


def vgg_group_conv(cin: int, cout: int, groups: int) -> GroupConv:
    return GroupConv([conv(cin, cin, 3, bias=True, groups=groups), nn.BatchNorm2d(cin), nn.ReLU(),
                      conv(cin, cout, 1, bias=True), nn.BatchNorm2d(cout), nn.ReLU()])


def densenet_group_conv(cin: int, k: int, groups: int) -> GroupConv:
    return GroupConv([conv(cin, k, 3, groups=groups), conv(k, k, 1)])


# ResNet: groups(stage, block, conv 1|2, cin) -> number of groups of that slot's grouped conv
ResGroups = Callable[[int, int, int, int], int]


def build_fga_resnet(depth: int = 56, num_classes: int = 10, groups: ResGroups | None = None) -> CifarResNet:
    def factory(site: str, cin: int, cout: int, stride: int) -> nn.Module:
        s, b, c = (int(p[1:]) for p in site.split("."))
        g = groups(s, b, c, cin) if groups else cin // 4
        return resnet_group_conv(cin, cout, g, stride)

    return build_cifar_resnet(depth, num_classes=num_classes, conv_factory=factory, act="relu", stem_bias=True)


def build_fga_vgg16(num_classes: int = 10, groups: dict[int, int] | None = None) -> VGG:
    """`groups` maps a features index to its number of groups; indices not in it are plain
    [conv, BN, ReLU] blocks (the official 'all' decomposition keeps features.0/1/3 plain)."""
    groups = groups if groups is not None else {i: max(1, _cin(i) // 64) for i in range(4, len(VGG16_CFG))
                                                if VGG16_CFG[i] != "M"}
    layers: list[nn.Module] = []
    cin = 3
    for i, v in enumerate(VGG16_CFG):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        if i in groups:
            layers.append(vgg_group_conv(cin, int(v), groups[i]))
        else:
            layers.append(nn.Sequential(conv(cin, int(v), 3, bias=True), nn.BatchNorm2d(int(v)), nn.ReLU()))
        cin = int(v)
    return VGG(nn.Sequential(*layers), nn.Linear(cin, num_classes))


def _cin(i: int) -> int:
    prev = [v for v in VGG16_CFG[:i] if v != "M"]
    return int(prev[-1]) if prev else 3


def build_fga_densenet(n_layers: int = 12, growth: int = 12, stem: int | None = None, num_classes: int = 10,
                       transitions: tuple[int, int] | None = None,
                       groups: Callable[[int, int, int], int] | None = None) -> DenseNet:
    """`groups(block, layer, cin)` -> number of groups of the layer's grouped 3x3 (the official code uses
    3 groups while cin <= 252, else --group_size groups; the loader reads it from the weight shape)."""
    def layer(b: int, j: int, cin: int, k: int) -> list[nn.Module]:
        return [densenet_group_conv(cin, k, groups(b, j, cin) if groups else 3)]

    return build_cifar_densenet(n_layers, growth, stem, num_classes, transitions, layer=layer)
