"""A reduced-precision ONNX artifact (int8 Q/DQ or fp16) made from the verified fp32 one, and the
three checks that decide whether it may be written: it passes onnx.checker and runs in ONNX
Runtime; on real data (`--eval-data`) it loses at most `--max-accuracy-drop` points of top-1;
on an ONNX Runtime CPU target it is not slower than the fp32 artifact it replaces.

Inputs from files are loaded and checked by `load_precision_inputs` before any deployment work starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gsdeploy.accuracy import check_drop, evaluate
from gsdeploy.bench.measure import MeasureConfig, measure_interleaved
from gsdeploy.bench.runners.ort import OrtRunner
from gsdeploy.errors import GsdeployError
from gsdeploy.export.quantize import S8S8_TENSORRT, U8S8_ORT_CPU, Int8Scheme, convert_fp16, quantize_int8, scheme_for
from gsdeploy.inputs import sample_inputs
from gsdeploy.limits import check_number, short
from gsdeploy.loaders import ort_session
from gsdeploy.sample_data import Samples, load_samples, random_samples

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_MAX_ACCURACY_DROP = 1.0
RANDOM_CALIBRATION_NOTE = ("calibrated on RANDOM inputs (--random-calibration): the int8 scales, and so its accuracy, "
                           "are not representative; for latency work only")


class SlowerThanFp32Error(GsdeployError):
    """The reduced-precision artifact is slower than fp32 on the target: no reason to deploy it."""

    exit_code = 3


@dataclass(frozen=True)
class PrecisionRequest:
    precision: str = "fp32"
    calib_data: Path | None = None
    random_calibration: bool = False  # allowed only without calib_data, and recorded as such
    eval_data: Path | None = None
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP  # top-1 points
    keep_io_types: bool = True  # fp16: keep the input and output fp32
    scheme: Int8Scheme = U8S8_ORT_CPU
    scheme_source: str = "profile cpu-ort"  # which target picked the scheme
    # Batches at which int8 is timed against fp32 (the target's); empty where the target's engine
    # cannot run here (TensorRT), so no claim is made about its speed.
    speed_batches: tuple[int, ...] = ()
    speed_target: Any = None  # the gsdeploy.target.Target the speed check runs on (None: ORT CPU defaults)
    allow_slower: bool = False  # keep it although slower than fp32 (the manifest says so)

    def check(self) -> None:
        """Flag errors, before any work."""
        if self.precision not in PRECISIONS:
            raise GsdeployError(f"--precision must be one of {', '.join(PRECISIONS)}, not '{self.precision}'")
        check_number("--max-accuracy-drop (top-1 points)", self.max_accuracy_drop, minimum=0, maximum=100)
        if self.precision == "int8":
            if self.calib_data is None and not self.random_calibration:
                raise GsdeployError("int8 needs calibration data: pass --calib-data DIR|FILE.npz with real inputs "
                                    "(or --random-calibration for latency-only work)")
            if self.calib_data is not None and self.random_calibration:
                raise GsdeployError("--calib-data and --random-calibration exclude each other")
        else:
            if self.calib_data is not None or self.random_calibration:
                raise GsdeployError(f"--calib-data and --random-calibration are for int8, not {self.precision}")


@dataclass(frozen=True)
class PrecisionInputs:
    calibration: Samples | None
    evaluation: Samples | None


def load_precision_inputs(req: PrecisionRequest, input_shape: tuple[int, ...]) -> PrecisionInputs:
    """Read and check the calibration and evaluation files (see gsdeploy.sample_data)."""
    req.check()
    calib = None
    if req.precision == "int8":
        calib = load_samples(req.calib_data, input_shape) if req.calib_data else random_samples(input_shape)
    evaluation = load_samples(req.eval_data, input_shape, labels=True) if req.eval_data else None
    return PrecisionInputs(calib, evaluation)


def _runs_in_ort(path: Path, input_shape: tuple[int, ...]) -> np.ndarray:
    """onnx.checker, then one batch through ONNX Runtime on the CPU; returns the output."""
    import onnx  # heavy: onnx

    try:
        onnx.checker.check_model(str(path))
        session = ort_session(path)
        inp = session.get_inputs()[0]
        x = sample_inputs(input_shape, 2, seed=7)[-1].numpy()
        dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
        return session.run(None, {inp.name: x.astype(dtype)})[0].astype(np.float32)
    except Exception as e:  # noqa: BLE001
        raise GsdeployError(f"the reduced-precision ONNX does not check or run in ONNX Runtime: "
                            f"{short(str(e).splitlines()[0]) if str(e) else type(e).__name__}") from None


def _speed_vs_fp32(fp32: Path, reduced: Path, batches: tuple[int, ...], input_shape: tuple[int, ...],
                   precision: str, target=None) -> list[dict[str, Any]]:
    """fp32 and the reduced artifact timed interleaved with the bench's own runner and scheduler."""
    # Short: this decides keep/refuse, not a published number (bench does those).
    cfg = MeasureConfig(warmup_s=0.2, min_iterations=10, min_duration_s=0.5)
    rows = []
    for b in batches:
        runners = {"fp32": OrtRunner(fp32, target, input_shape=input_shape),
                   precision: OrtRunner(reduced, target, input_shape=input_shape)}
        try:
            stats = measure_interleaved(runners, b, cfg)
        finally:
            for r in runners.values():
                r.close()
        rows.append({"batch": b, "fp32_ms": stats["fp32"].median_ms, f"{precision}_ms": stats[precision].median_ms,
                     "speedup": stats["fp32"].median_ms / stats[precision].median_ms,
                     "cov": max(stats["fp32"].cov, stats[precision].cov)})
    return rows


def make_reduced(fp32_onnx: Path, output: Path, original, input_shape: tuple[int, ...], req: PrecisionRequest,
                 inputs: PrecisionInputs) -> dict[str, Any]:
    """Write the reduced-precision copy of `fp32_onnx` to `output` and check it; returns the
    manifest's "precision" section. Raises (and the caller writes nothing) when a check fails."""
    section: dict[str, Any] = {"precision": req.precision}
    if req.precision == "int8":
        calib = inputs.calibration
        section["quantization"] = quantize_int8(fp32_onnx, output, calib.x, req.scheme)
        section["quantization"]["scheme_chosen_by"] = req.scheme_source
        section["calibration"] = {"source": calib.source, "samples": len(calib), "files": calib.files,
                                  "representative": calib.source != "random"}
        if calib.source == "random":
            section["calibration"]["note"] = RANDOM_CALIBRATION_NOTE
    elif req.precision == "fp16":
        section["conversion"] = convert_fp16(fp32_onnx, output, req.keep_io_types)
    else:
        raise ValueError("make_reduced is for fp16 and int8")
    out = _runs_in_ort(output, input_shape)
    ref = _runs_in_ort(fp32_onnx, input_shape)
    scale = max(float(np.abs(ref).max()), np.finfo(np.float32).tiny)
    section["output_vs_fp32"] = {"max_rel_err": float(np.abs(out - ref).max() / scale),
                                 "metric": "max |out - fp32| / max |fp32| on one image-like batch (reported, "
                                           "no bound: accuracy on --eval-data is the check)"}
    if inputs.evaluation is not None:
        report = evaluate(original, {"fp32": fp32_onnx, req.precision: output}, inputs.evaluation)
        section["accuracy"] = report.to_dict() | {"max_drop_pts": req.max_accuracy_drop}
        check_drop(report, req.precision, req.max_accuracy_drop)
    else:
        section["accuracy"] = None
        section["accuracy_note"] = "not measured: pass --eval-data FILE.npz (x, y) to check accuracy on real data"
    if req.speed_batches:
        rows = _speed_vs_fp32(fp32_onnx, output, req.speed_batches, input_shape, req.precision, req.speed_target)
        section["speed_vs_fp32"] = {"target": req.scheme_source, "rows": rows}
        slow = [r for r in rows if r["speedup"] < 1.0]
        section["speed_vs_fp32"]["slower_than_fp32_kept"] = bool(slow) and req.allow_slower
        if slow and not req.allow_slower:
            r = slow[0]
            raise SlowerThanFp32Error(
                f"the {req.precision} artifact is slower than fp32 on {section['speed_vs_fp32']['target']}: "
                f"{r[f'{req.precision}_ms']:.3f} ms vs {r['fp32_ms']:.3f} ms at batch {r['batch']} "
                f"({r['speedup']:.2f}x); nothing written (--allow-slower keeps it)")
    return section


def request_for_target(precision: str, engine: str, target, **kw: Any) -> PrecisionRequest:
    """The precision request of an export: the int8 scheme and the speed check come from the
    target (`--engine trt`: TensorRT; `--engine onnx`: the profile's first target, default
    cpu-ort). int8 is timed against fp32 only where the target runs here (ORT on the CPU)."""
    if engine != "onnx":
        return PrecisionRequest(precision=precision, scheme=S8S8_TENSORRT, scheme_source=f"--engine {engine}", **kw)
    where = f"target {target.label} (profile {target.profile or 'none'})"
    scheme = scheme_for(target.engine, tuple(target.providers)) if precision == "int8" else U8S8_ORT_CPU
    timed = precision != "fp32" and target.engine == "ort" and not target.on_gpu
    return PrecisionRequest(precision=precision, scheme=scheme, scheme_source=where,
                            speed_batches=tuple(target.batches) if timed else (), speed_target=target if timed else None,
                            **kw)
