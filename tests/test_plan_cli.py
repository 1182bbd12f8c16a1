"""The latency plan through the CLI: the default where the engine runs, `plan --save-lut` then
`export --lut` without measuring, LUTs from another target or damaged refused in one line, the
FLOP plan with a warning where the target cannot run here."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from gsdeploy.cli import app
from gsdeploy.plan import search

pytest.importorskip("onnxruntime")
runner = CliRunner()
MODEL = "resnet20_pruned50"  # one width site (8 -> 16), small: a cold plan is quick


def ok(*args: str):
    r = runner.invoke(app, list(args))
    assert r.exit_code == 0, r.output + r.stderr
    return r


def fails(pattern: str, *args: str):
    r = runner.invoke(app, list(args))
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert "error:" in r.stderr and pattern.lower() in r.stderr.lower(), r.stderr
    return r


def test_latency_plan_is_the_default_and_replays_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GSDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    first = ok("inspect", MODEL)
    assert "plan: by latency" in first.stdout and "whole models timed on the target" in first.stdout
    assert "dense baseline" in first.stdout
    monkeypatch.setattr(search, "time_modules", lambda *a, **k: pytest.fail("a cached plan must not measure"))
    second = ok("inspect", MODEL)
    assert "from the timing cache" in second.stdout
    chosen = [line for line in first.stdout.splitlines() if "<- chosen" in line]
    assert chosen and chosen[0].split("│")[1] in second.stdout


def test_plan_on_the_device_export_elsewhere_with_the_lut(tmp_path, monkeypatch):
    monkeypatch.setenv("GSDEPLOY_CACHE_DIR", str(tmp_path / "device-cache"))
    lut = tmp_path / "lut.json"
    ok("plan", MODEL, "--save-lut", str(lut))
    data = json.loads(lut.read_text())
    assert data["fingerprint"]["engine"] == "ort" and data["plans"]
    # elsewhere: an empty cache and no measuring allowed
    monkeypatch.setenv("GSDEPLOY_CACHE_DIR", str(tmp_path / "other-cache"))
    monkeypatch.setattr(search, "time_modules", lambda *a, **k: pytest.fail("--lut must not measure"))
    ok("export", MODEL, "--lut", str(lut), "-o", str(tmp_path / "m.onnx"))
    manifest = json.loads((tmp_path / "m.manifest.json").read_text())
    record = next(iter(data["plans"].values()))
    # the record keeps the per-site latency choices; the artifact has them when that variant won
    assert manifest["options"]["choices"] == (record["choices"] if record["winner"] == "latency" else {})

    data["fingerprint"]["device"] = "Some Other CPU"
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    r = fails("another target", "export", MODEL, "--lut", str(other), "-o", str(tmp_path / "x.onnx"))
    assert "Some Other CPU" in r.stderr and data["fingerprint"]["engine_version"] in r.stderr
    assert not (tmp_path / "x.onnx").exists()

    bad = tmp_path / "bad.json"
    bad.write_text(lut.read_text().replace(str(next(iter(data["sites"].values()))["keep"]["1"][0]), "NaN", 1))
    fails("not a number", "export", MODEL, "--lut", str(bad), "-o", str(tmp_path / "y.onnx"))
    assert not (tmp_path / "y.onnx").exists()


def test_flags_that_contradict_each_other_fail_before_work():
    fails("pass one of the two", "inspect", MODEL, "--plan", "latency", "--fuse", "never")
    fails("--plan must be", "inspect", MODEL, "--plan", "fastest")


def test_a_target_that_cannot_run_here_gets_the_flop_plan_and_a_warning(tmp_path):
    profile = tmp_path / "gpu.yaml"
    profile.write_text("description: a GPU elsewhere\ndevice: cuda\nengines:\n  - name: ort\n    precisions: [fp32]\n"
                       "    options:\n      providers: [CUDAExecutionProvider]\nbatches: [1]\n")
    from gsdeploy.target import resolve_targets

    if resolve_targets(str(profile))[0].unavailable_reason() is None:
        pytest.skip("this machine can run the CUDA target")
    r = ok("inspect", MODEL, "--profile", str(profile))
    assert "warning: FLOP plan" in r.stderr and "--lut" in r.stderr
    assert "plan: by FLOPs" in r.stdout
    fails("--plan latency", "inspect", MODEL, "--profile", str(profile), "--plan", "latency")
