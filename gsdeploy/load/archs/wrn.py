"""Wide ResNet (WRN-d-k, CIFAR-10/100) of github ofsoundof/group_sparsity, dense and Hinge.

Read from model/wide_resnet.py (wide_basic: bn1, conv1 3x3 + bias, dropout, bn2, conv2 3x3 + bias with the
stride, shortcut [1x1 conv + bias]; pre-activation: conv1(relu(bn1(x))), conv2(relu(bn2(.))), + shortcut;
net: conv1, layer1..3, bn1, ReLU, avg_pool 8, linear) and model_hinge/hinge_wide_resnet.py (conv1 and
conv2 of every block become Sequential(3x3 without bias, 1x1 with the bias); compress() prunes conv1's
1x1 outputs (with bn2 and conv2's 3x3 inputs) and conv2's rank; merge_conv() folds the conv1 pair back
into one 3x3 conv with bias - that is the layout of model_merge_latest.pt).
Depth, widen factor and classes come from the keys and shapes; `hinge_wrn` takes both layouts.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from gsdeploy.load.archs.keys import count_blocks, mismatch, need, shape
from gsdeploy.load.archs.registry import register_dense_and_hinge
from gsdeploy.zoo.wrn import WideResNet

SOURCE = "github ofsoundof/group_sparsity model/wide_resnet.py, model_hinge/hinge_wide_resnet.py"


def _template(hinge: bool, arch: str):
    def build(state: dict[str, torch.Tensor]) -> nn.Module:
        n = count_blocks(state, r"layer{stage}\.(\d+)\.bn1\.weight$", arch, ["1", "2", "3"])
        need(state, arch, "conv1.weight", "linear.weight")
        classes, width = shape(state, "linear.weight", arch, 2)
        if width % 64:
            raise mismatch(arch, f"linear.weight {tuple(state['linear.weight'].shape)}: {width} inputs is not 64 x k")
        pair1 = "layer1.0.conv1.0.weight" in state
        pair2 = "layer1.0.conv2.0.weight" in state
        if not hinge and (pair1 or pair2):
            raise mismatch(arch, "layer1.0.conv1/conv2 are Hinge pairs (conv*.0/conv*.1); use --arch hinge_wrn")
        if hinge and not pair2:
            raise mismatch(arch, "missing the Hinge pair of conv2 (layer1.0.conv2.0.weight, layer1.0.conv2.1.weight)")
        return WideResNet(6 * n + 4, width // 64, classes, pair1=pair1, pair2=pair2)

    return build


register_dense_and_hinge(
    "wrn", _template, source=SOURCE, hinge_ignore=frozenset({"running_grad_ratio"}),
    dense_description="official dense Wide ResNet WRN-d-k (CIFAR; depth, k and classes from the file)",
    hinge_description="official Hinge Wide ResNet (model_latest.pt with conv1/conv2 pairs, or merged "
                      "model_merge_latest.pt with conv1 one conv)")
