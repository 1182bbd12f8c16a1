"""Memory: weights, artifact size, activation estimate from the graph, peak RSS of an ORT session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from gsdeploy import metrics
from gsdeploy.bench import memory
from gsdeploy.bench.memory import (activation_estimate, activation_profile, artifact_bytes, ort_peak_rss)
from gsdeploy.target import make_target
from gsdeploy.errors import GsdeployError


class Residual(nn.Module):
    """conv -> relu -> conv, plus the input (a functional add that forward hooks cannot see)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.b = nn.Conv2d(c, c, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.b(torch.relu(self.a(x))) + x)


def test_weight_bytes_is_the_metrics_implementation():
    assert memory.weight_bytes is metrics.weight_bytes
    m = nn.Linear(10, 5)
    assert memory.weight_bytes(m) == (10 * 5 + 5) * 4


def test_activation_peak_follows_tensor_lifetimes():
    c, h = 8, 16
    t = c * h * h * 4  # bytes of one activation at batch 1
    p = activation_profile(Residual(c), (c, h, h), batch=1)
    assert p.method == "fx"
    # x stays alive until the add; the peak is x + a(x) + relu (conv a's output and its relu
    # coexist while relu runs) = 3 tensors; and 3 again at the add (x, b(...), sum).
    assert p.peak_bytes == 3 * t
    # input, a, relu, b, add, relu: six tensors if nothing were ever freed.
    assert p.sum_bytes == 6 * t and p.largest_bytes == t
    assert activation_estimate(Residual(c), (c, h, h), batch=4) == 4 * 3 * t


def test_activation_estimate_of_a_zoo_model_scales_with_batch():
    from gsdeploy.zoo import create_model

    m = create_model("resnet20")
    one = activation_estimate(m.module, m.input_shape, 1)
    assert one >= 16 * 32 * 32 * 4 * 2  # at least the first stage's residual and one conv output
    assert activation_estimate(m.module, m.input_shape, 2) == 2 * one
    assert not m.module.training  # left in eval mode


def test_activation_falls_back_to_hooks_for_untraceable_models():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
                return self.conv(x)
            return self.conv(-x)

    p = activation_profile(Branchy(), (3, 8, 8))
    assert p.method == "hooks"
    assert p.peak_bytes == (3 + 4) * 8 * 8 * 4


def test_artifact_bytes_file_dir_and_onnx_external_data(tmp_path):
    f = tmp_path / "a.engine"
    f.write_bytes(b"x" * 100)
    assert artifact_bytes(f) == 100
    d = tmp_path / "ts"
    d.mkdir()
    (d / "x").write_bytes(b"1" * 7)
    (d / "y").write_bytes(b"2" * 5)
    assert artifact_bytes(d) == 12
    with pytest.raises(GsdeployError, match="does not exist"):
        artifact_bytes(tmp_path / "missing.onnx")

    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper
    import numpy as np

    w = numpy_helper.from_array(np.ones((64, 64), dtype=np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])], [w])
    model = helper.make_model(graph)
    path = tmp_path / "m.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="m.onnx.data", size_threshold=0)
    data = tmp_path / "m.onnx.data"
    assert data.is_file()
    assert artifact_bytes(path) == path.stat().st_size + data.stat().st_size


def _export(module: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    # Build the graph by hand (one Conv): fast, and independent of the torch exporters.
    conv = module
    w = numpy_helper.from_array(conv.weight.detach().numpy(), "w")
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    c, h, wd = shape
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", c, h, wd])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT,
                                                             ["N", conv.out_channels, h, wd])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(path))
    return path


def test_ort_peak_rss_grows_with_batch(tmp_path):
    pytest.importorskip("onnxruntime")
    conv = nn.Conv2d(16, 16, 3, padding=1, bias=False)
    path = _export(conv, (16, 64, 64), tmp_path / "conv.onnx")
    one = make_target("ort", threads=1)
    small = ort_peak_rss(path, batch=1, target=one, runs=2)
    big = ort_peak_rss(path, batch=64, input_shape=(16, 64, 64), target=one, runs=2)
    act = 16 * 64 * 64 * 4  # one activation at batch 1: 256 KiB
    assert small >= 0
    # At batch 64 the input and output alone are 2 × 64 × 256 KiB = 32 MiB on top of batch 1.
    assert big - small >= 64 * act


def test_ort_peak_rss_errors(tmp_path):
    with pytest.raises(GsdeployError, match="does not exist"):
        ort_peak_rss(tmp_path / "none.onnx", 1)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    pytest.importorskip("onnxruntime")
    with pytest.raises(GsdeployError, match="child process failed"):
        ort_peak_rss(bad, 1, (3, 8, 8))
