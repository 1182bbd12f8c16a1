"""CIFAR VGG-16 (BN) of github ofsoundof/group_sparsity, dense and Hinge.

Read from model/vgg.py (features.i = common.BasicBlock [conv with bias, BN, ReLU] or MaxPool2d; the
'linear3' template gives classifier = three Linear layers with nothing between them, else one Linear)
and model_hinge/hinge_vgg.py (every BasicBlock but the first: conv -> Sequential(3x3 conv without bias,
1x1 conv with the bias); compress() removes rank (1x1 inputs / 3x3 outputs) and output channels
(1x1 outputs, BN, next 3x3 inputs) except for the last conv).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from gsdeploy.load.archs.keys import mismatch, need, shape
from gsdeploy.load.archs.registry import register_dense_and_hinge
from gsdeploy.zoo.layers import conv, hinge_pair
from gsdeploy.zoo.vgg import VGG16_CFG, build_vgg16

SOURCE = "github ofsoundof/group_sparsity model/vgg.py, model_hinge/hinge_vgg.py"

_CONV_IDX = [i for i, v in enumerate(VGG16_CFG) if v != "M"]


def _classifier(state: dict[str, torch.Tensor], arch: str) -> tuple[bool, int]:
    if "classifier.2.weight" in state:
        need(state, arch, "classifier.0.weight", "classifier.1.weight")
        return True, shape(state, "classifier.2.weight", arch, 2)[0]
    if "classifier.weight" in state:
        return False, shape(state, "classifier.weight", arch, 2)[0]
    raise mismatch(arch, "missing the classifier (classifier.weight or classifier.0/1/2.weight)")


def _template(hinge: bool, arch: str):
    def build(state: dict[str, torch.Tensor]) -> nn.Module:
        # the conv slots must be where VGG-16 has them (13 convs, 5 pools)
        slots = sorted({int(k.split(".")[1]) for k in state
                        if k.startswith("features.") and k.endswith("1.running_mean")})
        if slots != _CONV_IDX:
            raise mismatch(arch, f"BN layers at features.{slots} but VGG-16 has them at features.{_CONV_IDX}")
        linear3, classes = _classifier(state, arch)

        def factory(i: int, cin: int, cout: int) -> nn.Module:
            if hinge and i > 0:
                return hinge_pair(cin, cout, cout, 3, bias=True)
            return conv(cin, cout, 3, bias=True)

        return build_vgg16(num_classes=classes, conv_factory=factory, linear3=linear3)

    return build


register_dense_and_hinge(
    "vgg16", _template, source=SOURCE, dense_description="official dense CIFAR VGG-16 (BN; 1 or 3 Linear classifier)",
    hinge_description="official Hinge VGG-16 (pairs with rank and output pruning; 3-Linear classifier)")
