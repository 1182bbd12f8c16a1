"""The newer surfaces against a careless or hostile user: `plan --save-lut`/`--lut`, `--plan`,
the timing cache, `bench --per-layer`, sweep files and the report's plot. Bad input is one
`error:` line before any work; nothing the user has is replaced; nothing in a file drives the
terminal."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from gsdeploy.cli import app
from gsdeploy.errors import GsdeployError
from gsdeploy.plan import cache
from gsdeploy.plan.cache import LutError, TimingTable, parse_table
from gsdeploy.plan.timing import fingerprint
from gsdeploy.target import make_target

pytest.importorskip("onnxruntime")
runner = CliRunner()
MODEL = "resnet20_pruned50"


def fails(pattern: str, *args: str):
    r = runner.invoke(app, list(args))
    assert r.exit_code not in (0, None) and "Traceback" not in r.output, r.output
    assert "error:" in r.stderr and pattern.lower() in r.stderr.lower(), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r


def never_loaded(monkeypatch):
    """Fail the test if a model is loaded: the refusal must come before any work. Patched in every
    module that imported load_model by name (they are imported first, so none binds the stand-in)."""
    import sys

    import gsdeploy.cli  # noqa: F401
    import gsdeploy.load
    import gsdeploy.pipeline  # noqa: F401
    import gsdeploy.report.claims  # noqa: F401

    real = gsdeploy.load.load_model
    for name, module in list(sys.modules.items()):
        if name.startswith("gsdeploy") and getattr(module, "load_model", None) is real:
            monkeypatch.setattr(module, "load_model", lambda *a, **k: pytest.fail("loaded a model before refusing"))


def lut_text(target=None, **fp) -> str:
    return TimingTable({**fingerprint(target or make_target("ort")), **fp}).to_json()


# ---- plan --save-lut: never over the model, its baseline or a file that is not a LUT ----------


def test_save_lut_onto_the_model_is_refused_and_the_model_kept(tmp_path, monkeypatch):
    model = tmp_path / "m.pt"
    model.write_bytes(b"\x80\x02 checkpoint bytes")  # refused before it is read
    never_loaded(monkeypatch)
    fails("same file as the input", "plan", str(model), "--save-lut", str(model))
    assert model.read_bytes() == b"\x80\x02 checkpoint bytes"


def test_save_lut_onto_an_unrelated_file_is_refused(tmp_path, monkeypatch):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    never_loaded(monkeypatch)
    fails("not a gsdeploy timing LUT", "plan", MODEL, "--save-lut", str(notes))
    assert notes.read_text() == "my notes\n"


def test_save_lut_may_replace_an_older_lut(tmp_path):
    from gsdeploy.plan.stage import check_lut_target

    old = tmp_path / "old.json"
    old.write_text(lut_text())
    assert check_lut_target(old) == old
    with pytest.raises(GsdeployError, match="directory"):
        check_lut_target(tmp_path)


# ---- --lut and --plan: checked before any load -------------------------------------------------


@pytest.mark.parametrize("args, words", [
    (["--plan", "flops", "--lut", "{lut}"], "--lut is used by the latency plan only"),
    (["--fuse", "always", "--refresh"], "--refresh is used by the latency plan only"),
    (["--plan", "Latency"], "--plan must be one of auto, latency, flops"),
    (["--lut", "{nan}"], "NaN is not a number"),
    (["--lut", "{dir}"], "not a regular file"),
    (["--lut", "{other}"], "measured on another target"),
])
def test_bad_plan_flags_and_luts_fail_before_the_model_is_loaded(tmp_path, monkeypatch, args, words):
    (tmp_path / "good.json").write_text(lut_text())
    (tmp_path / "other.json").write_text(lut_text(precision="int8"))
    (tmp_path / "nan.json").write_text(lut_text().replace('"version": 1', '"version": 1, "x": NaN'))
    paths = {"lut": tmp_path / "good.json", "nan": tmp_path / "nan.json", "dir": tmp_path, "other": tmp_path / "other.json"}
    never_loaded(monkeypatch)
    for cmd in ("inspect", "export"):
        extra = ["-o", str(tmp_path / "x.onnx")] if cmd == "export" else []
        fails(words, cmd, MODEL, *extra, *[a.format(**paths) for a in args])
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("cmd", [["inspect"], ["export", "-o", "{tmp}/x.onnx"], ["bench", "-o", "{tmp}/out"]])
def test_a_lut_with_refresh_is_refused_before_the_model_is_loaded(tmp_path, monkeypatch, cmd):
    """`--lut F.json --refresh` re-planned from the LUT and ignored --refresh: read the timings or
    measure them, the user meant one of the two."""
    lut = tmp_path / "good.json"
    lut.write_text(lut_text())
    never_loaded(monkeypatch)
    fails("--lut plans from timings measured elsewhere, --refresh re-measures them here", cmd[0], MODEL,
          *[a.format(tmp=tmp_path) for a in cmd[1:]], "--lut", str(lut), "--refresh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.json"]


@pytest.mark.parametrize("flag", ["--lut", "--profile"])
def test_export_never_writes_over_a_file_it_reads(tmp_path, monkeypatch, flag):
    """`export --lut F.json -o F.json` planned from the LUT and then replaced it with the ONNX
    (only the model and the calibration/eval data were counted as inputs)."""
    path = tmp_path / "in.json"
    path.write_text(lut_text() if flag == "--lut" else (Path(__file__).parents[1] / "profiles" / "cpu-ort.yaml").read_text())
    before = path.read_bytes()
    never_loaded(monkeypatch)
    fails("same file as the input", "export", MODEL, flag, str(path), "-o", str(path))
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["in.json"]


def test_bench_never_writes_over_a_file_it_reads(tmp_path):
    """A LUT that happens to be named like one of bench's side files (DIR/<stem>.plan.json) was
    replaced by the plan file: only the model and the baseline were counted as inputs."""
    lut = tmp_path / "r.plan.json"
    r = runner.invoke(app, ["plan", MODEL, "--batch", "1", "--save-lut", str(lut)])
    assert r.exit_code == 0, r.output
    before = lut.read_bytes()
    fails("same file as the input", "bench", MODEL, "--lut", str(lut), "-o", str(tmp_path), "--name", "r",
          "--batch", "1", "--warmup-s", "0.01", "--min-iterations", "3", "--min-duration-s", "0.01")
    assert lut.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["r.plan.json"]


def test_lut_text_with_control_characters_is_refused():
    """Reasons, site names and the fingerprint are printed: an ANSI sequence in a LUT would drive
    the user's terminal (and rich markup in it was rendered)."""
    data = json.loads(lut_text())
    data["plans"] = {"k": {"winner": "latency", "model": "m", "choices": {"s": "pad:16"},
                           "reasons": {"s": "\x1b[2J\x1b[31mred"}}}
    with pytest.raises(LutError, match="control characters"):
        parse_table(json.dumps(data), "x.json")
    data["plans"] = {}
    data["fingerprint"]["device"] = "CPU\x07"
    with pytest.raises(LutError, match="control characters"):
        parse_table(json.dumps(data), "x.json")


# ---- the timing cache: damaged or unwritable costs a re-measure and a warning, never the plan ---


def test_damaged_or_unwritable_cache_is_named(tmp_path, monkeypatch):
    fp = fingerprint(make_target("ort", threads=1))
    monkeypatch.setenv("GSDEPLOY_CACHE_DIR", str(tmp_path / "c"))
    assert cache.cache_problem(fp) is None  # nothing yet, and the directory can be made
    path = tmp_path / "c" / f"{cache.fingerprint_key(fp)}.json"
    path.parent.mkdir()
    path.write_text('{"format": "gsdeploy-timing-lut", "version": 1, "fingerprint": {"x": 1}, "sites": [')
    assert "damaged timing cache file" in cache.cache_problem(fp)
    assert cache.cache_problem(fp, reading=False) is None  # --refresh does not read it
    path.unlink()
    path.mkdir()
    assert "not a regular file" in cache.cache_problem(fp)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("GSDEPLOY_CACHE_DIR", str(blocker / "cache"))
    assert "cannot be written" in cache.cache_problem(fp)


def test_a_damaged_cache_is_re_measured_with_a_warning(tmp_path, monkeypatch):
    from gsdeploy.load import load_model
    from gsdeploy.plan.stage import make_plan
    from gsdeploy.transforms import DeployOptions

    target = make_target("ort", threads=1)
    monkeypatch.setenv("GSDEPLOY_CACHE_DIR", str(tmp_path))
    path = tmp_path / f"{cache.fingerprint_key(fingerprint(target))}.json"
    path.write_bytes(b"\x00garbage")
    m = load_model(MODEL)
    outcome = make_plan(m.module, tuple(m.input_shape), target, DeployOptions(), "latency")
    assert outcome.mode == "latency" and outcome.warning.startswith("warning: damaged timing cache file")
    assert cache.read_table(path).fingerprint == fingerprint(target)  # replaced by the new timings


# ---- bench --per-layer -------------------------------------------------------------------------


def test_per_layer_without_any_profiler_fails_before_work(tmp_path, monkeypatch):
    never_loaded(monkeypatch)
    fails("no per-layer profiler for engine(s) torch", "bench", MODEL, "--engine", "torch", "--per-layer",
          "-o", str(tmp_path))
    assert not list(tmp_path.iterdir())


def test_per_layer_with_reduced_precisions_profiles_the_fp32_pair(tmp_path):
    """It timed everything, then died with 'internal error (too many values to unpack)'."""
    r = runner.invoke(app, ["bench", MODEL, "--plan", "flops", "--per-layer", "--precision", "fp32,fp16",
                            "--batch", "1", "--warmup-s", "0.01", "--min-iterations", "3", "--min-duration-s", "0.01",
                            "-o", str(tmp_path), "--name", "b"])
    assert r.exit_code == 0, r.output
    layers = pd.read_csv(tmp_path / "b.layers.csv")
    assert set(layers["model"]) == {f"{MODEL}[plan=flops]"}


# ---- sweep files -------------------------------------------------------------------------------


@pytest.mark.parametrize("text, words", [
    ("models: [{model: resnet20_hinge50}]\nmodels: [{model: resnet56_hinge50}]\nprofiles: [cpu-ort]\n",
     "key 'models' is written twice"),
    ("models: [{model: resnet20_hinge50, arch: bogus}]\nprofiles: [cpu-ort]\n", "unknown arch 'bogus'"),
    ("models: [{model: resnet20_hinge50, arch: resnet20}]\nprofiles: [cpu-ort]\n", "is a zoo model"),
    ("models: [{model: resnet50_pruned50}]\nprofiles: [cpu-ort]\nbatches: [65536]\n", "batch 65536"),
    ("models: [{model: resnet20_hinge50, lut: fifo}]\nprofiles: [cpu-ort]\n", "not a regular file"),
])
def test_sweep_files_fail_before_any_job(tmp_path, text, words):
    import os

    from gsdeploy.farm.spec import SweepFileError, load_sweep

    os.mkfifo(tmp_path / "fifo")
    p = tmp_path / "s.yaml"
    p.write_text(text)
    with pytest.raises(SweepFileError, match=words):
        load_sweep(p)


def test_arch_with_a_zoo_name_says_so():
    from gsdeploy.load import load_model

    with pytest.raises(GsdeployError, match="is a zoo model"):
        load_model("resnet20_hinge50", arch="resnet20")


# ---- the report's plot -------------------------------------------------------------------------


def test_plot_takes_names_with_dollars(tmp_path):
    """A '$' in a model or device name was parsed as TeX: the whole report failed (internal error)."""
    from gsdeploy.report.plots import figure_bytes
    from tests.test_report import one_run

    df = pd.DataFrame(one_run(device="CPU $5 $x^2$ {"))
    df["model"] = df["model"] + "$1"
    assert figure_bytes(df, "svg").count(b"$1") >= 1
