"""Every number from a flag or a file is finite and in range before any work; files read as
text (YAML, CSV) are bounded; values quoted in errors are bounded."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from gsdeploy.cli import app
from gsdeploy.errors import GsdeployError
from gsdeploy.limits import brief, check_number, short

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def one_error_line(r, phrase: str, code: int = 2) -> None:
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output and "internal error" not in r.stderr
    assert phrase in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and len(r.stderr) < 3000, r.stderr[:500]


@pytest.mark.parametrize("value,ok", [(1, True), (0.5, True), (float("nan"), False), (float("inf"), False),
                                      (-float("inf"), False), (-1, False), (True, False), ("3", False),
                                      (None, False), (10**9, False)])
def test_check_number(value, ok):
    if ok:
        assert check_number("x", value, minimum=0, maximum=100) == value
    else:
        with pytest.raises(GsdeployError, match="x must be a finite number >= 0 and <= 100"):
            check_number("x", value, minimum=0, maximum=100)


def test_check_number_integer():
    assert check_number("b", 4.0, integer=True, minimum=1) == 4
    with pytest.raises(GsdeployError, match="an integer"):
        check_number("b", 1.5, integer=True)


def test_short_and_brief_bound_and_clean():
    assert len(short("x" * 10_000)) <= 160
    assert "\x1b" not in short("\x1b[96mThis is step 1/3\x1b[0m of exporting")
    assert short("\x1b[96mThis is step 1/3\x1b[0m") == "This is step 1/3"
    nested = ["lol"] * 9
    for _ in range(8):
        nested = [nested] * 9  # 387M strings if written out
    assert len(brief(nested)) <= 200


@pytest.mark.parametrize("flags,phrase", [
    (["--min-duration-s", "nan"], "min_duration_s"), (["--min-duration-s", "inf"], "min_duration_s"),
    (["--warmup-s", "-1"], "warmup_s"), (["--threads", "-1"], "threads"), (["--threads", "0"], "threads"),
    (["--batch", "100000000"], "batch"), (["--batch", "0"], "batch"), (["--batch", "inf"], "batch"),
    (["--min-iterations", "0"], "min_iterations"), (["--prune-threshold", "nan"], "--prune-threshold"),
    (["--prune-threshold", "-1"], "--prune-threshold"), (["--prune-threshold", "inf"], "--prune-threshold"),
    # a threshold every group of any network is under (the sweep file's bound, now the flag's too)
    (["--prune-threshold", "1e308"], "--prune-threshold must be a finite number >= 0 and <= 1e+06"),
    # an empty item in a list is a typo, not nothing: it was skipped and the rest ran
    (["--batch", "1,,2"], "separated by single commas"), (["--batch", "1,"], "separated by single commas"),
    (["--precision", "fp32,,int8"], "separated by single commas"), (["--precision", ""], "--precision must list"),
    (["--engine", "ort,"], "separated by single commas"),
    # int() takes these; a batch size is plain decimal digits
    (["--batch", "1_0"], "--batch must be a comma-separated list of integers"),
    (["--batch", "\u0661"], "--batch must be a comma-separated list of integers"),
    # '' (an unset shell variable) ran at the model's own shape as if the flag were not given
    (["--input-shape", ""], "is not of the form CxHxW"), (["--input-shape", "3x3_2x32"], "is not of the form CxHxW"),
])
def test_bench_flags_out_of_range_fail_before_loading(tmp_path, flags, phrase):
    # a model that does not exist: a flag error must come first, before any load
    r = run("bench", str(tmp_path / "never-loaded.pt"), "-o", str(tmp_path / "out"), *flags)
    one_error_line(r, phrase)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags,phrase", [
    (["--workspace-mb", "-5"], "--workspace-mb"), (["--min-batch", "0"], "--min-batch"),
    (["--max-batch", "1000000"], "--max-batch"), (["--dla-core", "-1"], "--dla-core"),
    (["--batch", "1,-2"], "--batch"), (["--prune-threshold", "nan"], "--prune-threshold"),
    (["--input-shape", "3x100000x100000"], "values per sample"), (["--batch", "1,,2"], "separated by single commas"),
    (["--input-shape", ""], "is not of the form CxHxW"), (["--prune-threshold", "2e6"], "<= 1e+06"),
])
def test_export_flags_out_of_range_fail_before_loading(tmp_path, flags, phrase):
    r = run("export", str(tmp_path / "never-loaded.pt"), "-o", str(tmp_path / "m.onnx"), *flags)
    one_error_line(r, phrase)


def _profile(tmp_path: Path, extra: str) -> Path:
    p = tmp_path / "p.yaml"
    p.write_text("description: x\ndevice: cpu\nengines:\n  - name: ort\n    precisions: [fp32]\nbatches: [1]\n" + extra)
    return p


@pytest.mark.parametrize("extra,phrase", [("min_duration_s: .inf\n", "min_duration_s"),
                                          ("min_duration_s: .nan\n", "min_duration_s"),
                                          ("warmup_s: -.inf\n", "warmup_s"), ("threads: -1\n", "threads"),
                                          ("batches: [1, 1e9]\n", "batches"),
                                          # the bound --input-shape has: a profile allocated 120 GB
                                          ("input_shape: [3, 100000, 100000]\n", "values per sample")])
def test_profile_numbers_are_checked(tmp_path, extra, phrase):
    p = _profile(tmp_path, extra)
    if "batches" in extra:
        p.write_text(p.read_text().replace("batches: [1]\n", ""))
    one_error_line(run("bench", "resnet20", "--profile", str(p), "-o", str(tmp_path / "o")), phrase)


def _claims(tmp_path: Path, tolerance: str, claimed: str = "0.5") -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(f"paper: x\nclaims:\n  - id: c\n    model: resnet20_hinge50\n    baseline: resnet20\n"
                 f"    metric: flop_ratio\n    claimed: {claimed}\n    tolerance: {tolerance}\n    source: Table 1\n")
    return p


@pytest.mark.parametrize("tolerance,claimed", [("{abs: .inf}", "0.5"), ("{rel: .nan}", "0.5"),
                                               ("{abs: 0.1}", ".nan"), ("{abs: 0.1}", "-.inf")])
def test_claim_numbers_are_checked(tmp_path, tolerance, claimed):
    """An infinite tolerance made every claim PASS."""
    key = "tolerance" if claimed == "0.5" else "claimed"
    one_error_line(run("validate", str(_claims(tmp_path, tolerance, claimed))), f"key 'claims[0].{key}' must be")


def test_a_claims_batch_is_bounded_before_any_work(tmp_path):
    """A speedup claim at batch 100000 loaded the profile and ended as an ERROR row with exit 1;
    a number from the file out of range is the file's error (exit 2) before any claim runs."""
    p = tmp_path / "c.yaml"
    p.write_text("paper: x\nclaims:\n  - id: c\n    model: resnet20_hinge50\n    baseline: resnet20\n"
                 "    metric: speedup\n    claimed: 2\n    tolerance: {rel: 0.1}\n    source: T\n    batch: 100000\n")
    one_error_line(run("validate", str(p)), "key 'claims[0].batch' must be a positive integer up to 65536")


@pytest.mark.parametrize("where", ["claims[0]", "defaults"])
def test_a_claims_input_shape_is_bounded_like_the_flag(tmp_path, where):
    """A flop_ratio claim at input_shape [3, 100000, 100000] ran the model on a 120 GB input (the
    allocation failed here, as an ERROR row and exit 1; [3, 20000, 20000] would have taken 4.8 GB)."""
    p = _claims(tmp_path, "{abs: 0.1}")
    shape = "input_shape: [3, 100000, 100000]"
    text = p.read_text()
    p.write_text(text + f"    {shape}\n" if where == "claims[0]" else text.replace("claims:\n", f"defaults: {{{shape}}}\nclaims:\n"))
    one_error_line(run("validate", str(p)), "input_shape' must be a non-empty list of positive integers with at most")


# ---- YAML alias bombs ------------------------------------------------------------------


def _bomb(levels: int = 8) -> str:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("where", ["profile-description", "profile-top", "claims", "claims-defaults"])
def test_yaml_alias_bomb_is_refused_small_and_fast(tmp_path, where):
    """A 385-byte profile gave an 8 MB error line; a 526-byte one grew to ~4 GB."""
    import resource
    import time

    bomb = _bomb()
    body = "\n".join("  " + line for line in bomb.splitlines())
    p = tmp_path / "b.yaml"
    if where == "profile-description":
        p.write_text("description:\n" + body + "\ndevice: cpu\nengines: [{name: ort, precisions: [fp32]}]\nbatches: [1]\n")
    elif where == "profile-top":
        p.write_text(bomb)
    elif where == "claims":
        p.write_text("paper: x\nclaims:\n  - id: c\n    model: resnet20\n    note:\n" +
                     "\n".join("      " + line for line in bomb.splitlines()) + "\n")
    else:
        p.write_text("paper: x\ndefaults:\n  note:\n" + "\n".join("    " + line for line in bomb.splitlines()) +
                     "\nclaims: [{id: c}]\n")
    assert p.stat().st_size < 1000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    args = ["validate", str(p)] if where.startswith("claims") else ["bench", "resnet20", "--profile", str(p)]
    r = run(*args)
    one_error_line(r, "once aliases are expanded")
    assert time.perf_counter() - t0 < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KB


def test_yaml_written_by_yaml_dump_with_shared_values_still_loads(tmp_path):
    """yaml.dump writes anchors for objects used twice; small aliases stay accepted."""
    from gsdeploy.profiles import load_profile

    eng = {"name": "ort", "precisions": ["fp32"], "options": {"providers": ["CPUExecutionProvider"]}}
    prec = ["fp32"]
    data = {"description": "x", "device": "cpu", "engines": [{**eng, "precisions": prec},
                                                             {**eng, "precisions": prec, "label": "two"}],
            "batches": [1]}
    p = tmp_path / "p.yaml"
    p.write_text(yaml.dump(data))
    assert "&id" in p.read_text()
    assert load_profile(str(p)).name == "p"


def test_deep_yaml_is_refused(tmp_path):
    p = tmp_path / "deep.yaml"
    p.write_text("description: " + "[" * 5000 + "]" * 5000 + "\n")
    one_error_line(run("bench", "resnet20", "--profile", str(p)), "nested more than")


def test_huge_yaml_file_is_refused_before_parsing(tmp_path):
    p = tmp_path / "big.yaml"
    p.write_text("description: " + "x" * (2 << 20) + "\n")
    one_error_line(run("validate", str(p)), "bytes; a claim file is at most")


@pytest.mark.parametrize("command", ["validate", "profile"])
def test_fifo_yaml_is_refused_without_blocking(tmp_path, command):
    import os

    fifo = tmp_path / "f.yaml"
    os.mkfifo(fifo)
    args = ["validate", str(fifo)] if command == "validate" else ["bench", "resnet20", "--profile", str(fifo)]
    one_error_line(run(*args), "FIFO")


# ---- result CSVs read by report ---------------------------------------------------------


ROW = {"model": "m", "role": "baseline", "engine": "ort", "precision": "fp32", "batch": 1, "device": "cpu",
       "latency_ms_median": 1.0, "speedup_vs_baseline": 1.0}


@pytest.mark.parametrize("col,value", [("batch", "inf"), ("batch", "1e30"), ("batch", "-1"), ("batch", "1.5"),
                                       ("latency_ms_median", "nan"), ("latency_ms_median", "inf"),
                                       ("latency_ms_median", "0"), ("speedup_vs_baseline", "inf"),
                                       ("speedup_vs_baseline", "-2"), ("speedup_vs_baseline", "abc"),
                                       # finite but no timing or model: speedups of 1e300 (or 0) with exit 0
                                       ("latency_ms_median", "1e300"), ("latency_ms_median", "1e-320"),
                                       ("macs", "1e300"), ("params", "1e300"), ("top1", "101"),
                                       ("latency_ms_p90", "-1"), ("iterations", "0.5")])
def test_report_refuses_non_finite_or_out_of_range_numbers(tmp_path, col, value):
    """batch=inf was an internal error; a NaN median made a NaN speedup with exit 0; 1e300 MACs a
    FLOP speedup of 1e300."""
    rows = [dict(ROW), dict(ROW, role="compressed", model="c", latency_ms_median=0.5, speedup_vs_baseline=2.0)]
    df = pd.DataFrame(rows).astype(object)
    df.loc[1, col] = value
    p = tmp_path / "r.csv"
    df.to_csv(p, index=False)
    one_error_line(run("report", str(p)), f"column '{col}' (line 3)")


def test_report_accepts_empty_optional_numbers(tmp_path):
    rows = [dict(ROW), dict(ROW, role="compressed", model="c", latency_ms_median=0.5, speedup_vs_baseline=math.nan)]
    p = tmp_path / "r.csv"
    pd.DataFrame(rows).to_csv(p, index=False)
    assert run("report", str(p)).exit_code == 0


def test_report_skips_a_fifo_in_a_results_folder(tmp_path):
    import os

    rows = [dict(ROW), dict(ROW, role="compressed", model="c", latency_ms_median=0.5, speedup_vs_baseline=2.0)]
    pd.DataFrame(rows).to_csv(tmp_path / "r.csv", index=False)
    os.mkfifo(tmp_path / "pipe.csv")
    r = run("report", str(tmp_path))
    assert r.exit_code == 0 and "FIFO" in r.stderr, r.output


# ---- validate --trust ------------------------------------------------------------------


def test_validate_has_the_trust_its_refusal_names(tmp_path):
    import torch
    import torch.nn as nn

    model = tmp_path / "whole.pt"
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)),
               model)
    p = tmp_path / "c.yaml"
    p.write_text(f"paper: x\nclaims:\n  - id: c\n    model: {model}\n    baseline: resnet20\n"
                 "    metric: params_ratio\n    claimed: 0.0\n    tolerance: {abs: 0.01}\n    input_shape: [3, 32, 32]\n    source: Table 1\n")
    r = run("validate", str(p))
    assert r.exit_code != 0 and "--trust" in r.output, r.output
    r = run("validate", str(p), "--trust")
    assert r.exit_code == 0 and "PASS" in r.output, r.output


# ---- memory: a batch too large, an allocation that fails mid-run ------------------------


def test_batch_too_large_for_the_input_fails_before_deploying(tmp_path, monkeypatch):
    """batch 65536 at 3x224x224 is 9.9e9 input values (37 GiB): refused after load, before any
    deploy, export or timing."""
    import gsdeploy.pipeline as pipeline

    def no_deploy(*a, **k):
        raise AssertionError("deployed despite an impossible batch")

    monkeypatch.setattr(pipeline, "deploy_subject", no_deploy)
    r = run("bench", "resnet50_pruned50", "--batch", "1,65536", "-o", str(tmp_path / "o"))
    one_error_line(r, "batch 65536 at input shape 3x224x224")
    assert not (tmp_path / "o").exists()


def test_runtime_out_of_memory_is_a_user_error(monkeypatch):
    """torch reports a failed allocation as RuntimeError; it is not an internal error."""
    import gsdeploy.load as load

    def hungry(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] . DefaultCPUAllocator: not enough memory: you "
                           "tried to allocate 39582418599936 bytes.")

    monkeypatch.setattr(load, "load_model", hungry)
    r = run("inspect", "resnet20")
    one_error_line(r, "out of memory")
