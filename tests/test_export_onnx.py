"""ONNX export: both exporters give a dynamic-batch model that ORT runs like the original."""

from __future__ import annotations

import pytest
import torch

from gsdeploy.export.onnx import check_onnx, export_onnx
from gsdeploy.loaders import ort_session
from gsdeploy.transforms import DeployOptions, deploy
from gsdeploy.zoo import create_model


@pytest.mark.parametrize("exporter", ["torchscript", "torch.export"])
def test_deployed_hinge_model_exports_with_either_exporter(tmp_path, exporter):
    loaded = create_model("resnet20_hinge50")
    result = deploy(loaded.module, loaded.input_shape, DeployOptions())
    path = tmp_path / "m.onnx"
    assert export_onnx(result.module, loaded.input_shape, path, exporters=(exporter,)).exporter == exporter
    check = check_onnx(path, loaded.module, loaded.input_shape, batches=(1, 5)).verification
    assert check.passed and check.max_rel_err <= 1e-4 and check.tolerance == 1e-4
    session = ort_session(path)
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_inputs()[0].shape[0] == "batch"
    # DReLU was folded into LeakyRelu; no Relu/Neg/Mul chain is left for it
    import onnx

    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "LeakyRelu" in ops and "Neg" not in ops and "BatchNormalization" not in ops


def foldable_nodes(graph) -> list[str]:
    """Nodes whose every input is a constant (an initializer or another such node's output): work an
    ONNX runtime would redo for every inference although its result never changes."""
    const = {t.name for t in graph.initializer}
    out = []
    for node in graph.node:  # ONNX graphs are topologically sorted
        if all(i == "" or i in const for i in node.input):
            out.append(f"{node.op_type} {node.name}")
            const.update(node.output)
    return out


def test_hinge_resnet56_onnx_has_no_foldable_constant_nodes(tmp_path):
    import json

    import onnx
    from typer.testing import CliRunner

    from gsdeploy.cli import app

    loaded = create_model("resnet56_hinge50")
    result = deploy(loaded.module, loaded.input_shape, DeployOptions())
    raw = tmp_path / "raw.onnx"
    export_onnx(result.module, loaded.input_shape, raw, fold=False)
    assert foldable_nodes(onnx.load(str(raw)).graph)  # what the exporters leave (option-A pad amounts)

    out = tmp_path / "h56.onnx"
    r = CliRunner().invoke(app, ["export", "resnet56_hinge50", "-o", str(out)])
    assert r.exit_code == 0, r.output
    graph = onnx.load(str(out)).graph
    assert foldable_nodes(graph) == []
    assert not {"Constant", "ConstantOfShape", "Shape"} & {n.op_type for n in graph.node}
    manifest = json.loads((tmp_path / "h56.manifest.json").read_text())
    nodes = manifest["artifact"]["nodes"]
    assert nodes["after_folding"] == len(graph.node) < nodes["exported"]
    assert nodes["folding"].startswith("onnxslim")
    assert manifest["onnx_vs_original"]["passed"]  # ORT checked the folded file


class _Shuffle(torch.nn.Module):
    """A ShuffleNet channel shuffle (view -> transpose -> reshape by the batch size), two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(4, 2, 1)

    def forward(self, x):
        y = self.a(x)
        n, c, h, w = y.shape
        y = self.b(y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w))
        return y, y.flatten(1).sum(1, keepdim=True)


def test_pt2_channel_shuffle_with_two_outputs_exports_at_any_batch(tmp_path):
    """torch.export writes the shuffle's batch as aten.sym_size feeding aten.view, which the TorchScript
    exporter baked in as the example's batch (ORT: 'cannot be reshaped' at batch 1): such a file now
    falls through to the torch.export exporter. Both outputs are exported and checked."""
    net = _Shuffle().eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(net, (torch.randn(2, 3, 5, 6),), dynamic_shapes=({0: batch},)).module()
    r = deploy(program, (3, 5, 6))
    path = tmp_path / "shuffle.onnx"
    written = export_onnx(r.module, (3, 5, 6), path)
    assert written.exporter == "torch.export"
    check = check_onnx(path, r.reference, (3, 5, 6))
    assert check.verification.passed
    assert [o.name for o in ort_session(path).get_outputs()] == ["output", "output_1"]
