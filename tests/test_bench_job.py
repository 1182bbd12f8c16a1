"""The bench job around the sweep: environment and memory columns, power wiring, append as
you go, --resume, CoV warnings and ONNX files benchmarked as is."""

from __future__ import annotations

import math
import stat
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")

from gsdeploy.bench.env import capture_env  # noqa: E402
from gsdeploy.metrics import count_macs, count_params, weight_bytes  # noqa: E402
from gsdeploy.bench.sweep import Subject, run_sweep  # noqa: E402
from gsdeploy.bench.rows import COLUMNS  # noqa: E402
from gsdeploy.bench.tegrastats import TegrastatsSampler  # noqa: E402
from gsdeploy.cli import app  # noqa: E402
from gsdeploy.target import make_target, usable_cpus  # noqa: E402

SHAPE = (3, 16, 16)
FAST_T = dict(threads=1, warmup_s=0.02, min_iterations=3, min_duration_s=0.02)


def targets(*engines: str, batches=(1,)) -> list:
    return [make_target(e, batches=batches, **FAST_T) for e in engines]
FAST = ("--warmup-s", "0.02", "--min-iterations", "3", "--min-duration-s", "0.02")
NANO = ("RAM 1923/3964MB (lfb 2x2MB) SWAP 191/1982MB (cached 6MB) IRAM 0/252kB(lfb 252kB) "
        "CPU [5%@1224,4%@1224,3%@1224,6%@1224] EMC_FREQ 0%@1600 GR3D_FREQ 0%@76 APE 25 PLL@37C CPU@40C "
        "PMIC@50C GPU@40C AO@45C thermal@40C POM_5V_IN 1750/1628 POM_5V_GPU 0/0 POM_5V_CPU 366/406")
runner = CliRunner()


def cnn(width: int) -> nn.Module:
    torch.manual_seed(width)
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, 5)).eval()


def export(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(2, *SHAPE),), str(path), dynamo=False, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}})
    return path


@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("job")
    out = []
    for name, role, width in (("dense", "baseline", 32), ("thin", "compressed", 8)):
        m = cnn(width)
        p = export(m, tmp / f"{name}.onnx")
        out.append(Subject(name=name, role=role, macs=count_macs(m, SHAPE), params=count_params(m), max_rel_err=0.0,
                           module=m, onnx_path=p, weights_bytes=weight_bytes(m), artifact_bytes=p.stat().st_size,
                           input_shape=SHAPE))
    return out


def test_rows_carry_environment_and_memory(subjects):
    df = run_sweep(subjects, targets("ort", "torch", batches=(1, 2)), command="c", progress=False, memory=True)
    assert list(df.columns) == COLUMNS
    env = capture_env()
    assert (df["cores"] == usable_cpus()).all() and (df["cpu"] == env["cpu"]).all()
    assert (df["ort_package"] == env["onnxruntime_dist"]).all()
    assert (df["gpu"].fillna("") == (env["gpu"] or "")).all()
    for col in ("gpu_driver", "cuda_version", "cudnn_version"):
        assert df[col].isna().all() == (env["gpu"] is None)
    assert "tensorrt_version" in df.columns
    # the target's profile and CoV limit travel with every row (the report flags noise by them)
    assert (df["profile"].fillna("") == "").all() and (df["max_cov"] == 0.025).all()  # make_target: no profile
    # activations grow with the batch and the width; the same for every engine
    act = df.set_index(["model", "engine", "batch"])["activation_bytes"]
    assert act[("dense", "ort", 2)] == act[("dense", "torch", 2)] == 2 * act[("dense", "ort", 1)]
    assert act[("thin", "ort", 1)] < act[("dense", "ort", 1)]
    ort = df[df["engine"] == "ort"]
    assert (ort["peak_rss_bytes"] > 0).all()
    assert df[df["engine"] == "torch"]["peak_rss_bytes"].isna().all()
    # no power sampler: no power columns, and nothing to explain
    assert df[["avg_power_w", "energy_per_inference_mj", "power_skipped"]].isna().all().all()


def test_no_peak_rss_without_memory(subjects):
    df = run_sweep(subjects[:1], targets("ort"), command="c", progress=False)
    assert df["peak_rss_bytes"].isna().all() and df["activation_bytes"].notna().all()


def test_power_without_tegrastats_records_why(subjects):
    df = run_sweep(subjects, targets("ort"), command="c", progress=False, power_duration_s=0.05,
                   power_sampler_factory=lambda: TegrastatsSampler(100, executable="tegrastats-not-installed-here"))
    assert df["avg_power_w"].isna().all() and df["energy_per_inference_mj"].isna().all()
    assert df["power_skipped"].str.contains("not on PATH").all()


@pytest.mark.skipif(sys.platform == "win32", reason="uses a POSIX script as a stand-in executable")
def test_power_sampler_wiring_with_recorded_lines(subjects, tmp_path):
    # A stand-in that prints a real Nano line once per --interval: the wiring, not a device.
    script = tmp_path / "tegrastats"
    script.write_text(f"#!{sys.executable}\nimport sys, time\n"
                      "interval = int(sys.argv[sys.argv.index('--interval') + 1]) / 1000\n"
                      f"while True:\n    print({NANO!r}, flush=True)\n    time.sleep(interval)\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    df = run_sweep(subjects, targets("ort", batches=(2,)), command="c", progress=False, power_duration_s=0.4,
                   power_sampler_factory=lambda: TegrastatsSampler(20, executable=str(script)))
    assert df["power_skipped"].isna().all(), df["power_skipped"].tolist()
    assert df["avg_power_w"].tolist() == pytest.approx([1.75, 1.75])
    assert (df["energy_per_inference_mj"] > 0).all()


def bench(*args: str):
    return runner.invoke(app, ["bench", *args, *FAST])


def test_append_as_you_go_keeps_finished_groups(tmp_path, monkeypatch):
    from gsdeploy.bench import sweep
    from gsdeploy.errors import GsdeployError

    def boom(s, target, batch):
        raise GsdeployError("engine torch is broken")

    monkeypatch.setitem(sweep.RUNNERS, "torch", boom)
    r = bench("resnet20_hinge50", "--engine", "ort,torch", "--batch", "1", "-o", str(tmp_path), "--name", "x")
    assert r.exit_code != 0 and "torch is broken" in r.stderr
    df = pd.read_csv(tmp_path / "x.csv")  # the ort group finished before boom failed
    assert len(df) == 2 and set(df["engine"]) == {"ort"} and list(df.columns) == COLUMNS


def test_resume_skips_measured_groups_and_fresh_run_replaces(tmp_path):
    r = bench("resnet20_hinge50", "--engine", "ort", "--batch", "1", "-o", str(tmp_path), "--name", "r")
    assert r.exit_code == 0, r.output + r.stderr
    first = pd.read_csv(tmp_path / "r.csv")
    r = bench("resnet20_hinge50", "--engine", "ort", "--batch", "1,2", "-o", str(tmp_path), "--name", "r",
              "--resume")
    assert r.exit_code == 0, r.output + r.stderr
    df = pd.read_csv(tmp_path / "r.csv")
    assert len(df) == 4 and sorted(df["batch"]) == [1, 1, 2, 2]
    old = df[df["batch"] == 1].reset_index(drop=True)
    assert old["timestamp"].tolist() == first["timestamp"].tolist()  # not timed again
    assert old["latency_ms_median"].tolist() == first["latency_ms_median"].tolist()
    assert (df[df["role"] == "baseline"]["speedup_vs_baseline"] == 1.0).all()
    assert df["speedup_vs_baseline"].notna().all()
    assert (tmp_path / "r.md").read_text().count("| resnet20_hinge50 |") == 2  # old + new row
    r = bench("resnet20_hinge50", "--engine", "ort", "--batch", "2", "-o", str(tmp_path), "--name", "r")
    assert r.exit_code == 0, r.output + r.stderr
    assert list(pd.read_csv(tmp_path / "r.csv")["batch"]) == [2, 2]  # replaced, not appended


def test_noisy_rows_warn_on_stderr(tmp_path):
    # a CoV limit no real series stays under: every row counts as noisy
    r = bench("resnet20_hinge50", "--engine", "ort", "--batch", "1", "-o", str(tmp_path), "--max-cov", "1e-12")
    assert r.exit_code == 0, r.output + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "noisy machine or unlocked clocks" in ln]
    assert len(lines) == 2 and "unlocked clocks" not in r.stdout


def test_onnx_files_benchmarked_as_is(tmp_path, subjects):
    dense, thin = (str(s.onnx_path) for s in subjects)
    r = bench(thin, "--baseline", dense, "--engine", "ort", "--batch", "1,2", "-o", str(tmp_path))
    assert r.exit_code == 0, r.output + r.stderr
    df = pd.read_csv(tmp_path / "bench_thin.csv")
    assert set(df["model"]) == {"dense", "thin"} and len(df) == 4
    assert df["macs"].isna().all() and df["flop_speedup"].isna().all() and df["activation_bytes"].isna().all()
    assert (df[df.role == "baseline"]["speedup_vs_baseline"] == 1.0).all()
    thin_params = df[df.model == "thin"]["params"].iloc[0]
    assert thin_params == subjects[1].params and not math.isnan(df["latency_ms_median"].iloc[0])
    r = bench(thin, "--baseline", dense, "--engine", "torch", "--batch", "1", "-o", str(tmp_path))
    assert r.exit_code != 0 and "only ORT engines" in r.stderr
    r = bench(thin, "--engine", "ort", "--batch", "1", "-o", str(tmp_path))
    assert r.exit_code != 0 and "--baseline" in r.stderr


def test_profile_power_reaches_the_sweep(tmp_path, monkeypatch, subjects):
    """A profile with `power` makes the job sample tegrastats; here it is missing, so the
    power columns stay empty and every row says why."""
    from dataclasses import replace

    from gsdeploy.pipeline import BenchRequest, run_bench_job
    from gsdeploy.target import PowerSpec

    monkeypatch.setenv("PATH", str(tmp_path))  # no tegrastats, whatever the machine has
    dense, thin = (str(s.onnx_path) for s in subjects)
    # power is a Jetson setting; the target is built as a profile would, then the device swapped
    # back so that the CPU session runs here (the sampler is what is under test)
    target = replace(targets("ort")[0], power=PowerSpec(tegrastats_interval_ms=50))
    req = BenchRequest(model=thin, targets=(target,), out_dir=tmp_path, baseline=dense, name="p", command="c",
                       power_duration_s=0.05, progress=False)
    result = run_bench_job(req)
    df = pd.read_csv(tmp_path / "p.csv")
    assert result.files and result.rows["model"].tolist() == df["model"].tolist()
    assert df["avg_power_w"].isna().all() and df["power_skipped"].str.contains("tegrastats").all()
