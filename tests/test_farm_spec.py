"""The sweep file is untrusted input: everything is checked before any job starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gsdeploy.cli import app
from gsdeploy.farm.spec import MAX_FILE_BYTES, SweepFileError, Timing, load_sweep
from gsdeploy.profiles import ProfileError

runner = CliRunner()
MINIMAL = "models: [{model: resnet20_hinge50}, {model: resnet56_hinge50}]\nprofiles: [cpu-ort]\nbatches: [1]\n"


def write(tmp_path: Path, text: str, name: str = "sweep.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_minimal_file_expands_to_one_job_per_model_profile_batch(tmp_path):
    spec = load_sweep(write(tmp_path, MINIMAL))
    jobs = spec.jobs()
    assert spec.name == "sweep" and spec.retries == 2
    assert [(j.entry.model, j.profile, j.batch) for j in jobs] == [
        ("resnet20_hinge50", "cpu-ort", 1), ("resnet56_hinge50", "cpu-ort", 1)]
    assert len({j.key for j in jobs}) == 2


def test_profile_batches_apply_without_batches_and_flags_override_timing(tmp_path):
    spec = load_sweep(write(tmp_path, "models: [{model: resnet20_hinge50}]\nprofiles: [cpu-ort]\n"
                                      "timing: {min_duration_s: 1.5, warmup_s: 0.2}\n"),
                      Timing(min_duration_s=0.3), retries=0)
    assert [j.batch for j in spec.jobs()] == [1, 32]  # cpu-ort's batches
    assert spec.timing.min_duration_s == 0.3 and spec.timing.warmup_s == 0.2 and spec.retries == 0


def test_checkpoint_paths_resolve_against_the_sweep_file(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "a.pt").write_bytes(b"not read yet")
    spec = load_sweep(write(tmp_path, "models: [{model: m/a.pt, baseline: resnet20}]\nprofiles: [cpu-ort]\n"))
    assert spec.models[0].model == str((tmp_path / "m" / "a.pt").resolve())


@pytest.mark.parametrize("text, words", [
    ("models: &m [{model: resnet20_hinge50}]\nprofiles: [cpu-ort]\nbatches: *m\n", "aliases"),
    (MINIMAL.replace("batches: [1]", "batches: [.nan]"), "batches[0]"),
    (MINIMAL.replace("batches: [1]", "batches: [0]"), "batches[0]"),
    (MINIMAL.replace("batches: [1]", "batches: [100000000000000000000000000000]"), "batches[0]"),
    (MINIMAL.replace("batches: [1]", "batches: [true]"), "batches[0]"),
    (MINIMAL.replace("batches: [1]", "batches: [1, 1]"), "twice"),
    (MINIMAL + "timing: {min_duration_s: .inf}\n", "timing.min_duration_s"),
    (MINIMAL + "timing: {min_duration_s: 1.0e400}\n", "timing.min_duration_s"),
    (MINIMAL + "timing: {threads: true}\n", "timing.threads"),
    (MINIMAL + "timing: {min_iterations: -1}\n", "timing.min_iterations"),
    (MINIMAL + "retries: 1000\n", "retries"),
    (MINIMAL + "timeout_s: .nan\n", "timeout_s"),
    (MINIMAL + "plan: {prune_threshold: -1.0}\n", "prune_threshold"),
    (MINIMAL + "plan: {fuse: sometimes}\n", "fuse"),
    (MINIMAL + "plan: fastest\n", "plan.plan must be one of auto, latency, flops"),
    (MINIMAL + "plan: {plan: [latency]}\n", "plan.plan"),
    (MINIMAL + "plan: {plan: latency, fuse: always}\n", "pass one of the two"),
    (MINIMAL + "plan: {plan: flops, refresh: true}\n", "refresh is used by the latency plan only"),
    (MINIMAL + "plan: {refresh: yes please}\n", "refresh must be true or false"),
    (MINIMAL + "plan: {lut: missing.json}\n", "plan.lut"),
    (MINIMAL + "plan: {lut: .}\n", "not a regular file"),
    ("models: [{model: resnet20_hinge50, plan: sometimes}]\nprofiles: [cpu-ort]\n", "models[0].plan"),
    ("models: [{model: resnet20_hinge50, fuse: never, lut: x.json}]\nprofiles: [cpu-ort]\n", "models[0].lut"),
    (MINIMAL + "trust: true\n", "unknown key 'trust'"),
    (MINIMAL + "precisions: [fp64]\n", "precisions"),
    (MINIMAL + "name: ../../etc/x\n", "name"),
    ("models: [{model: no_such_model}]\nprofiles: [cpu-ort]\n", "neither a zoo model"),
    ("models: [{model: m.onnx}]\nprofiles: [cpu-ort]\n", "ONNX"),
    ("models: [{model: resnet20_hinge50, input_shape: 3x0x32}]\nprofiles: [cpu-ort]\n", "input_shape"),
    # a list's items are integers, not text or floats spelled into a shape string
    ("models: [{model: resnet20_hinge50, input_shape: [3, '32', 32]}]\nprofiles: [cpu-ort]\n",
     "models[0].input_shape[1] must be an integer"),
    ("models: [{model: resnet20_hinge50, input_shape: [3, 32.0, 32]}]\nprofiles: [cpu-ort]\n",
     "models[0].input_shape[1] must be an integer"),
    (MINIMAL + "description: {a: 1}\n", "description must be a non-empty string"),
    ("models: [{model: resnet20_hinge50}, {model: resnet20_hinge50}]\nprofiles: [cpu-ort]\n", "twice"),
    ("models: []\nprofiles: [cpu-ort]\n", "non-empty"),
    ("models: [{model: resnet20_hinge50}]\n", "missing key 'profiles'"),
    ("- just a list\n", "mapping"),
    ("models: [unclosed\n", "not valid YAML"),
    ("", "empty"),
])
def test_bad_sweep_files_fail_with_one_clear_message(tmp_path, text, words):
    with pytest.raises(SweepFileError) as e:
        load_sweep(write(tmp_path, text))
    assert words in str(e.value)


def test_unknown_profile_fails_before_anything(tmp_path):
    with pytest.raises(ProfileError, match="unknown profile 'no-such-profile'"):
        load_sweep(write(tmp_path, MINIMAL.replace("cpu-ort", "no-such-profile")))


def test_oversized_file_is_refused_unread(tmp_path):
    p = write(tmp_path, MINIMAL + "#" * MAX_FILE_BYTES)
    with pytest.raises(SweepFileError, match="too large"):
        load_sweep(p)


def test_too_many_jobs_are_refused(tmp_path):
    models = ", ".join(f"{{model: resnet20_hinge50, input_shape: 3x{h}x32}}" for h in range(8, 208))
    batches = ", ".join(str(b) for b in range(1, 33))
    with pytest.raises(SweepFileError, match="jobs; at most"):
        load_sweep(write(tmp_path, f"models: [{models}]\nprofiles: [cpu-ort]\nbatches: [{batches}]\n"))


@pytest.mark.parametrize("args, words", [
    (["--min-duration-s", "nan"], "--min-duration-s"),
    (["--warmup-s", "-1"], "--warmup-s"),
    (["--retries", "-1"], "--retries"),
    (["--timeout-s", "inf"], "--timeout-s"),
    (["--cluster", "not an address"], "--cluster must be"),
])
def test_cli_rejects_bad_flags_before_any_job_and_keeps_old_results(tmp_path, args, words):
    out = tmp_path / "out"
    out.mkdir()
    (out / "sweep.csv").write_text("earlier results\n")
    r = runner.invoke(app, ["sweep", str(write(tmp_path, MINIMAL)), "--output", str(out), *args])
    assert r.exit_code != 0
    assert r.output.count("error:") == 1 and words in r.output and "Traceback" not in r.output
    assert (out / "sweep.csv").read_text() == "earlier results\n"


def test_cli_bad_file_is_one_error_line(tmp_path):
    r = runner.invoke(app, ["sweep", str(write(tmp_path, "models: *x\n")), "--output", str(tmp_path / "out")])
    assert r.exit_code == 2 and r.output.count("error:") == 1 and "not valid YAML" in r.output
    assert not (tmp_path / "out").exists()


def test_plan_settings_default_from_the_file_and_models_override_them(tmp_path):
    from gsdeploy.plan.cache import TimingTable
    from gsdeploy.plan.timing import fingerprint
    from gsdeploy.profiles import load_profile

    lut = tmp_path / "t.json"
    lut.write_text(TimingTable(fingerprint(load_profile("cpu-ort").targets[0])).to_json())
    spec = load_sweep(write(tmp_path, "models: [{model: resnet20_hinge50}, {model: resnet56_hinge50, fuse: null, "
                                      "plan: latency, lut: t.json}]\nprofiles: [cpu-ort]\nplan: {fuse: always}\n"))
    a, b = spec.models
    assert (a.plan, a.fuse, a.lut) == ("flops", "always", None)
    assert (b.plan, b.fuse, b.lut) == ("latency", "flops", str(lut.resolve()))
    assert "plan=latency" in b.key and "lut=" in b.key and "plan=" not in load_sweep(write(tmp_path, MINIMAL)).models[0].key


def test_a_bad_lut_fails_before_any_job(tmp_path):
    (tmp_path / "t.json").write_text('{"format": "gsdeploy-timing-lut", "version": 1, "fingerprint": {}, '
                                      '"sites": {"s": {"keep": {"1": [NaN, 0.1]}}}}')
    with pytest.raises(SweepFileError) as e:
        load_sweep(write(tmp_path, MINIMAL + "plan: {lut: t.json}\n"))
    assert "plan.lut" in str(e.value) and "t.json" in str(e.value)


@pytest.mark.parametrize("text", [MINIMAL + "plan: {lut: t.json, refresh: true}\n",
                                  "plan: {lut: t.json}\nmodels: [{model: resnet20_hinge50, refresh: true}]\n"
                                  "profiles: [cpu-ort]\n"])
def test_a_lut_with_refresh_fails_before_any_job(tmp_path, text):
    """A LUT says where the timings come from, refresh says measure them here: one of the two."""
    from gsdeploy.plan.cache import TimingTable
    from gsdeploy.plan.timing import fingerprint
    from gsdeploy.profiles import load_profile

    (tmp_path / "t.json").write_text(TimingTable(fingerprint(load_profile("cpu-ort").targets[0])).to_json())
    with pytest.raises(SweepFileError) as e:
        load_sweep(write(tmp_path, text))
    assert "lut plans from timings measured elsewhere" in str(e.value) and "refresh" in str(e.value)


def test_a_lut_of_another_target_fails_before_any_job(tmp_path):
    from gsdeploy.plan.cache import TimingTable
    from gsdeploy.plan.timing import fingerprint
    from gsdeploy.profiles import load_profile

    fp = fingerprint(load_profile("cpu-ort").targets[0])
    (tmp_path / "t.json").write_text(TimingTable({**fp, "precision": "int8"}).to_json())
    with pytest.raises(SweepFileError) as e:
        load_sweep(write(tmp_path, MINIMAL + "plan: {lut: t.json}\n"))
    assert "profile cpu-ort" in str(e.value) and "differs in precision" in str(e.value)
