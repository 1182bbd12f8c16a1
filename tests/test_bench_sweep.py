"""A whole sweep on real engines (ORT CPU and torch CPU) with two tiny models."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn as nn

pytest.importorskip("onnxruntime")

from gsdeploy.metrics import count_macs, count_params, weight_bytes  # noqa: E402
from gsdeploy.bench.sweep import Subject, run_sweep  # noqa: E402
from gsdeploy.bench.rows import COLUMNS  # noqa: E402
from gsdeploy.errors import GsdeployError  # noqa: E402
from gsdeploy.target import TargetError, make_target  # noqa: E402

SHAPE = (3, 16, 16)
FAST = dict(threads=1, warmup_s=0.05, min_iterations=5, min_duration_s=0.05)


def targets(*engines: str, batches=(1,)) -> list:
    return [make_target(e, batches=batches, **FAST) for e in engines]


def cnn(width: int) -> nn.Module:
    torch.manual_seed(width)
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 5)).eval()


def export(module: nn.Module, path: Path) -> Path:
    x = torch.randn(2, *SHAPE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:  # the TorchScript exporter: deprecated in torch 2.13 but 20x faster to run
            torch.onnx.export(module, (x,), str(path), dynamo=False, input_names=["input"],
                              output_names=["logits"], dynamic_axes={"input": {0: "batch"}})
        except Exception:
            torch.onnx.export(module, (x,), str(path), dynamo=True, input_names=["input"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False, verbose=False)
    return path


def subject(name: str, role: str, width: int, tmp: Path) -> Subject:
    m = cnn(width)
    p = export(m, tmp / f"{name}.onnx")
    return Subject(name=name, role=role, macs=count_macs(m, SHAPE), params=count_params(m), max_rel_err=0.0,
                   module=m, onnx_path=p, weights_bytes=weight_bytes(m), artifact_bytes=p.stat().st_size)


@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    return [subject("dense", "baseline", 32, tmp), subject("thin", "compressed", 16, tmp)]


def test_sweep_rows(subjects):
    groups: list[pd.DataFrame] = []
    df = run_sweep(subjects, targets("ort", "torch", batches=(1, 2)), command="gsdeploy bench test",
                   progress=False, on_group=groups.append)
    assert list(df.columns) == COLUMNS
    assert len(df) == 8 and len(groups) == 4
    assert set(zip(df["engine"], df["batch"])) == {("ort", 1), ("ort", 2), ("torch", 1), ("torch", 2)}
    assert set(df["provider"]) == {"CPUExecutionProvider", "cpu"}
    assert (df["threads"] == 1).all()
    assert (df["iterations"] >= 5).all()
    assert (df["latency_ms_median"] > 0).all() and (df["latency_ms_min"] <= df["latency_ms_p99"]).all()
    base = df[df["role"] == "baseline"]
    assert (base["speedup_vs_baseline"] == 1.0).all() and (base["efficiency"] == 1.0).all()
    thin = df[df["model"] == "thin"]
    macs_ratio = subjects[0].macs / subjects[1].macs
    assert macs_ratio > 3
    assert thin["flop_speedup"].tolist() == pytest.approx([macs_ratio] * 4)
    for _, r in thin.iterrows():
        b = df[(df["role"] == "baseline") & (df["engine"] == r["engine"]) & (df["batch"] == r["batch"])].iloc[0]
        assert r["speedup_vs_baseline"] == pytest.approx(b["latency_ms_median"] / r["latency_ms_median"])
        assert r["efficiency"] == pytest.approx(r["speedup_vs_baseline"] / macs_ratio)
    assert (df["command"] == "gsdeploy bench test").all()
    assert df["torch_version"].iloc[0] == torch.__version__
    assert not df["timestamp"].isna().any()


def test_sweep_with_progress_bar(subjects, capsys):
    df = run_sweep(subjects[:1], targets("ort"), command="c", progress=True)
    assert len(df) == 1 and math.isnan(df["flop_speedup"][0]) is False
    assert capsys.readouterr().out == ""  # the bar never touches stdout


def test_sweep_errors(subjects):
    with pytest.raises(TargetError, match="unknown engine"):
        make_target("tensorrt-magic")
    no_onnx = Subject("x", "baseline", 1, 1, None, subjects[0].module, None, None, None, SHAPE)
    with pytest.raises(GsdeployError, match="needs an ONNX file"):
        run_sweep([no_onnx], targets("ort"), command="c", progress=False)
    with pytest.raises(ValueError, match="unique"):
        run_sweep([subjects[0], subjects[0]], targets("ort"), command="c", progress=False)
    with pytest.raises(ValueError, match="differ in label"):
        run_sweep(subjects, targets("ort", "ort"), command="c", progress=False)


def test_two_entries_of_one_engine_are_two_labelled_groups(subjects):
    """Two entries of one engine (as jetson-orin-trt's trt-gpu and trt-dla0) stay apart: each
    is timed as its own group and its rows carry its label; each runner gets its own entry's
    settings (here ORT with and without spinning)."""
    from dataclasses import replace

    spin, calm = (replace(t, label=label, allow_spinning=s) for t, label, s in
                  ((targets("ort")[0], "ort-spin", True), (targets("ort")[0], "ort-calm", False)))
    df = run_sweep(subjects, [spin, calm], command="c", progress=False)
    assert list(df["engine"]) == ["ort-spin", "ort-spin", "ort-calm", "ort-calm"]
    assert (df[df["role"] == "baseline"]["speedup_vs_baseline"] == 1.0).all()
