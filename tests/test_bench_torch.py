"""TorchRunner on real torch (CPU here; the CUDA paths run only where a GPU is present)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from gsdeploy.bench.measure import MeasureConfig, measure_interleaved
from gsdeploy.bench.runners.torch_runner import TorchRunner
from gsdeploy.errors import InputShapeError, MissingDependencyError

SHAPE = (3, 16, 16)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()


def test_cpu_infer_matches_module_and_runs():
    m = tiny_cnn()
    r = TorchRunner(m, input_shape=SHAPE)
    assert (r.engine, r.provider, r.precision) == ("torch", "cpu", "fp32")
    x = np.random.default_rng(0).standard_normal((2, *SHAPE), dtype=np.float32)
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(r.infer(x), ref, rtol=1e-6, atol=1e-6)
    r.prepare(3)
    assert tuple(r._x.shape) == (3, *SHAPE)
    r.run_once()
    assert r.time_once() > 0
    r.close()


def test_threads_are_set_recorded_and_restored():
    before = torch.get_num_threads()
    r = TorchRunner(tiny_cnn(), threads=1, input_shape=SHAPE)
    assert r.threads == 1 == torch.get_num_threads()
    r.close()
    assert torch.get_num_threads() == before
    r = TorchRunner(tiny_cnn(), input_shape=SHAPE)
    assert r.threads == before
    r.close()


def test_needs_an_input_shape():
    r = TorchRunner(tiny_cnn())
    with pytest.raises(InputShapeError):
        r.prepare(1)


def test_measured_like_any_runner():
    a = TorchRunner(tiny_cnn(), threads=1, input_shape=SHAPE)
    stats = measure_interleaved({"a": a}, 2, MeasureConfig(warmup_s=0.02, min_iterations=5, min_duration_s=0.02))
    assert stats["a"].n >= 5 and stats["a"].total_s >= 0.02
    a.close()


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_a_gpu_is_an_error():
    with pytest.raises(MissingDependencyError, match="no CUDA device"):
        TorchRunner(tiny_cnn(), device="cuda", input_shape=SHAPE)
    with pytest.raises(ValueError):
        TorchRunner(tiny_cnn(), cuda_graph=True, input_shape=SHAPE)


@needs_cuda
def test_cuda_events_and_sync():
    m = tiny_cnn()
    r = TorchRunner(m, device="cuda", input_shape=SHAPE)
    assert next(m.parameters()).device.type == "cpu"  # the caller's module stays on CPU
    r.prepare(4)
    r.run_once()
    t = r.time_once()
    assert 0 < t < 1.0
    x = np.random.default_rng(0).standard_normal((2, *SHAPE), dtype=np.float32)
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(r.infer(x), ref, rtol=1e-3, atol=1e-4)
    r.close()


@needs_cuda
def test_cuda_graph_replay_matches_eager():
    r = TorchRunner(tiny_cnn(), device="cuda", cuda_graph=True, input_shape=SHAPE)
    r.prepare(2)
    assert r._graph is not None
    with torch.inference_mode():
        eager = r.module(r._x).clone()
    r.run_once()
    torch.testing.assert_close(r._static_out, eager)
    assert r.time_once() > 0
    r.close()


def test_half_precision_needs_a_gpu_and_is_recorded():
    with pytest.raises(ValueError, match="fp16/bf16 on a CUDA device"):
        TorchRunner(tiny_cnn(), precision="fp16", input_shape=SHAPE)
    with pytest.raises(ValueError, match="precision"):
        TorchRunner(tiny_cnn(), precision="int8", input_shape=SHAPE)
    assert TorchRunner(tiny_cnn(), input_shape=SHAPE).precision == "fp32"


@needs_cuda
@pytest.mark.parametrize("precision, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
def test_half_precision_runs_a_half_copy_close_to_fp32(precision, dtype):
    m = tiny_cnn()
    r = TorchRunner(m, device="cuda", precision=precision, channels_last=True, cuda_graph=True, input_shape=SHAPE)
    assert next(m.parameters()).dtype == torch.float32  # the caller's module is untouched
    assert next(r.module.parameters()).dtype == dtype and r.precision == precision
    r.prepare(2)
    assert r._x.dtype == dtype and r.time_once() > 0
    x = np.random.default_rng(0).standard_normal((2, *SHAPE), dtype=np.float32)
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(r.infer(x), ref, rtol=5e-2, atol=5e-2)
    r.close()


def test_gpu_clocks_are_empty_without_a_gpu():
    from gsdeploy.bench.env import gpu_clocks

    clocks = gpu_clocks()
    if not torch.cuda.is_available():
        assert clocks == {}
    else:  # NVML or nvidia-smi on a server GPU; Jetson may have neither
        assert all(isinstance(v, int) and v > 0 for v in clocks.values())
