"""--arch torchvision-resnet reads block type, depth, widths and groups of any torchvision-layout ResNet.

torchvision does not import here, so the models are built in this file with the same key layout and
the same forward code style torchvision uses (ReLU(inplace=True), `out += identity`): an independent
implementation, not gsdeploy's template.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from gsdeploy.cli import app
from gsdeploy.errors import ArchMismatchError
from gsdeploy.load import load_model
from gsdeploy.transforms import deploy

SHAPE = (3, 64, 64)  # any size works for these fully convolutional nets; small keeps the tests fast


def conv3x3(cin, cout, stride=1, groups=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class TvBasic(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(inplanes, planes, stride), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TvBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, groups=1, base_width=64):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1, self.bn1 = conv1x1(inplanes, width), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = conv3x3(width, width, stride, groups), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = conv1x1(width, planes * 4), nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TvResNet(nn.Module):
    def __init__(self, block, layers, num_classes=1000, groups=1, width_per_group=64):
        super().__init__()
        self.inplanes, self.groups, self.base_width = 64, groups, width_per_group
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1, self.relu = nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, groups=self.groups, base_width=self.base_width) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _randomize_bn(m: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.weight.copy_(0.5 + torch.rand(bn.num_features, generator=g))
                bn.bias.copy_(0.1 * torch.randn(bn.num_features, generator=g))
                bn.running_mean.copy_(0.1 * torch.randn(bn.num_features, generator=g))
                bn.running_var.copy_(0.5 + torch.rand(bn.num_features, generator=g))
    return m.eval()


def _zero_channels(conv: nn.Conv2d, bn: nn.BatchNorm2d, idx) -> None:
    conv.weight[idx] = 0
    bn.bias[idx] = 0
    bn.running_mean[idx] = 0  # the folded shift is zero: the channel stays exactly zero


def dwgl_style(m: TvResNet) -> TvResNet:
    """Stage 1's trunk channels 200..255 zero in every layer feeding its adds (the DWGL intersection),
    and a quarter of every block's first inner filters zero."""
    with torch.no_grad():
        trunk = slice(200, 256)
        for blk in m.layer1:
            _zero_channels(blk.conv3, blk.bn3, trunk)
            if blk.downsample is not None:
                _zero_channels(blk.downsample[0], blk.downsample[1], trunk)
        for layer in (m.layer1, m.layer2, m.layer3, m.layer4):
            for blk in layer:
                _zero_channels(blk.conv1, blk.bn1, slice(0, blk.conv1.out_channels // 4))
    return m


def _save(m: nn.Module, path) -> str:
    torch.save(m.state_dict(), path)
    return str(path)


def _same_output(loaded, reference: nn.Module) -> float:
    x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = reference(x)
        return float((loaded.module(x) - ref).abs().max() / ref.abs().max())


def test_bottleneck_2222_width_per_group_32_with_zero_channels_deploys_exactly(tmp_path):
    torch.manual_seed(0)
    model = dwgl_style(_randomize_bn(TvResNet(TvBottleneck, [2, 2, 2, 2], width_per_group=32), 1))
    path = _save(model, tmp_path / "r2222.pt")
    for arch in ("torchvision-resnet", None):  # explicit and auto-detected
        loaded = load_model(path, arch=arch, input_shape=SHAPE)
        assert loaded.arch == "torchvision-resnet"
        assert _same_output(loaded, model) < 1e-6
    assert [len(getattr(loaded.module, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert loaded.module.layer1[0].conv1.out_channels == 32  # 64 planes * 32/64
    result = deploy(loaded.module, SHAPE)
    assert result.verification.passed and not result.kept_zeros
    removed = {d.site: d.shape_after for d in result.plan if d.action == "remove zero groups"}
    assert removed["layer1.0.conv3"].endswith("->200")  # the trunk really narrowed
    assert removed["layer2.1.conv1"].endswith("512->48")  # 128 planes * 32/64 = 64 inner filters, a quarter zero
    assert result.macs_after < 0.85 * result.macs_before


def test_cli_export_with_arch_and_auto_detection(tmp_path):
    torch.manual_seed(0)
    model = dwgl_style(_randomize_bn(TvResNet(TvBottleneck, [1, 1, 1, 1], width_per_group=32), 1))
    path = _save(model, tmp_path / "r1111.pt")
    runner = CliRunner()
    macs = []
    for extra in (["--arch", "torchvision-resnet"], []):
        out = tmp_path / f"r{len(extra)}.onnx"
        r = runner.invoke(app, ["export", path, "-o", str(out), "--input-shape", "3x64x64", *extra])
        assert r.exit_code == 0, r.output
        manifest = json.loads(out.with_name(out.stem + ".manifest.json").read_text())
        assert manifest["source"]["arch"] == "torchvision-resnet"
        assert manifest["onnx_vs_original"]["passed"]
        macs.append(manifest["macs"]["after"])
    assert macs[0] == macs[1] < manifest["macs"]["before"]


def test_plain_resnet18_state_dict_is_detected_and_exact(tmp_path):
    torch.manual_seed(0)
    model = _randomize_bn(TvResNet(TvBasic, [2, 2, 2, 2]), 2)
    loaded = load_model(_save(model, tmp_path / "resnet18.pt"), input_shape=SHAPE)
    assert loaded.arch == "torchvision-resnet"
    assert _same_output(loaded, model) < 1e-6
    result = deploy(loaded.module, SHAPE)
    assert result.verification.passed
    assert result.macs_after == result.macs_before  # dense: nothing to remove, only BN folded
    assert not result.kept_zeros


@pytest.mark.parametrize("block,layers,groups,wpg", [
    (TvBasic, [3, 4, 6, 3], 1, 64),  # resnet34
    (TvBottleneck, [1, 1, 1, 1], 8, 4),  # a small ResNeXt (groups from conv2's shape)
    (TvBottleneck, [1, 2, 1, 1], 1, 128),  # Wide ResNet style (inner width twice the planes)
])
def test_family_members_load_exactly(tmp_path, block, layers, groups, wpg):
    torch.manual_seed(0)
    model = _randomize_bn(TvResNet(block, layers, num_classes=7, groups=groups, width_per_group=wpg), 3)
    loaded = load_model(_save(model, tmp_path / "m.pt"), arch="torchvision-resnet", input_shape=SHAPE)
    assert _same_output(loaded, model) < 1e-6
    convs = [m for m in loaded.module.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert (groups == 1 and not convs) or all(c.groups == groups for c in convs)


def test_physically_pruned_widths_come_from_the_shapes(tmp_path):
    """Narrower tensors (filters removed, not zeroed) are read as they are."""
    torch.manual_seed(0)
    model = _randomize_bn(TvResNet(TvBasic, [1, 1, 1, 1]), 4)
    with torch.no_grad():
        blk = model.layer2[0]
        keep = torch.arange(100)
        blk.conv1 = nn.Conv2d(64, 100, 3, stride=2, padding=1, bias=False)
        blk.bn1 = nn.BatchNorm2d(100).eval()
        blk.conv2.weight = nn.Parameter(blk.conv2.weight[:, keep].clone())
    loaded = load_model(_save(model.eval(), tmp_path / "p.pt"), input_shape=SHAPE)
    assert loaded.module.layer2[0].conv1.out_channels == 100
    assert _same_output(loaded, model) < 1e-6


def test_resnet50_name_still_works_and_points_to_the_generic_arch(tmp_path):
    torch.manual_seed(0)
    path = _save(_randomize_bn(TvResNet(TvBottleneck, [2, 2, 2, 2]), 5), tmp_path / "r.pt")
    with pytest.raises(ArchMismatchError, match=r"\[2, 2, 2, 2\].*torchvision-resnet"):
        load_model(path, arch="resnet50", input_shape=SHAPE)
    model50 = _randomize_bn(TvResNet(TvBottleneck, [3, 4, 6, 3]), 6)
    loaded = load_model(_save(model50, tmp_path / "r50.pt"), input_shape=SHAPE)
    assert loaded.arch == "resnet50"  # a named layout wins over the generic one
    assert _same_output(loaded, model50) < 1e-6


def test_the_same_model_as_a_pt2_removes_what_the_state_dict_path_removes(tmp_path):
    """torchvision's own code exports ReLU(inplace=True) and `out += identity` as aten.relu_ and
    aten.add_.Tensor: the program deploys to the same MACs as the state_dict (and opens without --trust)."""
    torch.manual_seed(0)  # one block per stage keeps it quick; the depth is not what this test is about
    model = dwgl_style(_randomize_bn(TvResNet(TvBottleneck, [1, 1, 1, 1], width_per_group=32), 1))
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (torch.randn(2, *SHAPE),), dynamic_shapes=({0: batch},))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert {"aten.relu_.default", "aten.add_.Tensor"} <= targets
    torch.export.save(program, str(tmp_path / "r.pt2"))
    from_pt2 = load_model(str(tmp_path / "r.pt2"))
    from_sd = load_model(_save(model, tmp_path / "r.pt"), input_shape=SHAPE)
    a, b = deploy(from_pt2.module, SHAPE), deploy(from_sd.module, SHAPE)
    assert a.macs_after == b.macs_after < 0.9 * a.macs_before
    assert a.params_after == b.params_after and not a.kept_zeros
