"""int8 and fp16 artifacts: calibration data checks, the Q/DQ structure each target needs, and
accuracy on real data (scikit-learn's digits, a CNN trained here in seconds)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import numpy_helper
from typer.testing import CliRunner

from gsdeploy.cli import app
from gsdeploy.export.onnx import export_onnx
from gsdeploy.export.quantize import S8S8_TENSORRT, U8S8_ORT_CPU, quantize_int8, scheme_for
from gsdeploy.export.reduced import PrecisionRequest
from gsdeploy.export.trt_artifact import int8_route
from gsdeploy.loaders import ort_session
from gsdeploy.sample_data import SampleDataError, load_samples

runner = CliRunner()


def cli(*args: str):
    return runner.invoke(app, list(args))


def ok(*args: str):
    r = cli(*args)
    assert r.exit_code == 0, r.output
    return r


def assert_refused(result, pattern: str, out_dir: Path) -> None:
    """One `error:` line, non-zero exit, no artifact or manifest left behind."""
    assert result.exit_code != 0, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and pattern in errors[0], result.output
    assert "Traceback" not in result.output
    assert not list(out_dir.glob("out*")) and not list(out_dir.glob(".out*")), list(out_dir.iterdir())


# ------------------------------------------------------------------ calibration / evaluation files

SHAPE = (3, 4, 4)


def test_npy_directory_and_npz(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "calib"
    d.mkdir()
    np.save(d / "a.npy", rng.standard_normal((5, *SHAPE)))
    np.save(d / "b.npy", rng.integers(0, 255, SHAPE).astype(np.uint8))
    s = load_samples(d, SHAPE)
    assert s.x.shape == (6, *SHAPE) and s.x.dtype == np.float32 and s.y is None and s.files == 2
    np.savez(tmp_path / "e.npz", x=rng.standard_normal((4, *SHAPE)), y=np.array([0, 1, 2, 1]))
    e = load_samples(tmp_path / "e.npz", SHAPE, labels=True)
    assert e.y.tolist() == [0, 1, 2, 1]
    assert load_samples(tmp_path / "e.npz", SHAPE).y is None  # calibration never reads labels


@pytest.mark.parametrize("arrays, fragment", [
    ({"x": np.zeros((2, 3, 4, 5), np.float32)}, "expected one sample"),
    ({"x": np.array(["a", "b"])}, "real numeric"),
    ({"x": np.zeros((2, *SHAPE), bool)}, "real numeric"),
    ({"x": np.full((1, *SHAPE), np.inf)}, "NaN or infinite"),
    ({"x": np.full((1, *SHAPE), 1e300)}, "NaN or infinite"),  # finite float64, inf in float32
    ({"images": np.zeros((1, *SHAPE))}, "no array 'x'"),
    ({"x": np.zeros((3, *SHAPE)), "y": np.array([0, 1])}, "one label per sample"),
    ({"x": np.zeros((2, *SHAPE)), "y": np.array([0.0, 1.0])}, "labels must be integers"),
    ({"x": np.zeros((2, *SHAPE)), "y": np.array([0, -1])}, "negative labels"),
])
def test_bad_npz(tmp_path, arrays, fragment):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(SampleDataError, match=fragment):
        load_samples(tmp_path / "bad.npz", SHAPE, labels=True)


def test_bad_paths_and_pickles(tmp_path):
    with pytest.raises(SampleDataError, match="no .npy files"):
        load_samples(tmp_path, SHAPE)
    with pytest.raises(SampleDataError, match="does not exist"):
        load_samples(tmp_path / "missing", SHAPE)
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(SampleDataError, match="not a directory of .npy files or a .npz"):
        load_samples(tmp_path / "x.txt", SHAPE)
    (tmp_path / "fake.npz").write_text("not a zip")
    with pytest.raises(SampleDataError, match="not a .npz archive"):
        load_samples(tmp_path / "fake.npz", SHAPE)
    d = tmp_path / "pickles"
    d.mkdir()
    np.save(d / "obj.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(SampleDataError, match="pickled arrays are refused"):
        load_samples(d, SHAPE)


def test_size_is_bounded_before_decoding(tmp_path):
    """A .npz is a zip: 4 MB of zeros compresses to a few kB, so the decoded size is what counts."""
    np.savez_compressed(tmp_path / "bomb.npz", x=np.zeros((1 << 20, 1), np.float32))
    assert (tmp_path / "bomb.npz").stat().st_size < 100_000
    with pytest.raises(SampleDataError, match="decodes to 4 MiB; the limit is 1 MiB"):
        load_samples(tmp_path / "bomb.npz", (1,), max_bytes=1 << 20)


def test_request_flags_are_checked():
    with pytest.raises(Exception, match="needs calibration data"):
        PrecisionRequest(precision="int8").check()
    PrecisionRequest(precision="int8", random_calibration=True).check()
    for bad in (math.nan, math.inf, -0.5, 101.0):
        with pytest.raises(Exception, match="--max-accuracy-drop"):
            PrecisionRequest(max_accuracy_drop=bad).check()
    with pytest.raises(Exception, match="for int8"):
        PrecisionRequest(precision="fp16", calib_data=Path("x")).check()


# ------------------------------------------------------------------ the target picks the scheme


def test_scheme_follows_the_target():
    assert scheme_for("ort", ["CPUExecutionProvider"]) is U8S8_ORT_CPU
    assert scheme_for("ort", ["TensorrtExecutionProvider", "CUDAExecutionProvider"]) is S8S8_TENSORRT
    assert scheme_for("trt") is S8S8_TENSORRT
    assert "0.65x" in U8S8_ORT_CPU.reason and "zero points of 0" in S8S8_TENSORRT.reason


def test_tensorrt_int8_route():
    assert int8_route("11.0.0") == "qdq" and int8_route("11.4.1.2") == "qdq"
    assert int8_route("10.16.0") == "calibrator"
    assert int8_route("10.16.0", has_calibrator_api=False) == "qdq"


# ------------------------------------------------------------------ Q/DQ structure of both schemes


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1, groups=2)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory) -> tuple[Path, nn.Module]:
    torch.manual_seed(0)
    m = Small().eval()
    path = tmp_path_factory.mktemp("small") / "fp32.onnx"
    export_onnx(m, (3, 8, 8), path)
    return path, m


def _structure(path: Path) -> list[dict]:
    """Per Conv/Gemm: how its activation and weight inputs are produced (read straight from the graph)."""
    g = onnx.load(str(path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    prod = {o: n for n in g.node for o in n.output}
    rows = []
    for n in g.node:
        if n.op_type not in ("Conv", "Gemm"):
            continue
        act, w = prod.get(n.input[0]), prod.get(n.input[1])
        act_q = prod.get(act.input[0]) if act is not None and act.op_type == "DequantizeLinear" else None
        axis = next((a.i for a in w.attribute if a.name == "axis"), 1) if w is not None else None
        rows.append({
            "op": n.op_type,
            "act": (act.op_type if act is not None else None, act_q.op_type if act_q is not None else None),
            "act_zero_point": inits.get(act.input[2]) if act is not None and len(act.input) > 2 else None,
            "weight_op": w.op_type if w is not None else None,
            "weight": inits.get(w.input[0]) if w is not None else None,
            "weight_scale": inits.get(w.input[1]) if w is not None else None,
            "weight_zero_point": inits.get(w.input[2]) if w is not None else None,
            "weight_axis": axis,
            "bias_is_float": len(n.input) > 2 and n.input[2] in inits and inits[n.input[2]].dtype == np.float32,
        })
    return rows


@pytest.mark.parametrize("scheme", [U8S8_ORT_CPU, S8S8_TENSORRT], ids=lambda s: s.name)
def test_qdq_structure(small_onnx, tmp_path, scheme):
    path, module = small_onnx
    rng = np.random.default_rng(0)
    out = tmp_path / "int8.onnx"
    info = quantize_int8(path, out, rng.standard_normal((32, 3, 8, 8)).astype(np.float32), scheme)
    assert info["format"] == "QDQ" and info["calibration_samples"] == 32
    onnx.checker.check_model(str(out))
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    y = ort_session(out).run(None, {"input": x})[0]
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    assert y.shape == ref.shape and np.abs(y - ref).max() < 0.1 * np.abs(ref).max()  # int8, not garbage
    rows = _structure(out)
    assert [r["op"] for r in rows] == ["Conv", "Conv", "Gemm"]
    act_dtype = np.uint8 if scheme is U8S8_ORT_CPU else np.int8
    for r in rows:
        assert r["act"] == ("DequantizeLinear", "QuantizeLinear"), r
        assert r["act_zero_point"].dtype == act_dtype
        assert r["weight_op"] == "DequantizeLinear" and r["weight"].dtype == np.int8
        out_channels = r["weight"].shape[0]
        assert r["weight_axis"] == 0 and r["weight_scale"].shape == (out_channels,)  # per output channel
        assert r["weight_zero_point"].dtype == np.int8 and not r["weight_zero_point"].any()  # symmetric weights
    if scheme is S8S8_TENSORRT:
        assert all(not r["act_zero_point"].any() for r in rows)  # symmetric activations: zero points 0
        assert all(r["bias_is_float"] for r in rows)  # TensorRT fuses float biases itself
    else:
        assert any(r["act_zero_point"].any() for r in rows)  # asymmetric uint8 uses its zero points


# ------------------------------------------------------------------ the digits model, end to end


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    pytest.importorskip("sklearn", reason="scikit-learn (test extra) ships the digits images")
    from digits import load_digits_split, save_program, top1, train_digits_cnn

    d = tmp_path_factory.mktemp("digits")
    model = train_digits_cnn()
    x_train, _, x_test, y_test = load_digits_split()
    np.savez(d / "calib.npz", x=x_train[:256])
    np.savez(d / "eval.npz", x=x_test, y=y_test)
    return {"dir": d, "pt2": str(save_program(model, d / "digits.pt2")), "top1": top1(model, x_test, y_test),
            "calib": str(d / "calib.npz"), "eval": str(d / "eval.npz")}


def _manifest(path: Path) -> dict:
    return json.loads(path.with_name(path.stem + ".manifest.json").read_text())


def test_digits_fp32_and_int8_keep_accuracy(digits, tmp_path):
    assert digits["top1"] > 85  # a real classifier, not noise
    fp32 = tmp_path / "fp32.onnx"
    # The FLOP plan: this test is about precision, and which widths a timed plan pads depends on
    # how busy the machine is (padding can raise this tiny model's MACs above the original's).
    ok("export", digits["pt2"], "--plan", "flops", "--eval-data", digits["eval"], "-o", str(fp32))
    m = _manifest(fp32)
    assert m["macs"]["after"] < m["macs"]["before"]  # the zero groups went
    actions = {(d["action"], tuple(d["layers"])) for d in m["plan"]}
    assert ("remove zero groups", ("conv2",)) in actions and ("keep", ("reduce", "expand")) in actions  # the pair
    acc = m["precision"]["accuracy"]
    assert acc["original"]["top1"] == pytest.approx(digits["top1"])
    assert acc["artifacts"][0]["top1"] == acc["original"]["top1"] and acc["artifacts"][0]["agreement"] == 100.0

    int8 = tmp_path / "int8.onnx"
    ok("export", digits["pt2"], "--plan", "flops", "--precision", "int8", "--calib-data", digits["calib"],
       "--eval-data", digits["eval"], "--allow-slower", "-o", str(int8))
    m = _manifest(int8)
    p = m["precision"]
    assert p["quantization"]["scheme"]["name"] == "U8S8" and p["quantization"]["scheme_chosen_by"] == "target ort (profile cpu-ort)"
    assert p["calibration"]["representative"] and p["calibration"]["samples"] == 256
    names = [a["name"] for a in p["accuracy"]["artifacts"]]
    assert names == ["fp32", "int8"]
    assert p["accuracy"]["artifacts"][1]["drop_pts"] <= 1.0
    assert {r["batch"] for r in p["speed_vs_fp32"]["rows"]} == {1, 32}
    onnx.checker.check_model(str(int8))
    types = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= types


def test_digits_accuracy_drop_is_refused(digits, tmp_path):
    """Calibration data with the wrong preprocessing (pixels 0-16000 instead of 0-1) stretches every
    activation range; int8 then loses far more than a point, and the export refuses it."""
    bad = tmp_path / "bad_calib.npz"
    np.savez(bad, x=np.load(digits["calib"])["x"] * 16000.0)
    r = cli("export", digits["pt2"], "--precision", "int8", "--calib-data", str(bad), "--eval-data", digits["eval"],
            "--allow-slower", "-o", str(tmp_path / "out.onnx"))
    assert_refused(r, "more than --max-accuracy-drop 1", tmp_path)
    assert "vs the original's" in r.output and f"{digits['top1']:.2f}%" in r.output


def test_digits_fp16(digits, tmp_path):
    out = tmp_path / "fp16.onnx"
    ok("export", digits["pt2"], "--precision", "fp16", "--eval-data", digits["eval"], "--allow-slower", "-o", str(out))
    sess = ort_session(out)
    assert sess.get_inputs()[0].type == "tensor(float)"  # I/O kept fp32
    assert _manifest(out)["precision"]["accuracy"]["artifacts"][1]["drop_pts"] <= 1.0


@pytest.mark.parametrize("case", ["no-calib", "wrong-shape", "wrong-dtype", "empty-dir", "labels", "labels-range",
                                  "nan-drop", "both-calib"])
def test_digits_bad_input(digits, tmp_path, case):
    out = str(tmp_path / "out.onnx")
    base = ["export", digits["pt2"], "--precision", "int8", "-o", out]
    calib = ["--calib-data", digits["calib"]]
    x_test = np.load(digits["eval"])["x"]
    if case == "no-calib":
        args, pattern = base, "int8 needs calibration data"
    elif case == "wrong-shape":
        np.savez(tmp_path / "c.npz", x=np.zeros((4, 3, 8, 8), np.float32))
        args, pattern = base + ["--calib-data", str(tmp_path / "c.npz")], "expected one sample (1, 8, 8)"
    elif case == "wrong-dtype":
        np.savez(tmp_path / "c.npz", x=np.zeros((4, 1, 8, 8), np.complex64))
        args, pattern = base + ["--calib-data", str(tmp_path / "c.npz")], "real numeric"
    elif case == "empty-dir":
        (tmp_path / "empty").mkdir()
        args, pattern = base + ["--calib-data", str(tmp_path / "empty")], "no .npy files"
    elif case == "labels":
        np.savez(tmp_path / "e.npz", x=x_test, y=np.zeros(len(x_test) - 1, np.int64))
        args, pattern = base + calib + ["--eval-data", str(tmp_path / "e.npz")], "one label per sample"
    elif case == "labels-range":
        np.savez(tmp_path / "e.npz", x=x_test, y=np.full(len(x_test), 10, np.int64))
        args, pattern = base + calib + ["--eval-data", str(tmp_path / "e.npz")], "labels do not match"
    elif case == "nan-drop":
        args, pattern = base + calib + ["--max-accuracy-drop", "nan"], "--max-accuracy-drop"
    else:
        args, pattern = base + calib + ["--random-calibration"], "exclude each other"
    assert_refused(cli(*args), pattern, tmp_path)


def test_random_calibration_is_recorded(digits, tmp_path):
    out = tmp_path / "r.onnx"
    ok("export", digits["pt2"], "--precision", "int8", "--random-calibration", "--allow-slower", "-o", str(out))
    c = _manifest(out)["precision"]["calibration"]
    assert c["source"] == "random" and c["representative"] is False and "RANDOM" in c["note"]


# ------------------------------------------------------------------ bench: int8 beside fp32 in one run

FAST = ["--batch", "1", "--warmup-s", "0.02", "--min-iterations", "3", "--min-duration-s", "0.02"]


def test_bench_int8_beside_fp32(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "eval.npz", x=rng.standard_normal((16, 3, 32, 32)).astype(np.float32),
             y=rng.integers(0, 10, 16))
    ok("bench", "resnet20_pruned50", "--precision", "fp32,int8", "--random-calibration", "--eval-data",
       str(tmp_path / "eval.npz"), "-o", str(tmp_path), *FAST)
    df = pd.read_csv(tmp_path / "bench_resnet20_pruned50.csv")
    got = {(r.model, r.role, r.precision) for r in df.itertuples()}
    assert got == {("resnet20", "baseline", "fp32"), ("resnet20_pruned50", "compressed", "fp32"),
                   ("resnet20[int8]", "compressed", "int8"), ("resnet20_pruned50[int8]", "compressed", "int8")}
    # every row is compared with the one dense fp32 baseline of its interleaved run
    assert df["speedup_vs_baseline"].notna().all()
    fp32 = df[df["precision"] == "fp32"]
    assert (fp32["top1_agreement"] == 100.0).all()  # deployed fp32 ONNX: same top-1 as its original
    assert df["top1"].between(0, 100).all() and df["top1_agreement"].between(0, 100).all()
    assert "top-1 %" in (tmp_path / "bench_resnet20_pruned50.md").read_text()
    from gsdeploy.report import latency_table, load_rows

    table = latency_table(load_rows([tmp_path / "bench_resnet20_pruned50.csv"])).reset_index()
    int8 = table[table["precision"] == "int8"]
    assert len(int8) == 2 and (int8["baseline"] == "resnet20").all() and int8["speedup"].notna().all()


def test_bench_int8_needs_calibration_and_ort(tmp_path):
    assert_refused(cli("bench", "resnet20_pruned50", "--precision", "fp32,int8", "-o", str(tmp_path / "out"), *FAST),
                   "int8 needs calibration data", tmp_path)
    assert_refused(cli("bench", "resnet20_pruned50", "--precision", "int8", "--random-calibration", "--engine", "torch",
                       "-o", str(tmp_path / "out"), *FAST), "precision must be fp32 on a cpu device", tmp_path)
    assert_refused(cli("bench", "resnet20_pruned50", "--precision", "fp32,int8", "--random-calibration", "--engine",
                       "ort,torch", "-o", str(tmp_path / "out"), *FAST), "several precisions in one run", tmp_path)
    assert_refused(cli("bench", "resnet20_pruned50", "--precision", "int4", "-o", str(tmp_path / "out"), *FAST),
                   "--precision takes", tmp_path)
