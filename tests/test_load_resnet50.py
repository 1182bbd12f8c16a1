"""DWGL-pruned residual networks: pruned filters present as zeros, or physically removed.

DWGL has no public code. The CIFAR ResNet-56 fixture is the official dense ResNet-56 of
github ofsoundof/group_sparsity (model/resnet.py, option A) run by the official code with DWGL-style
coupled zeros written by the generator (manifest.json). The ResNet-50 checkpoints here are CONSTRUCTED
in the test from gsdeploy's own ResNet-50 (torchvision key layout), not written by any official code.
"""

from __future__ import annotations


import pytest
import torch
import torch.nn as nn

from gsdeploy.errors import ArchMismatchError
from gsdeploy.load import load_model

from conftest import rel_err_to_reference
from gsdeploy.zoo.resnet50 import build_resnet50


def test_dwgl_resnet56_zero_filters_reproduce_official_output(unpack):
    loaded = load_model(unpack("dwgl_resnet56_cifar10"), arch="resnet56")
    assert rel_err_to_reference(loaded, "dwgl_resnet56_cifar10") <= 1e-5
    # the zeroed filters are still present: full widths
    assert loaded.module.features[3][0].body[3].out_channels == 64
    assert load_model(unpack("dwgl_resnet56_cifar10")).arch == "resnet56"


def _dwgl_resnet50(classes: int = 10) -> tuple[nn.Module, dict[int, int]]:
    """A ResNet-50 whose high-index trunk channels are zero in every addend of each stage (DWGL's
    deploy shape) and whose inner widths are already narrower; returns it and the kept trunk widths."""
    torch.manual_seed(0)
    model = build_resnet50(num_classes=classes, inner=lambda s, b, planes: planes // 2).eval()
    keep = {0: 200, 1: 384, 2: 768, 3: 1536}
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        for s in range(4):
            layer = getattr(model, f"layer{s + 1}")
            for b, blk in enumerate(layer):
                for conv, bn in [(blk.conv3, blk.bn3)] + ([(blk.downsample[0], blk.downsample[1])] if b == 0 else []):
                    conv.weight[keep[s]:] = 0
                    bn.weight[keep[s]:] = 0
                    bn.bias[keep[s]:] = 0
    return model, keep


def _narrow(state: dict[str, torch.Tensor], keep: dict[int, int]) -> dict[str, torch.Tensor]:
    """Physically remove the dead trunk channels: producers' outputs, consumers' inputs, fc inputs."""
    out = {}
    for k, v in state.items():
        parts = k.split(".")
        if k.startswith("layer"):
            s, b = int(parts[0][5:]) - 1, int(parts[1])
            if parts[2] in ("conv3", "bn3") or parts[2] == "downsample":
                v = v[: keep[s]] if v.dim() >= 1 else v
            if parts[2] == "conv1" or (parts[2] == "downsample" and parts[3] == "0"):
                src = s if b > 0 else s - 1
                if src >= 0:
                    v = v[:, : keep[src]]
        elif k == "fc.weight":
            v = v[:, : keep[3]]
        out[k] = v.clone()
    return out


def test_resnet50_with_zero_filters_loads(tmp_path):
    model, _ = _dwgl_resnet50()
    path = tmp_path / "dwgl_resnet50_zeros.pt"
    torch.save(model.state_dict(), path)
    loaded = load_model(str(path), arch="resnet50", input_shape=(3, 64, 64))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y, ref = loaded.module(x), model(x)
    assert float((y - ref).abs().max() / ref.abs().max()) <= 1e-5
    assert loaded.module.fc.out_features == 10  # classes from fc.weight
    assert loaded.input_shape == (3, 64, 64)


def test_physically_narrower_resnet50_loads_and_matches(tmp_path):
    model, keep = _dwgl_resnet50()
    path = tmp_path / "dwgl_resnet50_narrow.pt"
    torch.save(_narrow(model.state_dict(), keep), path)
    loaded = load_model(str(path), input_shape=(3, 64, 64))  # detected from the keys
    assert loaded.arch == "resnet50"
    assert loaded.module.layer4[2].conv3.out_channels == 1536 and loaded.module.fc.in_features == 1536
    assert loaded.module.layer2[0].conv1.in_channels == 200
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y, ref = loaded.module(x), model(x)
    assert float((y - ref).abs().max() / ref.abs().max()) <= 1e-5


def test_cifar_checkpoint_as_resnet50_names_tensors(unpack):
    with pytest.raises(ArchMismatchError, match=r"conv1\.weight|fc\.weight"):
        load_model(unpack("dwgl_resnet56_cifar10"), arch="resnet50")
