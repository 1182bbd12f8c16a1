"""CIFAR ResNet-20/56 (basic blocks, option-A shortcuts) of github ofsoundof/group_sparsity.

Read from model/resnet.py (ResNet, ResBlock, DownSampleA) and model_hinge/hinge_resnet_basic_svd.py
(Hinge: every body conv becomes Sequential(k x k conv, 1 x 1 conv), body.2 becomes DReLU with
slope_p/slope_n). Keys: features.0.{0,1} stem conv (bias) + BN; features.{1,2,3}.{b}.body.{0,1,2,3,4};
classifier. The Hinge model registers a 0-dim buffer `running_grad_ratio` that loaders ignore.
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn

from gsdeploy.load.archs.keys import mismatch, shape
from gsdeploy.load.archs.registry import register_dense_and_hinge
from gsdeploy.zoo.cifar_resnet import build_cifar_resnet, plain_conv
from gsdeploy.zoo.layers import hinge_pair

SOURCE = "github ofsoundof/group_sparsity model/resnet.py, model_hinge/hinge_resnet_basic_svd.py"


def _check_depth(state: dict[str, torch.Tensor], depth: int | None, arch: str) -> int:
    """The depth of the file's network; with `depth` given, it must be that one."""
    blocks = {m.group(1, 2) for k in state if (m := re.match(r"features\.(\d)\.(\d+)\.body\.", k))}
    if depth is None:  # read it: 3 stages of n basic blocks
        if any(re.match(r"features\.\d\.\d+\.body\.7\.", k) for k in state):
            raise mismatch(arch, "it has bottleneck blocks (body.7); use --arch resnet_bottleneck")
        depth = 6 * (len(blocks) // 3) + 2
    n = (depth - 2) // 6
    expected = {(str(s), str(b)) for s in (1, 2, 3) for b in range(n)}
    if blocks != expected:
        per_stage = len(blocks) // 3 if blocks else 0
        bottleneck = any(re.match(r"features\.\d\.\d+\.body\.7\.", k) for k in state)
        if blocks and len(blocks) % 3 == 0:
            found = f"ResNet-{9 * per_stage + 2} with bottleneck blocks" if bottleneck else f"ResNet-{6 * per_stage + 2}"
        else:
            found = f"{len(blocks)} residual blocks"
        raise mismatch(arch, f"it has {found}, "
                             f"--arch {arch} needs {3 * n} residual blocks")
    return depth


def _template(depth: int | None, hinge: bool, arch: str):
    def build(state: dict[str, torch.Tensor]) -> nn.Module:
        found = _check_depth(state, depth, arch)

        def pair(site: str, cin: int, cout: int, stride: int) -> nn.Module:
            return hinge_pair(cin, cout, cout, 3, stride)

        return build_cifar_resnet(found, num_classes=shape(state, "classifier.weight", arch, 2)[0],
                                  conv_factory=pair if hinge else plain_conv,
                                  act="drelu" if hinge else "relu")

    return build


for _depth in (20, 56):
    register_dense_and_hinge(
        f"resnet{_depth}", lambda hinge, arch, d=_depth: _template(d, hinge, arch), source=SOURCE,
        hinge_ignore=frozenset({"running_grad_ratio"}),
        dense_description=f"official dense CIFAR ResNet-{_depth} (option A)",
        hinge_description=f"official Hinge ResNet-{_depth} (SVD pairs + DReLU)")

# Depth is a parameter of the official code (--depth): these read it from the file (any 6n+2).
register_dense_and_hinge(
    "resnet", lambda hinge, arch: _template(None, hinge, arch), source=SOURCE, generic=True,
    hinge_ignore=frozenset({"running_grad_ratio"}),
    dense_description="official dense CIFAR ResNet of any depth 6n+2 (option A; depth read from the file)",
    hinge_description="official Hinge CIFAR ResNet of any depth 6n+2 (SVD pairs + DReLU; depth read from the file)")
