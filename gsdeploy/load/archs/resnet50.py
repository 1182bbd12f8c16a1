"""ImageNet ResNet-50 in the common (torchvision) key layout, as DWGL-pruned ResNet-50s are saved.

DWGL (arXiv 1910.09318) has no public code; its pruned ResNet-50 keeps this layout with pruned filters
present as zeros (transforms remove them) or physically removed (narrower tensors: shapes are taken
from the file, trunk and inner widths alike). Keys: conv1, bn1, layer{1..4}.{b}.conv{1,2,3}/bn{1,2,3},
layer{s}.0.downsample.0/1, fc.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from gsdeploy.load.archs.keys import indices, mismatch, need, shape
from gsdeploy.load.archs.registry import OfficialArch, register_arch
from gsdeploy.zoo.resnet50 import STAGES, ResNet50


def _template(state: dict[str, torch.Tensor]) -> nn.Module:
    arch = "resnet50"
    need(state, arch, "conv1.weight", "bn1.weight", "fc.weight")
    counts = [len(indices(state, rf"layer{s + 1}\.(\d+)\.conv1\.weight$")) for s in range(4)]
    expected = [blocks for _, blocks, _ in STAGES]
    if counts != expected:
        raise mismatch(arch, f"bottleneck blocks per stage {counts} (layerN.*.conv1.weight), ResNet-50 has {expected}")
    classes = shape(state, "fc.weight", arch, 2)[0]
    in_channels = shape(state, "conv1.weight", arch, 4)[1]
    return ResNet50(num_classes=classes, in_channels=in_channels)


register_arch(OfficialArch(
    name="resnet50", template=_template, input_shape=(3, 224, 224),
    description="ImageNet ResNet-50, torchvision key layout (conv1, layer1.0.conv1, downsample.0/1, fc); "
                "DWGL-pruned ones with zero filters or narrower tensors",
    source="torchvision.models.resnet key layout (DWGL, arXiv 1910.09318: no public code)"))
