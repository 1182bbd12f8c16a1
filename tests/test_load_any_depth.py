"""Where the official code takes depth as a parameter, the loader reads it from the file: a CIFAR
ResNet-110, a bottleneck ResNet-56, a ResNeXt-29, a DenseNet-22 or an FGA ResNet-20 load without a
template of their own (auto-detected), and a named layout still wins where one fits."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from gsdeploy.errors import ArchMismatchError
from gsdeploy.load import load_model
from gsdeploy.zoo import create_model
from gsdeploy.zoo.densenet import build_cifar_densenet
from gsdeploy.zoo.fga import build_fga_resnet
from gsdeploy.zoo.resnet164 import build_cifar_bottleneck_resnet
from gsdeploy.zoo.resnext import ResNeXt
from gsdeploy.zoo.weights import init_weights


def _roundtrip(model: nn.Module, tmp_path, arch: str | None = None):
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    loaded = load_model(str(path), arch=arch)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
        err = float((loaded.module(x) - ref).abs().max() / ref.abs().max())
    return loaded, err


@pytest.mark.parametrize("build, arch", [
    (lambda: create_model("resnet110").module, "resnet"),
    (lambda: create_model("resnet110_hinge50").module, "hinge_resnet"),
    (lambda: init_weights(build_cifar_bottleneck_resnet(56), 1), "resnet_bottleneck"),
    (lambda: init_weights(ResNeXt(29, cardinality=4, bottleneck_width=2), 2), "resnext"),
    (lambda: init_weights(build_cifar_densenet(n_layers=6), 3), "densenet"),
    (lambda: init_weights(build_fga_resnet(20), 4), "fga_resnet"),
])
def test_depth_is_read_from_the_file(tmp_path, build, arch):
    model = build().eval()
    loaded, err = _roundtrip(model, tmp_path)
    assert loaded.arch == arch and err < 1e-6


def test_a_named_depth_still_wins_and_still_checks(tmp_path):
    loaded, err = _roundtrip(create_model("resnet20").module, tmp_path)
    assert loaded.arch == "resnet20" and err < 1e-6
    with pytest.raises(ArchMismatchError, match="ResNet-110"):
        _roundtrip(create_model("resnet110").module, tmp_path, arch="resnet56")
    with pytest.raises(ArchMismatchError, match="bottleneck"):
        _roundtrip(init_weights(build_cifar_bottleneck_resnet(56), 1), tmp_path, arch="resnet")
