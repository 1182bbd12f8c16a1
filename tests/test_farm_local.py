"""`gsdeploy sweep` without a cluster: jobs run here one after another; a failing job is retried,
then recorded with its reason, and the others are kept; --resume runs only what is missing."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")

from gsdeploy.cli import app  # noqa: E402
from gsdeploy.errors import GsdeployError  # noqa: E402
from gsdeploy.farm.ledger import Ledger  # noqa: E402
from gsdeploy.farm.local import run_local  # noqa: E402
from gsdeploy.farm.progress import SweepProgress  # noqa: E402
from gsdeploy.farm.spec import load_sweep  # noqa: E402
from gsdeploy.farm.stages import time_job  # noqa: E402
from gsdeploy.report import load_rows  # noqa: E402

runner = CliRunner()
FAST = ["--warmup-s", "0.02", "--min-iterations", "3", "--min-duration-s", "0.02"]


def profile(tmp_path: Path, name: str) -> Path:
    """A CPU "device" of its own name (a copy of cpu-ort's engine)."""
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"name: {name}\ndescription: test device {name}\ndevice: cpu\n"
                 "engines: [{name: ort, precisions: [fp32]}]\nbatches: [1]\nthreads: 1\n")
    return p


def sweep_file(tmp_path: Path, models: list[str], profiles: list[str], batches: list[int]) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text("models: [" + ", ".join(f"{{model: {m}}}" for m in models) + "]\n"
                 f"profiles: [{', '.join(profiles)}]\nbatches: {batches}\n")
    return p


def run_local_sweep(tmp_path: Path, models: list[str], batches: list[int]) -> tuple[Path, Path, str]:
    """A sweep of `models` on one CPU "device" (cpu-a), run here and green: (sweep file, output
    dir, what it printed)."""
    profile(tmp_path, "cpu-a")
    spec_path = sweep_file(tmp_path, models, ["cpu-a.yaml"], batches)
    out = tmp_path / "out"
    r = runner.invoke(app, ["sweep", str(spec_path), "--output", str(out), *FAST])
    assert r.exit_code == 0, r.output
    return spec_path, out, r.output


def test_local_sweep_writes_every_job_then_resume_runs_none(tmp_path):
    spec_path, out, _ = run_local_sweep(tmp_path, ["resnet20_pruned50"], [1, 2])
    df = pd.read_csv(out / "tiny.csv")
    assert len(df) == 4 and set(df["status"]) == {"ok"} and set(df["profile"]) == {"cpu-a"}
    assert sorted(set(zip(df["model"], df["batch"]))) == [
        ("resnet20", 1), ("resnet20", 2), ("resnet20_pruned50", 1), ("resnet20_pruned50", 2)]
    assert df["cpu"].notna().all() and df["ort_version"].notna().all()  # the device's environment
    before = (out / "tiny.csv").read_text()
    r = runner.invoke(app, ["sweep", str(spec_path), "--output", str(out), "--resume", *FAST])
    assert r.exit_code == 0 and "2 of 2 jobs done (2 from an earlier run)" in r.output
    assert (out / "tiny.csv").read_text() == before
    assert len(load_rows([out])) == 4


def test_failing_job_is_retried_then_recorded_and_the_others_kept(tmp_path):
    profile(tmp_path, "cpu-a")
    profile(tmp_path, "cpu-b")
    spec = load_sweep(sweep_file(tmp_path, ["resnet20_pruned50"], ["cpu-a.yaml", "cpu-b.yaml"], [1]), retries=2)
    calls = []

    def flaky(task, prepared):
        calls.append(task.profile)
        if task.profile == "cpu-a":
            raise GsdeployError("engine build failed on purpose")
        return time_job(task, prepared)

    jobs = spec.jobs()
    ledger = Ledger(tmp_path / "out", spec.name, resume=False)
    with SweepProgress({p: 1 for p in spec.profiles}, enabled=False) as bar:
        run_local(spec, jobs, ledger, bar, "test", time_fn=flaky)
    assert calls == ["cpu-a"] * 3 + ["cpu-b"]
    df = pd.read_csv(ledger.csv_path)
    failed = df[df["status"] == "failed"]
    assert len(failed) == 1 and failed.iloc[0]["profile"] == "cpu-a" and failed.iloc[0]["attempts"] == 3
    assert "engine build failed on purpose" in failed.iloc[0]["error"]
    assert (df[df["status"] == "ok"]["profile"] == "cpu-b").sum() == 2
    rows = load_rows([tmp_path / "out"])  # report leaves the failed job out and says so
    assert len(rows) == 2 and any("1 failed sweep job" in s for s in rows.attrs["skipped"])
    # --resume keeps the finished job and runs the failed one again
    ledger = Ledger(tmp_path / "out", spec.name, resume=True)
    assert ledger.done == {jobs[1].key}
    assert len(pd.read_csv(ledger.csv_path)) == 2


def test_deploy_failure_fails_its_jobs_only(tmp_path):
    profile(tmp_path, "cpu-a")
    spec = load_sweep(sweep_file(tmp_path, ["resnet20_pruned50", "resnet20_hinge50"], ["cpu-a.yaml"], [1]))

    def prepare_fn(entry, shape, targets, files):
        if entry.model == "resnet20_hinge50":
            raise GsdeployError("deployed model differs on purpose")
        from gsdeploy.farm.stages import prepare

        return prepare(entry, shape, targets, files)

    ledger = Ledger(tmp_path / "out", spec.name, resume=False)
    with SweepProgress({"cpu-a": 2}, enabled=False) as bar:
        run_local(spec, spec.jobs(), ledger, bar, "test", prepare_fn=prepare_fn,
                  time_fn=lambda task, prepared: time_job(task, prepared))
    df = pd.read_csv(ledger.csv_path)
    assert list(df["status"]) == ["ok", "ok", "failed"]
    assert df.iloc[2]["error"] == "deploy/export failed: deployed model differs on purpose"


def test_profile_that_cannot_run_here_fails_before_any_job(tmp_path):
    spec_path = sweep_file(tmp_path, ["resnet20_pruned50"], ["server-gpu-torch"], [1])
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    r = runner.invoke(app, ["sweep", str(spec_path), "--output", str(tmp_path / "out"), *FAST])
    assert r.exit_code == 2 and "cannot run here" in r.output and "--cluster" in r.output
    assert not (tmp_path / "out").exists()


def test_farm_deploys_with_the_latency_plan_made_on_the_target(tmp_path, monkeypatch):
    """The farm goes through bench's plan stage: the plan is measured on the job's own target (its
    profile, threads and every batch of the model's jobs), and the rows time the model it chose."""
    from gsdeploy.metrics import count_macs
    from gsdeploy.plan import stage

    planned = []
    real = stage.plan_latency

    def spy(module, input_shape, target, **kw):
        plan = real(module, input_shape, target, **kw)
        planned.append((target, plan))
        return plan

    monkeypatch.setattr(stage, "plan_latency", spy)
    _, out, _ = run_local_sweep(tmp_path, ["resnet20_pruned50"], [1, 2])
    assert len(planned) == 1, "the farm did not make the latency plan (or made it once per job)"
    target, plan = planned[0]
    assert (target.profile, target.batches, target.threads) == ("cpu-a", (1, 2), 1)
    df = pd.read_csv(out / "tiny.csv")
    assert set(df["plan"]) == {"latency"} and df["warning"].isna().all()
    comp = df[df["role"] == "compressed"].set_index("batch")
    for b in (1, 2):  # each batch's model, which is the overall winner unless another won there by a margin
        assert comp.loc[b, "macs"] == count_macs(plan.result_at(b).module, (3, 32, 32))
        assert comp.loc[b, "plan_variant"] == plan.winner_at(b)


def test_farm_times_each_batch_with_the_model_the_plan_chose_for_it(tmp_path, monkeypatch):
    """Scripted whole-model timings (tests/scripted_plan.py): all pairs fused is fastest at batch
    1, the pairs kept at batch 2, and the overall winner (what export writes) at neither. Each
    batch's rows come from its own model, and the ledger and its Markdown say which."""
    from gsdeploy.load import load_model
    from gsdeploy.metrics import count_macs
    from gsdeploy.transforms import DeployOptions, deploy
    from tests.scripted_plan import script_split_winners

    script_split_winners(monkeypatch, tmp_path / "cache")
    _, out, _ = run_local_sweep(tmp_path, ["resnet20_hinge50"], [1, 2])
    df = pd.read_csv(out / "tiny.csv")
    assert set(df["status"]) == {"ok"} and sorted(df["batch"]) == [1, 1, 2, 2]
    comp = df[df["role"] == "compressed"].set_index("batch")
    assert comp.loc[1, "plan_variant"] == "always" and comp.loc[2, "plan_variant"] == "never"
    assert df.loc[df["role"] == "baseline", "plan_variant"].isna().all()  # the dense model has no plan
    m = load_model("resnet20_hinge50")  # what each deployment counts, apart from the plan stage
    macs = {f: count_macs(deploy(m.module, m.input_shape, DeployOptions(fuse=f)).module, m.input_shape)
            for f in ("always", "never")}
    assert macs["always"] > macs["never"]
    assert comp.loc[1, "macs"] == macs["always"] and comp.loc[2, "macs"] == macs["never"]
    assert (comp["max_rel_err"] < 1e-4).all()
    md = (out / "tiny.md").read_text()
    assert "| resnet20_hinge50 (always) | compressed |" in md and "| resnet20_hinge50 (never) | compressed |" in md


def test_farm_falls_back_to_the_flop_plan_with_its_warning_in_the_ledger(tmp_path, monkeypatch):
    """Where the target cannot be timed, the FLOP plan's one-line warning is not lost: it is in
    the ledger beside the rows, in the Markdown and on stderr."""
    from gsdeploy.plan import stage

    monkeypatch.setattr(stage, "why_not_latency", lambda target: f"engine of {target.label} is elsewhere (test)")
    _, out, output = run_local_sweep(tmp_path, ["resnet20_pruned50"], [1])
    df = pd.read_csv(out / "tiny.csv")
    assert set(df["plan"]) == {"flops"}
    assert df["warning"].str.contains("FLOP plan, not measured: engine of ort is elsewhere").all()
    assert "warning: FLOP plan, not measured" in output and "model=resnet20_pruned50" in output
    assert "## warnings" in (out / "tiny.md").read_text()
    assert len(load_rows([out])) == 2  # report reads the new columns


def test_farm_plan_flops_and_fuse_latency_spellings(tmp_path, monkeypatch):
    """`plan: flops` deploys by MACs (rows named so); the README's old `fuse: latency` is the
    latency plan (it used to reach the deploy passes and fail every job)."""
    profile(tmp_path, "cpu-a")
    p = tmp_path / "s.yaml"
    p.write_text("models: [{model: resnet20_pruned50, plan: flops}, {model: resnet20_hinge50, fuse: latency}]\n"
                 "profiles: [cpu-a.yaml]\nbatches: [1]\n")
    spec = load_sweep(p)
    assert [(m.plan, m.fuse) for m in spec.models] == [("flops", "flops"), ("latency", "flops")]
    from gsdeploy.farm.stages import prepare_keys

    keys = prepare_keys(spec, spec.jobs())
    assert [k[2] for k in keys.values()] == [None, "cpu-a"]  # the latency plan is made on the device
