"""CIFAR DenseNet (non-bottleneck, e.g. DenseNet-40 k=12) in the module layout of the official code
(github ofsoundof/group_sparsity model/densenet.py; the FGA variant of learning_filter_basis shares it).

features.0 = 3x3 stem conv (no bias); features.1/3/5 = dense blocks of layers whose `body` is
[BN, ReLU, conv ...] and whose output is cat((x, body(x)), 1) (input first); features.2/4 = transitions
[BN, ReLU, 1x1 conv ..., AvgPool2d(2)]; features.6/7/8 = BN, ReLU, AvgPool2d(8); classifier = Linear.
What sits after the ReLU of a layer / transition is chosen by factories (plain conv, Hinge pair,
FGA group pair).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from gsdeploy.zoo.layers import conv, FeaturesClassifier

# factory(block, layer, cin, growth) -> modules after BN+ReLU; transition(t, cin, cout) -> modules before the pool
LayerFactory = Callable[[int, int, int, int], list[nn.Module]]
TransitionFactory = Callable[[int, int, int], list[nn.Module]]


class DenseLayer(nn.Module):
    def __init__(self, cin: int, body: list[nn.Module]) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), *body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x, self.body(x)), 1)


class DenseNet(FeaturesClassifier):
    """Named for repr and isinstance checks; the structure is FeaturesClassifier's."""


def plain_layer(b: int, j: int, cin: int, k: int) -> list[nn.Module]:
    return [conv(cin, k, 3)]


def plain_transition(t: int, cin: int, cout: int) -> list[nn.Module]:
    return [conv(cin, cout, 1)]


def build_cifar_densenet(n_layers: int = 12, growth: int = 12, stem: int | None = None, num_classes: int = 10,
                         transitions: tuple[int, int] | None = None, layer: LayerFactory = plain_layer,
                         transition: TransitionFactory = plain_transition, in_channels: int = 3) -> DenseNet:
    """`transitions` gives the two transition output widths (default: reduction 1, width unchanged)."""
    c = 2 * growth if stem is None else stem
    mods: list[nn.Module] = [conv(in_channels, c, 3)]
    for b in range(3):
        layers = []
        for j in range(n_layers):
            layers.append(DenseLayer(c, layer(b, j, c, growth)))
            c += growth
        mods.append(nn.Sequential(*layers))
        if b < 2:
            cout = transitions[b] if transitions else c
            mods.append(nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), *transition(b, c, cout), nn.AvgPool2d(2)))
            c = cout
    mods += [nn.BatchNorm2d(c), nn.ReLU(), nn.AvgPool2d(8)]
    return DenseNet(nn.Sequential(*mods), nn.Linear(c, num_classes))
