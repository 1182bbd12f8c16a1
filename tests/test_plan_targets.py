"""Which target a plan is for: every engine setting that changes a timing is in the fingerprint
(a DLA core's timings never serve the GPU of the same board), `plan --engine` picks one entry
of a profile, and a TensorRT target's candidates are built into engines the way `bench` builds
them and timed by the bench's TensorRT runner (on the device; the builder is not installable
here, so these tests check what reaches it, not an engine's speed)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch.nn as nn
from typer.testing import CliRunner

from gsdeploy.cli import app
from gsdeploy.plan import cache, timing
from gsdeploy.plan.stage import load_lut
from gsdeploy.plan.timing import SITE_CONFIG, engine_options, fingerprint, time_modules
from gsdeploy.target import make_target, resolve_targets, TargetFlags

runner = CliRunner()


def test_the_gpu_and_the_dla_of_one_board_are_two_fingerprints():
    gpu, dla = resolve_targets("jetson-orin-trt")
    assert (gpu.label, dla.label) == ("trt-gpu", "trt-dla0")
    assert fingerprint(gpu)["engine_options"] != fingerprint(dla)["engine_options"]
    assert cache.fingerprint_key(fingerprint(gpu)) != cache.fingerprint_key(fingerprint(dla))


@pytest.mark.parametrize("a, b", [
    (dict(provider_options=({},)), dict(provider_options=({"intra_op_spin": 1},))),
])
def test_ort_provider_options_change_the_fingerprint(a, b):
    ta = make_target("ort", providers=("CPUExecutionProvider",), **a)
    tb = make_target("ort", providers=("CPUExecutionProvider",), **b)
    assert engine_options(ta) != engine_options(tb)


def test_torch_settings_change_the_fingerprint():
    assert engine_options(make_target("torch")) != engine_options(make_target("torch", channels_last=True))


def test_long_options_are_hashed_to_a_short_string():
    t = make_target("ort", providers=("CPUExecutionProvider",), provider_options=({f"k{i}": "v" * 20 for i in range(20)},))
    s = engine_options(t)
    assert s.startswith("sha256:") and len(s) <= timing.MAX_OPTIONS_CHARS
    # and a table carrying it is still a valid LUT
    assert cache.parse_table(cache.TimingTable(fingerprint(t)).to_json(), "x").fingerprint == fingerprint(t)


def test_a_lut_made_on_the_boards_gpu_is_refused_for_its_dla(tmp_path):
    gpu, dla = resolve_targets("jetson-orin-trt")
    path = tmp_path / "gpu.json"
    path.write_text(cache.TimingTable(fingerprint(gpu)).to_json())
    load_lut(path, gpu, here=False)  # the settings agree: accepted
    with pytest.raises(cache.LutError, match="differs in engine_options"):
        load_lut(path, dla, here=False)


def test_plan_engine_picks_one_entry_or_says_which(monkeypatch):
    import gsdeploy.cli as cli

    monkeypatch.setattr(cli, "_load", lambda *a, **k: pytest.fail("a bad --engine must fail before the model loads"))
    r = runner.invoke(app, ["plan", "resnet20_hinge50", "--profile", "jetson-orin-trt", "--engine", "trt"])
    assert r.exit_code != 0 and "names 2 entries of the profile (trt-gpu, trt-dla0)" in r.output
    r = runner.invoke(app, ["plan", "resnet20_hinge50", "--profile", "jetson-orin-trt", "--engine", " "])
    assert r.exit_code != 0 and "--engine names no engine" in r.output
    # one entry by its label: it is the target (here it cannot be timed, and says so before loading)
    r = runner.invoke(app, ["plan", "resnet20_hinge50", "--profile", "jetson-orin-trt", "--engine", "trt-dla0"])
    assert r.exit_code != 0 and "target trt-dla0 needs a Jetson device" in r.output


def test_a_trt_targets_candidates_are_built_with_its_options_and_timed_by_its_runner(monkeypatch, tmp_path):
    """Every candidate gets its own ONNX file and engines from the bench's build_trt_engines with
    the target itself (DLA: one static engine per batch), and the runner factory sees them."""
    import gsdeploy.pipeline as pipeline
    from gsdeploy.bench import sweep

    dla = resolve_targets("jetson-orin-trt", TargetFlags(batches=(1, 2)))[1]
    built: list[tuple] = []

    def build(loaded, onnx_path, workdir, role, targets, reference=None):
        assert Path(onnx_path).is_file() and Path(onnx_path).stat().st_size > 0
        built.append((role, tuple(t.label for t in targets), loaded.input_shape))
        return {(targets[0].label, targets[0].precision, b): Path(workdir) / f"{role}-{b}.engine" for b in (1, 2)}

    seen: list[tuple] = []

    def runner_for(subject, target, batch):
        seen.append((subject.name, target.label, batch, subject.trt_engines[(target.label, target.precision, batch)]))
        return sweep.RUNNERS["torch"](subject, make_target("torch", threads=1), batch)

    monkeypatch.setattr(pipeline, "build_trt_engines", build)
    monkeypatch.setattr(timing, "make_runner", runner_for)
    mods = {"keep": nn.Conv2d(3, 4, 3), "fuse": nn.Conv2d(3, 4, 1)}
    got = time_modules(dla, mods, (3, 8, 8), (1, 2), SITE_CONFIG)
    assert set(got) == {"keep", "fuse"} and all(set(bs) == {1, 2} for bs in got.values())
    assert sorted(built) == [("m0", ("trt-dla0",), (3, 8, 8)), ("m1", ("trt-dla0",), (3, 8, 8))]
    assert sorted((n, lbl, b) for n, lbl, b, _ in seen) == [("m0", "trt-dla0", 1), ("m0", "trt-dla0", 2),
                                                            ("m1", "trt-dla0", 1), ("m1", "trt-dla0", 2)]
    assert all(p.name == f"{n}-{b}.engine" for n, _, b, p in seen)
