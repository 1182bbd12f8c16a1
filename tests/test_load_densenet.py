"""Official CIFAR DenseNet-40 (dense and Hinge SVD) checkpoints written by github ofsoundof/group_sparsity."""

from __future__ import annotations


import pytest

from gsdeploy.errors import ArchMismatchError
from gsdeploy.load import load_model

from conftest import rel_err_to_reference


def test_hinge_densenet40_reproduces_official_output(unpack):
    loaded = load_model(unpack("hinge_densenet40_cifar10"), arch="hinge_densenet40")
    assert rel_err_to_reference(loaded, "hinge_densenet40_cifar10") <= 1e-5
    body = loaded.module.features[1][5].body
    # rank-pruned 3x3 (84 -> r) then 1x1 r -> 12: the concat widths are unchanged
    assert body[2].in_channels == 24 + 5 * 12 and body[2].out_channels == body[3].in_channels < 12
    assert body[3].out_channels == 12
    trans = loaded.module.features[2]
    assert trans[2].in_channels == trans[3].out_channels == 168 and trans[2].out_channels < 168


def test_dense_densenet40_reproduces_official_output(unpack):
    loaded = load_model(unpack("densenet40_cifar100"), arch="densenet40")
    assert rel_err_to_reference(loaded, "densenet40_cifar100") <= 1e-5
    assert loaded.module.classifier.in_features == 456 and loaded.module.classifier.out_features == 100


@pytest.mark.parametrize("name,arch", [("hinge_densenet40_cifar10", "hinge_densenet40"),
                                       ("densenet40_cifar100", "densenet40")])
def test_densenet_is_detected(unpack, name, arch):
    assert load_model(unpack(name)).arch == arch


def test_cross_layout_names_tensors(unpack):
    with pytest.raises(ArchMismatchError, match=r"body\.3\.weight"):
        load_model(unpack("densenet40_cifar100"), arch="hinge_densenet40")
    with pytest.raises(ArchMismatchError, match=r"body\.3\.weight"):
        load_model(unpack("hinge_densenet40_cifar10"), arch="densenet40")
    with pytest.raises(ArchMismatchError, match=r"conv\.1\.weight"):
        load_model(unpack("hinge_densenet40_cifar10"), arch="fga_densenet40")
