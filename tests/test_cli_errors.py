"""Bad input: one clear line on stderr, a non-zero exit, no file left behind."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from gsdeploy.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def assert_clean_failure(result, pattern: str, out_dir: Path | None = None) -> None:
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    assert "error:" in result.stderr
    assert pattern.lower() in result.stderr.lower(), result.stderr
    if out_dir is not None:
        assert [p.name for p in out_dir.iterdir() if p.suffix in (".onnx", ".json") or ".tmp-" in p.name] == []


def test_missing_file(tmp_path):
    r = run("export", str(tmp_path / "nope.pt"), "--arch", "hinge_resnet20", "--output", str(tmp_path / "m.onnx"))
    assert_clean_failure(r, "no such file", tmp_path)


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("this is not a checkpoint\n")
    r = run("export", str(bad), "--arch", "hinge_resnet20", "--output", str(tmp_path / "m.onnx"))
    assert_clean_failure(r, "not a", tmp_path)


def test_truncated_checkpoint(tmp_path, hinge_fixtures):
    data = (hinge_fixtures / "hinge_resnet20_cifar10.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    r = run("export", str(cut), "--arch", "hinge_resnet20", "--output", str(tmp_path / "m.onnx"))
    assert_clean_failure(r, "truncated", tmp_path)


def test_arch_that_does_not_fit(tmp_path, hinge_fixtures):
    r = run("export", str(hinge_fixtures / "hinge_resnet20_cifar10.pt"), "--arch", "hinge_resnet56",
            "--output", str(tmp_path / "m.onnx"))
    assert_clean_failure(r, "does not fit --arch hinge_resnet56", tmp_path)


def test_unknown_arch(tmp_path, hinge_fixtures):
    r = run("inspect", str(hinge_fixtures / "hinge_resnet20_cifar10.pt"), "--arch", "alexnet")
    assert_clean_failure(r, "unknown --arch")


def test_input_shape_the_model_cannot_take(tmp_path):
    r = run("export", "resnet20_hinge50", "--input-shape", "3x64x64", "--output", str(tmp_path / "m.onnx"))
    assert_clean_failure(r, "cannot take input shape 3x64x64", tmp_path)


def test_malformed_input_shape(tmp_path):
    r = run("export", "resnet20", "--input-shape", "3by32", "--output", str(tmp_path / "m.onnx"))
    assert_clean_failure(r, "CxHxW", tmp_path)


def test_output_path_that_cannot_be_written(tmp_path):
    r = run("export", "resnet20", "--output", str(tmp_path / "no" / "such" / "dir" / "m.onnx"))
    assert_clean_failure(r, "does not exist")


@pytest.mark.parametrize("output", ["", "/"])
def test_an_output_without_a_file_name_is_a_directory_not_an_internal_error(tmp_path, monkeypatch, output):
    """`-o ''` (an unset shell variable) ended in 'internal error (ValueError: PosixPath('.') has
    an empty name)': the manifest's name was made from it before the path was checked."""
    monkeypatch.chdir(tmp_path)
    r = run("export", "resnet20", "--plan", "flops", "-o", output)
    assert_clean_failure(r, "it is a directory; give a file name", tmp_path)
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_untrusted_pickle_is_refused(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()), path)
    r = run("inspect", str(path), "--input-shape", "3x8x8")
    assert_clean_failure(r, "--trust")
    ok = run("inspect", str(path), "--input-shape", "3x8x8", "--trust")
    assert ok.exit_code == 0, ok.output


def test_unknown_model_name(tmp_path):
    r = run("inspect", "resnet9000")
    assert_clean_failure(r, "neither a file nor a zoo model")


def test_numeric_mismatch_writes_nothing(tmp_path, monkeypatch):
    """If the deployed module drifts from the original, the ONNX check against the original refuses
    it with both numbers and writes nothing (the planner's own check is tested in test_transforms_*)."""
    import gsdeploy.transforms as transforms

    real_deploy = transforms.deploy

    def drifting_deploy(module, input_shape, options):
        result = real_deploy(module, input_shape, options)
        with torch.no_grad():
            conv = next(m for m in result.module.modules() if isinstance(m, torch.nn.Conv2d))
            conv.weight.mul_(1.05)
        return result

    import gsdeploy.plan.stage as stage

    monkeypatch.setattr(transforms, "deploy", drifting_deploy)
    monkeypatch.setattr(stage, "deploy", drifting_deploy)  # the FLOP plan deploys through the plan stage
    out = tmp_path / "m.onnx"
    r = run("export", "resnet20", "--output", str(out), "--plan", "flops")
    assert_clean_failure(r, "exceeds tolerance", tmp_path)
    assert "max abs" in r.stderr


def test_bench_output_directory_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = run("bench", "resnet20_hinge50", "--output", str(blocker / "results"), "--batch", "1")
    assert_clean_failure(r, "cannot create output directory")
