"""Claims: the shipped claim files load and give the right verdicts; the verdict rules."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from gsdeploy.errors import GsdeployError, MissingDependencyError
from gsdeploy.report.claims import (Claim, ClaimError, Tolerance, claim_target, evaluate_claims, exit_code, judge,
                                    load_claims, render_verdicts, verdicts_frame)
from gsdeploy.profiles import load_profile

CLAIMS_DIR = Path(__file__).resolve().parents[1] / "claims"


def identity_deploy(module, input_shape):
    """Stands in for gsdeploy.transforms.deploy to keep these tests fast (the real deploy
    takes seconds per model): the zoo's Hinge and pruned models have nothing left to prune,
    their pairs are kept by `fuse=flops` (r = 0.45C < 0.9C), and folding BN changes no
    conv/linear MACs, so their ratios are those of the modules as built. The slow test below
    checks that against the real deploy on one pair."""
    return SimpleNamespace(module=module)


def zoo_load(name, arch=None, input_shape=None):
    """A zoo model built on the meta device: shapes without weights, which is all a MAC or
    parameter count needs, and instant (gsdeploy.load.load_model initialises every weight and
    runs a probe forward pass)."""
    from gsdeploy.zoo import get_entry

    entry = get_entry(name)
    with torch.device("meta"):
        module = entry.build()
    return SimpleNamespace(module=module, input_shape=entry.input_shape)


def claim(**kw: object) -> Claim:
    base = dict(id="c", paper="p", model="m", metric="speedup", claimed=2.0, tolerance=Tolerance("rel", 0.1),
                direction="at_least", baseline="b")
    base.update(kw)
    return Claim(**base)


def write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


NO_GPU = lambda profile: "no GPU here"  # noqa: E731
ALL_THERE = lambda profile: None  # noqa: E731


# ---- shipped claim files ---------------------------------------------------------------------


def test_shipped_ratio_claims_measure_checkpoints_not_zoo_builds():
    """No shipped claim compares a model gsdeploy built to a target with that target: every
    ratio/error claim names a checkpoint file; every claim names where in the paper its value is."""
    claims = load_claims(CLAIMS_DIR)
    for c in claims:
        assert c.source and c.file
        if c.metric in ("flop_ratio", "params_ratio", "top1_error"):
            assert c.model.endswith(".pt") and os.path.isabs(c.model), c.id
    zoo_compressed = {c.model for c in claims if c.metric in ("flop_ratio", "params_ratio")} & {
        "resnet20_hinge50", "resnet56_hinge50", "vgg16_hinge50", "resnet50_pruned50", "resnet50_pruned75"}
    assert not zoo_compressed


def test_dwgl_speedups_cpu_measured_gpu_skipped_without_a_gpu():
    claims = load_claims(CLAIMS_DIR / "dwgl.yaml")
    speed = [c for c in claims if c.metric == "speedup"]
    assert {(c.model, c.claimed, c.profile) for c in speed} == {
        ("resnet50_pruned50", 2.23, "cpu-ort"), ("resnet50_pruned75", 4.0, "cpu-ort"),
        ("resnet50_pruned50", 2.23, "server-gpu-trt"), ("resnet50_pruned75", 4.0, "server-gpu-trt")}
    assert all(c.baseline == "resnet50" and c.direction == "at_least" and c.paper_target for c in speed)
    called = []
    no_gpu = lambda prof: "no GPU here" if prof.device != "cpu" else None  # noqa: E731
    verdicts = evaluate_claims(speed, measure_fn=lambda c: called.append(c.profile) or 2.1, unavailable_fn=no_gpu)
    assert called == ["cpu-ort", "cpu-ort"]
    assert [v.status for v in verdicts] == ["PASS", "FAIL", "SKIP", "SKIP"]  # 2.1 vs 2.23 and vs 4, -10%
    # Where the GPU target is present, the measurement decides (4x claimed, 3.7x is within 10%).
    verdicts = evaluate_claims(speed, measure_fn=lambda c: 3.7, unavailable_fn=ALL_THERE)
    assert [v.status for v in verdicts] == ["PASS"] * 4


def test_default_deploy_is_the_transforms_stage(monkeypatch):
    """Without deploy_fn, ratios come from gsdeploy.transforms.deploy(module, shape, DeployOptions())."""
    transforms = pytest.importorskip("gsdeploy.transforms")
    if not hasattr(transforms, "deploy"):
        pytest.skip("gsdeploy.transforms.deploy is not written yet")
    calls = []

    def spy(module, input_shape, options):
        calls.append((tuple(input_shape), type(options).__name__))
        return SimpleNamespace(module=module)

    monkeypatch.setattr(transforms, "deploy", spy)
    c = claim(model="resnet20_hinge50", baseline="resnet20", metric="flop_ratio", claimed=0.5,
              tolerance=Tolerance("abs", 0.02), direction="both")
    [v] = evaluate_claims([c], None, load_fn=zoo_load)
    assert v.status == "PASS" and calls == [((3, 32, 32), "DeployOptions")] * 2


def test_dwgl_skip_reason_comes_from_the_profile_when_no_cuda(monkeypatch):
    from gsdeploy import target

    monkeypatch.setattr(target, "_cuda_available", lambda: False)
    speed = [c for c in load_claims(CLAIMS_DIR / "dwgl.yaml") if c.profile == "server-gpu-trt"]
    verdicts = evaluate_claims(speed, measure_fn=lambda c: 1.0)
    assert {v.status for v in verdicts} == {"SKIP"}
    assert "needs a CUDA GPU" in verdicts[0].reason


def test_claim_directory_loads_every_file():
    ids = [c.id for c in load_claims(CLAIMS_DIR)]
    assert len(ids) == len(set(ids)) >= 10


# ---- verdict rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("direction, tol, measured, status", [
    ("at_least", Tolerance("rel", 0.1), 1.80, "PASS"),   # exactly 2.0 - 10%
    ("at_least", Tolerance("rel", 0.1), 1.79, "FAIL"),
    ("at_least", Tolerance("rel", 0.1), 5.00, "PASS"),   # faster than claimed is no failure
    ("both", Tolerance("abs", 0.05), 2.05, "PASS"),
    ("both", Tolerance("abs", 0.05), 1.94, "FAIL"),
    ("both", Tolerance("abs", 0.05), 2.06, "FAIL"),
    ("at_most", Tolerance("abs", 0.5), 2.5, "PASS"),
    ("at_most", Tolerance("abs", 0.5), 2.6, "FAIL"),
    ("at_most", Tolerance("abs", 0.5), 0.1, "PASS"),
])
def test_judge(direction, tol, measured, status):
    got, reason = judge(claim(direction=direction, tolerance=tol), measured)
    assert got == status and "speedup" in reason


def test_timed_claims_go_to_measure_fn_with_the_profile_filled_in():
    seen = []

    def measure(c: Claim) -> float:
        seen.append(c)
        return 1.9

    c = claim(model="resnet56_hinge50", baseline="resnet56")
    [v] = evaluate_claims([c], measure, unavailable_fn=ALL_THERE)
    assert v.status == "PASS" and v.measured == 1.9 and v.claimed == 2.0
    assert seen[0].profile == "cpu-ort"  # the default profile
    [v] = evaluate_claims([c], measure, profile="cpu-torch", unavailable_fn=ALL_THERE)
    assert seen[-1].profile == "cpu-torch"


def test_claim_bound_to_another_profile_is_skipped():
    c = claim(profile="server-gpu-trt")
    [v] = evaluate_claims([c], lambda c: 3.0, profile="cpu-ort", unavailable_fn=ALL_THERE)
    assert v.status == "SKIP" and "server-gpu-trt" in v.reason


@pytest.mark.parametrize("exc, status, text", [
    (MissingDependencyError("TensorRT is not installed"), "SKIP", "TensorRT is not installed"),
    (GsdeployError("export failed"), "ERROR", "export failed"),
    (RuntimeError("boom\nmore"), "ERROR", "RuntimeError: boom"),
])
def test_measure_failures_become_verdicts(exc, status, text):
    def measure(c: Claim) -> float:
        raise exc

    verdicts = evaluate_claims([claim(id="a"), claim(id="b")], measure, unavailable_fn=ALL_THERE)
    assert [v.status for v in verdicts] == [status, status]  # one failure does not stop the others
    assert text in verdicts[0].reason
    assert exit_code(verdicts) == (0 if status == "SKIP" else 1)


def test_nan_measurement_and_missing_measure_fn():
    [v] = evaluate_claims([claim()], lambda c: float("nan"), unavailable_fn=ALL_THERE)
    assert v.status == "ERROR"
    [v] = evaluate_claims([claim()], None, unavailable_fn=ALL_THERE)
    assert v.status == "SKIP" and "no measurement function" in v.reason


def test_engine_the_profile_lacks_is_an_error():
    [v] = evaluate_claims([claim(engine="trt")], lambda c: 3.0, unavailable_fn=ALL_THERE)
    assert v.status == "ERROR" and "has no engine 'trt'" in v.reason


def test_claim_target_defaults_and_overrides():
    prof = load_profile("server-gpu-ort-trt")
    t = claim_target(claim(), prof)
    assert (t.label, t.precision, t.batches) == ("ort-trt", "fp16", (1,))
    assert t.provider_options == prof.targets[0].provider_options  # the whole entry, options and all
    t = claim_target(claim(engine="ort-cuda", batch=32), prof)
    assert (t.label, t.precision, t.batches) == ("ort-cuda", "fp32", (32,))
    with pytest.raises(ClaimError, match="runs int8"):
        claim_target(claim(precision="int8"), prof)


def test_ratio_claims_count_the_deployed_modules():
    """The deploy step is applied to model and baseline, and its output is what is counted."""
    calls = []

    def halve_nothing(module, shape):
        calls.append(shape)
        return SimpleNamespace(module=module)

    c = claim(model="resnet20_hinge50", baseline="resnet20", metric="flop_ratio", claimed=0.5,
              tolerance=Tolerance("abs", 0.02), direction="both")
    p = replace(c, id="p", metric="params_ratio", tolerance=Tolerance("abs", 0.03))
    verdicts = evaluate_claims([c, p], None, deploy_fn=halve_nothing, load_fn=zoo_load)
    assert [v.status for v in verdicts] == ["PASS", "PASS"]
    assert calls == [(3, 32, 32), (3, 32, 32)]  # each model deployed once, shared by both claims


def test_unknown_model_is_an_error_verdict():
    c = claim(model="no_such_model", baseline="resnet20", metric="flop_ratio", claimed=0.5,
              tolerance=Tolerance("abs", 0.02), direction="both")
    [v] = evaluate_claims([c], None, deploy_fn=identity_deploy)
    assert v.status == "ERROR" and "no_such_model" in v.reason


# ---- claim file schema -----------------------------------------------------------------------

GOOD = {"paper": "P", "claims": [{"id": "x", "model": "m", "baseline": "b", "metric": "flop_ratio",
                                  "claimed": 0.5, "tolerance": {"abs": 0.02}, "source": "Table 1"}]}


def variant(**changes: object) -> dict:
    d = yaml.safe_load(yaml.safe_dump(GOOD))
    d["claims"][0].update(changes)
    return d


@pytest.mark.parametrize("data, pattern", [
    (variant(metirc="speedup"), r"unknown key 'claims\[0\].metirc'"),
    (variant(metric="accuracy"), r"key 'claims\[0\].metric' must be one of speedup, flop_ratio"),
    (variant(claimed="50%"), r"key 'claims\[0\].claimed' must be a number, got str '50%'"),
    (variant(tolerance=0.1), r"key 'claims\[0\].tolerance' must be a mapping with exactly one of abs or rel"),
    (variant(tolerance={"abs": 0.1, "rel": 0.1}), r"exactly one of abs or rel"),
    (variant(tolerance={"pct": 10}), r"exactly one of abs or rel"),
    (variant(batch=0), r"key 'claims\[0\].batch' must be a positive integer"),
    (variant(profile="cpu-ort"), r"key 'claims\[0\].profile' does not apply to metric flop_ratio"),
    (variant(baseline=None), r"key 'claims\[0\].baseline' must be a string"),
    ({"claims": [{"id": "x", "model": "m", "metric": "latency_ms", "claimed": 1.0, "tolerance": {"abs": 0.1},
                  "source": "S"}]}, r"missing key 'claims\[0\].paper'"),
    ({"paper": "P", "claims": [{"id": "x", "model": "m", "metric": "speedup", "claimed": 2,
                                "tolerance": {"rel": 0.1}, "source": "S"}]}, r"missing key 'claims\[0\].baseline'"),
    (variant(source=None), r"key 'claims\[0\].source' must be a string"),
    ({"paper": "P", "claims": [{"id": "x", "model": "m", "baseline": "b", "metric": "flop_ratio", "claimed": 0.5,
                                "tolerance": {"abs": 0.02}}]}, r"missing key 'claims\[0\].source'"),
    (variant(metric="speedup", counting="paper"), r"'claims\[0\].counting' applies to flop_ratio and params_ratio"),
    (variant(counting="exact"), r"'claims\[0\].counting' must be one of deployed, paper"),
    (variant(metric="top1_error"), r"missing key 'claims\[0\].eval_data'"),
    ({"paper": "P", "claims": []}, r"key 'claims' must be a non-empty list"),
    ({"paper": "P", "claims": GOOD["claims"] * 2}, r"claim id\(s\) used twice: x"),
])
def test_schema_errors_name_file_and_key(tmp_path, data, pattern):
    path = write(tmp_path, data)
    with pytest.raises(ClaimError, match=pattern) as info:
        load_claims(path)
    assert str(path) in str(info.value)


def test_defaults_and_direction_defaults(tmp_path):
    data = {"paper": "P", "defaults": {"tolerance": {"rel": 0.2}, "source": "Table 1"},
            "claims": [{"id": "s", "model": "m", "baseline": "b", "metric": "speedup", "claimed": 2},
                       {"id": "l", "model": "m", "metric": "latency_ms", "claimed": 3, "tolerance": {"abs": 1}},
                       {"id": "f", "model": "m", "baseline": "b", "metric": "flop_ratio", "claimed": 0.5}]}
    s, lat, f = load_claims(write(tmp_path, data))
    assert (s.direction, s.tolerance) == ("at_least", Tolerance("rel", 0.2))
    assert (lat.direction, lat.tolerance.allowed(3)) == ("at_most", 1.0)
    assert f.direction == "both" and f.tolerance.allowed(0.5) == pytest.approx(0.1)


def test_missing_claim_file(tmp_path):
    with pytest.raises(ClaimError, match="does not exist"):
        load_claims(tmp_path / "nope.yaml")


def test_render_and_frame():
    verdicts = evaluate_claims([claim(id="a")], lambda c: 1.0, unavailable_fn=ALL_THERE)
    text = render_verdicts(verdicts)
    assert "| FAIL | a | speedup | 1 | 2 |" in text and text.rstrip().endswith("1 FAIL")
    frame = verdicts_frame(verdicts)
    assert list(frame["status"]) == ["FAIL"] and frame.loc[0, "measured"] == 1.0


def test_written_verdicts_are_read_back_by_the_report(tmp_path):
    import pandas as pd

    from gsdeploy.report import load_inputs
    from gsdeploy.report.claims import write_verdicts
    from tests.test_report import one_run, write_csv

    verdicts = evaluate_claims([claim(id="a"), claim(id="b|c")], lambda c: 3.0 if c.id == "a" else 1.0,
                               unavailable_fn=ALL_THERE)
    write_csv(tmp_path / "rows.csv", one_run())
    write_verdicts(verdicts, tmp_path / "claims_x.csv", "gsdeploy validate x.yaml")
    md = write_verdicts(verdicts, tmp_path / "claims_x.md", "gsdeploy validate x.yaml").read_text()
    assert md.startswith("command: gsdeploy validate x.yaml") and "| PASS | a |" in md
    inputs = load_inputs([tmp_path])
    assert inputs.skipped == [] and len(inputs.rows) == 2
    got = inputs.claims.set_index("id")
    assert list(got["status"]) == ["PASS", "FAIL"] and got.loc["b|c", "measured"] == 1.0
    assert set(got["command"]) == {"gsdeploy validate x.yaml"}
    assert pd.read_csv(tmp_path / "claims_x.csv").columns[-1] == "command"


def test_validate_output_fails_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from gsdeploy.cli import app

    r = CliRunner().invoke(app, ["validate", str(CLAIMS_DIR / "hinge.yaml"), "-o", str(tmp_path / "no" / "x.csv")])
    assert r.exit_code != 0 and "does not exist" in r.stderr and "PASS" not in r.output
