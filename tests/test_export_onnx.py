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
    assert export_onnx(result.module, loaded.input_shape, path, exporters=(exporter,)) == exporter
    check = check_onnx(path, loaded.module, loaded.input_shape, batches=(1, 5)).verification
    assert check.passed and check.max_rel_err <= 1e-4 and check.tolerance == 1e-4
    session = ort_session(path)
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_inputs()[0].shape[0] == "batch"
    # DReLU was folded into LeakyRelu; no Relu/Neg/Mul chain is left for it
    import onnx

    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "LeakyRelu" in ops and "Neg" not in ops and "BatchNormalization" not in ops
