"""A padded pair is one site in every plan table: its actions, shapes and reasons in one row."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gsdeploy.bench.layers import decisions_of
from gsdeploy.bench.site_join import site_of
from gsdeploy.cli import app
from gsdeploy.load import load_model
from gsdeploy.plan.site_rows import one_per_site
from gsdeploy.report import load_inputs
from gsdeploy.report.page import html_page
from gsdeploy.transforms import DeployOptions, deploy
from gsdeploy.transforms.align import find_width_sites
from tests.test_report import one_run, write_csv

runner = CliRunner()
SITE = "features.1.0.body.0"  # resnet20_hinge50's first pair: 3x3 16->7 + 1x1 7->16


@pytest.fixture(scope="module")
def padded():
    """resnet20_hinge50 with its first pair kept and its rank padded 7 -> 16, as a latency plan does."""
    m = load_model("resnet20_hinge50")
    producer = f"{SITE}.0"
    assert producer in {s.producer for s in find_width_sites(deploy(m.module, m.input_shape,
                                                                     DeployOptions(fuse="never")).module)}
    opts = DeployOptions(fuse="never", choices={producer: "pad:16"}, reasons={producer: "by latency: pad:16 fastest"})
    return deploy(m.module, m.input_shape, opts)


def test_a_kept_and_padded_pair_is_one_row(padded):
    assert [d.action for d in padded.plan if d.site == SITE] == ["keep", "pad width"]  # what the passes record
    rows = one_per_site(padded.plan)
    sites = [r["site"] for r in rows]
    assert len(sites) == len(set(sites)) == len({d.site for d in padded.plan})
    (row,) = [r for r in rows if r["site"] == SITE]
    assert row["action"] == "keep, pad width"
    assert (row["shape_before"], row["shape_after"]) == ("3x3 16->7 + 1x1 7->16", "3x3 16->16 + 1x1 16->16")
    assert row["macs_after"] > row["macs_before"] and row["reason"] == "by latency: pad:16 fastest"
    assert sites.index(SITE) == [d.site for d in padded.plan].index(SITE)  # where the site first appears


def test_merge_keeps_distinct_reasons_layers_and_unnamed_decisions():
    rows = one_per_site([
        {"site": "s", "action": "keep", "layers": ["a", "b"], "shape_before": "x", "shape_after": "x",
         "macs_before": 1, "macs_after": 1, "reason": "r1"},
        {"site": "", "action": "fold BN", "layers": [], "reason": ""},
        {"site": "", "action": "fold BN", "layers": [], "reason": ""},
        {"site": "s", "action": "pad width", "layers": ["b", "c"], "shape_before": "x", "shape_after": "y",
         "macs_before": 1, "macs_after": 2, "reason": "r2", "predicted_ms": 0.1}])
    assert [r["action"] for r in rows] == ["keep, pad width", "fold BN", "fold BN"]
    assert rows[0]["layers"] == ["a", "b", "c"] and rows[0]["reason"] == "r1; r2"
    assert (rows[0]["shape_after"], rows[0]["macs_after"], rows[0]["predicted_ms"]) == ("y", 2, 0.1)


def test_inspect_prints_the_padded_pair_once(padded, monkeypatch):
    from gsdeploy.plan import stage

    monkeypatch.setattr(stage, "deploy", lambda module, shape, options: padded)
    r = runner.invoke(app, ["inspect", "resnet20_hinge50", "--plan", "flops"])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if re.search(rf"\s{re.escape(SITE)}\s", ln)]
    assert len(lines) == 1 and "keep, pad width" in lines[0] and "16->16" in lines[0], r.output


def test_report_page_and_per_layer_join_show_the_site_once(padded, tmp_path: Path):
    from gsdeploy.transforms.decisions import plan_record

    write_csv(tmp_path / "bench_x.csv", one_run())
    record = plan_record(padded, "resnet56_hinge50", DeployOptions(fuse="never"))
    (tmp_path / "bench_x.plan.json").write_text(json.dumps(record, default=str))
    page = html_page(load_inputs([tmp_path]), plots=False)
    assert page.count(f"<td>{SITE}</td>") + page.count(f'<td class="t">{SITE}</td>') == 1
    assert "keep, pad width" in page
    site, decision = site_of(f"{SITE}.1", decisions_of(padded.plan))
    assert site == SITE and decision["shape_after"] == "3x3 16->16 + 1x1 16->16"  # not the unpadded "keep" row's
