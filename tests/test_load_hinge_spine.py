"""Official Hinge ResNet-20 checkpoint (written by github ofsoundof/group_sparsity) loads exactly."""

from __future__ import annotations

import torch
import pytest

from gsdeploy.errors import ArchMismatchError, LoadError
from gsdeploy.load import load_model


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return float((y - ref).abs().max() / ref.abs().max())


def test_official_resnet20_reproduces_reference(hinge_fixtures):
    loaded = load_model(str(hinge_fixtures / "hinge_resnet20_cifar10.pt"), arch="hinge_resnet20")
    ref = torch.load(hinge_fixtures / "hinge_resnet20_cifar10.ref.pt", weights_only=True)
    with torch.no_grad():
        y = loaded.module(ref["input"])
    assert rel_err(y, ref["output"]) <= 1e-5
    # pruned ranks come from the shapes: block 0's first pair keeps 6 of 16 (manifest: 16 -> 10 removed)
    assert loaded.module.features[1][0].body[0][0].out_channels == 6
    assert loaded.sha256 and len(loaded.sha256) == 64


def test_arch_is_detected_from_keys(hinge_fixtures):
    assert load_model(str(hinge_fixtures / "hinge_resnet20_cifar10.pt")).arch == "hinge_resnet20"


def test_wrong_depth_is_named(hinge_fixtures):
    with pytest.raises(ArchMismatchError, match="ResNet-20"):
        load_model(str(hinge_fixtures / "hinge_resnet20_cifar10.pt"), arch="hinge_resnet56")


def test_dense_arch_on_hinge_file_names_tensors(hinge_fixtures):
    with pytest.raises(ArchMismatchError, match="body.0.0.weight|body.0.1.weight"):
        load_model(str(hinge_fixtures / "hinge_resnet20_cifar10.pt"), arch="resnet20")


def test_other_family_file_is_refused(hinge_fixtures):
    with pytest.raises(LoadError):
        load_model(str(hinge_fixtures / "hinge_resnext20_cifar10.pt"), arch="hinge_resnet20")


def test_dense_official_layout_roundtrip(tmp_path):
    """A dense state_dict in the official key layout (what model/resnet.py saves) loads by --arch resnet56."""
    from gsdeploy.zoo import create_model

    m = create_model("resnet56").module
    path = tmp_path / "resnet56.pt"
    torch.save(m.state_dict(), path)
    loaded = load_model(str(path), arch="resnet56")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert rel_err(loaded.module(x), m(x)) <= 1e-6
