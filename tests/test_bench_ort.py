"""OrtRunner on a real (tiny) ONNX model and the real CPU ONNX Runtime of this machine."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

ort = pytest.importorskip("onnxruntime")

from gsdeploy.target import usable_cpus  # noqa: E402
from gsdeploy.bench.measure import MeasureConfig, measure_interleaved  # noqa: E402
from gsdeploy.bench.runners.ort import OrtRunner  # noqa: E402
from gsdeploy.errors import InputShapeError, LoadError, MissingDependencyError  # noqa: E402
from gsdeploy.loaders import import_ort  # noqa: E402
from gsdeploy.target import TargetError, make_target  # noqa: E402

ONE = make_target("ort", threads=1)

SHAPE = (3, 16, 16)


def tiny_cnn(width: int = 8) -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                      nn.Conv2d(width, width, 3, padding=1, stride=2), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 5))
    with torch.no_grad():  # non-trivial BN statistics, so folding is really exercised
        m[1].running_mean.uniform_(-0.5, 0.5)
        m[1].running_var.uniform_(0.5, 2.0)
    return m.eval()


def export(module: nn.Module, path: Path, dynamic_batch: bool = True) -> Path:
    """Both exporters work with torch 2.13 (checked: same graph, dynamic batch axis). The
    TorchScript one is deprecated but exports in ~0.2 s against ~4 s for the first dynamo
    export, which matters for a fast test suite; the dynamo path is the fallback."""
    x = torch.randn(2, *SHAPE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (x,), str(path), dynamo=False, input_names=["input"],
                              output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}} if dynamic_batch else None)
        except Exception:  # a torch without the TorchScript exporter
            torch.onnx.export(module, (x,), str(path), dynamo=True, input_names=["input"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},) if dynamic_batch else None,
                              external_data=False, verbose=False)
    return path


@pytest.fixture(scope="module")
def model_and_onnx(tmp_path_factory):
    m = tiny_cnn()
    return m, export(m, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def test_infer_matches_torch(model_and_onnx):
    m, path = model_and_onnx
    r = OrtRunner(path, ONE)
    x = np.random.default_rng(1).standard_normal((3, *SHAPE), dtype=np.float32)
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    out = r.infer(x)
    assert out.shape == (3, 5)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    r.close()


def test_records_provider_threads_and_settings(model_and_onnx):
    _, path = model_and_onnx
    r = OrtRunner(path, make_target("ort", threads=1, allow_spinning=False, graph_optimization_level="basic"))
    assert (r.engine, r.provider, r.precision, r.threads) == ("ort", "CPUExecutionProvider", "fp32", 1)
    assert r.active_providers == ["CPUExecutionProvider"]
    assert isinstance(r.device, str) and r.device
    opts = r._sess.get_session_options()
    assert opts.intra_op_num_threads == 1
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert r.describe()["spinning"] is False
    r.close()
    # No thread count given: the count that is set (and recorded) is what this process may use.
    r = OrtRunner(path)
    assert r.threads == usable_cpus() == r._sess.get_session_options().intra_op_num_threads
    r.close()


def test_prepare_and_run_once_for_several_batches(model_and_onnx):
    _, path = model_and_onnx
    r = OrtRunner(path, ONE)
    for batch in (1, 4):
        r.prepare(batch)
        assert r._feed["input"].shape == (batch, *SHAPE)
        assert r._feed["input"].dtype == np.float32
        r.run_once()
    first = r._feed["input"].copy()
    r.prepare(4)
    np.testing.assert_array_equal(first, r._feed["input"])  # seeded: same input every time
    r.close()


def test_measure_with_real_sessions(model_and_onnx):
    _, path = model_and_onnx
    a, b = OrtRunner(path, ONE), OrtRunner(path, ONE)
    stats = measure_interleaved({"a": a, "b": b}, 2,
                                MeasureConfig(warmup_s=0.02, min_iterations=5, min_duration_s=0.02, block=10))
    for s in stats.values():
        assert s.n >= 5 and s.total_s >= 0.02 and s.median_ms > 0
    a.close(), b.close()


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available(),
                    reason="CUDA is really available here")
def test_asking_for_cuda_on_cpu_ort_is_an_error(model_and_onnx):
    _, path = model_and_onnx
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ORT warns about the unknown provider before we raise
        with pytest.raises(MissingDependencyError) as e:
            OrtRunner(path, make_target("ort", device="cuda", providers=("CUDAExecutionProvider", "CPUExecutionProvider")))
    msg = str(e.value)
    assert "asked for CUDAExecutionProvider" in msg
    assert "ORT is running CPUExecutionProvider" in msg
    assert "onnxruntime-gpu" in msg


def test_fixed_batch_model_refuses_other_batches(tmp_path):
    path = export(tiny_cnn(), tmp_path / "fixed.onnx", dynamic_batch=False)
    r = OrtRunner(path, ONE)
    r.prepare(2)  # the exported batch works
    with pytest.raises(InputShapeError, match="fixed batch of 2"):
        r.prepare(3)
    r.close()


def test_bad_arguments(model_and_onnx, tmp_path):
    _, path = model_and_onnx
    with pytest.raises(LoadError):
        OrtRunner(tmp_path / "missing.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(LoadError, match="cannot load"):
        OrtRunner(bad)
    with pytest.raises(TargetError, match="graph_optimization_level"):
        make_target("ort", graph_optimization_level="fast")
    with pytest.raises(TargetError, match="threads"):
        make_target("ort", threads=0)


def test_missing_onnxruntime_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(MissingDependencyError) as e:
        import_ort()
    assert "pip install onnxruntime`" in str(e.value) and "onnxruntime-gpu" in str(e.value)
