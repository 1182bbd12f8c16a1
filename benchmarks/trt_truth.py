"""Cross-check of gsdeploy's TensorRT timing against trtexec, NVIDIA's reference benchmark.

trtexec is not a bench engine (it times its own loop in its own process, so it cannot be
interleaved with a dense baseline), but on one engine its GPU compute time should agree with what
`TrtRunner` + `measure_interleaved` report. The two are alternated over several rounds so slow
drift of the GPU (clocks, temperature) hits both alike:
  gsdeploy  TrtRunner on the engine, CUDA events around each execute (GPU compute only)
  trtexec   `gsdeploy.bench.trtexec.run_trtexec` with matching settings: no transfers, spin-wait,
            no CUDA graph; its --exportTimes computeMs samples
Needs an NVIDIA GPU, TensorRT's Python bindings and `trtexec` on PATH; elsewhere it ends with one
`error:` line. The engine comes from `gsdeploy export MODEL --engine trt -o OUT.engine`.

    python benchmarks/trt_truth.py OUT.engine [--batch 1] [--rounds 3] [--duration 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gsdeploy.bench.measure import MeasureConfig, measure_interleaved
from gsdeploy.bench.runners.trt import TrtRunner
from gsdeploy.bench.stats import summarize
from gsdeploy.bench.trtexec import TrtexecTiming, run_trtexec
from gsdeploy.errors import GsdeployError
from truth_table import print_summary  # benchmarks/, beside this script


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("engine", type=Path, help="a gsdeploy-built .engine (with its .manifest.json)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=2.0, help="seconds of timed runs per method per round")
    args = ap.parse_args(argv)
    if args.batch < 1 or args.rounds < 1 or not 0 < args.duration <= 600:
        print("error: --batch and --rounds must be at least 1 and --duration in (0, 600] s", file=sys.stderr)
        return 2
    cfg = MeasureConfig(warmup_s=0.5, min_iterations=100, min_duration_s=args.duration)
    timing = TrtexecTiming(warmup_ms=500.0, iterations=100, duration_s=args.duration)

    medians: dict[str, list[float]] = {"gsdeploy": [], "trtexec": []}
    covs: dict[str, list[float]] = {k: [] for k in medians}
    try:
        for rnd in range(1, args.rounds + 1):
            runner = TrtRunner(args.engine)
            try:
                shapes = {runner.trt.input_name: (args.batch, *runner.trt.sample_shape)}
                s = measure_interleaved({"m": runner}, args.batch, cfg)["m"]
            finally:
                runner.close()
            medians["gsdeploy"].append(s.median_ms)
            covs["gsdeploy"].append(s.cov)
            ref = summarize(run_trtexec(args.engine, shapes, timing).times.compute_s)
            medians["trtexec"].append(ref.median_ms)
            covs["trtexec"].append(ref.cov)
            print(f"round {rnd}: GPU compute median ms  gsdeploy {s.median_ms:.4f}  trtexec {ref.median_ms:.4f}",
                  flush=True)
    except GsdeployError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code

    print_summary(medians, covs, "trtexec")
    return 0


if __name__ == "__main__":
    sys.exit(main())
