"""Official CIFAR ResNet-164 (dense and Hinge) checkpoints written by github ofsoundof/group_sparsity."""

from __future__ import annotations


import pytest

from gsdeploy.errors import ArchMismatchError
from gsdeploy.load import load_model

from conftest import rel_err_to_reference


def test_hinge_resnet164_reproduces_official_output(unpack):
    loaded = load_model(unpack("hinge_resnet164_cifar10"), arch="hinge_resnet164")
    assert rel_err_to_reference(loaded, "hinge_resnet164_cifar10") <= 1e-5
    # the two inner widths of a bottleneck come from the shapes and may differ
    inner = [(b.body[0].out_channels, b.body[3].out_channels) for s in (1, 2, 3) for b in loaded.module.features[s]]
    assert any(a != b for a, b in inner)
    assert all(a < 4 * 64 and b < 4 * 64 for a, b in inner)
    assert loaded.module.classifier.out_features == 10


def test_hinge_resnet164_is_detected(unpack):
    # running_grad_ratio is a key only the Hinge layout ignores
    assert load_model(unpack("hinge_resnet164_cifar10")).arch == "hinge_resnet164"


def test_dense_resnet164_reproduces_official_output(unpack):
    loaded = load_model(unpack("resnet164_cifar100"), arch="resnet164")
    assert rel_err_to_reference(loaded, "resnet164_cifar100") <= 1e-5
    assert loaded.module.classifier.out_features == 100


def test_dense_resnet164_is_detected_as_dense(unpack):
    # the dense and the Hinge ResNet-164 share one key layout: a full-width file is the dense one
    assert load_model(unpack("resnet164_cifar100")).arch == "resnet164"


def test_other_family_arch_names_tensors(unpack):
    with pytest.raises(ArchMismatchError, match=r"layer1\.0\.conv2\.weight"):
        load_model(unpack("hinge_resnet164_cifar10"), arch="hinge_resnext164")
    with pytest.raises(ArchMismatchError, match="residual blocks"):
        load_model(unpack("resnet164_cifar100"), arch="resnet56")
    with pytest.raises(ArchMismatchError, match=r"features\.1\.0\.body\.0\.conv\.0\.weight"):
        load_model(unpack("resnet164_cifar100"), arch="fga_resnet56")
