"""Result rows: speedup arithmetic and the CSV/Markdown writers."""

from __future__ import annotations

import math
import os

import pandas as pd
import pytest

from gsdeploy.bench.stats import summarize
from gsdeploy.bench.rows import COLUMNS, add_speedups, make_row, write_results
from gsdeploy.errors import OutputPathError

ENV = {"cpu": "Test CPU", "gsdeploy": "0.1.0", "torch": "2.13.0", "onnxruntime": "1.32.0"}
CMD = "gsdeploy bench resnet56_hinge50 --engine ort --batch 1,8"


def row(model, role, median_ms, macs, batch=1, engine="ort", **kw):
    stats = summarize([median_ms / 1e3] * 3)
    args = dict(model=model, role=role, engine=engine, provider="CPUExecutionProvider", precision="fp32",
                batch=batch, device="Test CPU", threads=2, macs=macs, params=1000, stats=stats,
                max_rel_err=1e-6, weights_bytes=4000, artifact_bytes=5000, env=ENV, command=CMD,
                timestamp="2026-01-01T00:00:00+00:00")
    args.update(kw)
    return make_row(**args)


def test_make_row_schema_and_throughput():
    r = row("m", "baseline", 4.0, 100, batch=8)
    assert list(r) == COLUMNS
    assert r["throughput_per_s"] == pytest.approx(8 * 1000 / 4.0)
    assert r["iterations"] == 3 and r["latency_ms_median"] == pytest.approx(4.0)
    assert (r["cpu"], r["ort_version"], r["command"]) == ("Test CPU", "1.32.0", CMD)
    assert math.isnan(r["speedup_vs_baseline"])
    with pytest.raises(ValueError):
        row("m", "dense", 1.0, 1)


def test_speedup_flop_speedup_efficiency():
    df = pd.DataFrame([
        row("dense", "baseline", 10.0, 400),
        row("hinge", "compressed", 5.0, 100),  # 2x faster for 4x fewer MACs
        row("pruned", "compressed", 12.5, 200),  # slower than dense
        row("dense", "baseline", 40.0, 400, batch=8),
        row("hinge", "compressed", 10.0, 100, batch=8),
        row("hinge", "compressed", 3.0, 100, engine="torch"),  # no baseline timed with it
    ])
    out = add_speedups(df)
    assert list(out.columns) == COLUMNS
    sp, fl, ef = out["speedup_vs_baseline"], out["flop_speedup"], out["efficiency"]
    assert (sp[0], fl[0], ef[0]) == (1.0, 1.0, 1.0)
    assert (sp[1], fl[1], ef[1]) == (pytest.approx(2.0), pytest.approx(4.0), pytest.approx(0.5))
    assert (sp[2], fl[2], ef[2]) == (pytest.approx(0.8), pytest.approx(2.0), pytest.approx(0.4))
    assert (sp[4], fl[4], ef[4]) == (pytest.approx(4.0), pytest.approx(4.0), pytest.approx(1.0))
    assert math.isnan(sp[5]) and math.isnan(fl[5]) and math.isnan(ef[5])
    assert math.isnan(df["speedup_vs_baseline"][1])  # input frame untouched


def test_two_baselines_in_one_group_are_an_error():
    df = pd.DataFrame([row("a", "baseline", 1.0, 1), row("b", "baseline", 2.0, 1)])
    with pytest.raises(ValueError, match="several baseline"):
        add_speedups(df)


def test_write_results_csv_and_markdown(tmp_path):
    df = add_speedups(pd.DataFrame([row("dense", "baseline", 10.0, 400), row("hinge", "compressed", 5.0, 100)]))
    csv, md = write_results(df, tmp_path / "out", "bench")
    assert (csv.name, md.name) == ("bench.csv", "bench.md")
    back = pd.read_csv(csv)
    assert list(back.columns) == COLUMNS and len(back) == 2
    assert back["speedup_vs_baseline"][1] == pytest.approx(2.0)
    assert back["command"][0] == CMD
    text = md.read_text()
    assert CMD in text
    for needle in ("Test CPU", "threads: 2", "onnxruntime 1.32.0", "torch 2.13.0", "2026-01-01T00:00:00+00:00",
                   "| hinge | compressed | ort | 1 |", "| 2.00 | 4.00 | 0.50 |"):
        assert needle in text, needle
    assert sorted(os.listdir(tmp_path / "out")) == ["bench.csv", "bench.md"]  # no temp files left


def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    df = pd.DataFrame([row("dense", "baseline", 10.0, 400)])
    csv, _ = write_results(df, tmp_path, "r")
    before = csv.read_text()

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OutputPathError):
        write_results(pd.concat([df, df]), tmp_path, "r")
    assert csv.read_text() == before
    assert sorted(os.listdir(tmp_path)) == ["r.csv", "r.md"]


def test_new_columns_are_appended_after_the_old_schema():
    old = ["cpu", "gsdeploy_version", "torch_version", "ort_version", "timestamp", "command"]
    assert COLUMNS[COLUMNS.index("cpu"):COLUMNS.index("command") + 1] == old
    new = ["cores", "gpu", "gpu_driver", "cuda_version", "cudnn_version", "tensorrt_version", "ort_package",
           "activation_bytes", "peak_rss_bytes", "avg_power_w", "energy_per_inference_mj", "power_skipped",
           "jetson_module", "power_mode", "cuda_peak_bytes", "profile", "max_cov", "top1", "top1_agreement",
           "gpu_sm_clock_mhz", "gpu_mem_clock_mhz", "gpu_max_sm_clock_mhz"]
    assert COLUMNS[COLUMNS.index("command") + 1:] == new


def test_make_row_fills_environment_and_memory_columns():
    env = {**ENV, "usable_cores": 6, "gpu": "Orin", "gpu_driver": "540.4", "cuda": "12.6", "cudnn": 90300,
           "tensorrt": "10.3.0", "onnxruntime_dist": "onnxruntime-gpu"}
    r = row("m", "baseline", 4.0, 100, env=env, activation_bytes=123, peak_rss_bytes=456, avg_power_w=7.5,
            energy_per_inference_mj=1.25)
    assert (r["cores"], r["gpu"], r["gpu_driver"], r["cuda_version"], r["cudnn_version"]) == \
        (6, "Orin", "540.4", "12.6", 90300)
    assert (r["tensorrt_version"], r["ort_package"]) == ("10.3.0", "onnxruntime-gpu")
    assert (r["activation_bytes"], r["peak_rss_bytes"], r["avg_power_w"], r["energy_per_inference_mj"]) == \
        (123, 456, 7.5, 1.25)
    assert row("m", "baseline", 4.0, 100)["gpu"] == "" and row("m", "baseline", 4.0, 100)["power_skipped"] is None


