"""benchmarks/gpu_proof.sh --dry-run: the GPU proof script's steps on the CPU with tiny settings, so
the script a GPU machine will run keeps working."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="the script is a bash script")
def test_gpu_proof_dry_run_writes_its_tables(tmp_path):
    out = tmp_path / "proof"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "PYTHONPATH": str(REPO)}
    r = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_proof.sh"), "--dry-run"], env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    for name, batches in (("gpu_resnet50", {1, 2}), ("gpu_families", {1, 2})):
        df = pd.read_csv(out / f"{name}.csv")
        assert set(df["status"]) == {"ok"} and set(df["batch"]) == batches
        assert set(df["role"]) == {"baseline", "compressed"} and df["latency_ms_median"].gt(0).all()
        # the GPU columns exist in every row (empty on the CPU)
        for col in ("cuda_peak_bytes", "gpu_sm_clock_mhz", "gpu_mem_clock_mhz", "gpu_max_sm_clock_mhz"):
            assert col in df.columns
    report = (out / "report.md").read_text()
    assert "resnet20_pruned50" in report and "resnet20_hinge50" in report
    assert "mode: dry-run" in (out / "env.txt").read_text()


def test_gpu_proof_refuses_unknown_arguments(tmp_path):
    r = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_proof.sh"), "--bogus"],
                       env={**os.environ, "OUT": str(tmp_path)}, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "usage" in r.stderr
