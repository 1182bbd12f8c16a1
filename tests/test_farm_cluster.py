"""`gsdeploy sweep --cluster` on a real Ray cluster on 127.0.0.1: a head (deploy/export) and three
worker nodes, two offering the CPU "device" gsdeploy/cpu-a and one gsdeploy/cpu-b.

Shown here: jobs land only on nodes with their resource; timing jobs never overlap on one device;
a node killed mid-job loses no row (its job is retried on the other cpu-a node or recorded failed);
--resume after an interrupted sweep runs only the missing jobs. The test that kills a node runs
last: it leaves the cluster with one cpu-a node.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("ray", reason="the cluster tests need Ray: pip install -e '.[cluster]'")

from ray_cluster import DRIVER_ENV, LocalRayCluster  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FAST = ["--warmup-s", "0.02", "--min-iterations", "3"]


def profile(tmp: Path, name: str) -> None:
    (tmp / f"{name}.yaml").write_text(
        f"name: {name}\ndescription: test device {name}\ndevice: cpu\n"
        "engines: [{name: ort, precisions: [fp32]}]\nbatches: [1]\nthreads: 1\n")


def sweep_file(tmp: Path, name: str, models: list[str], profiles: list[str], batches: list[int]) -> Path:
    p = tmp / f"{name}.yaml"
    # plan: flops: these tests are about placement, retries and --resume; a latency plan (the
    # default) would be timed on each device node at the full budget (test_farm_local covers it)
    p.write_text("models: [" + ", ".join(f"{{model: {m}}}" for m in models) + "]\n"
                 f"profiles: [{', '.join(p + '.yaml' for p in profiles)}]\nbatches: {batches}\nretries: 1\n"
                 "plan: flops\n")
    return p


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray")
    c = LocalRayCluster(env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    try:
        c.start_head()
        # one node at a time: Ray gives a starting node 30 s to register, which a busy machine
        # starting several at once does not meet
        c.wait_nodes(1)
        for i, (name, kind) in enumerate((("a1", "cpu-a"), ("a2", "cpu-a"), ("b", "cpu-b"))):
            c.add_worker(name, {f"gsdeploy/{kind}": 1}, num_cpus=1)
            c.wait_nodes(i + 2)
        for name in ("cpu-a", "cpu-b"):
            profile(tmp, name)
        c.tmp = tmp
        yield c
    finally:
        c.stop()


def sweep_cmd(c: LocalRayCluster, spec: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "gsdeploy", "sweep", str(spec), "--output", str(out), "--cluster", c.address,
            *FAST, *extra]


def driver_env() -> dict:
    return {**os.environ, **DRIVER_ENV, "PYTHONPATH": str(REPO)}


def run_sweep(c: LocalRayCluster, spec: Path, out: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(sweep_cmd(c, spec, out, *extra), env=driver_env(), capture_output=True, text=True,
                          timeout=timeout)


def test_jobs_run_only_on_their_devices_one_at_a_time(cluster):
    spec = sweep_file(cluster.tmp, "place", ["resnet20_pruned50", "resnet20_dwgl"], ["cpu-a", "cpu-b"], [1, 2])
    out = cluster.tmp / "place"
    r = run_sweep(cluster, spec, out, "--min-duration-s", "0.3")
    assert r.returncode == 0, r.stdout + r.stderr
    df = pd.read_csv(out / "place.csv")
    assert set(df["status"]) == {"ok"} and df["sweep_job"].nunique() == 8 and len(df) == 16
    nodes = {n["id"]: n["resources"] for n in cluster.nodes_info()}
    for prof, node in zip(df["profile"], df["node"]):
        assert nodes[node].get(f"gsdeploy/{prof}") == 1.0, (prof, node)  # Ray's own view of that node
    assert df.loc[df["profile"] == "cpu-b", "node"].nunique() == 1
    jobs = df.drop_duplicates("sweep_job")
    for node, group in jobs.groupby("node"):
        spans = sorted(zip(pd.to_datetime(group["job_start"]), pd.to_datetime(group["job_end"])))
        for (s0, e0), (s1, e1) in zip(spans, spans[1:]):
            assert s1 >= e0, f"two timing jobs overlapped on node {node}: {s0}-{e0} and {s1}-{e1}"


def test_resume_after_an_interrupted_sweep_runs_only_the_missing_jobs(cluster):
    spec = sweep_file(cluster.tmp, "resume", ["resnet20_pruned50"], ["cpu-b"], [1, 2, 3, 4])
    out = cluster.tmp / "resume"
    csv = out / "resume.csv"
    # the sweep gets Ctrl-C as a user's shell gives it: a suite started in the background (`pytest &`
    # in a script) ignores SIGINT, and a child would inherit that and run to the end
    proc = subprocess.Popen(sweep_cmd(cluster, spec, out, "--min-duration-s", "0.5"), env=driver_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not (csv.is_file() and pd.read_csv(csv)["sweep_job"].nunique() >= 1):
        assert proc.poll() is None and time.monotonic() < deadline, "no job finished"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    before = pd.read_csv(csv)
    first = set(before["sweep_job"])
    assert 1 <= len(first) < 4, "the interruption came too late to test --resume"
    r = run_sweep(cluster, spec, out, "--min-duration-s", "0.5", "--resume")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"({len(first)} from an earlier run)" in r.stdout
    after = pd.read_csv(csv)
    assert after["sweep_job"].nunique() == 4 and len(after) == 8 and set(after["status"]) == {"ok"}
    kept = after[after["sweep_job"].isin(first)].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, before.reset_index(drop=True))  # earlier rows untouched, not re-timed


def test_each_batch_runs_the_model_the_plan_chose_on_the_device(cluster, tmp_path, monkeypatch):
    """The plan is made on the device node, here from a LUT (`gsdeploy plan --save-lut`, with the
    scripted timings of tests/scripted_plan.py: a different fastest model at batch 1 and 2, and
    the overall winner at neither); each model travels to the device and times its own batch."""
    from typer.testing import CliRunner

    from gsdeploy.cli import app
    from tests.scripted_plan import script_split_winners

    script_split_winners(monkeypatch, tmp_path / "cache")
    (tmp_path / "cpu-a.yaml").write_text((cluster.tmp / "cpu-a.yaml").read_text().replace("batches: [1]",
                                                                                          "batches: [1, 2]"))
    lut = tmp_path / "lut.json"
    r = CliRunner().invoke(app, ["plan", "resnet20_hinge50", "--profile", str(tmp_path / "cpu-a.yaml"),
                                 "--save-lut", str(lut)])
    assert r.exit_code == 0, r.output
    spec = cluster.tmp / "variants.yaml"
    spec.write_text(f"models: [{{model: resnet20_hinge50, plan: latency, lut: {lut}}}]\n"
                    "profiles: [cpu-a.yaml]\nbatches: [1, 2]\nretries: 1\n")
    out = cluster.tmp / "variants"
    r = run_sweep(cluster, spec, out, "--min-duration-s", "0.05")
    assert r.returncode == 0, r.stdout + r.stderr
    df = pd.read_csv(out / "variants.csv")
    assert set(df["status"]) == {"ok"} and sorted(df["batch"]) == [1, 1, 2, 2] and set(df["plan"]) == {"latency"}
    comp = df[df["role"] == "compressed"].set_index("batch")
    assert comp.loc[1, "plan_variant"] == "always" and comp.loc[2, "plan_variant"] == "never"
    assert comp.loc[1, "macs"] > comp.loc[2, "macs"]  # all pairs fused at batch 1, the pairs kept at batch 2


def test_node_killed_mid_job_loses_no_row(cluster):
    spec = sweep_file(cluster.tmp, "kill", ["resnet20_pruned50"], ["cpu-a"], [1, 2, 3, 4])
    out = cluster.tmp / "kill"
    proc = subprocess.Popen(sweep_cmd(cluster, spec, out, "--min-duration-s", "1.5"), env=driver_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim, deadline = None, time.monotonic() + 240
    while victim is None:
        assert proc.poll() is None and time.monotonic() < deadline, "no timing job started"
        victim = next((n for n in ("a1", "a2") if cluster.running(n, "_timing_stage")), None)
        time.sleep(0.1)
    cluster.kill(victim)
    output, _ = proc.communicate(timeout=300)
    df = pd.read_csv(out / "kill.csv")
    assert df["sweep_job"].nunique() == 4, output  # every job is in the table: rows or a failure
    ok = df[df["status"] == "ok"]
    failed = df[df["status"] == "failed"]
    assert len(ok) + 2 * len(failed) == 8
    retried = ok[ok["attempts"] > 1]
    # the job on the killed node was either retried on the other cpu-a node or recorded with why
    assert len(retried) >= 2 or (len(failed) >= 1 and failed["error"].str.contains("lost on node").all()), output
    survivor = {n["id"] for n in cluster.nodes_info() if n["alive"] and "gsdeploy/cpu-a" in n["resources"]}
    assert set(retried["node"]) <= survivor
    assert proc.returncode == (1 if len(failed) else 0)
