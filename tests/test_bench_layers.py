"""Per-layer profiles: ONNX nodes traced back to layers and plan sites, ORT's profiler read per
run, deployed vs dense joined on site names, and `bench --per-layer` end to end."""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

pytest.importorskip("onnxruntime")
import onnx  # noqa: E402

from gsdeploy.target import make_target  # noqa: E402
from gsdeploy.bench.layers import (UNATTRIBUTED, SiteTimes, decisions_of, join_sites, layer_map,  # noqa: E402
                                   profile_ort, profile_ort_interleaved, read_ort_trace, site_times)
from gsdeploy.bench.site_join import common_blocks, grouping_sites, site_of  # noqa: E402
from gsdeploy.transforms import DeployOptions, deploy  # noqa: E402
from gsdeploy import zoo  # noqa: E402
from gsdeploy.zoo.densenet import build_cifar_densenet  # noqa: E402
from gsdeploy.zoo.fga import build_fga_densenet, build_fga_vgg16  # noqa: E402
from gsdeploy.zoo.layers import conv  # noqa: E402
from gsdeploy.zoo.wrn import WideResNet  # noqa: E402
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


def export(module: nn.Module, path: Path, shape: tuple[int, ...] = SHAPE) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.randn(2, *shape),), str(path), dynamo=False, input_names=["input"],
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


def test_a_densenet_concat_and_a_bn_with_shared_constants_belong_to_their_layer(tmp_path):
    """A dense layer's Concat appends its conv's output to x (from the stem): it is the layer's;
    fresh BNs have equal statistics, which the exporter stores once and names through Identity."""
    graph = onnx.load(str(export(tiny_densenet(pair=False), tmp_path / "d.onnx", (3, 32, 32)))).graph
    m = layer_map(graph)
    cats = [m.node[n.name] for n in graph.node if n.op_type == "Concat"]
    assert cats[:2] == ["features.1.0.body.2", "features.1.1.body.2"]
    bns = [m.node[n.name] for n in graph.node if n.op_type == "BatchNormalization"]
    assert bns[:3] == ["features.1.0.body.0", "features.1.1.body.0", "features.2.0"]
    assert "features.3.0.body.0" in bns


def test_site_of_takes_the_grouping_decision():
    bn = {"site": "block.conv.0", "action": "fold BN", "layers": ["block.conv.0", "bn"]}
    site, d = site_of("block.conv.0", [bn, PAIR])
    assert site == "block.conv" and d == {**PAIR, "sites": ["block.conv"]}  # a BN fold groups nothing
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


# A DenseNet layer's body is [BN, ReLU, 3x3] in the dense model, [BN, ReLU, 3x3, 1x1] with a Hinge
# pair: the pair's site is their common prefix, "features.1.0.body", above the dense conv body.2.
DENSENET_PAIR = {"site": "features.1.0.body", "action": "fuse pair", "layers": ["features.1.0.body.2",
                 "features.1.0.body.3"], "shape_after": "3x3 24->12"}


def test_a_dense_layer_belongs_to_the_deployed_site_it_lies_under():
    shared = grouping_sites([DENSENET_PAIR], [{"site": "features.0", "action": "fold BN", "layers": ["features.0"]}])
    assert [r["site"] for r in shared] == ["features.1.0.body"]  # a BN fold groups nothing
    for layer in ("features.1.0.body.2", "features.1.0.body.0", "features.1.0.body.3"):  # conv, its BN, the 1x1
        assert site_of(layer, shared) == ("features.1.0.body", shared[0])
    assert site_of("features.1.1.body.2", shared) == ("features.1.1.body.2", None)
    # an FGA pair replaced the dense conv body.0 by body.0.conv = [grouped 3x3, 1x1]: the dense
    # conv lies above the one site under it
    fga = {"site": "b.0.body.0.conv", "action": "fuse pair", "layers": ["b.0.body.0.conv.0", "b.0.body.0.conv.1"]}
    assert site_of("b.0.body.0", [fga])[0] == "b.0.body.0.conv"
    fga2 = {"site": "b.0.body.3.conv", "action": "keep", "layers": ["b.0.body.3.conv.0", "b.0.body.3.conv.1"]}
    assert site_of("b.0", [fga, fga2]) == ("b.0", None)  # above two sites: neither
    # decisions that share a layer are one site, named by the broadest: a padded width across a
    # pair, a linear chain one plan folded and the other kept link by link
    pad = {"site": "block", "action": "pad width", "layers": ["block.pair.1", "block.conv2"]}
    pair = {"site": "block.pair", "action": "keep", "layers": ["block.pair.0", "block.pair.1"]}
    for layer in ("block.pair.0", "block.pair.1", "block.conv2"):
        assert site_of(layer, [pair, pad]) == ("block", grouping_sites([pair, pad])[0])
    assert grouping_sites([pair, pad])[0]["action"] == "keep, pad width"
    chain = {"site": "classifier", "action": "fold linear chain", "layers": ["classifier.0", "classifier.1"]}
    link = {"site": "classifier.1", "action": "keep", "layers": ["classifier.1"]}
    assert site_of("classifier.1", [link, chain])[0] == "classifier"
    # zero channels kept by one layer name every layer that reads them: they group nothing
    kept = {"site": "f.5.0.conv.0", "action": "keep", "layers": ["f.5.0.conv.0", "f.5.1.conv.0", "classifier"]}
    assert site_of("classifier", [kept]) == ("classifier", None)
    assert site_of("f.5.1.conv.0", [kept]) == ("f.5.1.conv.0", None)


def test_deployed_and_dense_nodes_are_cut_into_the_same_sites_and_none_is_lost():
    """Synthetic profiler records of a DenseNet layer: the dense model's BN, ReLU and conv and the
    deployed model's BN, ReLU and fused pair meet in one row; nodes with no counterpart keep a
    row of their own; each side's total is the sum of its node times."""
    dep_layers = {"stem": "features.0", "bn": "features.1.0.body.0", "relu": "features.1.0.body.0",
                  "fused": "features.1.0.body.2", "cat": "features.1.0.body.2", "pad": "/Cast_output_0",
                  "fc": "classifier"}
    den_layers = {"stem": "features.0", "bn": "features.1.0.body.0", "relu": "features.1.0.body.0",
                  "conv": "features.1.0.body.2", "cat": "features.1.0.body.2", "fc": "classifier",
                  "extra": "features.9"}
    dep_run = {n: float(2 ** i) for i, n in enumerate(dep_layers)}  # powers of 2: every sum is unique
    den_run = {n: float(3 ** i) for i, n in enumerate(den_layers)}
    dense_plan = [{"site": "features.0", "action": "fold BN", "layers": ["features.0", "features.1"],
                   "shape_after": "3x3 3->24"}]
    shared = grouping_sites([DENSENET_PAIR], dense_plan)
    dep = site_times([dep_run], {n: "Op" for n in dep_run}, list(dep_run), dep_layers, [DENSENET_PAIR], sites=shared)
    den = site_times([den_run], {n: "Op" for n in den_run}, list(den_run), den_layers, dense_plan, sites=shared)
    df = join_sites(dep, den)
    by = df.set_index("site")
    assert list(df["site"]) == ["features.0", "features.1.0.body", "/Cast_output_0", "classifier", "features.9"]
    site = by.loc["features.1.0.body"]
    assert site["deployed_us"] == sum(dep_run[n] for n in ("bn", "relu", "fused", "cat"))
    assert site["dense_us"] == sum(den_run[n] for n in ("bn", "relu", "conv", "cat"))
    assert site["action"] == "fuse pair" and site["deployed_shape"] == "3x3 24->12" and site["dense_shape"] == ""
    assert by.loc["features.0", "dense_shape"] == "3x3 3->24"  # each side's shape from its own plan
    assert math.isnan(by.loc["/Cast_output_0", "dense_us"]) and by.loc["/Cast_output_0", "deployed_us"] == dep_run["pad"]
    assert math.isnan(by.loc["features.9", "deployed_us"]) and by.loc["features.9", "dense_us"] == den_run["extra"]
    assert df["deployed_us"].sum() == sum(dep_run.values()) and df["dense_us"].sum() == sum(den_run.values())


def test_a_block_rebuilt_without_a_plan_site_meets_the_dense_layer_as_that_block():
    """FGA VGG: features.4 = [grouped 3x3, BN, ReLU, 1x1, BN, ReLU] for the dense [3x3, BN, ReLU];
    no plan site groups the two convs (BN and ReLU lie between them)."""
    def times(us: dict[str, float], shapes: dict[str, str]) -> SiteTimes:
        return SiteTimes(us=us, ops={s: Counter({"Conv": 1}) for s in us}, order=list(us), runs=1, decisions={},
                         shapes=shapes)

    dep = times({"features.0.0": 5.0, "features.4.conv.0": 1.0, "features.4.conv.3": 2.0, "/Pad_only": 4.0},
                {"features.4.conv.0": "3x3/g16 64->64", "features.4.conv.3": "1x1 64->128"})
    den = times({"features.0.0": 6.0, "features.4.0": 8.0}, {"features.4.0": "3x3 64->128"})
    df = join_sites(dep, den).set_index("site")
    assert list(df.index) == ["features.0.0", "features.4", "/Pad_only"]
    r = df.loc["features.4"]
    assert (r["deployed_us"], r["dense_us"], r["deployed_ops"]) == (3.0, 8.0, "Conv×2")
    assert r["deployed_shape"] == "3x3/g16 64->64 + 1x1 64->128" and r["dense_shape"] == "3x3 64->128"
    assert math.isnan(df.loc["/Pad_only", "dense_us"])  # no counterpart: still a row
    assert df["deployed_us"].sum() == 12.0 and df["dense_us"].sum() == 14.0
    # never a block that holds a site both models have
    assert common_blocks(["a.1.x", "a.0"], ["a.1.y", "a.0"]) == {"a.1.x": "a.1", "a.1.y": "a.1"}
    assert common_blocks(["a.x", "a.0"], ["a.y", "a.0"]) == {}


def tiny_densenet(pair: bool) -> nn.Module:
    """DenseNet-10 (3 blocks of 2 layers, growth 4) whose layers and transitions are plain convs
    or Hinge pairs of rank 2, the layout of the official Hinge DenseNet."""
    torch.manual_seed(0)
    if not pair:
        return build_cifar_densenet(n_layers=2, growth=4, num_classes=4)
    return build_cifar_densenet(n_layers=2, growth=4, num_classes=4,
                                layer=lambda b, j, cin, k: [conv(cin, 2, 3), conv(2, k, 1)],
                                transition=lambda t, cin, cout: [conv(cin, 2, 1), conv(2, cout, 1)])


def test_a_fused_densenet_pair_meets_the_dense_layer_it_replaced(tmp_path):
    shape = (3, 32, 32)
    deployed = deploy(tiny_densenet(pair=True), shape, DeployOptions(fuse="always"))
    dense = deploy(tiny_densenet(pair=False), shape, DeployOptions(fuse="flops"))
    plans = decisions_of(deployed.plan), decisions_of(dense.plan)
    pairs = {d["site"] for d in plans[0] if d["action"] == "fuse pair"}
    assert {"features.1.0.body", "features.2"} <= pairs  # a dense layer's pair, a transition's pair
    models = [(export(deployed.module, tmp_path / "deployed.onnx", shape), plans[0], shape),
              (export(dense.module, tmp_path / "dense.onnx", shape), plans[1], shape)]
    dep, den = profile_ort_interleaved(models, 1, target=make_target("ort", threads=1), warmup=1, runs=3, block=3,
                                       pause_s=0.0)
    df = join_sites(dep, den)
    assert not df[["dense_us", "deployed_us"]].isna().any().any(), df[["site", "dense_us", "deployed_us"]]
    assert pairs <= set(df["site"]) and set(dep.order) == set(den.order)
    assert not any(s.startswith("features.1.0.body.") for s in df["site"])  # no half rows of the dense layer
    assert "Conv" in df.set_index("site").loc["features.1.1.body", "dense_ops"]


def _weighted_layers(module: nn.Module) -> list[str]:
    """What ONNX nodes are traced back to: modules that hold weights of their own."""
    return [n for n, m in module.named_modules() if n and any(True for _ in m.parameters(recurse=False))]


FAMILIES = {  # compressed, dense, input shape
    "resnet_hinge": (lambda: zoo.create("resnet20_hinge50").module, lambda: zoo.create("resnet20").module, (3, 32, 32)),
    "resnet_fga": (lambda: zoo.create("resnet20_fga").module, lambda: zoo.create("resnet20").module, (3, 32, 32)),
    "resnet_pruned": (lambda: zoo.create("resnet20_pruned50").module, lambda: zoo.create("resnet20").module,
                      (3, 32, 32)),
    "resnet_dwgl": (lambda: zoo.create("resnet20_dwgl").module, lambda: zoo.create("resnet20").module, (3, 32, 32)),
    "densenet_hinge": (lambda: tiny_densenet(pair=True), lambda: tiny_densenet(pair=False), (3, 32, 32)),
    "densenet_fga": (lambda: build_fga_densenet(n_layers=2, growth=6, num_classes=4),
                     lambda: build_cifar_densenet(n_layers=2, growth=6, num_classes=4), (3, 32, 32)),
    "wrn_hinge": (lambda: WideResNet(10, 1, 4, pair1=True, pair2=True), lambda: WideResNet(10, 1, 4), (3, 32, 32)),
    "vgg_fga": (lambda: build_fga_vgg16(), lambda: zoo.create("vgg16").module, (3, 32, 32)),  # blocks, no sites
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_layer_of_either_model_meets_a_site_of_the_other(family):
    """The real plans of each family: cut by both plans' sites (then blocks), the deployed and the
    dense model's weighted layers fall into the same set of sites, so no row is half empty.
    (A kept pair has the site name of the fused one: fusing, as in the DenseNet report, suffices.)"""
    compressed, dense, shape = FAMILIES[family]
    deployed = deploy(compressed(), shape, DeployOptions(fuse="always"))
    baseline = deploy(dense(), shape, DeployOptions(fuse="flops"))
    shared = grouping_sites(decisions_of(deployed.plan), decisions_of(baseline.plan))
    dep = {site_of(x, shared)[0] for x in _weighted_layers(deployed.module)}
    den = {site_of(x, shared)[0] for x in _weighted_layers(baseline.module)}
    rename = common_blocks(dep, den)
    assert {rename.get(s, s) for s in dep} == {rename.get(s, s) for s in den}
    # a pair's site is its own row, never merged into a block
    assert {r["site"] for r in shared} <= {rename.get(s, s) for s in dep}


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
