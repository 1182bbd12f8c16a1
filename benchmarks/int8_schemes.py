"""Which int8 scheme suits ONNX Runtime's CPU kernels: the deployed model's fp32 ONNX, its U8S8
Q/DQ (uint8 activations) and its S8S8 Q/DQ (int8 activations, zero points 0: TensorRT's) timed
interleaved with the bench's runner and scheduler. Random calibration: latency only.

    python benchmarks/int8_schemes.py [--model resnet50_pruned50] [--batch 32] [--min-iterations 20]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from gsdeploy.bench.env import capture_env
from gsdeploy.bench.measure import MeasureConfig, measure_interleaved
from gsdeploy.bench.runners.ort import OrtRunner
from gsdeploy.export.onnx import export_onnx
from gsdeploy.export.quantize import S8S8_TENSORRT, U8S8_ORT_CPU, quantize_int8
from gsdeploy.load import load_model
from gsdeploy.sample_data import random_samples
from gsdeploy.transforms import DeployOptions, deploy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet50_pruned50")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--min-iterations", type=int, default=20)
    ap.add_argument("--min-duration-s", type=float, default=2.0)
    a = ap.parse_args()
    loaded = load_model(a.model)
    shape = tuple(loaded.input_shape)
    module = deploy(loaded.module, shape, DeployOptions()).module
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"fp32": Path(tmp) / "fp32.onnx"}
        export_onnx(module, shape, paths["fp32"])
        calib = random_samples(shape, 8).x
        for scheme in (U8S8_ORT_CPU, S8S8_TENSORRT):
            paths[scheme.name] = Path(tmp) / f"{scheme.name}.onnx"
            quantize_int8(paths["fp32"], paths[scheme.name], calib, scheme)
        runners = {k: OrtRunner(p, input_shape=shape) for k, p in paths.items()}
        try:
            stats = measure_interleaved(runners, a.batch, MeasureConfig(min_iterations=a.min_iterations,
                                                                        min_duration_s=a.min_duration_s))
        finally:
            for r in runners.values():
                r.close()
    env = capture_env()
    print(f"{a.model} deployed, batch {a.batch}, ORT {env.get('onnxruntime')} CPU, threads {runners['fp32'].threads}, "
          f"cpu {env.get('cpu')}; random calibration (8 samples), latency only")
    print(f"{'model':<8} {'median ms':>10} {'CoV':>7} {'n':>5} {'vs fp32':>8}")
    for k, s in stats.items():
        print(f"{k:<8} {s.median_ms:>10.3f} {s.cov:>7.1%} {s.n:>5} {stats['fp32'].median_ms / s.median_ms:>7.2f}x")


if __name__ == "__main__":
    main()
