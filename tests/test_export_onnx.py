"""ONNX export: both exporters give a dynamic-batch model that ORT runs like the original."""

from __future__ import annotations

import pytest

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
