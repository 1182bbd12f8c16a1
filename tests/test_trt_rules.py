"""Pure TensorRT logic: runs everywhere, no TensorRT, no GPU, nothing about TensorRT faked."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper

from gsdeploy.errors import GsdeployError, MissingDependencyError
from gsdeploy.errors import EngineCompatError, TrtConfigError
from gsdeploy.export.trt_rules.batches import (BatchRange, batch_range, parse_batch_list, profile_shapes,
                                               verification_batches)
from gsdeploy.export.trt_rules.build_plan import build_plan
from gsdeploy.export.trt_rules.calibration import (RANDOM_CALIBRATION_WARNING, load_calibration_batches,
                                                   random_calibration_batches)
from gsdeploy.export.trt_rules.dla import DLA_MAX_BATCH, check_dla_cores
from gsdeploy.export.trt_rules.engines import check_engine_compat, engine_manifest, plan_header_version
from gsdeploy.export.trt_rules.onnx_precision import OnnxPrecision, onnx_precision_info
from gsdeploy.export.trt_rules.options import TOLERANCE, TrtBuildOptions, validate_options, within_tolerance
from gsdeploy.export.trt_rules.versions import parse_version
from gsdeploy.export.torch_tensorrt import output_format, torch_trt_precision_kwargs

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None
HAVE_TORCH_TRT = importlib.util.find_spec("torch_tensorrt") is not None

PLAIN = OnnxPrecision(has_qdq=False, has_fp16=False, input_names=("input",), input_shapes=((None, 3, 32, 32),))
QDQ = OnnxPrecision(has_qdq=True, has_fp16=False, input_names=("input",), input_shapes=((None, 3, 32, 32),))
FP16 = OnnxPrecision(has_qdq=False, has_fp16=True, input_names=("input",), input_shapes=((None, 3, 32, 32),))


# ------------------------------------------------------------------ batch ranges


def test_batch_list_spans_min_to_max_tuned_at_median():
    assert batch_range([1, 8, 32]) == BatchRange(1, 8, 32)
    assert batch_range([32, 1, 8, 8]) == BatchRange(1, 8, 32)  # order and duplicates do not matter
    assert batch_range([1, 8]) == BatchRange(1, 1, 8)  # lower median of an even count
    assert batch_range([16]) == BatchRange(16, 16, 16)
    assert batch_range([16]).static


def test_batch_default_is_static_one():
    r = batch_range(None)
    assert r == BatchRange(1, 1, 1) and r.static


def test_explicit_min_opt_max_and_their_defaults():
    assert batch_range(None, 1, 4, 16) == BatchRange(1, 4, 16)
    assert batch_range(None, max_batch=16) == BatchRange(1, 16, 16)
    assert batch_range(None, opt_batch=8) == BatchRange(1, 8, 8)
    assert batch_range(None, min_batch=4) == BatchRange(4, 4, 4)
    assert batch_range(None, min_batch=2, max_batch=8) == BatchRange(2, 8, 8)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(batches=[1, 8], max_batch=8), "either --batch or"),
    (dict(batches=[]), "at least one"),
    (dict(batches=[0, 4]), "positive integers"),
    (dict(batches=[2.5]), "positive integers"),
    (dict(batches=None, min_batch=8, max_batch=4), "min <= opt <= max"),
    (dict(batches=None, min_batch=1, opt_batch=32, max_batch=16), "min <= opt <= max"),
    (dict(batches=None, min_batch=0, max_batch=4), "at least 1"),
])
def test_bad_batch_ranges_are_clear_errors(kwargs, fragment):
    with pytest.raises(TrtConfigError, match=fragment) as info:
        batch_range(**kwargs)
    # both kinds of caller can catch it, and the CLI prints it as one line
    assert isinstance(info.value, ValueError) and isinstance(info.value, GsdeployError)
    assert "\n" not in str(info.value)


@given(st.lists(st.integers(min_value=1, max_value=4096), min_size=1, max_size=12))
def test_batch_list_range_properties(values):
    r = batch_range(values)
    assert r.min == min(values) and r.max == max(values)
    assert r.opt in values and r.min <= r.opt <= r.max
    assert all(r.contains(v) for v in values)


def test_parse_batch_list():
    assert parse_batch_list("1,8,32") == [1, 8, 32]
    assert parse_batch_list(" 4 ") == [4]
    with pytest.raises(TrtConfigError, match="comma-separated"):
        parse_batch_list("1;8")


def test_profile_shapes_prepend_the_batch():
    assert profile_shapes((3, 32, 32), BatchRange(1, 8, 32)) == ((1, 3, 32, 32), (8, 3, 32, 32), (32, 3, 32, 32))
    with pytest.raises(TrtConfigError, match="without the batch axis"):
        profile_shapes((3, 0, 32), BatchRange(1, 1, 1))
    with pytest.raises(TrtConfigError):
        profile_shapes((), BatchRange(1, 1, 1))


@given(st.integers(1, 64), st.integers(0, 64), st.integers(0, 64),
       st.lists(st.integers(1, 512), min_size=1, max_size=4))
def test_profile_shapes_satisfy_set_shape_rules(lo, d_opt, d_max, sample):
    # IOptimizationProfile.set_shape: equal ranks, min <= opt <= max per dim, fixed dims equal
    r = BatchRange(lo, lo + d_opt, lo + d_opt + d_max)
    mn, op, mx = profile_shapes(tuple(sample), r)
    assert len(mn) == len(op) == len(mx) == len(sample) + 1
    assert all(a <= b <= c for a, b, c in zip(mn, op, mx))
    assert mn[1:] == op[1:] == mx[1:] == tuple(sample)


def test_verification_batches_cover_ends_and_opt():
    assert verification_batches(BatchRange(1, 8, 32)) == [1, 8, 32]
    assert verification_batches(BatchRange(4, 4, 4)) == [4]


# ------------------------------------------------------------------ options


def test_default_options_validate_cleanly():
    assert validate_options(TrtBuildOptions()) == []


@pytest.mark.parametrize("opts, fragment", [
    (TrtBuildOptions(precision="bf16"), "precision must be one of"),
    (TrtBuildOptions(workspace_mb=0), "workspace"),
    (TrtBuildOptions(builder_optimization_level=6), "optimization level"),
    (TrtBuildOptions(gpu_fallback=True), "--gpu-fallback only applies to DLA"),
    (TrtBuildOptions(dla_core=-1), "--dla-core"),
    (TrtBuildOptions(precision="fp32", dla_core=0), "DLA supports fp16 and int8 only"),
    (TrtBuildOptions(precision="fp16", dla_core=0, batch=BatchRange(1, 4, 8)), "DLA does not support dynamic"),
    (TrtBuildOptions(precision="fp16", dla_core=0, batch=BatchRange(5000, 5000, 5000)), f"up to {DLA_MAX_BATCH}"),
])
def test_option_errors(opts, fragment):
    with pytest.raises(TrtConfigError, match=fragment):
        validate_options(opts)


def test_int8_without_calibration_data_warns_loudly():
    warnings = validate_options(TrtBuildOptions(precision="int8"))
    assert RANDOM_CALIBRATION_WARNING in warnings
    assert "RANDOM" in RANDOM_CALIBRATION_WARNING and "NOT representative" in RANDOM_CALIBRATION_WARNING


def test_calibration_options(tmp_path):
    assert any("ignored" in w for w in validate_options(TrtBuildOptions(precision="fp16", calib_data=tmp_path)))
    assert validate_options(TrtBuildOptions(precision="int8", calib_data=tmp_path)) == []
    with pytest.raises(TrtConfigError, match="not a directory"):
        validate_options(TrtBuildOptions(precision="int8", calib_data=tmp_path / "missing"))


def test_dla_options():
    ok = TrtBuildOptions(precision="fp16", dla_core=1, gpu_fallback=True, batch=BatchRange(8, 8, 8))
    assert validate_options(ok) == []
    no_fallback = validate_options(TrtBuildOptions(precision="int8", dla_core=0, calib_data=None))
    assert any("--gpu-fallback" in w for w in no_fallback)


def test_timing_cache_path_checks(tmp_path):
    assert validate_options(TrtBuildOptions(timing_cache=tmp_path / "cache.bin")) == []
    with pytest.raises(TrtConfigError, match="does not exist"):
        validate_options(TrtBuildOptions(timing_cache=tmp_path / "nope" / "cache.bin"))
    with pytest.raises(TrtConfigError, match="is a directory"):
        validate_options(TrtBuildOptions(timing_cache=tmp_path))


# ------------------------------------------------------------------ flags per TensorRT version


def test_trt10_weak_typing_flags():
    fp32 = build_plan(TrtBuildOptions(precision="fp32"), "10.16.0.72", PLAIN)
    assert not fp32.strongly_typed and fp32.set_flags == () and fp32.clear_flags == ("TF32",)
    fp16 = build_plan(TrtBuildOptions(precision="fp16"), "10.16.0.72", PLAIN)
    assert fp16.set_flags == ("FP16",) and fp16.precision_source == "builder flags" and not fp16.autocast_fp16
    int8 = build_plan(TrtBuildOptions(precision="int8"), "10.3.0", PLAIN)
    assert int8.set_flags == ("INT8", "FP16") and int8.calibrate


def test_trt10_without_calibrator_api_suggests_qdq():
    with pytest.raises(TrtConfigError, match="Q/DQ"):
        build_plan(TrtBuildOptions(precision="int8"), "10.16.0", PLAIN, has_calibrator_api=False)


def test_trt10_qdq_or_fp16_model_is_built_strongly_typed_without_precision_flags():
    for info, precision in ((QDQ, "int8"), (FP16, "fp16")):
        plan = build_plan(TrtBuildOptions(precision=precision), "10.16.0", info)
        assert plan.strongly_typed and not plan.calibrate
        assert not {"FP16", "INT8"} & set(plan.set_flags)
        assert plan.precision_source == "model types"


def test_trt11_is_always_strongly_typed():
    fp32 = build_plan(TrtBuildOptions(precision="fp32"), "11.1.0", PLAIN)
    assert fp32.strongly_typed and fp32.set_flags == ()
    fp16 = build_plan(TrtBuildOptions(precision="fp16"), "11.1.0", PLAIN)
    # BuilderFlag.FP16 is gone in 11: the ONNX is converted with ModelOpt AutoCast instead
    assert fp16.strongly_typed and fp16.autocast_fp16 and "FP16" not in fp16.set_flags
    assert any("AutoCast" in w for w in fp16.warnings)
    already = build_plan(TrtBuildOptions(precision="fp16"), "11.1.0", FP16)
    assert not already.autocast_fp16
    qdq = build_plan(TrtBuildOptions(precision="int8"), "11.4.1", QDQ)
    assert qdq.strongly_typed and not qdq.calibrate and qdq.set_flags == ()


def test_trt11_int8_needs_qdq_onnx():
    with pytest.raises(TrtConfigError, match="Q/DQ") as info:
        build_plan(TrtBuildOptions(precision="int8"), "11.0.0", PLAIN)
    assert "11.0.0" in str(info.value)


def test_old_tensorrt_refused():
    with pytest.raises(TrtConfigError, match="TensorRT 10 or newer"):
        build_plan(TrtBuildOptions(), "8.6.1", PLAIN)


def test_precision_mismatch_with_model_types_warns():
    plan = build_plan(TrtBuildOptions(precision="fp32"), "10.16.0", QDQ)
    assert any("Q/DQ" in w for w in plan.warnings)


def test_dla_plan_flags_and_version_notes():
    o = TrtBuildOptions(precision="fp16", dla_core=0, gpu_fallback=True)
    p = build_plan(o, "10.3.0", PLAIN)
    assert p.device == "DLA" and p.dla_core == 0 and p.set_flags == ("FP16", "GPU_FALLBACK") and not p.warnings
    assert any("no DLA support" in w for w in build_plan(o, "11.2.0", PLAIN).warnings)
    assert any("no DLA support" in w for w in build_plan(o, "10.9.0", PLAIN).warnings)
    assert not any("no DLA support" in w for w in build_plan(o, "11.4.1", FP16).warnings)


def test_dla_core_availability():
    check_dla_cores(1, 2, "Orin")
    with pytest.raises(TrtConfigError, match="no DLA cores"):
        check_dla_cores(0, 0, "NVIDIA H100")
    with pytest.raises(TrtConfigError, match="use 0..1"):
        check_dla_cores(2, 2, "Orin")


# ------------------------------------------------------------------ ONNX precision facts (real onnx models)


def _conv_model(path: Path, *, qdq: bool = False, fp16_cast: bool = False) -> Path:
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.zeros(108, np.float32).tolist())
    nodes, inits = [], [w]
    x = "input"
    if qdq:
        inits += [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]),
                  helper.make_tensor("z", TensorProto.INT8, [], [0])]
        nodes += [helper.make_node("QuantizeLinear", ["input", "s", "z"], ["q"]),
                  helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"])]
        x = "dq"
    nodes.append(helper.make_node("Conv", [x, "w"], ["c"], pads=[1, 1, 1, 1]))
    y = "c"
    if fp16_cast:
        nodes += [helper.make_node("Cast", ["c"], ["h"], to=TensorProto.FLOAT16),
                  helper.make_node("Cast", ["h"], ["o"], to=TensorProto.FLOAT)]
        y = "o"
    nodes.append(helper.make_node("Identity", [y], ["output"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 4, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_onnx_precision_info(tmp_path):
    plain = onnx_precision_info(_conv_model(tmp_path / "a.onnx"))
    assert not plain.has_qdq and not plain.has_fp16
    assert plain.input_names == ("input",) and plain.input_shapes == ((None, 3, 8, 8),)
    assert onnx_precision_info(_conv_model(tmp_path / "b.onnx", qdq=True)).has_qdq
    assert onnx_precision_info(_conv_model(tmp_path / "c.onnx", fp16_cast=True)).has_fp16


# ------------------------------------------------------------------ numerics


def test_engine_error_is_relative_to_output_scale():
    from gsdeploy.numerics import OutputMismatchError, compare_outputs

    def rel(ref, out):
        return compare_outputs(ref, out, tolerance=1e-3).max_rel_err

    ref = np.array([[10.0, -20.0, 0.0]])
    assert rel(ref, ref) == 0.0
    assert rel(ref, ref + np.array([[0.0, 0.0, 0.02]])) == pytest.approx(1e-3)
    assert rel(ref, np.array([[10.0, np.nan, 0.0]])) == float("inf")
    assert rel(ref, np.array([[10.0, np.inf, 0.0]])) == float("inf")
    with pytest.raises(OutputMismatchError, match="shape"):
        rel(ref, ref[:, :2])


def test_tolerances_per_precision():
    assert TOLERANCE == {"fp32": 1e-3, "fp16": 2e-2, "int8": None}
    assert within_tolerance("fp32", 9e-4) and not within_tolerance("fp32", 2e-3)
    assert within_tolerance("fp16", 1.5e-2) and not within_tolerance("fp16", 3e-2)
    assert within_tolerance("int8", 0.5)  # reported, not bounded
    assert not within_tolerance("int8", float("inf"))  # but NaN/inf output always fails


# ------------------------------------------------------------------ manifest and compatibility


def _manifest(**over) -> dict:
    opts = TrtBuildOptions(precision="fp16", batch=BatchRange(1, 8, 32), timing_cache=Path("/tmp/t.cache"))
    plan = build_plan(opts, "10.16.0.72", PLAIN)
    kw = dict(opts=opts, plan=plan, input_name="input", input_shape=(3, 32, 32), trt_version="10.16.0.72",
              gpu_name="NVIDIA H100 80GB HBM3", compute_capability="9.0", onnx_sha256="ab" * 32,
              engine_sha256="cd" * 32, engine_bytes=1234, verification={"max_rel_err": 1e-3, "passed": True},
              warnings=["w1"], output=Path("out.engine"),
              extra={"plan": [{"site": "layer1.0"}], "source": {"name": "resnet56"}, "warnings": ["w0"]})
    kw.update(over)
    return engine_manifest(**kw)


def test_engine_manifest_contents():
    m = _manifest()
    json.dumps(m)  # plain data, writable as JSON
    assert m["plan"] == [{"site": "layer1.0"}] and m["source"]["name"] == "resnet56"  # lead's keys kept
    assert m["precision"] == "fp16"
    t = m["tensorrt"]
    assert t["version"] == "10.16.0.72"
    assert t["gpu"] == {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    assert t["builder_flags"] == ["FP16"] and t["strongly_typed"] is False
    assert t["profile"] == {"input": "input", "min": [1, 3, 32, 32], "opt": [8, 3, 32, 32], "max": [32, 3, 32, 32]}
    assert t["timing_cache"] == "/tmp/t.cache" and t["workspace_mb"] == 4096
    assert t["builder_optimization_level"] is None
    assert m["artifact"]["onnx_sha256"] == "ab" * 32 and m["artifact"]["sha256"] == "cd" * 32
    assert m["artifact"]["built_onnx_sha256"] == "ab" * 32
    assert m["warnings"] == ["w0", "w1"]


def test_compat_accepts_same_version_and_gpu():
    assert check_engine_compat(_manifest(), "10.16.0.72", "NVIDIA H100 80GB HBM3", "9.0") == []
    assert check_engine_compat(_manifest(), "10.16.0.72", "NVIDIA H100 80GB HBM3", (9, 0)) == []


def test_compat_error_names_both_versions():
    with pytest.raises(EngineCompatError) as info:
        check_engine_compat(_manifest(), "11.1.0", "NVIDIA H100 80GB HBM3", "9.0")
    msg = str(info.value)
    assert "TensorRT 10.16.0.72" in msg and "TensorRT 11.1.0" in msg and "rebuild" in msg


def test_compat_error_names_both_gpus():
    with pytest.raises(EngineCompatError) as info:
        check_engine_compat(_manifest(), "10.16.0.72", "Orin", "8.7")
    msg = str(info.value)
    assert "NVIDIA H100 80GB HBM3" in msg and "9.0" in msg and "Orin" in msg and "8.7" in msg


def test_compat_both_mismatches_in_one_message():
    with pytest.raises(EngineCompatError) as info:
        check_engine_compat(_manifest()["tensorrt"], "10.3.0", "Orin", "8.7")
    msg = str(info.value)
    assert "10.3.0" in msg and "Orin" in msg and "\n" not in msg


def test_compat_warnings_for_other_build_or_model_of_same_architecture():
    assert check_engine_compat(_manifest(), "10.16.0.99", "NVIDIA H100 80GB HBM3", "9.0")
    warnings = check_engine_compat(_manifest(), "10.16.0.72", "NVIDIA H100 PCIe", "9.0")
    assert warnings and "NVIDIA H100 PCIe" in warnings[0]


def test_compat_without_recorded_version():
    with pytest.raises(EngineCompatError, match="no TensorRT version"):
        check_engine_compat({"tensorrt": {}}, "10.16.0", "x", "9.0")


def test_plan_header_version_follows_trtexec_layout():
    # layout read by trtexec --getPlanVersionOnly: tag, serialization version 0, version bytes at 24..27
    header = struct.pack("<II", 0x74727466, 0) + bytes(16) + bytes([10, 16, 0, 72]) + b"rest"
    assert plan_header_version(header) == "10.16.0.72"
    assert plan_header_version(b"not a plan file at all, really") is None
    assert plan_header_version(b"short") is None


def test_parse_version():
    assert parse_version("10.16.0.72") == (10, 16, 0, 72)
    assert parse_version("2.5.0+cu124") == (2, 5, 0)
    assert parse_version("11.0.0rc1") == (11, 0, 0)
    with pytest.raises(TrtConfigError):
        parse_version("unknown")


# ------------------------------------------------------------------ calibration data


def test_calibration_batches_from_npy_files(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.standard_normal((5, 3, 8, 8)).astype(np.float64))  # a stack
    np.save(tmp_path / "b.npy", rng.standard_normal((3, 8, 8)).astype(np.float32))  # one sample
    np.save(tmp_path / "c.npy", rng.integers(0, 255, (2, 3, 8, 8)).astype(np.uint8))  # raw pixels
    (tmp_path / "notes.txt").write_text("ignored")
    batches = load_calibration_batches(tmp_path, (3, 8, 8), 4)
    assert len(batches) == 2  # 8 samples -> two batches of 4
    assert all(b.shape == (4, 3, 8, 8) and b.dtype == np.float32 and b.flags.c_contiguous for b in batches)


def test_calibration_drops_a_partial_batch(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((7, 3, 4, 4), np.float32))
    assert len(load_calibration_batches(tmp_path, (3, 4, 4), 4)) == 1


@pytest.mark.parametrize("arr, fragment", [
    (np.zeros((2, 3, 9, 8), np.float32), "expected one sample"),
    (np.zeros((3, 8), np.float32), "expected one sample"),
    (np.array(["a", "b"]), "real numeric"),
    (np.full((1, 3, 8, 8), np.nan, np.float32), "NaN"),
])
def test_calibration_bad_files(tmp_path, arr, fragment):
    np.save(tmp_path / "bad.npy", arr)
    with pytest.raises(TrtConfigError, match=fragment) as info:
        load_calibration_batches(tmp_path, (3, 8, 8), 1)
    assert "bad.npy" in str(info.value)


def test_calibration_refuses_pickles(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(TrtConfigError, match="pickled arrays are refused"):
        load_calibration_batches(tmp_path, (3, 8, 8), 1)


def test_calibration_directory_errors(tmp_path):
    with pytest.raises(TrtConfigError, match="no .npy files"):
        load_calibration_batches(tmp_path, (3, 8, 8), 1)
    with pytest.raises(TrtConfigError, match="not a directory"):
        load_calibration_batches(tmp_path / "missing", (3, 8, 8), 1)
    np.save(tmp_path / "a.npy", np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(TrtConfigError, match="at least 4 samples"):
        load_calibration_batches(tmp_path, (3, 8, 8), 4)


def test_random_calibration_is_seeded():
    a = random_calibration_batches((3, 4, 4), 2, n_batches=3)
    b = random_calibration_batches((3, 4, 4), 2, n_batches=3)
    assert len(a) == 3 and all(x.shape == (2, 3, 4, 4) for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


# ------------------------------------------------------------------ torch-tensorrt argument choice


def test_torch_trt_precision_kwargs_follow_the_installed_api():
    new_api = ("enable_autocast", "autocast_low_precision_type", "use_explicit_typing", "enabled_precisions",
               "disable_tf32")
    old_api = ("enabled_precisions", "disable_tf32")
    assert torch_trt_precision_kwargs("fp16", new_api) == {"enable_autocast": True,
                                                           "autocast_low_precision_type": torch.float16}
    assert torch_trt_precision_kwargs("fp16", old_api) == {"enabled_precisions": {torch.float16}}
    assert torch_trt_precision_kwargs("fp32", new_api) == {"disable_tf32": True}
    with pytest.raises(TrtConfigError, match="ModelOpt"):
        torch_trt_precision_kwargs("int8", new_api)


def test_torch_trt_output_format():
    assert output_format(Path("m.ep")) == "exported_program"
    assert output_format(Path("m.ts")) == "torchscript"
    with pytest.raises(TrtConfigError, match=".ep"):
        output_format(Path("m.engine"))


# ------------------------------------------------------------------ without TensorRT (this machine)


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here: the missing-dependency path cannot be exercised")
def test_require_tensorrt_names_the_extra_and_the_machine():
    from gsdeploy.export.tensorrt import require_tensorrt

    with pytest.raises(MissingDependencyError) as info:
        require_tensorrt()
    assert str(info.value) == ("TensorRT is not installed: pip install 'gsdeploy[trt]' on a machine with an NVIDIA "
                               "GPU and CUDA (on Jetson it ships with JetPack)")
    assert info.value.exit_code != 0


@pytest.mark.skipif(HAVE_TRT, reason="TensorRT is installed here: the missing-dependency path cannot be exercised")
def test_export_trt_without_tensorrt_writes_nothing(tmp_path):
    from gsdeploy.export.tensorrt import export_trt

    onnx_path = _conv_model(tmp_path / "m.onnx")
    out = tmp_path / "out" / "m.engine"
    out.parent.mkdir()
    cache = tmp_path / "out" / "t.cache"
    module = torch.nn.Conv2d(3, 4, 3, padding=1).eval()
    with pytest.raises(MissingDependencyError, match=r"pip install 'gsdeploy\[trt\]'"):
        export_trt(module, onnx_path, (3, 8, 8), TrtBuildOptions(timing_cache=cache), out, {})
    assert list(out.parent.iterdir()) == []


@pytest.mark.skipif(HAVE_TORCH_TRT, reason="torch-tensorrt is installed here")
def test_export_torch_trt_without_torch_tensorrt_writes_nothing(tmp_path):
    from gsdeploy.export.torch_tensorrt import export_torch_trt

    module = torch.nn.Conv2d(3, 4, 3, padding=1).eval()
    with pytest.raises(MissingDependencyError, match=r"torch-tensorrt is not installed: pip install 'gsdeploy\[trt\]'"):
        export_torch_trt(module, (3, 8, 8), "fp16", BatchRange(1, 1, 1), tmp_path / "m.ep", {})
    assert list(tmp_path.iterdir()) == []


