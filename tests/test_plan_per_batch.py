"""A batch-1 server and a batch-32 one are different targets: when the whole-model run finds a
different fastest model at some batch, bench times each batch with its own model, the cache and
LUTs keep the per-batch winners, and export writes the fastest over all batches.

The whole-model timings are scripted here (what is under test is what the planner does with
them); site timings are real and come from the session's quick budget (conftest.py)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from gsdeploy.plan import cache as lut
from gsdeploy.plan import search, timing
from gsdeploy.plan.cache import Timing
from gsdeploy.target import make_target
from tests.scripted_plan import script_split_winners

pytest.importorskip("onnxruntime")

FAST_T = dict(threads=1, warmup_s=0.02, min_iterations=3, min_duration_s=0.02)
# all pairs fused is fastest at batch 1, as given at batch 2 (and over both: 2 x 1.4 < 1 x 3)
def script_ms(batch: int, name: str) -> float:
    return ({"always": 1.0} if batch == 1 else {"always": 3.0, "never": 1.4}).get(name, 2.0)


def scripted(real):
    def time_modules(target, modules, input_shape, batches, cfg, rounds=1):
        if "never" not in modules:  # a site's candidates: measure them
            return real(target, modules, input_shape, batches, cfg, rounds)
        return {n: {b: Timing(script_ms(b, n), 0.01) for b in batches} for n in modules}
    return time_modules


@pytest.fixture
def script(monkeypatch, tmp_path):
    monkeypatch.setenv("GSDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(search, "time_modules", scripted(timing.time_modules))


def hinge():
    from gsdeploy.load import load_model

    return load_model("resnet20_hinge50")


def test_each_batch_gets_its_fastest_model_and_the_cache_keeps_it(script, monkeypatch):
    from gsdeploy.metrics import count_macs

    m = hinge()
    target = make_target("ort", batches=(1, 2), **FAST_T)
    plan = search.plan_latency(m.module, m.input_shape, target)
    assert plan.batch_winners == {1: "always", 2: "never"}
    assert plan.winner == "never"  # the geometric mean over the batches: what export writes
    fused, kept = plan.result_at(1), plan.result_at(2)
    assert kept is plan.result
    assert count_macs(fused.module, m.input_shape) > count_macs(kept.module, m.input_shape)  # pairs fused
    assert fused.verification.passed and kept.verification.passed
    assert any("differs by batch" in n for n in plan.notes)

    monkeypatch.setattr(search, "time_modules", lambda *a, **k: pytest.fail("a cached plan must not measure"))
    again = search.plan_latency(m.module, m.input_shape, target)
    assert again.batch_winners == plan.batch_winners and again.winner == plan.winner
    assert count_macs(again.result_at(1).module, m.input_shape) == count_macs(fused.module, m.input_shape)
    table = lut.parse_table(plan.table.to_json(), "lut.json")  # the LUT carries them too
    assert next(iter(table.plans.values()))["batch_winners"] == {"1": "always", "2": "never"}


@pytest.mark.parametrize("bad", [{"1": "dense"}, {"0": "never"}, {"²": "never"}, {"1" * 40: "never"}, ["never"],
                                 {"1": 3}])
def test_a_lut_with_bad_batch_winners_is_refused(bad):
    table = lut.TimingTable({"engine": "ort"})
    table.plans["k"] = {"winner": "never", "model": "m", "choices": {}, "reasons": {}, "batch_winners": {"1": "never"}}
    assert lut.parse_table(table.to_json(), "lut.json").plans["k"]["batch_winners"] == {"1": "never"}
    table.plans["k"]["batch_winners"] = bad
    text = table.to_json()
    with pytest.raises(lut.LutError, match="batch_winners"):
        lut.parse_table(text, "lut.json")


def test_bench_times_each_batch_with_its_fastest_model(script, tmp_path):
    from gsdeploy.pipeline import BenchRequest, run_bench_job

    target = make_target("ort", batches=(1, 2), **FAST_T)
    req = BenchRequest(model="resnet20_hinge50", targets=(target,), out_dir=tmp_path / "out", name="b", command="c",
                       progress=False)
    run_bench_job(req)
    df = pd.read_csv(tmp_path / "out" / "b.csv")
    comp = df[df.role == "compressed"].set_index("batch")
    assert set(comp.index) == {1, 2} and (comp["model"] == "resnet20_hinge50").all()
    assert comp.loc[1, "macs"] > comp.loc[2, "macs"]  # batch 1 ran the fused model, batch 2 the pairs
    assert (comp["max_rel_err"] < 1e-4).all()
    base = df[df.role == "baseline"]
    assert set(base["batch"]) == {1, 2} and (base["speedup_vs_baseline"] == 1.0).all()
    plan = json.loads((tmp_path / "out" / "b.plan.json").read_text())
    assert plan["plan_stage"]["batch_winners"] == {"1": "always", "2": "never"}


def test_export_batch_plans_the_artifact_for_that_batch(script, tmp_path):
    from typer.testing import CliRunner

    from gsdeploy.cli import app
    from gsdeploy.export.artifact import manifest_path

    macs = {}
    for b in ("1", "2"):
        out = tmp_path / f"b{b}.onnx"
        r = CliRunner().invoke(app, ["export", "resnet20_hinge50", "-o", str(out), "--batch", b])
        assert r.exit_code == 0, r.output
        macs[b] = json.loads(manifest_path(out).read_text())["macs"]["after"]
    assert macs["1"] > macs["2"]  # batch 1's fastest model fuses the pairs (more MACs than the pairs)
    r = CliRunner().invoke(app, ["export", "resnet20_hinge50", "-o", str(tmp_path / "x.onnx"), "--batch", "0"])
    assert r.exit_code != 0 and "--batch" in r.output and not (tmp_path / "x.onnx").exists()


def test_the_plan_table_marks_the_export_choice_and_each_batch_model(script):
    from typer.testing import CliRunner

    from gsdeploy.cli import app

    r = CliRunner().invoke(app, ["plan", "resnet20_hinge50"])  # cpu-ort: batches 1 and 32
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert any("as given" in ln and "<- chosen" in ln for ln in lines)
    assert any("all pairs fused" in ln and "<- fastest at b1" in ln for ln in lines)
    assert "differs by batch" in r.stdout


@pytest.fixture
def split_script(monkeypatch, tmp_path):
    script_split_winners(monkeypatch, tmp_path / "cache")


def test_bench_when_the_overall_winner_is_fastest_at_no_batch(split_script, tmp_path):
    """Commit 69dfd2d: the model `export` writes by default won at no single batch, and bench
    looked for its group among the per-batch ones (StopIteration: an internal error). Each batch
    must be timed with its own model, and the exported one is neither of them."""
    from typer.testing import CliRunner

    from gsdeploy.cli import app
    from gsdeploy.export.artifact import manifest_path
    from gsdeploy.pipeline import BenchRequest, run_bench_job

    target = make_target("ort", batches=(1, 2), **FAST_T)
    req = BenchRequest(model="resnet20_hinge50", targets=(target,), out_dir=tmp_path / "out", name="b", command="c",
                       progress=False)
    run_bench_job(req)
    stage = json.loads((tmp_path / "out" / "b.plan.json").read_text())["plan_stage"]
    assert stage["winner"] == "latency" and stage["batch_winners"] == {"1": "always", "2": "never"}
    df = pd.read_csv(tmp_path / "out" / "b.csv")
    comp = df[df.role == "compressed"].set_index("batch")
    assert sorted(comp.index) == [1, 2] and sorted(df[df.role == "baseline"]["batch"]) == [1, 2]
    assert (comp["max_rel_err"] < 1e-4).all()

    out = tmp_path / "default.onnx"  # export's model: the overall winner (cpu-ort: batches 1 and 32)
    r = CliRunner().invoke(app, ["export", "resnet20_hinge50", "-o", str(out)])
    assert r.exit_code == 0, r.output
    exported = json.loads(manifest_path(out).read_text())["macs"]["after"]
    # batch 1 ran all pairs fused (most MACs), batch 2 the pairs kept (fewest); the overall
    # winner fuses one stage's pairs only, so it lies strictly between and ran at neither batch
    assert comp.loc[2, "macs"] < exported < comp.loc[1, "macs"]
