"""Official Wide ResNet checkpoints (dense; Hinge unmerged and merged) written by github ofsoundof/group_sparsity."""

from __future__ import annotations


import pytest
import torch

from gsdeploy.errors import ArchMismatchError
from gsdeploy.load import load_model

from conftest import rel_err_to_reference


def test_hinge_wrn_unmerged_reproduces_official_output(unpack):
    loaded = load_model(unpack("hinge_wrn16_2_cifar100"), arch="hinge_wrn")
    assert rel_err_to_reference(loaded, "hinge_wrn16_2_cifar100") <= 1e-5
    blk = loaded.module.layer2[0]
    # conv1 pair: full-width 3x3 then pruned 1x1 outputs; conv2 pair: rank-pruned
    assert blk.conv1[0].out_channels == 64 and blk.conv1[1].out_channels < 64
    assert blk.conv2[0].out_channels < 64 and blk.conv2[1].out_channels == 64
    assert loaded.module.linear.out_features == 100


def test_hinge_wrn_merged_reproduces_official_output(unpack):
    loaded = load_model(unpack("hinge_wrn_merge16_2_cifar100"), arch="hinge_wrn")
    assert rel_err_to_reference(loaded, "hinge_wrn_merge16_2_cifar100") <= 1e-5
    conv1 = loaded.module.layer2[0].conv1
    assert isinstance(conv1, torch.nn.Conv2d) and conv1.kernel_size == (3, 3) and conv1.bias is not None


def test_dense_wrn_16_4_reproduces_official_output(unpack):
    loaded = load_model(unpack("wrn16_4_cifar10"), arch="wrn")
    assert rel_err_to_reference(loaded, "wrn16_4_cifar10") <= 1e-5
    assert loaded.module.linear.in_features == 256 and loaded.module.linear.out_features == 10


@pytest.mark.parametrize("name,arch", [("hinge_wrn16_2_cifar100", "hinge_wrn"),
                                       ("hinge_wrn_merge16_2_cifar100", "hinge_wrn"), ("wrn16_4_cifar10", "wrn")])
def test_wrn_is_detected(unpack, name, arch):
    assert load_model(unpack(name)).arch == arch


def test_cross_layout_names_tensors(unpack):
    with pytest.raises(ArchMismatchError, match=r"conv2\.0\.weight"):
        load_model(unpack("wrn16_4_cifar10"), arch="hinge_wrn")
    with pytest.raises(ArchMismatchError, match=r"conv1\.0\.weight|hinge_wrn"):
        load_model(unpack("hinge_wrn16_2_cifar100"), arch="wrn")
    with pytest.raises(ArchMismatchError, match=r"features\."):
        load_model(unpack("wrn16_4_cifar10"), arch="densenet40")
