"""The CLI end to end on small models: zoo, inspect, export (verified ONNX + manifest), bench."""

from __future__ import annotations

import json

import pandas as pd
import torch
from typer.testing import CliRunner

from gsdeploy.cli import app

runner = CliRunner()


def ok(*args: str):
    r = runner.invoke(app, list(args))
    assert r.exit_code == 0, r.output + r.stderr
    return r


def test_zoo_lists_models_with_macs():
    r = ok("zoo")
    for name in ("resnet56_hinge50", "resnet20_pruned50_masked", "vgg16", "resnet50_pruned50"):
        assert name in r.stdout
    assert "hinge_resnet20" in ok("zoo", "--archs").stdout


def test_inspect_prints_a_plan():
    r = ok("inspect", "resnet20_hinge50", "--plan", "flops")
    assert "fold BN" in r.stdout and "fold DReLU" in r.stdout
    assert "keep" in r.stdout  # Hinge pairs at r=0.45C are kept: fusing would raise MACs
    assert "plan: by FLOPs" in r.stdout


def test_export_official_checkpoint_to_onnx(tmp_path, hinge_fixtures):
    import numpy as np
    import onnxruntime as ort

    out = tmp_path / "hinge20.onnx"
    ok("export", str(hinge_fixtures / "hinge_resnet20_cifar10.pt"), "--arch", "hinge_resnet20", "--engine", "onnx",
       "--output", str(out), "--plan", "flops")
    manifest = json.loads((tmp_path / "hinge20.manifest.json").read_text())
    assert manifest["source"]["sha256"] == json.loads((hinge_fixtures / "manifest.json").read_text())["entries"][0]["sha256"]
    assert manifest["source"]["arch"] == "hinge_resnet20"
    assert manifest["onnx_vs_original"]["max_rel_err"] <= 1e-4
    assert manifest["deployed_vs_original"]["max_rel_err"] <= 1e-5
    assert manifest["macs"]["after"] <= manifest["macs"]["before"]
    assert {"torch", "onnx", "onnxruntime", "gsdeploy"} <= set(manifest["versions"])
    assert manifest["plan"]
    # the official reference output, reproduced by the ONNX model in ONNX Runtime (dynamic batch of 2)
    ref = torch.load(hinge_fixtures / "hinge_resnet20_cifar10.ref.pt", weights_only=True)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.get_providers() == ["CPUExecutionProvider"]
    y = sess.run(None, {sess.get_inputs()[0].name: ref["input"].numpy()})[0]
    assert np.abs(y - ref["output"].numpy()).max() / np.abs(ref["output"].numpy()).max() <= 1e-4


def test_masked_model_exports_at_compact_macs(tmp_path):
    ok("export", "resnet20_pruned50_masked", "--output", str(tmp_path / "a.onnx"), "--plan", "flops")
    ok("export", "resnet20_pruned50", "--output", str(tmp_path / "b.onnx"), "--plan", "flops")
    a = json.loads((tmp_path / "a.manifest.json").read_text())
    b = json.loads((tmp_path / "b.manifest.json").read_text())
    assert a["macs"]["after"] == b["macs"]["after"] < a["macs"]["before"]


def test_bench_writes_tables(tmp_path):
    r = ok("bench", "resnet20_hinge50", "--batch", "1,2", "--output", str(tmp_path), "--warmup-s", "0.05",
           "--min-iterations", "5", "--min-duration-s", "0.05", "--engine", "ort,torch", "--plan", "flops")
    csv = tmp_path / "bench_resnet20_hinge50.csv"
    md = tmp_path / "bench_resnet20_hinge50.md"
    assert csv.exists() and md.exists()
    df = pd.read_csv(csv)
    assert set(df["role"]) == {"baseline", "compressed"}
    assert set(df["batch"]) == {1, 2} and set(df["engine"]) == {"ort", "torch"}
    assert len(df) == 8
    base = df[df.role == "baseline"]
    assert (base["speedup_vs_baseline"] == 1.0).all()
    comp = df[df.role == "compressed"]
    assert ((comp["flop_speedup"] > 1.8) & (comp["flop_speedup"] < 2.2)).all()
    assert (df["iterations"] >= 5).all()
    assert "gsdeploy bench" in md.read_text()
    assert "speedup" in r.stdout


def test_bench_checkpoint_needs_known_baseline(tmp_path, hinge_fixtures):
    ok("bench", str(hinge_fixtures / "hinge_resnet20_cifar10.pt"), "--arch", "hinge_resnet20", "--batch", "1",
           "--output", str(tmp_path), "--warmup-s", "0.02", "--min-iterations", "3", "--min-duration-s", "0.02")
    df = pd.read_csv(next(tmp_path.glob("*.csv")))
    assert set(df["model"]) == {"resnet20", "hinge_resnet20_cifar10"}


def test_export_program_file_deploys_like_the_module(tmp_path):
    """A .pt2 from torch.export.save goes through the same passes as the module it came from."""
    from gsdeploy.zoo import create_model

    m = create_model("resnet20_pruned50_masked").module
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(m, (torch.randn(2, 3, 32, 32),), dynamic_shapes=({0: batch},))
    path = tmp_path / "masked.pt2"
    torch.export.save(program, str(path))
    ok("export", str(path), "--output", str(tmp_path / "m.onnx"), "--plan", "flops")
    ok("export", "resnet20_pruned50", "--output", str(tmp_path / "ref.onnx"), "--plan", "flops")
    got = json.loads((tmp_path / "m.manifest.json").read_text())
    ref = json.loads((tmp_path / "ref.manifest.json").read_text())
    assert got["source"]["arch"] == "exported-program"
    assert got["macs"]["after"] == ref["macs"]["after"] < got["macs"]["before"]
