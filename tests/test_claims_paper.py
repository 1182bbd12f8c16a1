"""Claims that test the paper: the paper's counting convention reproduces the official code's own
counts, shipped claims are measured on official-layout checkpoints, a missing checkpoint SKIPs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import OFFICIAL
from gsdeploy.load import load_model
from gsdeploy.report.claims import evaluate_claims, exit_code, load_claims, render_verdicts
from gsdeploy.metrics import count_params as paper_params, paper_flops
from gsdeploy.zoo import create_model

CLAIMS_DIR = Path(__file__).resolve().parents[1] / "claims"
CIFAR = (3, 32, 32)


def test_paper_counting_matches_the_official_counter_on_the_shared_fixtures(hinge_fixtures):
    """flops_* / params_* in the manifest were computed by the official code's flops_counter."""
    manifest = json.loads((hinge_fixtures / "manifest.json").read_text())
    dense = {"hinge_resnet20_cifar10": "resnet20", "hinge_resnext20_cifar10": "resnext20"}
    for e in manifest["entries"]:
        m = load_model(str(hinge_fixtures / e["file"])).module
        assert (paper_flops(m, CIFAR), paper_params(m)) == (e["flops_compressed"], e["params_compressed"])
        baseline = create_model(dense[e["name"]]).module  # the claims' dense baseline
        assert (paper_flops(baseline, CIFAR), paper_params(baseline)) == (e["flops_dense"], e["params_dense"])


@pytest.mark.parametrize("name", ["hinge_vgg16_cifar10", "hinge_wrn_merge16_2_cifar100", "resnext20_cifar10"])
def test_paper_counting_matches_the_official_counter_on_repo_fixtures(unpack, name):
    entry = next(e for e in json.loads((OFFICIAL / "manifest.json").read_text())["entries"] if e["name"] == name)
    m = load_model(unpack(name)).module
    flops = entry.get("flops_compressed", entry.get("flops"))
    params = entry.get("params_compressed", entry.get("params"))
    assert (paper_flops(m, CIFAR), paper_params(m)) == (flops, params)


def test_shipped_hinge_claims_measure_the_fixtures_against_the_papers_values(hinge_fixtures):
    claims = load_claims(CLAIMS_DIR / "hinge.yaml")
    on_fixture = [c for c in claims if Path(c.model).is_file()]
    if len(on_fixture) < 2:
        pytest.skip("the shared fixtures are not beside this checkout")
    verdicts = {v.claim.id: v for v in evaluate_claims(claims, measure_fn=None)}
    text = render_verdicts(list(verdicts.values()))
    assert verdicts["hinge-resnet20-flops"].status == "PASS", text
    assert verdicts["hinge-resnet20-flops"].measured == pytest.approx(18514560 / 41116288)
    assert verdicts["hinge-resnext20-flops"].measured == pytest.approx(21768192 / 36817408)
    # the paper's ResNet-56 checkpoints are not shipped: SKIP with the reason, never PASS
    for cid in ("hinge-resnet56-flops", "hinge-resnet56-params", "hinge-resnet56-error"):
        assert verdicts[cid].status == "SKIP" and "is not there" in verdicts[cid].reason
    assert "0.455" in text and "ResNet-20 'Hinge' row" in text  # the paper's value and where it stands
    assert exit_code(list(verdicts.values())) == 0


def _claim_file(tmp_path: Path, **claim) -> Path:
    base = {"id": "c", "claimed": 0.45, "source": "Table 1", "model": "ckpt/model.pt", "arch": "hinge_resnet20",
            "baseline": "resnet20", "metric": "flop_ratio", "counting": "paper", "tolerance": {"abs": 0.01}}
    base.update(claim)
    base = {k: v for k, v in base.items() if v is not None}  # None: leave the key out
    path = tmp_path / "claims" / "c.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump({"paper": "P", "claims": [base]}))
    return path


def test_checkpoint_paths_are_relative_to_the_claim_file_and_missing_ones_skip(tmp_path, hinge_fixtures):
    path = _claim_file(tmp_path, model="../ckpt/model.pt")
    [c] = load_claims(path)
    assert c.model == str(tmp_path / "ckpt" / "model.pt")
    [v] = evaluate_claims([c], None)
    assert v.status == "SKIP" and "model.pt is not there" in v.reason
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "model.pt").write_bytes((hinge_fixtures / "hinge_resnet20_cifar10.pt").read_bytes())
    [v] = evaluate_claims(load_claims(path), None)
    assert v.status == "PASS" and v.measured == pytest.approx(0.4503, abs=1e-4)
    [v] = evaluate_claims(load_claims(_claim_file(tmp_path, model="../ckpt/model.pt", claimed=0.60)), None)
    assert v.status == "FAIL"  # the measurement decides, not the file's presence


@pytest.mark.parametrize("case, words", [("bomb", "decodes to"), ("no labels", "has no labels 'y'"),
                                         ("wrong shape", "array 'x'"), ("nan", "array 'x'")])
def test_top1_error_reads_eval_data_as_untrusted(tmp_path, monkeypatch, case, words):
    """top1_error read eval_data with a bare np.load: a .npz of a few MB that inflates to GB was
    decoded whole (the bound every other evaluation file has was skipped), and a wrong shape or a
    NaN reached the model."""
    import gsdeploy.sample_data as sample_data

    model = create_model("resnet20").module
    ckpt = tmp_path / "r20.pt"
    torch.save(model.state_dict(), ckpt)
    x = np.zeros((4, *CIFAR), dtype=np.float32)
    arrays = {"bomb": {"x": x, "y": np.zeros(4, dtype=np.int64)}, "no labels": {"x": x},
              "wrong shape": {"x": np.zeros((4, 3, 8, 8), dtype=np.float32), "y": np.zeros(4, dtype=np.int64)},
              "nan": {"x": np.full_like(x, np.nan), "y": np.zeros(4, dtype=np.int64)}}[case]
    np.savez_compressed(tmp_path / "eval.npz", **arrays)
    if case == "bomb":  # the decoded-size bound (2 GiB) made smaller than this file, to stand for a real bomb
        monkeypatch.setattr(sample_data.load_samples, "__kwdefaults__", {"labels": False, "max_bytes": x.nbytes // 2})
    path = _claim_file(tmp_path, model=str(ckpt), arch="resnet20", metric="top1_error", claimed=0.0,
                       eval_data=str(tmp_path / "eval.npz"), tolerance={"abs": 0.5}, baseline=None, counting=None)
    [v] = evaluate_claims(load_claims(path), None)
    assert v.status == "ERROR" and words in v.reason, v.reason


def test_top1_error_on_eval_data(tmp_path):
    """Labels equal to the model's own predictions give 0% error; shifted labels give 100%."""
    model = create_model("resnet20").module
    x = torch.randn(6, *CIFAR, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        pred = model(x).argmax(1).numpy()
    ckpt = tmp_path / "r20.pt"
    torch.save(model.state_dict(), ckpt)
    for labels, claimed, expected in ((pred, 0.0, 0.0), ((pred + 1) % 10, 100.0, 100.0)):
        np.savez(tmp_path / "eval.npz", x=x.numpy(), y=labels)
        path = _claim_file(tmp_path, model=str(ckpt), arch="resnet20", metric="top1_error", claimed=claimed,
                           eval_data=str(tmp_path / "eval.npz"), tolerance={"abs": 0.5}, baseline=None,
                           counting=None)
        [v] = evaluate_claims(load_claims(path), None)
        assert v.status == "PASS" and v.measured == expected
    (tmp_path / "eval.npz").unlink()
    [v] = evaluate_claims(load_claims(path), None)
    assert v.status == "SKIP" and "eval data" in v.reason
