"""Per-layer profiles: ONNX nodes traced back to layers and plan sites, ORT's profiler read per
run, deployed vs dense joined on site names, and `bench --per-layer` end to end."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
import onnx  # noqa: E402

from gsdeploy.target import make_target  # noqa: E402
from gsdeploy.bench.layers import (UNATTRIBUTED, join_sites, layer_map, profile_ort,  # noqa: E402
                                   profile_ort_interleaved, read_ort_trace, site_of)
from gsdeploy.cli import app  # noqa: E402

SHAPE = (3, 16, 16)
FAST = ("--warmup-s", "0.02", "--min-iterations", "3", "--min-duration-s", "0.02")
PAIR = {"site": "block.conv", "action": "keep", "layers": ["block.conv.0", "block.conv.1"],
        "shape_after": "3x3 8->3 + 1x1 3->8"}


class Block(nn.Module):
    def __init__(self, pair: bool) -> None:
        super().__init__()
        self.conv = (nn.Sequential(nn.Conv2d(8, 3, 3, padding=1, bias=False), nn.Conv2d(3, 8, 1)) if pair
                     else nn.Conv2d(8, 8, 3, padding=1))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x) + x)


class Net(nn.Module):
    def __init__(self, pair: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.block = Block(pair)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.block(self.relu(self.stem(x)))).flatten(1))


def export(module: nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.randn(2, *SHAPE),), str(path), dynamo=False, input_names=["input"],
                          output_names=["out"], dynamic_axes={"input": {0: "batch"}})
    return path


@pytest.fixture(scope="module")
def onnx_pair(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("layers")
    return export(Net(pair=True), tmp / "deployed.onnx"), export(Net(pair=False), tmp / "dense.onnx")


def test_nodes_belong_to_the_layer_whose_weights_they_read(onnx_pair):
    graph = onnx.load(str(onnx_pair[0])).graph
    m = layer_map(graph)
    by_op: dict[str, list[str]] = {}
    for n in graph.node:
        by_op.setdefault(n.op_type, []).append(m.node[n.name])
    assert by_op["Conv"] == ["stem", "block.conv.0", "block.conv.1"]
    assert by_op["Relu"][0] == "stem"  # no weights: the layer that produced its input
    assert by_op["Add"] == ["block.conv.1"]
    assert by_op["Gemm"] == ["head"]
    assert UNATTRIBUTED not in m.node.values()


def test_site_of_takes_the_grouping_decision():
    bn = {"site": "block.conv.0", "action": "fold BN", "layers": ["block.conv.0", "bn"]}
    assert site_of("block.conv.0", [bn, PAIR]) == ("block.conv", PAIR)
    assert site_of("block.conv.1", [PAIR])[0] == "block.conv"
    assert site_of("stem", [bn, PAIR]) == ("stem", None)
    assert site_of("block.convx", [PAIR])[0] == "block.convx"  # a prefix must end at a dot


def test_a_site_with_several_decisions_shows_all_actions_and_the_deployed_shape():
    pad = {"site": "block.conv", "action": "pad width", "layers": ["block.conv.0", "block.conv.1"],
           "shape_after": "3x3 8->16 + 1x1 16->8"}
    site, d = site_of("block.conv.0", [PAIR, pad])
    assert site == "block.conv"
    assert d["action"] == f"{PAIR['action']}, pad width"
    assert d["shape_after"] == "3x3 8->16 + 1x1 16->8"


def test_trace_is_split_per_run_and_warmup_dropped(tmp_path):
    def node(name: str, ts: int, dur: int, op: str = "Conv") -> dict:
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    events = [{"cat": "Session", "name": "model_run", "ts": t, "dur": 90} for t in (0, 100, 200)]
    events += [node("a", 5, 50), node("b", 60, 10, "Relu"),  # run 0: warm-up, dropped
               node("a", 105, 20), node("b", 130, 4, "Relu"), node("a", 205, 30), node("b", 240, 6, "Relu"),
               node("a", 400, 999),  # outside every run
               {"cat": "Node", "name": "a_fence_before", "ts": 206, "dur": 1}]
    p = tmp_path / "trace.json"
    p.write_text(json.dumps(events))
    per_run, ops, order = read_ort_trace(p, skip_runs=1)
    assert per_run == [{"a": 20.0, "b": 4.0}, {"a": 30.0, "b": 6.0}]
    assert read_ort_trace(p, skip_runs=0, drop={0, 2})[0] == [{"a": 20.0, "b": 4.0}]
    assert ops == {"a": "Conv", "b": "Relu"} and order == ["a", "b"]


def test_profile_joins_deployed_and_dense_on_sites(onnx_pair):
    deployed, dense = onnx_pair
    one = make_target("ort", threads=1)
    stem = {"site": "stem", "action": "fold BN", "layers": ["stem", "bn"], "shape_after": "3x3 3->8"}
    dense_conv = {"site": "block.conv", "action": "fold BN", "layers": ["block.conv", "bn"], "shape_after": "3x3 8->8"}
    dep, den = profile_ort_interleaved([(deployed, [stem, PAIR], None), (dense, [dense_conv], None)], 2, target=one,
                                       warmup=2, runs=5, block=2, pause_s=0.0)
    assert dep.runs == den.runs == 5
    assert set(dep.order) == {"stem", "block.conv", "head"}, dep.order  # both convs of the pair: one site
    assert set(den.order) == {"stem", "block.conv", "head"}, den.order
    assert dep.ops["block.conv"]["Conv"] + dep.ops["block.conv"].get("FusedConv", 0) >= 2
    df = join_sites(dep, den)
    assert list(df["site"]) == dep.order
    r = df.set_index("site").loc["block.conv"]
    assert r["action"] == "keep" and r["deployed_shape"] == PAIR["shape_after"] and r["dense_shape"] == "3x3 8->8"
    assert df.set_index("site").loc["stem", "deployed_shape"] == "3x3 3->8"  # from its BN fold
    assert r["dense_us"] > 0 and r["deployed_us"] > 0 and r["speedup"] == pytest.approx(r["dense_us"] / r["deployed_us"])
    assert df["deployed_share"].sum() == pytest.approx(1.0)
    single = profile_ort(dense, 1, [], target=one, warmup=1, runs=3)
    assert single.runs == 3 and set(single.order) == {"stem", "block.conv", "head"}


def test_bench_per_layer_writes_plan_and_profile_and_the_report_shows_them(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["bench", "resnet20_hinge50", "--engine", "ort", "--batch", "1", "--threads", "1",
                            "-o", str(tmp_path), "--name", "b", "--per-layer", "--plan", "flops", *FAST])
    assert r.exit_code == 0, r.output + r.stderr
    rows = pd.read_csv(tmp_path / "b.csv")
    assert (rows["profile"] == "cpu-ort").all() and (rows["max_cov"] == 0.025).all()
    plan = json.loads((tmp_path / "b.plan.json").read_text())
    # the FLOP plan, whose decisions this test knows; its rows are named apart from the default (latency) plan's
    assert plan["kind"] == "gsdeploy-plan" and plan["model"] == "resnet20_hinge50[plan=flops]"
    assert any(d["action"] == "keep" and d["site"] == "features.1.0.body.0" for d in plan["decisions"])
    df = pd.read_csv(tmp_path / "b.layers.csv")
    assert set(df["model"]) == {"resnet20_hinge50[plan=flops]"} and set(df["baseline"]) == {"resnet20"}
    pair = df.set_index("site").loc["features.1.0.body.0"]
    assert pair["action"] == "keep" and math.isfinite(pair["dense_us"]) and math.isfinite(pair["deployed_us"])
    # every dense conv site has its deployed counterpart (pairs are named like the conv they replace)
    both = df.dropna(subset=["dense_us", "deployed_us"])
    assert len(both) >= 20 and UNATTRIBUTED not in set(df["site"])
    assert (tmp_path / "b.layers.md").read_text().startswith("# Where the time goes")
    out = tmp_path / "r.html"
    r = runner.invoke(app, ["report", str(tmp_path), "--format", "html", "-o", str(out)])
    assert r.exit_code == 0 and "skipped" not in r.stderr, r.stderr
    page = out.read_text()
    assert 'id="plans"' in page and 'id="layers"' in page and "features.1.0.body.0" in page


def test_per_layer_needs_the_plan(tmp_path, onnx_pair):
    deployed, dense = onnx_pair
    r = CliRunner().invoke(app, ["bench", str(deployed), "--baseline", str(dense), "--engine", "ort", "--batch", "1",
                                 "-o", str(tmp_path), "--per-layer", *FAST])
    assert r.exit_code != 0 and "--per-layer joins the profile to the deployment plan" in r.stderr
    assert not list(tmp_path.glob("*.csv"))  # refused before any timing


def test_tensorrt_layer_profiler(onnx_pair, tmp_path):
    """TensorRT's IProfiler path: runs only where TensorRT and a CUDA GPU are present."""
    pytest.importorskip("tensorrt", reason="TensorRT's layer profiler needs the tensorrt package (and a CUDA GPU)")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT's layer profiler needs a CUDA GPU")
    from gsdeploy.bench.layers import profile_trt
    from gsdeploy.bench.runners.trt import TrtRunner
    from gsdeploy.export.tensorrt import export_trt
    from gsdeploy.export.trt_rules.batches import BatchRange
    from gsdeploy.export.trt_rules.options import TrtBuildOptions

    deployed, _ = onnx_pair
    engine = tmp_path / "deployed.engine"
    export_trt(Net(pair=True).eval(), deployed, SHAPE, TrtBuildOptions(precision="fp32", batch=BatchRange(1, 2, 2)),
               engine)
    runner = TrtRunner(engine)
    try:
        times = profile_trt(runner, deployed, 2, [PAIR], warmup=2, runs=5)
    finally:
        runner.close()
    assert times.runs == 5 and "block.conv" in times.order and times.us["block.conv"] > 0
