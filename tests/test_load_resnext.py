"""Official CIFAR ResNeXt-20/164 (dense and Hinge) checkpoints written by github ofsoundof/group_sparsity."""

from __future__ import annotations


import pytest

from gsdeploy.errors import ArchMismatchError
from gsdeploy.load import load_model

from conftest import rel_err_to_reference


def test_shared_hinge_resnext20_reproduces_official_output(hinge_fixtures):
    loaded = load_model(str(hinge_fixtures / "hinge_resnext20_cifar10.pt"), arch="hinge_resnext20")
    assert rel_err_to_reference(loaded, "hinge_resnext20_cifar10", hinge_fixtures) <= 1e-5
    conv2 = loaded.module.layer1[0].conv2
    # manifest: block 0 keeps 15 of 32 cardinality groups; groups derived from the weight shape
    assert (conv2.groups, conv2.out_channels, conv2.in_channels) == (15, 15, 15)


def test_shared_hinge_resnet20_reproduces_official_output(hinge_fixtures):
    loaded = load_model(str(hinge_fixtures / "hinge_resnet20_cifar10.pt"), arch="hinge_resnet20")
    assert rel_err_to_reference(loaded, "hinge_resnet20_cifar10", hinge_fixtures) <= 1e-5


def test_hinge_resnext164_reproduces_official_output(unpack):
    loaded = load_model(unpack("hinge_resnext164_cifar100"), arch="hinge_resnext164")
    assert rel_err_to_reference(loaded, "hinge_resnext164_cifar100") <= 1e-5
    groups = [b.conv2.groups for s in (1, 2, 3) for b in getattr(loaded.module, f"layer{s}")]
    assert len(groups) == 54 and max(groups) < 32 and len(set(groups)) > 1
    assert loaded.module.linear.out_features == 100


@pytest.mark.parametrize("name,arch", [("resnext20_cifar10", "resnext20"), ("resnext164_cifar10", "resnext164")])
def test_dense_resnext_reproduces_official_output(unpack, name, arch):
    loaded = load_model(unpack(name), arch=arch)
    assert rel_err_to_reference(loaded, name) <= 1e-5
    assert all(b.conv2.groups == 32 for b in loaded.module.layer3)


def test_detection_tells_dense_from_hinge_resnext_by_width(unpack, hinge_fixtures):
    # same key layout; the file thinner than the dense template is the Hinge one
    assert load_model(unpack("resnext20_cifar10")).arch == "resnext20"
    assert load_model(str(hinge_fixtures / "hinge_resnext20_cifar10.pt")).arch == "hinge_resnext20"


def test_wrong_depth_and_family_are_named(unpack):
    with pytest.raises(ArchMismatchError, match="ResNeXt-20"):
        load_model(unpack("resnext20_cifar10"), arch="resnext164")
    with pytest.raises(ArchMismatchError, match=r"layer1\.0\.conv3\.weight"):
        load_model(unpack("resnext20_cifar10"), arch="wrn")
