"""Issue 8's measured "Done means": the default (latency) plan against dense, as given and all fused.

For each model: make the default plan on the cpu-ort target (cold unless the cache has it),
then time, interleaved in one run per batch (bench's measure_interleaved on the target's
runners): the dense baseline, the as-given export (pairs kept), all pairs fused, the FLOP plan
and the default plan. That run is one round; rounds repeat (at least --min-rounds, at most
--rounds, stopping once the default plan's speedup varies by under --max-cov across rounds).
A speedup is the median over rounds of (dense median / model median) in the same round, and
its noise is the CoV of those per-round speedups: on this 2-core VM single runs have a
per-sample CoV of 10-50% at batch 1, while speedups from interleaved rounds agree far better.
Both are kept. The verdict "never worse" compares the default plan with dense and with the
better of as given and all fused, allowing one noise CoV.

`--truth` also exports the default plan's artifact with `gsdeploy export` and times it against
the dense ONNX with plain `session.run` loops (benchmarks/ort_truth.plain_loop: no gsdeploy
code in the timed path), alternating fresh sessions over several rounds.

    python benchmarks/plan_check.py resnet56_hinge50 [more models] [--out results/plan_check.csv]
"""

from __future__ import annotations

import argparse
import copy
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

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
    """Export with the CLI for each batch (`export --batch B`: the default plan for that batch, from
    the cache) and time it against dense with plain loops."""
    out = {}
    for b in batches:
        art = tmp / f"artifact_b{b}.onnx"
        cmd = [sys.executable, "-m", "gsdeploy", "export", model, "-o", str(art), "--batch", str(b)]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        ratios = []
        for _ in range(rounds):
            d = np.median(plain_loop(dense_onnx, shape, b, threads, True, 0.3, duration, 30))
            a = np.median(plain_loop(art, shape, b, threads, True, 0.3, duration, 30))
            ratios.append(float(d / a))
        out[b] = (statistics.median(ratios), ratios)
    return out


def speedup(rounds: list[dict], name: str, b: int) -> float:
    """Median over rounds of dense / model, each ratio from one interleaved run."""
    return statistics.median(r["dense"][b].median_ms / r[name][b].median_ms for r in rounds)


def noise(rounds: list[dict], name: str, b: int) -> float:
    """CoV of the per-round speedups (0 for a single round: unknown, so keep repeating)."""
    xs = [r["dense"][b].median_ms / r[name][b].median_ms for r in rounds]
    return statistics.stdev(xs) / statistics.mean(xs) if len(xs) > 1 else float("inf")


def same_model(a, b) -> bool:
    """The same graph and the same weights: timing one against the other measures only noise."""
    sa, sb = a.state_dict(), b.state_dict()
    return getattr(a, "code", None) == getattr(b, "code", None) and sa.keys() == sb.keys() and all(
        sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="zoo names or family names of benchmarks/families.py")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "plan_check.csv")
    ap.add_argument("--batch", default=None, help="batch sizes (default: the profile's)")
    ap.add_argument("--rounds", type=int, default=5, help="at most this many interleaved rounds per model")
    ap.add_argument("--min-rounds", type=int, default=3)
    ap.add_argument("--max-cov", type=float, default=0.05,
                    help="stop repeating once the default plan's per-round speedup CoV is under this")
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
            # the control is a second copy of dense: how far two identical models read apart in
            # the same run (session placement, position in the interleave) is the floor of the noise
            mods = {"dense": dense.module, "dense (control)": copy.deepcopy(dense.module), "default plan": None}
            for name, fuse in (("as given", "never"), ("all fused", "always"), ("FLOP plan", "flops")):
                mods[name] = deploy(loaded.module, loaded.input_shape, DeployOptions(fuse=fuse)).module
            # the default plan at each batch is the model the plan found fastest there (bench times that)
            per_batch = {b: plan.result_at(b).module if plan is not None else outcome.result.module
                         for b in target.batches}
            rounds: list[dict] = []
            for rnd in range(1, args.rounds + 1):
                got: dict = {}
                for b in target.batches:
                    one = time_modules(target, {**mods, "default plan": per_batch[b]}, loaded.input_shape, (b,), cfg)
                    for n, bs in one.items():
                        got.setdefault(n, {}).update(bs)
                rounds.append(got)
                if rnd >= args.min_rounds and all(
                        noise(rounds, "default plan", b) < args.max_cov for b in target.batches):
                    break
            tr = None
            if args.truth:
                dense_onnx = tmp / "dense.onnx"
                export_onnx(dense.module, loaded.input_shape, dense_onnx, exporters=("torchscript",))
                tr = truth(spec, dense_onnx, loaded.input_shape, target.batches, target.threads or env["usable_cores"],
                           tmp, 3, 1.0) if spec not in FAMILIES else None
            for b in target.batches:
                d = statistics.median(r["dense"][b].median_ms for r in rounds)
                row = {"model": spec, "batch": b, "plan": plan.winner_at(b), "plan_s": round(plan_s, 2),
                       "plan_cached": plan.models_cached, "rounds": len(rounds),
                       "max_cov": round(max(r[n][b].cov for r in rounds for n in mods), 4)}
                for name in mods:
                    row[f"{name} ms"] = round(statistics.median(r[name][b].median_ms for r in rounds), 4)
                    row[f"{name} CoV"] = round(statistics.median(r[name][b].cov for r in rounds), 4)
                    if name != "dense":
                        row[f"{name} x"] = round(speedup(rounds, name, b), 3)
                        row[f"{name} x CoV"] = round(noise(rounds, name, b), 4)
                tol = max(row["default plan x CoV"], abs(1 - row["dense (control) x"]))
                row["noise"] = round(tol, 4)
                row["plan at batch"] = plan.winner_at(b) if plan is not None else "flops"
                # a reference that is the very model the plan chose is no other export: the two read
                # apart by identity noise alone (say so instead of calling the plan worse than itself)
                same = [n for n in ("as given", "all fused") if same_model(mods[n], per_batch[b])]
                row["same model as default"] = ", ".join(same)
                others = [row[f"{n} x"] for n in ("as given", "all fused") if n not in same]
                row["never worse"] = bool(row["default plan x"] >= 1.0 * (1 - tol)
                                          and all(row["default plan x"] >= x * (1 - tol) for x in others))
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
                print(f"{spec} b{b}: plan={plan.winner_at(b)} ({plan_s:.1f}s) "
                      + "  ".join(f"{k} {row[k]}" for k in row if k.endswith(" x"))
                      + f"  speedup CoV {tol:.1%} over {len(rounds)} rounds  never worse: {row['never worse']}",
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

    def xc(r, name):
        v, c = r.get(f"{name} x"), r.get(f"{name} x CoV")
        if v is None or pd.isna(v):
            return "–"
        return f"{v:.2f}×" + ("" if c is None or pd.isna(c) else f" ±{c:.0%}")

    lines = ["# Default (latency) plan vs dense, as given, all fused and the FLOP plan (ORT CPU)\n",
             "Each round is one interleaved run of the five models at that batch (bench's measure_interleaved on "
             "the cpu-ort target's runners). Speedup = median over rounds of (dense median / model median) from "
             "the same round; ± is the CoV of those per-round speedups (the noise of the speedup). "
             "`sample CoV` is the largest per-sample CoV of any series (run-to-run jitter of single inferences). "
             "`control` is a second copy of dense timed in the same rounds: how far two identical models read apart. "
             "`never worse`: default plan ≥ 1.0× dense and ≥ the better of as given and all fused, within the "
             "noise (the larger of the default plan's speedup CoV and the control's distance from 1.00×); an export that is "
             "the very model the plan chose (no site had a choice) is not compared: the two differ by noise alone "
             "(marked `(same model)`). `artifact plain-loop` = the `gsdeploy export` artifact vs the dense ONNX, timed by "
             "plain `session.run` loops in fresh sessions, alternated over rounds (median of rounds).\n",
             "| model | batch | plan chosen | dense ms | default plan | as given | all fused | FLOP plan | "
             "control | never worse | rounds | sample CoV | artifact plain-loop | command |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|"]
    for r in df.to_dict("records"):
        art = r.get("artifact plain-loop x")
        nw = r.get("never worse")
        same = r.get("same model as default")
        same = "" if same is None or pd.isna(same) or not same else f" (same model as {same})"
        lines.append(f"| {r['model']} | {r['batch']} | {r['plan']} | {r['dense ms']:.3f} | {xc(r, 'default plan')} | "
                     f"{xc(r, 'as given')} | {xc(r, 'all fused')} | {xc(r, 'FLOP plan')} | {xc(r, 'dense (control)')} | "
                     f"{'–' if nw is None or pd.isna(nw) else ('yes' if nw else '**no**')}{same} | {r['rounds']} | "
                     f"{r['max_cov']:.0%} | {'–' if art is None or pd.isna(art) else f'{art:.2f}×'} | "
                     f"`{r['command']}` |")
    first = df.iloc[0] if len(df) else None
    if first is not None:
        lines.append(f"\nCPU {first['cpu']}, {first['threads']} threads, onnxruntime {first['onnxruntime']}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
