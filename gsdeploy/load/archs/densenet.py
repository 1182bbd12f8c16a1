"""CIFAR DenseNet-40 (k=12, no bottleneck, reduction 1) of github ofsoundof/group_sparsity, dense and Hinge.

Read from model/densenet.py (Dense: body [BN, ReLU, 3x3 conv cin->k, no bias], output cat((x, out), 1);
Transition: [BN, ReLU, 1x1 conv, AvgPool2d(2)]; features end with BN, ReLU, AvgPool2d(8)) and
model_hinge/hinge_densenet_svd.py + hinge_densenet.modify_submodules (SVD variant: each dense layer's
body gets a 1x1 conv k->k at body.3 after the 3x3; each transition gets a 1x1 at index 3 and its pool
moves to 4; compress() removes rank only - 3x3 (or first 1x1) outputs and the 1x1 inputs - so the
concat widths never change).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from gsdeploy.load.archs.keys import indices, mismatch, need, shape
from gsdeploy.load.archs.registry import register_dense_and_hinge
from gsdeploy.zoo.densenet import build_cifar_densenet
from gsdeploy.zoo.layers import conv

SOURCE = ("github ofsoundof/group_sparsity model/densenet.py, model_hinge/hinge_densenet_svd.py, "
          "model_hinge/hinge_densenet.py (modify_submodules)")


def dense_layout(state: dict[str, torch.Tensor], arch: str, growth_key: str, trans_key: str,
                 n_expected: int | None = 12) -> dict:
    """Layers per block, growth, stem and transition widths, classes of a CIFAR DenseNet file.
    `n_expected` None: any number of layers per block (the same in all three)."""
    counts = [len(indices(state, rf"features\.{b}\.(\d+)\.body\.0\.weight$")) for b in (1, 3, 5)]
    if n_expected is None and counts[0] > 0 and counts == [counts[0]] * 3:
        n_expected = counts[0]
    if counts != [n_expected] * 3:
        raise mismatch(arch, f"dense layers per block {counts} (features.1/3/5.*.body), " + (
            f"DenseNet-{3 * n_expected + 4} has {n_expected}" if n_expected else "all three blocks need the same"))
    need(state, arch, "features.0.weight", growth_key.format(b=1), "classifier.weight")
    return dict(n_layers=n_expected, growth=shape(state, growth_key.format(b=1), arch, 4)[0],
                stem=shape(state, "features.0.weight", arch, 4)[0],
                transitions=tuple(shape(state, trans_key.format(t=t), arch, 4)[0] for t in (2, 4)),
                num_classes=shape(state, "classifier.weight", arch, 2)[0])


def _template(hinge: bool, arch: str, n_layers: int | None = 12):
    def build(state: dict[str, torch.Tensor]) -> nn.Module:
        if hinge:
            lay = dense_layout(state, arch, "features.{b}.0.body.3.weight", "features.{t}.3.weight", n_layers)
            return build_cifar_densenet(**lay, layer=lambda b, j, cin, k: [conv(cin, k, 3), conv(k, k, 1)],
                                        transition=lambda t, cin, cout: [conv(cin, cin, 1), conv(cin, cout, 1)])
        lay = dense_layout(state, arch, "features.{b}.0.body.2.weight", "features.{t}.2.weight", n_layers)
        if "features.1.0.body.3.weight" in state:
            raise mismatch(arch, "dense layers have a second conv (features.1.0.body.3.weight): "
                                 f"use --arch hinge_{arch}")
        return build_cifar_densenet(**lay)

    return build


register_dense_and_hinge(
    "densenet40", _template, source=SOURCE, dense_description="official dense CIFAR DenseNet-40 (k=12)",
    hinge_description="official Hinge DenseNet-40, SVD variant (rank-pruned 3x3 + 1x1 per layer, pairs in transitions)")
register_dense_and_hinge(
    "densenet", lambda hinge, arch: _template(hinge, arch, None), source=SOURCE, generic=True,
    dense_description="official dense CIFAR DenseNet of any depth 3n+4 (layers per block read from the file)",
    hinge_description="official Hinge CIFAR DenseNet of any depth, SVD variant (layers per block read from the file)")
