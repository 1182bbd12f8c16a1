"""Truth check for gsdeploy's ORT timing: does OrtRunner + measure_interleaved report what a
plain, independent loop around `session.run` sees on the same model and settings?

Three methods, alternated over several rounds so slow drift of the machine hits all alike:
  gsdeploy  OrtRunner + measure_interleaved with one runner
  pair      two OrtRunners of the same model interleaved in blocks (the baseline-vs-compressed
            setup); both halves should match the plain loop if interleaving adds no bias
  plain     a separately created InferenceSession, same thread/spinning/optimisation settings,
            time.perf_counter() around session.run, no gsdeploy code in the timed path
Each method builds its sessions fresh and drops them before the next one starts, so no idle
session spins in the background of another.

    python benchmarks/ort_truth.py [--model resnet20] [--batch 1] [--threads N] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from gsdeploy.bench.env import capture_env
from gsdeploy.bench.measure import MeasureConfig, measure_interleaved
from gsdeploy.bench.runners.ort import OrtRunner
from gsdeploy.loaders import import_ort
from gsdeploy.target import make_target, usable_cpus
from gsdeploy.zoo import create_model
from truth_table import print_summary  # benchmarks/, beside this script


def export(name: str, path: Path) -> tuple[int, ...]:
    loaded = create_model(name)
    x = torch.randn(1, *loaded.input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(loaded.module, (x,), str(path), dynamo=True, input_names=["input"],
                              output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                              external_data=False, verbose=False)
        except Exception:
            torch.onnx.export(loaded.module, (x,), str(path), dynamo=False, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}})
    return loaded.input_shape


def plain_loop(path: Path, shape: tuple[int, ...], batch: int, threads: int, spinning: bool,
               warmup_s: float, duration_s: float, min_iterations: int) -> list[float]:
    """The reference: nothing but ORT's API and perf_counter."""
    ort = import_ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: np.random.default_rng(123).standard_normal((batch, *shape), dtype=np.float32)}
    t_end = time.perf_counter() + warmup_s
    while time.perf_counter() < t_end:
        sess.run(None, feed)
    samples: list[float] = []
    total = 0.0
    while len(samples) < min_iterations or total < duration_s:
        t0 = time.perf_counter()
        sess.run(None, feed)
        dt = time.perf_counter() - t0
        samples.append(dt)
        total += dt
    del sess
    return samples


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20", help="zoo model name (default resnet20)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="intra-op threads (default: usable cores)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=2.0, help="seconds of timed runs per method per round")
    ap.add_argument("--no-spinning", action="store_true")
    args = ap.parse_args(argv)
    threads = args.threads or usable_cpus()
    spinning = not args.no_spinning
    cfg = MeasureConfig(warmup_s=0.5, min_iterations=50, min_duration_s=args.duration)

    env = capture_env()
    print(f"model {args.model}, batch {args.batch}, threads {threads}, spinning {spinning}, "
          f"{args.rounds} rounds x {args.duration:.1f} s per method")
    print(f"cpu {env['cpu']} ({env['cpu_isa']}), {env['usable_cores']} usable cores; onnxruntime "
          f"{env['onnxruntime']}, torch {env['torch']}, python {env['python']}")

    results: dict[str, list[float]] = {"gsdeploy": [], "pair A": [], "pair B": [], "plain": []}
    covs: dict[str, list[float]] = {k: [] for k in results}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{args.model}.onnx"
        shape = export(args.model, path)
        for rnd in range(1, args.rounds + 1):
            r = OrtRunner(path, make_target("ort", threads=threads, allow_spinning=spinning))
            s = measure_interleaved({"m": r}, args.batch, cfg)["m"]
            r.close()
            del r
            results["gsdeploy"].append(s.median_ms)
            covs["gsdeploy"].append(s.cov)

            target = make_target("ort", threads=threads, allow_spinning=spinning)
            a, b = OrtRunner(path, target), OrtRunner(path, target)
            pair = measure_interleaved({"A": a, "B": b}, args.batch, cfg)
            a.close(), b.close()
            del a, b
            for k in ("A", "B"):
                results[f"pair {k}"].append(pair[k].median_ms)
                covs[f"pair {k}"].append(pair[k].cov)

            samples = np.asarray(plain_loop(path, shape, args.batch, threads, spinning, cfg.warmup_s,
                                            args.duration, cfg.min_iterations)) * 1e3
            results["plain"].append(float(np.median(samples)))
            covs["plain"].append(float(samples.std() / samples.mean()))
            print(f"round {rnd}: median ms  gsdeploy {results['gsdeploy'][-1]:.4f}  pair A "
                  f"{results['pair A'][-1]:.4f}  pair B {results['pair B'][-1]:.4f}  plain {results['plain'][-1]:.4f}",
                  flush=True)

    print_summary(results, covs, "plain")
    return 0


if __name__ == "__main__":
    sys.exit(main())
