"""The HTML report page: what it shows for one run and for a merged multi-device directory,
and that it stays self-contained. (The browser test, test_report_browser.py, renders it.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from gsdeploy.cli import app
from gsdeploy.report import load_inputs, report_text
from gsdeploy.report.page import fmt_bytes, fmt_count, fmt_ms, html_page
from tests.test_report import one_run, row, write_csv

runner = CliRunner()


def env(**kw: object) -> dict:
    base = dict(cpu="AMD EPYC 9B14", cores=2, torch_version="2.13.0+cpu", ort_version="1.32.0",
                ort_package="onnxruntime", gsdeploy_version="0.1.0")
    base.update(kw)
    return base


def sweep_dir(tmp_path: Path) -> Path:
    """A merged sweep: a CPU run (one row slower than dense, one noisy) and a GPU run, with a
    plan, a per-layer profile and claim verdicts beside them."""
    d = tmp_path / "sweep"
    cpu = [row("resnet56", "baseline", 1.5, 125_485_696, device="AMD EPYC", threads=2, **env()),
           row("resnet56_hinge50", "compressed", 1.8, 62_061_184, device="AMD EPYC", threads=2, latency_cov=0.2,
               weights_bytes=1_710_504, **env()),
           row("resnet56", "baseline", 40.0, 125_485_696, device="AMD EPYC", threads=2, batch=32, **env()),
           row("resnet56_hinge50", "compressed", 32.0, 62_061_184, device="AMD EPYC", threads=2, batch=32,
               weights_bytes=1_710_504, **env())]
    gpu = [row("resnet50", "baseline", 2.0, 4_089_184_256, device="NVIDIA H200", engine="torch-cuda",
               provider="cuda", threads=1, command="gsdeploy bench resnet50_pruned50 --profile server-gpu-torch",
               **env(gpu="NVIDIA H200", gpu_driver="580.1", cuda_version="13.0")),
           row("resnet50_pruned50", "compressed", 1.0, 1_819_000_000, device="NVIDIA H200", engine="torch-cuda",
               provider="cuda", threads=1, command="gsdeploy bench resnet50_pruned50 --profile server-gpu-torch",
               latency_cov=0.015, max_cov=0.01, profile="server-gpu-torch",
               **env(gpu="NVIDIA H200", gpu_driver="580.1", cuda_version="13.0"))]
    write_csv(d / "cpu" / "bench_resnet56_hinge50.csv", cpu)
    write_csv(d / "gpu" / "bench_resnet50_pruned50.csv", gpu)
    plan = {"kind": "gsdeploy-plan", "model": "resnet56_hinge50", "options": {"fuse": "flops"},
            "macs_before": 62_061_184, "macs_after": 62_061_184, "params_before": 1, "params_after": 1,
            "verification": {"max_rel_err": 3e-7},
            "decisions": [
                {"site": "features.0.0", "action": "fold BN", "layers": ["features.0.0", "features.0.1"],
                 "shape_before": "3x3 3->16 + BN 16", "shape_after": "3x3 3->16", "macs_before": 1, "macs_after": 1,
                 "reason": "eval BatchNorm"},
                {"site": "features.1.0.body.0", "action": "keep", "layers": ["a", "b"],
                 "shape_before": "3x3 16->7 + 1x1 7->16", "shape_after": "3x3 16->7 + 1x1 7->16",
                 "macs_before": 1_150_000, "macs_after": 1_150_000, "reason": "by latency: <kept> 80 µs vs 50 µs",
                 "predicted_ms": 0.08}],
            "command": "gsdeploy bench"}
    (d / "cpu" / "bench_resnet56_hinge50.plan.json").write_text(json.dumps(plan))
    layers = pd.DataFrame([
        {"model": "resnet56_hinge50", "baseline": "resnet56", "engine": "ort", "batch": 1, "site": "features.0.0",
         "action": "", "deployed_shape": "", "dense_us": 23.5, "deployed_us": 25.0, "command": "gsdeploy bench --per-layer"},
        {"model": "resnet56_hinge50", "baseline": "resnet56", "engine": "ort", "batch": 1,
         "site": "features.1.0.body.0", "action": "keep", "deployed_shape": "3x3 16->7 + 1x1 7->16",
         "dense_shape": "3x3 16->16", "dense_us": 50.0,
         "deployed_us": 80.5, "command": "gsdeploy bench --per-layer"}])
    layers.to_csv(d / "cpu" / "bench_resnet56_hinge50.layers.csv", index=False)
    pd.DataFrame([{"id": "hinge-resnet56-flops", "status": "PASS", "metric": "flop_ratio", "measured": 0.4946,
                   "claimed": 0.5, "tolerance": "±0.02", "direction": "both", "reason": "within",
                   "command": "gsdeploy validate claims/hinge.yaml"},
                  {"id": "dwgl-resnet50-speedup", "status": "FAIL", "metric": "speedup", "measured": 1.2,
                   "claimed": 2.23, "tolerance": "±10%", "direction": "at_least", "reason": "too slow",
                   "command": "gsdeploy validate claims/dwgl.yaml"}]).to_csv(d / "claims.csv", index=False)
    return d


def test_units_are_for_people():
    assert fmt_ms(1.4946) == "1.49 ms" and fmt_ms(38.82) == "38.8 ms" and fmt_ms(0.04213) == "0.0421 ms"
    assert fmt_ms(1234.5) == "1,234 ms" and fmt_ms(float("nan")) == "–"
    assert fmt_count(125_485_696) == "125 M" and fmt_count(4_089_184_256) == "4.09 G" and fmt_count(850_986) == "851 k"
    assert fmt_bytes(1_710_504) == "1.71 MB" and fmt_bytes(2_000) == "2.0 kB"


def test_page_of_a_merged_sweep_shows_everything(tmp_path):
    inputs = load_inputs([sweep_dir(tmp_path)])
    assert inputs.skipped == []  # plan, layers and claims are recognised, not "skipped"
    assert len(inputs.rows) == 6 and len(inputs.plans) == 1 and len(inputs.layers) == 2 and len(inputs.claims) == 2
    page = html_page(inputs)
    # one section per device, each with its own environment
    assert 'id="device-amd-epyc"' in page and 'id="device-nvidia-h200"' in page
    cpu = page[page.index('id="device-amd-epyc"'):page.index('id="device-nvidia-h200"')]
    gpu = page[page.index('id="device-nvidia-h200"'):page.index('id="plots"')]
    assert "AMD EPYC 9B14" in cpu and "580.1" not in cpu and "2.13.0+cpu" in cpu
    assert "NVIDIA H200" in gpu and "580.1" in gpu and "13.0" in gpu
    # human units, slower-than-dense marked, noisy CoV flagged, fast row not marked
    assert "1.50 ms" in cpu and "125 M" in cpu and "1.71 MB" in cpu
    assert re.search(r'<td class="slow"[^>]*>0\.83× ▼</td>', cpu)
    assert re.search(r'<td class="noisy"[^>]*>20\.0% ⚠</td>', cpu)
    assert re.search(r'<td class="fast">1\.25×</td>', cpu)
    assert re.search(r'<td class="fast">2\.00×</td>', gpu)
    # the GPU profile's own CoV limit (1%) flags 1.5%, which the default 2.5% would pass
    assert re.search(r'<td class="noisy"[^>]*>1\.5% ⚠</td>', gpu) and "server-gpu-torch" in gpu
    assert "1.0%" in gpu and "1.0%" not in cpu.split("Speedup = ")[1]
    # plot inline, plan with the planner's extra fields, per-layer table, claims, commands
    assert page.count('src="data:image/svg+xml;base64,') == 1
    plans = page[page.index('id="plans"'):page.index('id="layers"')]
    assert "features.1.0.body.0" in plans and "predicted ms" in plans and "&lt;kept&gt;" in plans
    assert "1 × fold BN" in plans and "features.0.0" not in plans.split("<table>")[-1]  # BN folds only counted
    layers = page[page.index('id="layers"'):page.index('id="claims"')]
    assert "80.5 µs" in layers and re.search(r'class="slow"[^>]*>0\.62× ▼', layers) and "3x3 16-&gt;16" in layers
    claims = page[page.index('id="claims"'):page.index('id="commands"')]
    assert 'class="tag PASS"' in claims and 'class="tag FAIL"' in claims and "gsdeploy validate claims/dwgl.yaml" in claims
    commands = page[page.index('id="commands"'):]
    assert "gsdeploy bench resnet50_pruned50 --profile server-gpu-torch" in commands
    assert "bench_resnet56_hinge50.csv" in commands


def test_page_is_self_contained_and_deterministic(tmp_path):
    d = sweep_dir(tmp_path)
    page = html_page(load_inputs([d]))
    assert page == html_page(load_inputs([d]))  # no generation time: same files, same bytes
    assert "default-src 'none'" in page  # the browser may fetch nothing
    assert "<script" not in page.lower()
    urls = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page)
    assert urls and all(u.startswith(("data:", "#")) for u in urls), urls
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page


def test_one_run_without_side_files_and_hostile_names(tmp_path):
    rows = one_run()
    rows[1]["model"] = "evil<script>alert(1)</script>"
    rows[1]["baseline_model"] = "resnet56"
    f = write_csv(tmp_path / "a.csv", rows)
    page = report_text(load_inputs([f]), "html")
    assert "<script>" not in page and "evil&lt;script&gt;" in page
    assert 'id="plans"' not in page and 'id="layers"' not in page and 'id="claims"' not in page


def test_unreadable_side_files_are_listed_not_dropped(tmp_path):
    d = sweep_dir(tmp_path)
    (d / "cpu" / "broken.plan.json").write_text("{not json")
    (d / "cpu" / "x.layers.csv").write_text("a,b\n1,2\n")
    inputs = load_inputs([d])
    assert len(inputs.plans) == 1 and len(inputs.skipped) == 2
    page = html_page(inputs)
    assert "broken.plan.json" in page and "x.layers.csv" in page


@pytest.mark.parametrize("edit, words", [
    (lambda p: {**p, "verification": {"max_rel_err": "abc"}}, "verification.max_rel_err must be a number"),
    (lambda p: {**p, "verification": [1]}, "verification must be an object"),
    (lambda p: {**p, "options": "fast"}, "options must be an object"),
    (lambda p: {**p, "macs_after": 1e300}, "macs_after must be a finite number >= 0 and <= 1e+16"),
    (lambda p: {**p, "decisions": p["decisions"] + [7]}, "decisions[2] must be an object"),
    (lambda p: {**p, "decisions": [{**p["decisions"][0], "macs_before": "many"}]}, "decisions[0].macs_before"),
    (lambda p: {**p, "model": ["x"]}, "model must be text"),
    (lambda p: "[" * 100_000, "nested too deeply"),
    (lambda p: json.dumps(p).replace('"params_before": 1', '"params_before": NaN'), "NaN is not a number"),
])
def test_a_hand_edited_plan_file_is_skipped_and_named(tmp_path, edit, words):
    """A plan file beside the rows is shown on the page: one with a string where a number goes (or
    a list where an object goes, or nested 100000 deep) ended `report --format html` in an
    internal error instead of being listed as skipped."""
    d = sweep_dir(tmp_path)
    path = d / "cpu" / "bench_resnet56_hinge50.plan.json"
    changed = edit(json.loads(path.read_text()))
    path.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    r = CliRunner().invoke(app, ["report", str(d), "--format", "html", "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    assert words in r.stderr and str(path) in r.stderr, r.stderr
    assert str(path) in (tmp_path / "r.html").read_text()


def test_cli_report_html(tmp_path):
    d = sweep_dir(tmp_path)
    out = tmp_path / "report.html"
    r = runner.invoke(app, ["report", str(d), "--format", "html", "-o", str(out)])
    assert r.exit_code == 0, r.output + r.stderr
    assert out.read_text().startswith("<!DOCTYPE html>") and "skipped" not in r.stderr
    r = runner.invoke(app, ["report", str(tmp_path / "nope"), "--format", "pdf"])
    assert r.exit_code != 0 and "--format must be one of md, csv, html" in r.stderr and "Traceback" not in r.output


@pytest.mark.parametrize("fmt", ["md", "csv"])
def test_other_formats_ignore_side_files(tmp_path, fmt):
    d = sweep_dir(tmp_path)
    text = report_text(load_inputs([d]), fmt)
    assert "resnet56_hinge50" in text and "features.1.0.body.0" not in text
