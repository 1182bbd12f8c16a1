"""Run a sweep file on a local Ray cluster (a head and one worker node per profile, all on
127.0.0.1) and again without a cluster, then check that both produced the same set of rows.

    PYTHONPATH=. python benchmarks/cluster_sweep.py benchmarks/sweeps/zoo3.yaml results/sweep_zoo3 [sweep flags]

Writes OUT/cluster/<sweep>.csv/.md, OUT/local/<sweep>.csv/.md and OUT.md (commands, cluster
layout, the row-set comparison and the latency tables of both runs). The "devices" of this
cluster are processes on one machine: the cluster's numbers show the plumbing works, not how
fast a device is (two nodes time at the same time on shared cores).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
from ray_cluster import DRIVER_ENV, LocalRayCluster  # noqa: E402

from gsdeploy.farm.spec import load_sweep  # noqa: E402

KEY = ["model", "role", "engine", "precision", "batch", "profile"]


def run(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    print("$", " ".join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.run(cmd, env=env, check=True)
    return time.perf_counter() - t0


def main() -> None:
    sweep_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    flags = sys.argv[3:]
    spec = load_sweep(sweep_path)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    cluster = LocalRayCluster(env={"PYTHONPATH": str(HERE.parent)})
    layout = []
    try:
        cluster.start_head()
        cluster.wait_nodes(1)
        layout.append("head: deploy/export (no device resource)")
        for i, name in enumerate(spec.profiles):
            cluster.add_worker(name, {f"gsdeploy/{name}": 1}, num_cpus=1)
            cluster.wait_nodes(i + 2)
            layout.append(f"worker: --resources '{{\"gsdeploy/{name}\": 1}}'")
        base = [sys.executable, "-m", "gsdeploy", "sweep", str(sweep_path)]
        t_cluster = run(base + ["--output", str(out / "cluster"), "--cluster", cluster.address, *flags],
                        {**env, **DRIVER_ENV})
    finally:
        cluster.stop()
    t_local = run(base + ["--output", str(out / "local"), *flags], env)
    c = pd.read_csv(out / "cluster" / f"{spec.name}.csv")
    lo = pd.read_csv(out / "local" / f"{spec.name}.csv")
    rows_c = set(map(tuple, c[KEY].astype(str).values))
    rows_l = set(map(tuple, lo[KEY].astype(str).values))
    same = rows_c == rows_l and len(c) == len(lo)
    lines = [f"# sweep {spec.name}: local Ray cluster vs no cluster", "",
             f"- sweep file: `{sweep_path}` ({len(spec.jobs())} jobs)",
             f"- cluster (127.0.0.1, one machine): {'; '.join(layout)}",
             f"- cluster run: `gsdeploy sweep {sweep_path} --output {out / 'cluster'} --cluster 127.0.0.1:PORT "
             f"{' '.join(flags)}` ({t_cluster:.0f} s, cluster start not counted)",
             f"- local run: `gsdeploy sweep {sweep_path} --output {out / 'local'} {' '.join(flags)}` ({t_local:.0f} s)",
             f"- made by: `PYTHONPATH=. python benchmarks/cluster_sweep.py {sweep_path} {out} {' '.join(flags)}`",
             f"- rows by status: cluster {({k: int(v) for k, v in c['status'].value_counts().items()})}, "
             f"local {({k: int(v) for k, v in lo['status'].value_counts().items()})}",
             f"- same set of rows ({', '.join(KEY)}): **{'yes' if same else 'NO'}** "
             f"({len(rows_c)} cluster, {len(rows_l)} local)",
             f"- cluster nodes that timed: {c.groupby('profile')['node'].nunique().to_dict()} per profile",
             "", "The cluster's device nodes share this machine's cores (and time in parallel), so its "
             "latencies are not comparable with the local run's. Check each row's CoV before reading a latency: "
             "on a shared machine both runs can be far noisier than the 2.5% a measurement needs.", ""]
    for name, df in (("local", lo), ("cluster", c)):
        lines += [f"## {name}", "", "| model | role | profile | engine | batch | median ms | CoV | speedup |",
                  "|---|---|---|---|---:|---:|---:|---:|"]
        for r in df.sort_values(["profile", "batch", "model"]).to_dict("records"):
            lines.append(f"| {r['model']} | {r['role']} | {r['profile']} | {r['engine']} | {r['batch']} | "
                         f"{r['latency_ms_median']:.3f} | {r['latency_cov']:.1%} | {r['speedup_vs_baseline']:.2f}x |")
        lines.append("")
    Path(f"{out}.md").write_text("\n".join(lines))
    print(f"wrote {out}.md; same rows: {same}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
