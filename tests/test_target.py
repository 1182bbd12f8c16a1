"""Target: a profile entry + flags become one validated object, and every setting reaches the
object that makes the session / engine / runner (the loaders), not just the profile."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch.nn as nn
import yaml

from gsdeploy import loaders
from gsdeploy.profiles import ENGINE_OPTIONS, list_profiles, load_profile
from gsdeploy.target import (ENGINES, Target, TargetError, TargetFlags, apply_flags, make_target, resolve_targets,
                             validate)


# ---- building and validating ----------------------------------------------------------------


def test_every_engine_entry_and_precision_is_one_labelled_target():
    orin = resolve_targets("jetson-orin-trt")
    assert [(t.label, t.engine, t.precision, t.dla_core) for t in orin] == [
        ("trt-gpu", "trt", "fp16", None), ("trt-dla0", "trt", "fp16", 0)]
    assert all(t.workspace_mb == 2048 and t.batches == (1, 8) and t.power is not None for t in orin)


def test_flags_override_the_profile():
    [t] = resolve_targets("cpu-ort", TargetFlags(threads=3, batches=(4,), warmup_s=0.1, min_iterations=7,
                                                 min_duration_s=0.2, max_cov=0.1, input_shape=(3, 8, 8)))
    assert (t.threads, t.batches, t.warmup_s, t.min_iterations, t.min_duration_s, t.max_cov, t.input_shape) == \
        (3, (4,), 0.1, 7, 0.2, 0.1, (3, 8, 8))
    assert t.allow_spinning is True and t.graph_optimization_level == "all"  # kept from the profile


def test_engine_flag_selects_by_label_or_engine_and_adds_a_missing_engine():
    ort_trt = load_profile("server-gpu-ort-trt")
    assert [t.label for t in apply_flags(ort_trt.targets, TargetFlags(engines=("ort-cuda",)))] == ["ort-cuda"]
    assert [t.label for t in apply_flags(ort_trt.targets, TargetFlags(engines=("ort",)))] == ["ort-trt", "ort-cuda"]
    both = resolve_targets("cpu-ort", TargetFlags(engines=("ort", "torch")))
    assert [(t.engine, t.warmup_s, t.providers) for t in both] == [("ort", 0.5, ("CPUExecutionProvider",)),
                                                                   ("torch", 0.5, ())]
    with pytest.raises(TargetError, match="no entry labelled 'ort-magic'"):
        resolve_targets("cpu-ort", TargetFlags(engines=("ort-magic",)))


@pytest.mark.parametrize("changes, pattern", [
    ({"engine": "trtexec"}, "unknown engine 'trtexec'"),
    ({"threads": 0}, "threads must be"),
    ({"warmup_s": math.nan}, "warmup_s must be a finite"),
    ({"min_duration_s": math.inf}, "min_duration_s must be a finite"),
    ({"max_cov": -1.0}, "max_cov"),
    ({"batches": (1, 0)}, "batches must be"),
    ({"batches": (10**9,)}, "batches must be"),
    ({"precision": "fp16"}, "fp32 on a cpu device"),
    ({"providers": ("CUDAExecutionProvider",)}, "GPU providers on a cpu device"),
    ({"cuda_graph": True}, "cuda_graph needs engine torch"),
    ({"workspace_mb": 10}, "TensorRT settings"),
])
def test_bad_settings_fail_validation(changes, pattern):
    with pytest.raises(TargetError, match=pattern):
        validate(replace(make_target("ort"), **changes))


def test_dla_needs_fp16_or_int8_and_a_jetson():
    dla = resolve_targets("jetson-orin-trt", TargetFlags(engines=("trt-dla0",)))[0]
    with pytest.raises(TargetError, match="DLA runs fp16 or int8 only"):
        validate(replace(dla, precision="fp32"))
    with pytest.raises(TargetError, match="needs a jetson"):
        validate(replace(dla, device="cuda"))
    with pytest.raises(TargetError, match="DLA runs fp16 or int8 only"):
        resolve_targets("jetson-orin-trt", TargetFlags(precision="fp32"))


def test_unavailable_provider_is_reported_before_any_work(monkeypatch):
    from gsdeploy import target as T

    ort = pytest.importorskip("onnxruntime")
    monkeypatch.setattr(T, "_cuda_available", lambda: True)  # past the GPU check, to the provider check
    t = resolve_targets("server-gpu-ort-trt")[0]
    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the TensorRT provider")
    assert "has no TensorrtExecutionProvider" in (t.unavailable_reason() or "")


def test_round_trip_through_json_for_child_processes_and_workers():
    for name in list_profiles():
        for t in load_profile(name).targets:
            assert Target.from_dict(yaml.safe_load(yaml.safe_dump(t.to_dict()))) == t


# ---- every option of every shipped profile reaches its runner --------------------------------
#
# For each option a check that reads it back from what the loader hands to the engine: the
# SessionOptions and the providers= argument of onnxruntime.InferenceSession, the keyword
# arguments of TorchRunner, the TrtBuildOptions given to export_trt. GPU engines cannot run
# here, so their constructors are replaced by recorders that keep the arguments and stop.


class Recorded(Exception):
    pass


def _ort_session_args(target: Target, monkeypatch, tmp_path: Path) -> dict:
    """The arguments gsdeploy.loaders gives onnxruntime.InferenceSession for `target`, through
    the sweep's ORT runner factory."""
    ort = pytest.importorskip("onnxruntime")
    from gsdeploy.bench.sweep import Subject, make_runner

    seen: dict = {}

    def record(model, sess_options=None, providers=None):
        seen.update(sess_options=sess_options, providers=providers)
        raise Recorded()

    monkeypatch.setattr(ort, "InferenceSession", record)
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    subject = Subject("m", "baseline", None, None, None, None, onnx, None, None)
    with pytest.raises(Exception):
        make_runner(subject, target, target.batches[0])
    return seen


def _torch_runner_kwargs(target: Target, monkeypatch) -> dict:
    from gsdeploy.bench.runners import torch_runner
    from gsdeploy.bench.sweep import Subject, make_runner

    seen: dict = {}

    def record(self, module, **kwargs):
        seen.update(kwargs)
        raise Recorded()

    monkeypatch.setattr(torch_runner.TorchRunner, "__init__", record)
    subject = Subject("m", "baseline", None, None, None, nn.Conv2d(3, 3, 1), None, None, None, (3, 8, 8))
    with pytest.raises(Recorded):
        make_runner(subject, target, target.batches[0])
    return seen


def _trt_build_options(target: Target, monkeypatch, tmp_path: Path) -> list:
    from gsdeploy import pipeline
    from gsdeploy.model import LoadedModel

    built = []
    # patched where build_trt_engines looks it up (pipeline imports it at the top)
    monkeypatch.setattr(pipeline, "export_trt", lambda module, onnx, shape, opts, path, extra: built.append(opts))
    loaded = LoadedModel(name="m", module=nn.Conv2d(3, 3, 1), input_shape=(3, 8, 8))
    engines = pipeline.build_trt_engines(loaded, tmp_path / "m.onnx", tmp_path, "compressed", (target,))
    assert len(engines) == len(built)
    return built


def _option_reached(engine: str, key: str, value, target: Target, monkeypatch, tmp_path: Path) -> None:
    if engine == "ort":
        seen = _ort_session_args(target, monkeypatch, tmp_path)
        so, providers = seen["sess_options"], seen["providers"]
        names = [p[0] if isinstance(p, tuple) else p for p in providers]
        if key == "providers":
            assert names == value
        elif key == "provider_options":
            for name, opts in zip(value and target.providers, value):
                given = next((p[1] for p in providers if isinstance(p, tuple) and p[0] == name), {})
                assert opts.items() <= given.items(), (name, opts, given)
        elif key == "graph_optimization_level":
            import onnxruntime as ort

            assert so.graph_optimization_level == getattr(ort.GraphOptimizationLevel,
                                                          loaders.ORT_GRAPH_OPT[value])
        elif key == "allow_spinning":
            assert so.get_session_config_entry("session.intra_op.allow_spinning") == ("1" if value else "0")
        else:
            raise AssertionError(f"no check for ORT option {key}")
    elif engine == "torch":
        kwargs = _torch_runner_kwargs(target, monkeypatch)
        assert key in ("cuda_graph", "channels_last"), f"no check for torch option {key}"
        assert kwargs[key] == value
    elif engine == "trt":
        opts = _trt_build_options(target, monkeypatch, tmp_path)
        assert key in ("workspace_mb", "dla_core", "gpu_fallback", "timing_cache", "builder_optimization_level"), \
            f"no check for TensorRT option {key}"
        for o in opts:
            got = getattr(o, key)
            assert (str(got) if key == "timing_cache" and got is not None else got) == value
    else:
        raise AssertionError(f"no checks for engine {engine}")


def _raw_entries():
    for name in list_profiles():
        prof = load_profile(name)
        raw = yaml.safe_load(prof.source.read_text())
        for entry in raw["engines"]:
            yield name, prof, raw, entry


@pytest.mark.parametrize("name, prof, raw, entry", list(_raw_entries()),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_every_profile_option_reaches_its_runner(name, prof, raw, entry, monkeypatch, tmp_path):
    targets = [t for t in prof.targets if t.label == entry.get("label", entry["name"])]
    assert [t.precision for t in targets] == entry["precisions"]
    for target in targets:
        for key, value in (entry.get("options") or {}).items():
            with monkeypatch.context() as m:
                _option_reached(entry["name"], key, value, target, m, tmp_path)
        # profile-wide settings: threads reach the runner, batches and timing the sweep
        if entry["name"] == "torch":
            assert _torch_runner_kwargs(target, monkeypatch)["threads"] == raw.get("threads")
        if entry["name"] == "ort":
            so = _ort_session_args(target, monkeypatch, tmp_path)["sess_options"]
            assert so.intra_op_num_threads == loaders.ort_threads(target)
        from gsdeploy.bench.sweep import measure_config

        cfg = measure_config(target)
        assert (cfg.warmup_s, cfg.min_iterations, cfg.min_duration_s) == (
            raw["warmup_s"], raw["min_iterations"], raw["min_duration_s"])
        assert target.batches == tuple(raw["batches"])


def test_every_option_of_the_schema_has_a_check(monkeypatch, tmp_path):
    """A new option in the profile schema must come with a way to reach its runner."""
    assert set(ENGINE_OPTIONS) == set(ENGINES)
    sample = {"ort": make_target("ort"), "torch": make_target("torch"),
              "trt": resolve_targets("jetson-orin-trt", TargetFlags(engines=("trt-dla0",)))[0]}
    values = {"providers": ["CPUExecutionProvider"], "provider_options": [], "graph_optimization_level": "all",
              "allow_spinning": True, "cuda_graph": False, "channels_last": False, "workspace_mb": 2048,
              "dla_core": 0, "gpu_fallback": True, "timing_cache": None, "builder_optimization_level": None}
    for engine, options in ENGINE_OPTIONS.items():
        for key in options:
            with monkeypatch.context() as m:
                _option_reached(engine, key, values[key], sample[engine], m, tmp_path)


def test_dla_targets_get_one_static_engine_per_batch(monkeypatch, tmp_path):
    dla = resolve_targets("jetson-orin-trt", TargetFlags(engines=("trt-dla0",)))[0]
    opts = _trt_build_options(dla, monkeypatch, tmp_path)
    assert [(o.batch.min, o.batch.opt, o.batch.max) for o in opts] == [(1, 1, 1), (8, 8, 8)]
    assert all(o.dla_core == 0 and o.gpu_fallback and o.precision == "fp16" for o in opts)
    gpu = resolve_targets("jetson-orin-trt", TargetFlags(engines=("trt-gpu",)))[0]
    [o] = _trt_build_options(gpu, monkeypatch, tmp_path)
    assert (o.batch.min, o.batch.max, o.dla_core, o.workspace_mb) == (1, 8, None, 2048)


def test_ort_fp16_target_turns_the_tensorrt_providers_fp16_on():
    t = resolve_targets("server-gpu-ort-trt", TargetFlags(engines=("ort-trt",)))[0]
    name, trt_opts = t.ort_providers()[0]
    assert name == "TensorrtExecutionProvider"
    assert trt_opts["trt_fp16_enable"] is True and trt_opts["trt_max_workspace_size"] == 4294967296


def test_cpu_runner_really_runs_with_the_profile_settings(tmp_path):
    """On this machine the ORT CPU target is not recorded but run: the live session has the settings."""
    pytest.importorskip("onnxruntime")
    from gsdeploy.bench.runners.ort import OrtRunner
    from gsdeploy.export.onnx import export_onnx

    path = tmp_path / "m.onnx"
    export_onnx(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval(), (3, 8, 8), path)
    [t] = resolve_targets("cpu-ort", TargetFlags(threads=1))
    t = replace(t, allow_spinning=False)
    r = OrtRunner(path, t)
    so = r._sess.get_session_options()
    assert so.intra_op_num_threads == 1 and so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert r.active_providers == ["CPUExecutionProvider"]
    r.prepare(2)
    r.run_once()
    r.close()


# ---- the CLI builds the targets once, before any work -----------------------------------------


def test_export_takes_tensorrt_settings_from_the_profile_and_flags_win():
    orin = resolve_targets("jetson-orin-trt", TargetFlags(engines=("trt-dla0",)))
    s = loaders.trt_export_settings(orin)
    assert (s["precision"], s["workspace_mb"], s["dla_core"], s["gpu_fallback"], s["batches"]) == \
        ("fp16", 2048, 0, True, [1, 8])
    s = loaders.trt_export_settings(orin, workspace_mb=512, precision="int8")
    assert (s["precision"], s["workspace_mb"], s["dla_core"]) == ("int8", 512, 0)
    s = loaders.trt_export_settings(resolve_targets("cpu-ort"))  # no TensorRT entry: the exporter's defaults
    assert (s["precision"], s["workspace_mb"], s["dla_core"], s["gpu_fallback"]) == ("fp16", 4096, None, False)


@pytest.mark.parametrize("command", ["inspect", "export", "bench"])
def test_a_bad_profile_fails_before_any_work(command, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from gsdeploy import pipeline, transforms
    from gsdeploy.cli import app

    def no_work(*args, **kwargs):
        raise AssertionError("work started")

    monkeypatch.setattr(transforms, "deploy", no_work)
    monkeypatch.setattr(pipeline, "run_bench_job", no_work)
    bad = tmp_path / "dla-fp32.yaml"
    bad.write_text(yaml.safe_dump({"description": "d", "device": "jetson", "batches": [1], "engines": [
        {"name": "trt", "precisions": ["fp32"], "options": {"dla_core": 0}}]}))
    args = {"inspect": ["inspect", "resnet20_hinge50"], "export": ["export", "resnet20_hinge50", "-o",
                                                                   str(tmp_path / "m.onnx")],
            "bench": ["bench", "-o", str(tmp_path / "out")]}[command]
    r = CliRunner().invoke(app, [*args, "--profile", str(bad)])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "DLA runs fp16 or int8 only" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dla-fp32.yaml"]  # nothing written


def test_bench_flags_are_checked_before_any_work(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from gsdeploy import pipeline
    from gsdeploy.cli import app

    monkeypatch.setattr(pipeline, "run_bench_job", lambda *a, **k: (_ for _ in ()).throw(AssertionError("work")))
    for flags, words in ((["--warmup-s", "nan"], "warmup_s must be a finite"),
                         (["--min-duration-s", "inf"], "min_duration_s must be a finite"),
                         (["--threads", "0"], "threads must be"),
                         (["--max-cov", "-1"], "max_cov"),
                         (["--precision", "fp16"], "fp32 on a cpu device"),
                         (["--engine", "trtexec"], "not an engine"),
                         (["--prune-threshold", "nan"], "--prune-threshold must be a finite")):
        r = CliRunner().invoke(app, ["bench", "-o", str(tmp_path / "out"), *flags])
        assert r.exit_code == 2 and words in r.stderr, (flags, r.stderr)
    assert not (tmp_path / "out").exists()


def test_inspect_plans_for_the_profile_target(monkeypatch):
    """The target built from --profile is the one the planner times on."""
    from typer.testing import CliRunner

    from gsdeploy.cli import app
    from gsdeploy.plan import stage

    seen = []
    real = stage.plan_latency

    def spy(module, shape, target, **kwargs):
        seen.append(target)
        return real(module, shape, target, **kwargs)

    monkeypatch.setattr(stage, "plan_latency", spy)
    r = CliRunner().invoke(app, ["inspect", "resnet20_hinge50", "--profile", "cpu-torch"])
    assert r.exit_code == 0, r.stderr
    assert [(t.profile, t.engine) for t in seen] == [("cpu-torch", "torch")]


def test_torch_runs_fp16_and_bf16_on_a_gpu_only():
    gpu = make_target("torch", device="cuda", batches=(1,))
    for p in ("fp16", "bf16"):
        assert validate(replace(gpu, precision=p)).precision == p
        with pytest.raises(TargetError, match="fp32 on a cpu device"):
            validate(replace(make_target("torch"), precision=p))
    with pytest.raises(TargetError, match="torch runner runs fp32, or fp16/bf16"):
        validate(replace(gpu, precision="int8"))
