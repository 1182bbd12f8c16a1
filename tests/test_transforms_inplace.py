"""In-place ops (ReLU(inplace=True), `out += identity`, x.relu_(), aten.relu_/add_ in .pt2 programs)
are understood, and zero channels the passes cannot remove are reported — never a silent no-op."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from typer.testing import CliRunner

from gsdeploy.cli import app
from gsdeploy.errors import UnremovedZerosError
from gsdeploy.load import load_model
from gsdeploy.transforms import DeployOptions, deploy

SHAPE = (3, 16, 16)


class Block(nn.Module):
    """A torchvision-style basic block: in-place ReLU module and `out += identity`."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class InplaceNet(nn.Module):
    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.b1, self.b2 = Block(c), Block(c)
        self.head = nn.Conv2d(c, 2 * c, 1)
        self.fc = nn.Linear(2 * c, 5)

    def forward(self, x):
        x = self.stem(x).relu_()  # Tensor method, in place
        x = self.b2(self.b1(x))
        y = self.head(x)
        F.hardtanh(y, -1.0, 1.0, inplace=True)  # the result is ignored: only the mutation carries it
        y.mul_(2.0)
        return self.fc(y.mean((2, 3)))


def _zeroed(seed: int = 0) -> InplaceNet:
    torch.manual_seed(seed)
    m = InplaceNet().eval()
    with torch.no_grad():
        for bn in (m.b1.bn1, m.b2.bn1):  # inner filters: zero weight and zero BN shift
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2)
        for conv, bn, dead in ((m.b1.conv1, m.b1.bn1, slice(2, 5)), (m.b2.conv1, m.b2.bn1, slice(1, 3))):
            conv.weight[dead] = 0
            bn.bias[dead] = 0
            bn.running_mean[dead] = 0  # so the folded shift is zero too
        m.head.weight[:, 6] = 0  # a column nobody reads: trunk channel 6 can go only if every reader ignores it
        m.fc.weight[:, 0:3] = 0  # head outputs 0..2 are read by no one
    return m


def _deploy(m, shape=SHAPE, **kw):
    return deploy(m, shape, DeployOptions(**kw))


def test_inplace_ops_prune_like_their_out_of_place_twins():
    r = _deploy(_zeroed())
    assert r.verification.passed
    # 3 + 2 inner filters and 3 head filters go; the trunk's column 6 is read by the residual blocks
    shapes = {d.site: d.shape_after for d in r.plan if d.action == "remove zero groups"}
    assert shapes["b1.conv1"].endswith("8->5") and shapes["b2.conv1"].endswith("8->6")
    assert shapes["head"].endswith("8->13")
    assert r.macs_after < r.macs_before
    assert not r.kept_zeros


def test_pt2_with_aten_inplace_ops_deploys_to_the_fx_macs(tmp_path):
    m = _zeroed()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(m, (torch.randn(2, *SHAPE),), dynamic_shapes=({0: batch},))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert {"aten.relu_.default", "aten.add_.Tensor"} <= targets  # what torch.export writes for this code
    path = tmp_path / "inplace.pt2"
    torch.export.save(program, str(path))
    loaded = load_model(str(path))
    from_pt2, from_fx = _deploy(loaded.module, loaded.input_shape), _deploy(m)
    assert from_pt2.macs_after == from_fx.macs_after < from_fx.macs_before
    assert from_pt2.params_after == from_fx.params_after
    assert not from_pt2.kept_zeros


class Gated(nn.Module):
    """A spatial attention gate (CBAM): its map is a mean over the channels, which the channel
    analysis does not understand (a zero channel still counts in the mean), so nothing can go.
    (A squeeze-excite gate, x * g with g per channel, is understood: test_transforms_generic.)"""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1), nn.Linear(16, 4)

    def forward(self, x):
        x = torch.relu(self.c1(x))
        x = x * torch.sigmoid(x.mean(1, keepdim=True))
        return self.fc(self.c2(x).mean((2, 3)))


def _gated() -> Gated:
    torch.manual_seed(1)
    m = Gated().eval()
    with torch.no_grad():
        m.c1.weight[3:7] = 0
        m.c1.bias[3:7] = 0
    return m


def test_unremovable_zeros_are_reported_with_op_site_channels_and_macs():
    r = _deploy(_gated())
    assert r.macs_after == r.macs_before  # nothing could go ...
    assert len(r.kept_zeros) == 1  # ... and the plan says why
    k = r.kept_zeros[0]
    assert (k.op, k.site, k.channels, k.layers) == ("Tensor.mean", "mean", 4, ("c1",))
    assert k.macs == 4 * 3 * 9 * 16 * 16  # the four zero filters of c1
    keep = [d for d in r.plan if d.action == "keep" and "zero channels kept" in d.reason]
    assert keep and "Tensor.mean" in keep[0].reason and "4 zero channels" in keep[0].reason
    with pytest.raises(UnremovedZerosError, match="4 zero channels"):
        _deploy(_gated(), strict=True)


def test_export_warns_in_one_line_and_strict_fails_without_writing(tmp_path):
    m = _gated()
    path = tmp_path / "gated.pt2"
    batch = torch.export.Dim("batch", min=1, max=64)
    torch.export.save(torch.export.export(m, (torch.randn(2, *SHAPE),), dynamic_shapes=({0: batch},)), str(path))
    runner = CliRunner()
    out = tmp_path / "gated.onnx"
    r = runner.invoke(app, ["export", str(path), "-o", str(out)])
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "4 zero channels" in warnings[0] and "aten.mean.dim" in warnings[0] and "could not be removed" in warnings[0]
    strict_out = tmp_path / "strict.onnx"
    r = runner.invoke(app, ["export", str(path), "-o", str(strict_out), "--strict"])
    assert r.exit_code != 0 and "error:" in r.stderr and "4 zero channels" in r.stderr
    assert not strict_out.exists() and not (tmp_path / "strict.manifest.json").exists()


def test_inplace_on_a_view_is_left_alone_and_stays_exact():
    class ViewMutation(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1)

        def forward(self, x):
            y = self.c1(x)
            v = y.view(y.shape)  # an alias of y
            v.relu_()  # changes y too
            return self.c2(y)

    torch.manual_seed(0)
    r = _deploy(ViewMutation().eval())
    assert r.verification.passed


def test_zeros_behind_an_inplace_op_on_a_view_are_reported():
    class ViewMutation(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2, self.drop = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1), nn.Dropout()

        def forward(self, x):
            y = self.c1(x)
            self.drop(y).relu_()  # an eval Dropout returns y itself: this changes y
            return self.c2(y)

    torch.manual_seed(0)
    m = ViewMutation().eval()
    with torch.no_grad():
        m.c1.weight[:2] = 0
        m.c1.bias[:2] = 0
    r = _deploy(m)
    assert r.verification.passed and r.macs_after == r.macs_before
    (k,) = r.kept_zeros
    assert k.op == "Tensor.relu_" and k.channels == 2 and "share storage" in k.why


class PassThrough(nn.Module):
    """conv -> Identity (a disabled norm_layer) -> ReLU(inplace=True): the ReLU writes into the conv's
    output through the Identity. `shared`: the conv's output is read again after that, elsewhere."""

    def __init__(self, shared: bool) -> None:
        super().__init__()
        self.shared = shared
        self.conv, self.norm, self.relu = nn.Conv2d(3, 4, 3, padding=1), nn.Identity(), nn.ReLU(inplace=True)
        self.fc, self.fc2 = nn.Linear(4 * 5 * 5, 2), nn.Linear(4 * 5 * 5, 2)

    def forward(self, x):
        y = self.conv(x)
        z = self.relu(self.norm(y))
        out = self.fc(z.flatten(1))
        return out + self.fc2(y.flatten(1)) if self.shared else out  # y is rectified too, in place


def _pass_through(shared: bool) -> nn.Module:
    net = PassThrough(shared).eval()
    with torch.no_grad():
        net.conv.weight[1] = 0
        net.conv.bias[1] = 0
    return net


def test_inplace_through_an_identity_of_a_private_tensor_prunes():
    """Nothing else reads the conv's output: the in-place ReLU behind an Identity is made
    out-of-place like any other, and the zero channel goes instead of being reported as kept."""
    r = deploy(_pass_through(False), (3, 5, 5))
    assert r.verification.passed and not r.kept_zeros
    assert r.module.get_submodule("conv").out_channels == 3


def test_inplace_whose_alias_is_flattened_after_it_stays_exact():
    """The fence that makes the write an edge of the graph goes after the tensors it fences: the
    flatten of the ReLU's result is made after the ReLU (it was put before it: 'referenced
    nonexistent value flatten')."""
    net = _pass_through(True)
    r = deploy(net, (3, 5, 5))
    assert r.verification.passed
    assert [k.channels for k in r.kept_zeros] == [1]  # the shared, mutated tensor is opaque: said, not cut
