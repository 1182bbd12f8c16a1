"""FGA group models (Peng et al., ECCV 2018) in the layout of github ofsoundof/learning_filter_basis.

Read from image_classification/model/resnet_group.py (ResBlock_Group: body = [BasicBlock(grouped 3x3
cin->cin with bias, 1x1 cin->planes with bias), BN, ReLU, BasicBlock, BN]; stem common.BasicBlock
[conv with bias, BN, ReLU]; option-A shortcuts; group size 4 in the 16/32 stages, --group_size in the
64 stage), vgg_group.py (features.0/1/3 plain [conv, BN, ReLU]; later convs [grouped 3x3 cin->cin + bias,
BN, ReLU, 1x1 + bias, BN, ReLU]; one Linear) and densenet_group.py (dense layer body = [BN, ReLU,
BasicBlock(3x3 cin->k with `groups` groups, 1x1 k->k), no biases]; plain transitions).
The number of groups of every grouped conv is read from its weight shape: cin // weight.shape[1].
"""

from __future__ import annotations

import torch
import torch.nn as nn

from gsdeploy.load.archs.densenet import dense_layout
from gsdeploy.load.archs.keys import count_blocks, mismatch, need, shape
from gsdeploy.load.archs.registry import OfficialArch, register_arch
from gsdeploy.zoo.fga import build_fga_densenet, build_fga_resnet, build_fga_vgg16
from gsdeploy.zoo.vgg import VGG16_CFG

SOURCE = "github ofsoundof/learning_filter_basis image_classification/model/{}"


def _groups(state: dict[str, torch.Tensor], key: str, cin: int, arch: str) -> int:
    per_group = shape(state, key, arch, 4)[1]
    if per_group == 0 or cin % per_group:
        raise mismatch(arch, f"{key} {tuple(state[key].shape)} does not divide {cin} input channels into groups")
    return cin // per_group


def _resnet(arch: str, depth: int | None):
    def build(state: dict[str, torch.Tensor]) -> nn.Module:
        n = count_blocks(state, r"features\.{stage}\.(\d+)\.body\.0\.conv\.0\.weight$", arch, ["1", "2", "3"])
        if depth is not None and n != (depth - 2) // 6:
            raise mismatch(arch, f"it has {3 * n} residual blocks, --arch {arch} needs {3 * ((depth - 2) // 6)}")
        classes = shape(state, "classifier.weight", arch, 2)[0]

        def groups(s: int, b: int, c: int, cin: int) -> int:
            return _groups(state, f"features.{s + 1}.{b}.body.{0 if c == 1 else 3}.conv.0.weight", cin, arch)

        return build_fga_resnet(6 * n + 2, classes, groups)

    return build


def _vgg(state: dict[str, torch.Tensor]) -> nn.Module:
    arch = "fga_vgg16"
    classes = shape(state, "classifier.weight", arch, 2)[0]
    groups, cin = {}, 3
    for i, v in enumerate(VGG16_CFG):
        if v == "M":
            continue
        if f"features.{i}.conv.0.weight" in state:
            groups[i] = _groups(state, f"features.{i}.conv.0.weight", cin, arch)
        else:
            need(state, arch, f"features.{i}.0.weight")
        cin = int(v)
    if not groups:
        raise mismatch(arch, "no grouped conv (features.N.conv.0.weight): a plain VGG-16 is --arch vgg16")
    return build_fga_vgg16(classes, groups)


def _densenet(arch: str, n_layers: int | None):
    def build(state: dict[str, torch.Tensor]) -> nn.Module:
        lay = dense_layout(state, arch, "features.{b}.0.body.2.conv.1.weight", "features.{t}.2.weight", n_layers)

        def groups(b: int, j: int, cin: int) -> int:
            return _groups(state, f"features.{2 * b + 1}.{j}.body.2.conv.0.weight", cin, arch)

        return build_fga_densenet(**lay, groups=groups)

    return build


register_arch(OfficialArch(
    name="fga_resnet56", template=_resnet("fga_resnet56", 56), input_shape=(3, 32, 32),
    description="FGA ResNet-56 (grouped 3x3 + 1x1 pairs, no BN between; group size from the file)",
    baseline_arch="resnet56", source=SOURCE.format("resnet_group.py")))
register_arch(OfficialArch(
    name="fga_vgg16", template=_vgg, input_shape=(3, 32, 32),
    description="FGA VGG-16 (grouped 3x3, BN, ReLU, 1x1; group size from the file)", baseline_arch="vgg16",
    source=SOURCE.format("vgg_group.py")))
register_arch(OfficialArch(
    name="fga_densenet40", template=_densenet("fga_densenet40", 12), input_shape=(3, 32, 32),
    description="FGA DenseNet-40 (grouped 3x3 + 1x1 per dense layer; groups from the file)",
    baseline_arch="densenet40", source=SOURCE.format("densenet_group.py")))
register_arch(OfficialArch(
    name="fga_resnet", template=_resnet("fga_resnet", None), input_shape=(3, 32, 32),
    description="FGA CIFAR ResNet of any depth 6n+2 (depth and groups read from the file)", baseline_arch="resnet",
    source=SOURCE.format("resnet_group.py"), generic=True))
register_arch(OfficialArch(
    name="fga_densenet", template=_densenet("fga_densenet", None), input_shape=(3, 32, 32),
    description="FGA CIFAR DenseNet of any depth (layers per block and groups read from the file)",
    baseline_arch="densenet", source=SOURCE.format("densenet_group.py"), generic=True))
