"""Official CIFAR VGG-16 (dense and Hinge) checkpoints written by github ofsoundof/group_sparsity."""

from __future__ import annotations


import pytest

from gsdeploy.errors import ArchMismatchError
from gsdeploy.load import load_model

from conftest import rel_err_to_reference


def test_hinge_vgg16_reproduces_official_output(unpack):
    loaded = load_model(unpack("hinge_vgg16_cifar10"), arch="hinge_vgg16")
    assert rel_err_to_reference(loaded, "hinge_vgg16_cifar10") <= 1e-5
    pair = loaded.module.features[1][0]
    # rank and output pruning from the shapes: 3x3 64->r, 1x1 r->c with c < 64, bias on the 1x1
    assert pair[0].out_channels == pair[1].in_channels < 64
    assert pair[1].out_channels < 64 and pair[1].bias is not None and pair[0].bias is None
    assert len(loaded.module.classifier) == 3  # the 3-Linear classifier


def test_dense_vgg16_reproduces_official_output(unpack):
    loaded = load_model(unpack("vgg16_cifar10"), arch="vgg16")
    assert rel_err_to_reference(loaded, "vgg16_cifar10") <= 1e-5


@pytest.mark.parametrize("name,arch", [("hinge_vgg16_cifar10", "hinge_vgg16"), ("vgg16_cifar10", "vgg16")])
def test_vgg_is_detected(unpack, name, arch):
    assert load_model(unpack(name)).arch == arch


def test_cross_layout_names_tensors(unpack):
    with pytest.raises(ArchMismatchError, match=r"features\.1\.0\.0\.weight|features\.1\.0\.1\.weight"):
        load_model(unpack("vgg16_cifar10"), arch="hinge_vgg16")
    with pytest.raises(ArchMismatchError, match=r"features\.1\.0\.0\.weight|features\.1\.0\.weight"):
        load_model(unpack("hinge_vgg16_cifar10"), arch="vgg16")
