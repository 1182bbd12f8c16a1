"""CIFAR ResNet-164 (bottleneck) of github ofsoundof/group_sparsity, dense and Hinge.

Read from model/resnet.py (ResNet with depth > 56 -> BottleNeck, DownSampleC since downsample_type
defaults to 'C'; scripts pass --no_bias, so the stem conv has no bias) and
model_hinge/hinge_resnet_bottleneck.py (Hinge: no extra 1x1; the bottleneck's own 1x1 convs are the
sparse matrices; compress() thins body.0 outputs and body.6 inputs independently, so the two inner
widths of a block may differ; the 0-dim buffer `running_grad_ratio` is saved once training set it).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from gsdeploy.load.archs.keys import count_blocks, mismatch, shape
from gsdeploy.load.archs.registry import register_dense_and_hinge
from gsdeploy.zoo.resnet164 import build_cifar_bottleneck_resnet

SOURCE = ("github ofsoundof/group_sparsity model/resnet.py (BottleNeck, DownSampleC), "
          "model_hinge/hinge_resnet_bottleneck.py")


def _template(depth: int | None, arch: str):
    def build(state: dict[str, torch.Tensor]) -> nn.Module:
        n = count_blocks(state, r"features\.{stage}\.(\d+)\.body\.0\.weight$", arch, ["1", "2", "3"])
        if depth is None and not any(k.endswith(".body.7.weight") for k in state):
            raise mismatch(arch, "its blocks are not bottlenecks (no body.7); use --arch resnet")
        if depth is not None and n != (depth - 2) // 9:
            raise mismatch(arch, f"it has {3 * n} bottleneck blocks (ResNet-{9 * n + 2}), "
                                 f"--arch {arch} needs {3 * ((depth - 2) // 9)}")
        classes = shape(state, "classifier.weight", arch, 2)[0]
        return build_cifar_bottleneck_resnet(9 * n + 2, num_classes=classes, stem_bias=False)

    return build


register_dense_and_hinge(
    "resnet164", lambda hinge, arch: _template(164, arch), source=SOURCE, hinge_ignore=frozenset({"running_grad_ratio"}),
    dense_description="official dense CIFAR ResNet-164 (bottleneck, downsample C)",
    hinge_description="official Hinge ResNet-164 (thinner bottleneck inner widths)")
register_dense_and_hinge(
    "resnet_bottleneck", lambda hinge, arch: _template(None, arch), source=SOURCE, generic=True,
    hinge_ignore=frozenset({"running_grad_ratio"}),
    dense_description="official dense CIFAR bottleneck ResNet of any depth 9n+2 (depth read from the file)",
    hinge_description="official Hinge CIFAR bottleneck ResNet of any depth 9n+2 (depth read from the file)")
