"""Issue 8's measured "Done means": the default (latency) plan against dense, as given and all fused.

For each model: make the default plan on the cpu-ort target (cold unless the cache has it),
then time, interleaved in one run per batch with the profile's full budget (bench's
measure_interleaved on the target's runners): the dense baseline, the as-given export (pairs
kept), all pairs fused, the FLOP plan and the default plan. A round whose worst CoV is at or
above --max-cov is repeated (up to --rounds); every row keeps its CoV and the round count.

`--truth` also exports the default plan's artifact with `gsdeploy export` and times it against
the dense ONNX with plain `session.run` loops (benchmarks/ort_truth.plain_loop: no gsdeploy
code in the timed path), alternating fresh sessions over several rounds.

    python benchmarks/plan_check.py resnet56_hinge50 [more models] [--out results/plan_check.csv]
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from families import CASES, materialize  # noqa: E402
from ort_truth import plain_loop  # noqa: E402

from gsdeploy.bench.env import capture_env  # noqa: E402
from gsdeploy.bench.measure import MeasureConfig  # noqa: E402
from gsdeploy.export.onnx import export_onnx  # noqa: E402
from gsdeploy.load import load_model  # noqa: E402
from gsdeploy.pipeline import resolve_baseline  # noqa: E402
from gsdeploy.plan.stage import make_plan  # noqa: E402
from gsdeploy.plan.timing import time_modules  # noqa: E402
from gsdeploy.target import TargetFlags, resolve_targets  # noqa: E402
from gsdeploy.transforms import DeployOptions, deploy  # noqa: E402

FAMILIES = {c[0]: c for c in CASES}


def resolve(spec: str, tmp: Path):
    """A zoo name, or a family name from benchmarks/families.py (official fixtures)."""
    if spec in FAMILIES:
        _, ckpt, arch, base, base_arch, _ = FAMILIES[spec]
        loaded = load_model(materialize(ckpt, tmp), arch=arch)
        dense = load_model(materialize(base, tmp), arch=base_arch, input_shape=loaded.input_shape)
        return loaded, dense
    loaded = load_model(spec)
    return loaded, resolve_baseline(loaded, None, None, None, False)


def truth(model: str, dense_onnx: Path, shape, batches, threads: int, tmp: Path, rounds: int, duration: float):
    """Export with the CLI (default plan, from the cache) and time it against dense with plain loops."""
    art = tmp / "artifact.onnx"
    cmd = [sys.executable, "-m", "gsdeploy", "export", model, "-o", str(art)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    out = {}
    for b in batches:
        ratios = []
        for _ in range(rounds):
            d = np.median(plain_loop(dense_onnx, shape, b, threads, True, 0.3, duration, 30))
            a = np.median(plain_loop(art, shape, b, threads, True, 0.3, duration, 30))
            ratios.append(float(d / a))
        out[b] = (statistics.median(ratios), ratios)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="zoo names or family names of benchmarks/families.py")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "plan_check.csv")
    ap.add_argument("--batch", default=None, help="batch sizes (default: the profile's)")
    ap.add_argument("--rounds", type=int, default=3, help="repeat a model while its worst CoV >= --max-cov")
    ap.add_argument("--max-cov", type=float, default=0.05)
    ap.add_argument("--min-duration-s", type=float, default=None)
    ap.add_argument("--refresh", action="store_true", help="re-measure the plan (cold)")
    ap.add_argument("--truth", action="store_true", help="also time the exported artifact with plain loops")
    args = ap.parse_args(argv)
    command = "python benchmarks/plan_check.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    batches = tuple(int(b) for b in args.batch.split(",")) if args.batch else None
    target = resolve_targets("cpu-ort", TargetFlags(batches=batches, min_duration_s=args.min_duration_s))[0]
    cfg = MeasureConfig(warmup_s=target.warmup_s, min_iterations=target.min_iterations,
                        min_duration_s=target.min_duration_s)
    env = capture_env()
    rows = []
    for spec in args.models:
        with tempfile.TemporaryDirectory(prefix="gsdeploy-plancheck-") as t:
            tmp = Path(t)
            loaded, dense = resolve(spec, tmp)
            t0 = time.perf_counter()
            outcome = make_plan(loaded.module, loaded.input_shape, target, DeployOptions(), "latency",
                                dense=dense.module, refresh=args.refresh)
            plan_s = time.perf_counter() - t0
            plan = outcome.plan
            mods = {"dense": dense.module, "default plan": outcome.result.module}
            for name, fuse in (("as given", "never"), ("all fused", "always"), ("FLOP plan", "flops")):
                mods[name] = deploy(loaded.module, loaded.input_shape, DeployOptions(fuse=fuse)).module
            for rnd in range(1, args.rounds + 1):
                got = time_modules(target, mods, loaded.input_shape, target.batches, cfg)
                worst = max(t.cov for bs in got.values() for t in bs.values())
                if worst < args.max_cov:
                    break
            tr = None
            if args.truth:
                dense_onnx = tmp / "dense.onnx"
                export_onnx(dense.module, loaded.input_shape, dense_onnx, exporters=("torchscript",))
                tr = truth(spec, dense_onnx, loaded.input_shape, target.batches, target.threads or env["usable_cores"],
                           tmp, 3, 1.0) if spec not in FAMILIES else None
            for b in target.batches:
                d = got["dense"][b].median_ms
                row = {"model": spec, "batch": b, "plan": plan.winner, "plan_s": round(plan_s, 2),
                       "plan_cached": plan.models_cached, "rounds": rnd, "max_cov": round(worst, 4)}
                for name, bs in got.items():
                    row[f"{name} ms"] = round(bs[b].median_ms, 4)
                    row[f"{name} CoV"] = round(bs[b].cov, 4)
                    if name != "dense":
                        row[f"{name} x"] = round(d / bs[b].median_ms, 3)
                pv = plan.variant("latency")
                if pv is not None and pv.predicted_ms and b in pv.predicted_ms and pv.measured:
                    row["plan predicted ms"] = round(pv.predicted_ms[b], 4)
                    row["plan measured ms (plan run)"] = round(pv.measured[b].median_ms, 4)
                if tr is not None:
                    row["artifact plain-loop x"] = round(tr[b][0], 3)
                    row["artifact plain-loop rounds"] = " ".join(f"{x:.3f}" for x in tr[b][1])
                row.update({"cpu": env["cpu"], "threads": target.threads or env["usable_cores"],
                            "onnxruntime": env["onnxruntime"], "command": command})
                rows.append(row)
                print(f"{spec} b{b}: plan={plan.winner} ({plan_s:.1f}s) "
                      + "  ".join(f"{k} {row[k]}" for k in row if k.endswith(" x")) + f"  worst CoV {worst:.1%}",
                      flush=True)
            for n in plan.notes:
                print(f"  {spec}: {n}")
    df = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.exists():
        df = pd.concat([pd.read_csv(args.out), df], ignore_index=True)
    df.to_csv(args.out, index=False)
    md = args.out.with_suffix(".md")
    md.write_text(markdown(df))
    print(f"wrote {args.out} and {md}")
    return 0


def markdown(df: pd.DataFrame) -> str:
    """One row per model and batch: speedups vs dense (each from the same interleaved run), CoV."""
    def x(r, name):
        v = r.get(f"{name} x")
        return "–" if pd.isna(v) else f"{v:.2f}×"

    lines = ["# Default (latency) plan vs dense, as given, all fused and the FLOP plan (ORT CPU)\n",
             "Each row: one interleaved run of the five models at that batch (bench's measure_interleaved on the "
             "cpu-ort target's runners, the profile's budget); speedup = dense median / model median. `worst CoV` "
             "is the largest CoV of the five series; a run with worst CoV ≥ 5% was repeated up to `rounds` times. "
             "`artifact plain-loop` = the `gsdeploy export` artifact vs the dense ONNX, timed by plain "
             "`session.run` loops in fresh sessions, alternated over rounds (median of rounds).\n",
             "| model | batch | plan chosen | dense ms | default plan | as given | all fused | FLOP plan | "
             "worst CoV | rounds | artifact plain-loop | command |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in df.to_dict("records"):
        art = r.get("artifact plain-loop x")
        lines.append(f"| {r['model']} | {r['batch']} | {r['plan']} | {r['dense ms']:.3f} | {x(r, 'default plan')} | "
                     f"{x(r, 'as given')} | {x(r, 'all fused')} | {x(r, 'FLOP plan')} | {r['max_cov']:.1%} | "
                     f"{r['rounds']} | {'–' if art is None or pd.isna(art) else f'{art:.2f}×'} | `{r['command']}` |")
    first = df.iloc[0] if len(df) else None
    if first is not None:
        lines.append(f"\nCPU {first['cpu']}, {first['threads']} threads, onnxruntime {first['onnxruntime']}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
