"""FGA group models written by github ofsoundof/learning_filter_basis (resnet_group, vgg_group, densenet_group)."""

from __future__ import annotations


import pytest
import torch

from gsdeploy.errors import ArchMismatchError
from gsdeploy.load import load_model

from conftest import rel_err_to_reference


def test_fga_resnet56_reproduces_official_output(unpack):
    loaded = load_model(unpack("fga_resnet56_cifar10"), arch="fga_resnet56")
    assert rel_err_to_reference(loaded, "fga_resnet56_cifar10") <= 1e-5
    f = loaded.module.features
    # group size 4 in the 16/32 stages, 8 (--group_size) in the 64 stage, read from the shapes
    assert f[1][0].body[0].conv[0].groups == 16 // 4
    assert f[3][1].body[0].conv[0].groups == 64 // 8
    assert f[3][0].body[0].conv[0].groups == 32 // 8 and f[3][0].body[0].conv[0].stride == (2, 2)


def test_fga_vgg16_reproduces_official_output(unpack):
    loaded = load_model(unpack("fga_vgg16_cifar10"), arch="fga_vgg16")
    assert rel_err_to_reference(loaded, "fga_vgg16_cifar10") <= 1e-5
    assert loaded.module.features[14].conv[0].groups == 512 // 64
    assert isinstance(loaded.module.features[3], torch.nn.Sequential)  # plain block before the groups start


def test_fga_densenet40_reproduces_official_output(unpack):
    loaded = load_model(unpack("fga_densenet40_cifar10"), arch="fga_densenet40")
    assert rel_err_to_reference(loaded, "fga_densenet40_cifar10") <= 1e-5
    f = loaded.module.features
    assert f[1][0].body[2].conv[0].groups == 3      # cin <= 252: 3 groups
    assert f[5][11].body[2].conv[0].groups == 6     # cin 444 > 252: --group_size 6 groups


@pytest.mark.parametrize("name,arch", [("fga_resnet56_cifar10", "fga_resnet56"), ("fga_vgg16_cifar10", "fga_vgg16"),
                                       ("fga_densenet40_cifar10", "fga_densenet40")])
def test_fga_is_detected(unpack, name, arch):
    assert load_model(unpack(name)).arch == arch


def test_other_family_arch_names_tensors(unpack):
    with pytest.raises(ArchMismatchError, match=r"body\.0\.conv\.0\.weight|body\.0\.0\.weight"):
        load_model(unpack("fga_resnet56_cifar10"), arch="hinge_resnet56")
    with pytest.raises(ArchMismatchError, match=r"features\.4\.0\.weight|conv\.0\.weight"):
        load_model(unpack("fga_vgg16_cifar10"), arch="vgg16")
    with pytest.raises(ArchMismatchError, match=r"features\.1\.0\.body\.2\.weight"):
        load_model(unpack("fga_densenet40_cifar10"), arch="densenet40")
