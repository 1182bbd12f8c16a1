"""Report stage: merge result CSVs, recompute speedups against the right baseline, render, plot."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd
import pytest

from gsdeploy.errors import GsdeployError, OutputPathError
from gsdeploy.report import latency_table, load_rows, plot, table_text
from gsdeploy.atomic import write_text_atomic

SCHEMA = [
    "model", "role", "engine", "provider", "precision", "batch", "device", "threads", "macs", "params",
    "latency_ms_median", "latency_ms_mean", "latency_ms_p90", "latency_ms_p95", "latency_ms_p99",
    "latency_ms_min", "latency_ms_max", "latency_cov", "iterations", "throughput_per_s",
    "speedup_vs_baseline", "flop_speedup", "efficiency", "max_rel_err", "weights_bytes", "artifact_bytes",
    "cpu", "gsdeploy_version", "torch_version", "ort_version", "timestamp", "command",
]


def row(model: str, role: str, median: float, macs: int, *, engine: str = "ort", device: str = "Xeon",
        batch: int = 1, threads: int = 4, precision: str = "fp32", provider: str = "CPUExecutionProvider",
        stamp: str = "2026-01-01T00:00:00+00:00", command: str = "gsdeploy bench", **extra: object) -> dict:
    r = {c: None for c in SCHEMA}
    r.update(model=model, role=role, engine=engine, provider=provider, precision=precision, batch=batch,
             device=device, threads=threads, macs=macs, params=macs // 100, latency_ms_median=median,
             latency_ms_mean=median * 1.01, latency_ms_p90=median * 1.1, latency_ms_p95=median * 1.15,
             latency_ms_p99=median * 1.2, latency_ms_min=median * 0.95, latency_ms_max=median * 1.5,
             latency_cov=0.01, iterations=100, throughput_per_s=batch * 1000 / median,
             # Deliberately wrong recorded speedups: the report must recompute, not copy.
             speedup_vs_baseline=99.0, flop_speedup=99.0, efficiency=99.0,
             timestamp=stamp, command=command)
    r.update(extra)
    return r


def write_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def one_run(**kw: object) -> list[dict]:
    return [row("resnet56", "baseline", 2.0, 1000, **kw), row("resnet56_hinge50", "compressed", 1.6, 500, **kw)]


# ---- load_rows ------------------------------------------------------------------------------


def test_load_rows_merges_files_and_nested_directories(tmp_path):
    a = write_csv(tmp_path / "a.csv", one_run(device="Xeon"))
    write_csv(tmp_path / "dir" / "orin" / "b.csv", one_run(device="Orin", engine="trt", precision="fp16"))
    write_csv(tmp_path / "dir" / ".b.csv.123.tmp.csv", [{"junk": 1}])  # a writer's temp file: ignored
    df = load_rows([a, tmp_path / "dir"])
    assert len(df) == 4
    assert set(df["device"]) == {"Xeon", "Orin"}
    assert set(df["source"]) == {str(a), str(tmp_path / "dir" / "orin" / "b.csv")}
    assert df.attrs["skipped"] == []


def test_load_rows_same_file_twice_is_read_once(tmp_path):
    a = write_csv(tmp_path / "a.csv", one_run())
    assert len(load_rows([a, a, tmp_path])) == 2


def test_explicit_non_results_csv_is_an_error(tmp_path):
    other = write_csv(tmp_path / "layers.csv", [{"layer": "conv1", "ms": 0.1}])
    with pytest.raises(GsdeployError, match=r"layers.csv: not a gsdeploy results CSV \(missing columns: model"):
        load_rows([other])


def test_non_results_csv_in_a_directory_is_skipped_and_reported(tmp_path):
    write_csv(tmp_path / "a.csv", one_run())
    write_csv(tmp_path / "layers.csv", [{"layer": "conv1", "ms": 0.1}])
    df = load_rows([tmp_path])
    assert len(df) == 2
    assert len(df.attrs["skipped"]) == 1 and "layers.csv" in df.attrs["skipped"][0]


@pytest.mark.parametrize("content, pattern", [
    ("", r"the file is empty"),
    ("model,role,engine,precision,batch,device,latency_ms_median\nm,dense,ort,fp32,1,x,1.0\n",
     r"column 'role' must be baseline or compressed, found \['dense'\]"),
    ("model,role,engine,precision,batch,device,latency_ms_median\nm,baseline,ort,fp32,one,x,1.0\n",
     r"column 'batch' \(line 2\) must be an integer"),
    (b"\xff\xfe\x00garbage".decode("latin-1"), r"not a gsdeploy results CSV"),
])
def test_bad_files_name_the_file_and_problem(tmp_path, content, pattern):
    p = tmp_path / "r.csv"
    p.write_text(content, encoding="latin-1")
    with pytest.raises(GsdeployError, match=pattern) as info:
        load_rows([p])
    assert str(p) in str(info.value)


def test_missing_paths_and_empty_inputs(tmp_path):
    with pytest.raises(GsdeployError, match="does not exist"):
        load_rows([tmp_path / "nope"])
    with pytest.raises(GsdeployError, match="no gsdeploy result rows found"):
        load_rows([tmp_path])
    with pytest.raises(GsdeployError, match="no result files"):
        load_rows([])


# ---- latency_table --------------------------------------------------------------------------


def test_speedups_are_recomputed_from_rows(tmp_path):
    t = latency_table(load_rows([write_csv(tmp_path / "a.csv", one_run())]))
    assert t.index.names == ["model", "device", "engine", "precision", "batch"]
    c = t.loc[("resnet56_hinge50", "Xeon", "ort", "fp32", 1)]
    assert c["speedup"] == pytest.approx(2.0 / 1.6)
    assert c["flop_speedup"] == pytest.approx(2.0)
    assert c["efficiency"] == pytest.approx((2.0 / 1.6) / 2.0)
    assert c["baseline"] == "resnet56" and c["baseline_from"] == "same run"
    assert c["p90_ms"] == pytest.approx(1.6 * 1.1) and c["p99_ms"] == pytest.approx(1.6 * 1.2)
    b = t.loc[("resnet56", "Xeon", "ort", "fp32", 1)]
    assert b["speedup"] == 1.0 and b["flop_speedup"] == 1.0 and b["efficiency"] == 1.0


def test_each_device_engine_batch_uses_its_own_baseline(tmp_path):
    rows = (one_run(device="Xeon") + one_run(device="Orin", engine="trt", precision="fp16")
            + [row("resnet56", "baseline", 10.0, 1000, batch=32),
               row("resnet56_hinge50", "compressed", 5.0, 500, batch=32)])
    rows[2]["latency_ms_median"], rows[3]["latency_ms_median"] = 1.0, 0.9  # Orin
    t = latency_table(pd.DataFrame(rows))
    assert t.loc[("resnet56_hinge50", "Xeon", "ort", "fp32", 1), "speedup"] == pytest.approx(1.25)
    assert t.loc[("resnet56_hinge50", "Orin", "trt", "fp16", 1), "speedup"] == pytest.approx(1.0 / 0.9)
    assert t.loc[("resnet56_hinge50", "Xeon", "ort", "fp32", 32), "speedup"] == pytest.approx(2.0)


def test_different_threads_or_provider_is_not_a_baseline():
    rows = [row("resnet56", "baseline", 2.0, 1000, threads=1),
            row("resnet56_hinge50", "compressed", 1.6, 500, threads=4),
            row("resnet20", "baseline", 1.0, 400, provider="CUDAExecutionProvider"),
            row("resnet20_hinge50", "compressed", 0.9, 200, provider="CPUExecutionProvider")]
    t = latency_table(pd.DataFrame(rows))
    c = t.loc[("resnet56_hinge50", "Xeon", "ort", "fp32", 1)]
    assert math.isnan(c["speedup"]) and "no baseline row" in c["note"]
    assert math.isnan(t.loc[("resnet20_hinge50", "Xeon", "ort", "fp32", 1), "speedup"])
    assert "No speedup for some rows" in table_text(t, "md")


def test_threads_written_as_float_still_match(tmp_path):
    rows = one_run()
    rows[0]["threads"] = 4.0
    t = latency_table(pd.DataFrame(rows))
    assert t.loc[("resnet56_hinge50", "Xeon", "ort", "fp32", 1), "speedup"] == pytest.approx(1.25)


def test_baseline_model_column_picks_among_several_baselines():
    rows = [row("a_dense", "baseline", 2.0, 1000), row("b_dense", "baseline", 4.0, 2000),
            row("a_small", "compressed", 1.0, 500, baseline_model="a_dense"),
            row("b_small", "compressed", 1.0, 500, baseline_model="b_dense")]
    t = latency_table(pd.DataFrame(rows))
    assert t.loc[("a_small", "Xeon", "ort", "fp32", 1), "speedup"] == pytest.approx(2.0)
    assert t.loc[("b_small", "Xeon", "ort", "fp32", 1), "speedup"] == pytest.approx(4.0)
    assert t.loc[("b_small", "Xeon", "ort", "fp32", 1), "flop_speedup"] == pytest.approx(4.0)


def test_zoo_knows_the_baseline_else_it_is_ambiguous():
    rows = [row("resnet56", "baseline", 2.0, 1000), row("resnet20", "baseline", 1.0, 400),
            row("resnet56_hinge50", "compressed", 1.0, 500), row("my_model", "compressed", 1.0, 300)]
    t = latency_table(pd.DataFrame(rows))
    assert t.loc[("resnet56_hinge50", "Xeon", "ort", "fp32", 1), "baseline"] == "resnet56"
    mine = t.loc[("my_model", "Xeon", "ort", "fp32", 1)]
    assert math.isnan(mine["speedup"]) and "ambiguous baseline" in mine["note"]


def test_baseline_from_another_run_is_used_and_labelled(tmp_path):
    a = write_csv(tmp_path / "dense.csv", [row("resnet56", "baseline", 2.0, 1000, command="gsdeploy bench resnet56")])
    b = write_csv(tmp_path / "small.csv", [row("resnet56_hinge50", "compressed", 1.0, 500, command="x")])
    t = latency_table(load_rows([a, b]))
    c = t.loc[("resnet56_hinge50", "Xeon", "ort", "fp32", 1)]
    assert c["speedup"] == pytest.approx(2.0) and c["baseline_from"] == "other run"
    assert "another run" in table_text(t, "md")


def test_same_run_baseline_preferred_over_a_later_other_run(tmp_path):
    a = write_csv(tmp_path / "a.csv", one_run(stamp="2026-01-01T00:00:00+00:00"))
    b = write_csv(tmp_path / "b.csv", [row("resnet56", "baseline", 8.0, 1000, stamp="2026-02-01T00:00:00+00:00")])
    t = latency_table(load_rows([a, b]))
    c = t.loc[("resnet56_hinge50", "Xeon", "ort", "fp32", 1)]
    assert c["speedup"] == pytest.approx(1.25) and c["baseline_from"] == "same run"


def test_repeated_runs_collapse_to_the_latest(tmp_path):
    a = write_csv(tmp_path / "a.csv", one_run(stamp="2026-01-01T00:00:00+00:00"))
    newer = one_run(stamp="2026-03-01T00:00:00+00:00")
    newer[1]["latency_ms_median"] = 1.0
    b = write_csv(tmp_path / "b.csv", newer)
    t = latency_table(load_rows([b, a]))
    c = t.loc[("resnet56_hinge50", "Xeon", "ort", "fp32", 1)]
    assert c["median_ms"] == 1.0 and c["speedup"] == pytest.approx(2.0) and c["n_runs"] == 2
    assert t.index.is_unique


def test_bench_writer_round_trip(tmp_path):
    """Rows written by the bench stage's own writer load, and their speedups agree."""
    bench_rows = pytest.importorskip("gsdeploy.bench.rows")
    stats_mod = pytest.importorskip("gsdeploy.bench.stats")
    rows = []
    for name, role, ms, macs in (("resnet56", "baseline", [2.0, 2.1, 1.9], 1000),
                                 ("resnet56_hinge50", "compressed", [1.0, 1.1, 0.9], 480)):
        st = stats_mod.summarize([m / 1000 for m in ms])
        rows.append(bench_rows.make_row(model=name, role=role, engine="ort", provider="CPUExecutionProvider",
                                       precision="fp32", batch=1, device="cpu", threads=2, macs=macs, params=1,
                                       stats=st, command="c", timestamp="2026-01-01T00:00:00+00:00"))
    df = bench_rows.add_speedups(pd.DataFrame(rows))
    csv_path, _ = bench_rows.write_results(df, tmp_path, "bench")
    t = latency_table(load_rows([csv_path]))
    got = t.loc[("resnet56_hinge50", "cpu", "ort", "fp32", 1)]
    assert got["speedup"] == pytest.approx(df.loc[1, "speedup_vs_baseline"])
    assert got["flop_speedup"] == pytest.approx(1000 / 480)


# ---- table_text --------------------------------------------------------------------------------


def test_render_markdown_csv():
    rows = one_run()
    rows[1]["model"] = "evil<b>|name"
    rows[1]["baseline_model"] = "resnet56"
    t = latency_table(pd.DataFrame(rows))
    md = table_text(t, "md")
    lines = md.splitlines()
    assert lines[0].startswith("| model | device | engine | precision | batch |") and "speedup" in lines[0]
    assert "evil<b>\\|name" in md and "| 1.25 |" in md
    back = pd.read_csv(io.StringIO(table_text(t, "csv")))
    assert list(back.columns[:5]) == ["model", "device", "engine", "precision", "batch"]
    assert back["speedup"].max() == pytest.approx(1.25)
    with pytest.raises(GsdeployError, match="HTML report is made from the rows"):
        table_text(t, "html")  # the page needs the rows' environment: report_text (test_report_page.py)
    with pytest.raises(GsdeployError, match="unknown report format 'pdf'"):
        table_text(t, "pdf")


def test_power_columns_are_carried_when_present():
    rows = one_run()
    rows[0].update(avg_power_w=7.5, energy_per_inference_mj=15.0)
    rows[1].update(avg_power_w=6.0, energy_per_inference_mj=9.6)
    t = latency_table(pd.DataFrame(rows))
    assert t.loc[("resnet56_hinge50", "Xeon", "ort", "fp32", 1), "energy_per_inference_mj"] == 9.6
    assert "| mJ/inference |" in table_text(t, "md").splitlines()[0]
    assert "avg_power_w" not in latency_table(pd.DataFrame(one_run())).columns


def test_render_empty_table():
    t = latency_table(pd.DataFrame(columns=SCHEMA))
    assert table_text(t, "md").startswith("| model |")


# ---- plot and atomic writes -----------------------------------------------------------------


def test_plot_writes_a_png_atomically(tmp_path):
    rows = (one_run(device="Xeon") + one_run(device="Orin", engine="trt", precision="fp16")
            + [row("lonely", "compressed", 1.0, 10, device="Nano")])
    out = plot(pd.DataFrame(rows), tmp_path / "report.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.png"]  # no temp files left
    # A latency table is accepted as well as rows.
    plot(latency_table(pd.DataFrame(rows)), tmp_path / "again.png")


def test_plot_and_write_errors(tmp_path):
    with pytest.raises(OutputPathError, match="does not exist"):
        plot(pd.DataFrame(one_run()), tmp_path / "missing" / "x.png")
    with pytest.raises(GsdeployError, match="nothing to plot"):
        plot(pd.DataFrame(columns=SCHEMA), tmp_path / "x.png")
    target = tmp_path / "r.md"
    write_text_atomic(target, "old")
    write_text_atomic(target, "new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["r.md"]
    with pytest.raises(OutputPathError, match="is a directory"):
        write_text_atomic(tmp_path, "x")
