"""CIFAR ResNeXt-20/164 of github ofsoundof/group_sparsity, dense and Hinge.

Read from model/resnext.py (Block: conv1/bn1/conv2 grouped/bn2/conv3/bn3/shortcut; ResNeXt: conv1 1x1,
bn1, layer1..3, avg_pool 8, linear; scripts: cardinality 32, bottleneck width 1) and
model_hinge/hinge_resnext.py (Hinge removes whole cardinality groups: conv1 outputs, bn1, conv2, bn2,
conv3 inputs; set_channels derives groups = out_channels // weight.shape[1] of the grouped conv).
The template is built block by block from the file's grouped-conv shapes, so every block gets its own
number of groups.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from gsdeploy.load.archs.keys import count_blocks, mismatch, shape
from gsdeploy.load.archs.registry import register_dense_and_hinge
from gsdeploy.zoo.resnext import ResNeXt

SOURCE = "github ofsoundof/group_sparsity model/resnext.py, model_hinge/hinge_resnext.py"


def _template(depth: int | None, arch: str):
    def build(state: dict[str, torch.Tensor]) -> nn.Module:
        n = count_blocks(state, r"layer{stage}\.(\d+)\.conv2\.weight$", arch, ["1", "2", "3"])
        if depth is not None and n != (depth - 2) // 9:
            raise mismatch(arch, f"it has {3 * n} blocks (ResNeXt-{9 * n + 2}), --arch {arch} needs "
                                 f"{3 * ((depth - 2) // 9)}")
        specs = {}
        for s in range(3):
            for b in range(n):
                key = f"layer{s + 1}.{b}.conv2.weight"
                out, per_group = shape(state, key, arch, 4)[:2]
                if per_group == 0 or out % per_group:
                    raise mismatch(arch, f"{key} {tuple(state[key].shape)} is not a grouped conv")
                specs[(s, b)] = (out, out // per_group)
        # cardinality x bottleneck width of the dense net: from the last stage's block output width
        cout = shape(state, "linear.weight", arch, 2)[1]
        classes = state["linear.weight"].shape[0]
        return ResNeXt(9 * n + 2, cardinality=1, bottleneck_width=max(1, cout // 8), num_classes=classes,
                       block=lambda s, b: specs[(s, b)])

    return build


for _depth in (20, 164):
    register_dense_and_hinge(
        f"resnext{_depth}", lambda hinge, arch, d=_depth: _template(d, arch), source=SOURCE,
        dense_description=f"official dense CIFAR ResNeXt-{_depth} (32 x 1d)",
        hinge_description=f"official Hinge ResNeXt-{_depth} (whole cardinality groups removed)")
register_dense_and_hinge(
    "resnext", lambda hinge, arch: _template(None, arch), source=SOURCE, generic=True,
    dense_description="official dense CIFAR ResNeXt of any depth 9n+2 (depth and groups read from the file)",
    hinge_description="official Hinge CIFAR ResNeXt of any depth 9n+2 (whole cardinality groups removed)")
