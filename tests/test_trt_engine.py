"""Real TensorRT on a real GPU. Skips here (no TensorRT, no GPU) with the reason; nothing is faked."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

REASON = "TensorRT not installed (needs an NVIDIA GPU; pip install 'gsdeploy[trt]')"
trt = pytest.importorskip("tensorrt", reason=REASON)
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("TensorRT is installed but torch sees no CUDA GPU", allow_module_level=True)

import torch.nn as nn  # noqa: E402

from gsdeploy.export.artifact import manifest_path  # noqa: E402
from gsdeploy.export.onnx import export_onnx  # noqa: E402
from gsdeploy.export.tensorrt import export_trt, load_engine  # noqa: E402
from gsdeploy.errors import EngineCompatError, NumericMismatchError, TrtConfigError  # noqa: E402
from gsdeploy.export.trt_rules.batches import BatchRange  # noqa: E402
from gsdeploy.export.trt_rules.calibration import RANDOM_CALIBRATION_WARNING  # noqa: E402
from gsdeploy.export.trt_rules.options import TrtBuildOptions  # noqa: E402
from gsdeploy.export.trt_rules.versions import trt_major  # noqa: E402
from gsdeploy.numerics import compare_outputs  # noqa: E402

SHAPE = (3, 16, 16)
TRT11 = trt_major(trt.__version__) >= 11


def small_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                      nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.ReLU(),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    with torch.no_grad():  # non-trivial BN statistics
        m[1].running_mean.uniform_(-0.5, 0.5)
        m[1].running_var.uniform_(0.5, 2.0)
    return m.eval()


@pytest.fixture(scope="module")
def model_and_onnx(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    m = small_cnn()
    path = d / "m.onnx"
    export_onnx(m, SHAPE, path)
    return m, path


def _export(model_and_onnx, tmp_path, **opts):
    m, onnx_path = model_and_onnx
    out = tmp_path / "m.engine"
    manifest = export_trt(m, onnx_path, SHAPE, TrtBuildOptions(**opts), out, {"source": {"name": "small"}})
    return out, manifest


def test_fp32_engine_export_manifest_and_runner(model_and_onnx, tmp_path):
    from gsdeploy.bench.runners.trt import TrtRunner

    out, manifest = _export(model_and_onnx, tmp_path, precision="fp32", batch=BatchRange(1, 4, 8))
    assert out.is_file() and manifest_path(out).is_file()
    on_disk = json.loads(manifest_path(out).read_text())
    assert on_disk["tensorrt"]["version"] == trt.__version__
    assert on_disk["tensorrt"]["gpu"]["name"] == torch.cuda.get_device_name(0)
    assert on_disk["tensorrt"]["profile"]["max"] == [8, *SHAPE]
    assert on_disk["engine_vs_original"]["passed"] and on_disk["engine_vs_original"]["max_rel_err"] <= 1e-3
    assert on_disk["source"] == {"name": "small"}

    m = model_and_onnx[0]
    with TrtRunner(out) as runner:
        assert runner.engine == "trt" and runner.precision == "fp32" and runner.batch_range == BatchRange(1, 4, 8)
        runner.prepare(4)
        runner.run_once()
        assert runner.time_once() > 0
        e2e = runner.time_end_to_end()
        assert e2e.h2d_s > 0 and e2e.compute_s > 0 and e2e.d2h_s > 0 and e2e.total_s >= e2e.compute_s
        x = np.random.default_rng(1).standard_normal((3, *SHAPE), dtype=np.float32)
        with torch.no_grad():
            ref = m(torch.from_numpy(x)).numpy()
        assert compare_outputs(ref, runner.infer(x), tolerance=1e-3).passed
        runner.run_once()  # still prepared at batch 4 after infer at batch 3
        with pytest.raises(TrtConfigError, match="outside this engine's profile"):
            runner.infer(np.zeros((9, *SHAPE), np.float32))


def test_fp16_engine_within_tolerance(model_and_onnx, tmp_path):
    if TRT11:
        pytest.importorskip("modelopt.onnx.autocast", reason="TensorRT 11 fp16 needs NVIDIA ModelOpt AutoCast")
    _, manifest = _export(model_and_onnx, tmp_path, precision="fp16", batch=BatchRange(2, 2, 2))
    assert manifest["engine_vs_original"]["max_rel_err"] <= 2e-2


def test_mismatch_writes_nothing(model_and_onnx, tmp_path):
    _, onnx_path = model_and_onnx
    other = small_cnn(seed=1)  # a different model as the reference: a real numeric mismatch
    out = tmp_path / "m.engine"
    cache = tmp_path / "timing.cache"
    with pytest.raises(NumericMismatchError, match="nothing written"):
        export_trt(other, onnx_path, SHAPE, TrtBuildOptions(precision="fp32", timing_cache=cache), out, {})
    assert list(tmp_path.iterdir()) == []


def test_timing_cache_written_and_reused(model_and_onnx, tmp_path):
    cache = tmp_path / "timing.cache"
    _export(model_and_onnx, tmp_path, precision="fp32", timing_cache=cache)
    first = cache.read_bytes()
    assert first
    _export(model_and_onnx, tmp_path, precision="fp32", timing_cache=cache)
    assert cache.stat().st_size >= len(first)


def test_engine_from_another_tensorrt_is_refused_naming_both(model_and_onnx, tmp_path):
    out, _ = _export(model_and_onnx, tmp_path, precision="fp32")
    mpath = manifest_path(out)
    data = json.loads(mpath.read_text())
    data["tensorrt"]["version"] = "9.9.9"
    mpath.write_text(json.dumps(data))
    with pytest.raises(EngineCompatError) as info:
        load_engine(out)
    assert "9.9.9" in str(info.value) and trt.__version__ in str(info.value)


@pytest.mark.skipif(TRT11, reason="TensorRT 11 removed implicit int8 calibration")
def test_int8_random_calibration_is_flagged(model_and_onnx, tmp_path):
    _, manifest = _export(model_and_onnx, tmp_path, precision="int8", batch=BatchRange(4, 4, 4))
    assert manifest["tensorrt"]["calibration"]["representative"] is False
    assert RANDOM_CALIBRATION_WARNING in manifest["warnings"]
    assert np.isfinite(manifest["engine_vs_original"]["max_rel_err"])


@pytest.mark.skipif(TRT11, reason="TensorRT 11 removed implicit int8 calibration")
def test_int8_calibration_from_npy(model_and_onnx, tmp_path):
    calib = tmp_path / "calib"
    calib.mkdir()
    np.save(calib / "a.npy", np.random.default_rng(0).standard_normal((8, *SHAPE)).astype(np.float32))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    _, manifest = _export(model_and_onnx, out_dir, precision="int8", batch=BatchRange(4, 4, 4), calib_data=calib)
    assert manifest["tensorrt"]["calibration"]["batches"] == 2


def test_int8_engine_from_symmetric_qdq_onnx(model_and_onnx, tmp_path):
    """The S8S8 Q/DQ ONNX gsdeploy writes for TensorRT builds an explicitly quantized engine
    (TensorRT 10 strongly typed, 11 always), with no calibrator."""
    from gsdeploy.export.quantize import S8S8_TENSORRT, quantize_int8

    m, onnx_path = model_and_onnx
    qdq = tmp_path / "qdq.onnx"
    quantize_int8(onnx_path, qdq, np.random.default_rng(0).standard_normal((32, *SHAPE)).astype(np.float32),
                  S8S8_TENSORRT)
    out = tmp_path / "m.engine"
    manifest = export_trt(m, qdq, SHAPE, TrtBuildOptions(precision="int8", batch=BatchRange(1, 4, 8)), out,
                          {"source": {"name": "small"}})
    assert manifest["tensorrt"]["calibration"]["algorithm"] == "explicit Q/DQ in the ONNX"
    assert np.isfinite(manifest["engine_vs_original"]["max_rel_err"])


@pytest.mark.skipif(shutil.which("trtexec") is None, reason="trtexec not on PATH")
def test_trtexec_cross_check(model_and_onnx, tmp_path):
    from gsdeploy.bench.trtexec import TrtexecTiming, run_trtexec

    out, manifest = _export(model_and_onnx, tmp_path, precision="fp32", batch=BatchRange(1, 4, 8))
    name = manifest["tensorrt"]["profile"]["input"]
    res = run_trtexec(out, {name: (4, *SHAPE)}, TrtexecTiming(warmup_ms=50, iterations=20, duration_s=0.5))
    assert len(res.times) >= 20 and np.all(res.times.compute_ms > 0)


def test_torch_tensorrt_export(tmp_path):
    pytest.importorskip("torch_tensorrt", reason="torch-tensorrt not installed (pip install 'gsdeploy[trt]')")
    from gsdeploy.export.torch_tensorrt import export_torch_trt

    m = small_cnn()
    out = tmp_path / "m.ep"
    manifest = export_torch_trt(m, SHAPE, "fp32", BatchRange(1, 2, 4), out, {})
    assert out.is_file() and manifest_path(out).is_file()
    assert manifest["engine_vs_original"]["passed"] and manifest["torch_tensorrt"]["ir"] == "dynamo"


def test_ort_cuda_provider_runner(model_and_onnx):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime here is the CPU build (install onnxruntime-gpu)")
    from gsdeploy.bench.runners.ort import OrtRunner
    from gsdeploy.target import resolve_targets, TargetFlags

    m, onnx_path = model_and_onnx
    target = resolve_targets("server-gpu-ort-trt", TargetFlags(engines=("ort-cuda",)))[0]
    runner = OrtRunner(onnx_path, target)
    assert runner.provider == "CUDAExecutionProvider"
    runner.prepare(2)  # inputs and outputs bound on the GPU
    assert runner.describe()["io_binding"]
    assert runner.describe()["provider_options"]["CUDAExecutionProvider"]["cudnn_conv_algo_search"] == "EXHAUSTIVE"
    runner.run_once()
    x = np.random.default_rng(2).standard_normal((2, *SHAPE), dtype=np.float32)
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    assert compare_outputs(ref, runner.infer(x), tolerance=1e-3).passed
    runner.close()
