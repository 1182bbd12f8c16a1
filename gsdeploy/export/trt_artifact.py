"""`gsdeploy export --engine trt|torch-trt`: the deployed module -> verified ONNX -> engine + manifest.

The TensorRT engine is built from the same verified ONNX that `--engine onnx` writes, so the
numeric chain is original -> deployed (1e-5) -> ONNX in ORT (1e-4) -> engine (per precision).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gsdeploy.atomic import scratch_dir
from gsdeploy.errors import NumericMismatchError
from gsdeploy.export.artifact import artifact_inputs, base_manifest
from gsdeploy.export.onnx import check_onnx, export_onnx
from gsdeploy.export.reduced import make_reduced
from gsdeploy.export.tensorrt import export_trt, require_tensorrt
from gsdeploy.export.torch_tensorrt import export_torch_trt
from gsdeploy.export.trt_rules.batches import batch_range, parse_batch_list
from gsdeploy.export.trt_rules.options import TrtBuildOptions, validate_options
from gsdeploy.export.trt_rules.versions import trt_major


def write_trt_artifact(engine: str, loaded, result, options, output: Path, *, precision: str, batch: str | None,
                       min_batch: int | None, opt_batch: int | None, max_batch: int | None, workspace_mb: int,
                       timing_cache: Path | None, dla_core: int | None, gpu_fallback: bool,
                       calib_data: Path | None, builder_optimization_level: int | None = None, wants=None,
                       inputs=None) -> dict[str, Any]:
    """`wants`/`inputs` (reduced.PrecisionRequest and its checked inputs): for int8 on TensorRT 11
    the verified ONNX is first quantized to a symmetric int8 Q/DQ ONNX (TensorRT 11 has no
    calibrator); TensorRT 10 keeps its IInt8EntropyCalibrator2 on the same calibration data."""
    batches = parse_batch_list(batch) if batch else None
    brange = batch_range(batches, min_batch, opt_batch, max_batch)
    extra = base_manifest(loaded, result, options)
    if engine == "torch-trt":
        return export_torch_trt(result.module, loaded.input_shape, precision, brange, output, extra,
                                workspace_mb=workspace_mb, inputs=artifact_inputs(loaded))

    opts = TrtBuildOptions(precision=precision, batch=brange, workspace_mb=workspace_mb, timing_cache=timing_cache,
                           dla_core=dla_core, gpu_fallback=gpu_fallback, calib_data=calib_data,
                           builder_optimization_level=builder_optimization_level)
    extra["warnings"] = validate_options(opts)
    with scratch_dir("trt") as tmp:
        onnx_path = tmp / "model.onnx"
        export_onnx(result.module, loaded.input_shape, onnx_path)
        check = check_onnx(onnx_path, result.reference, loaded.input_shape).verification
        if not check.passed:
            raise NumericMismatchError(f"ONNX model differs from the original: max relative error "
                                       f"{check.max_rel_err:.3e} exceeds tolerance {check.tolerance:.0e}; nothing written")
        if precision == "int8" and wants is not None and int8_route(trt_version()) == "qdq":
            qdq = Path(tmp) / "model_qdq.onnx"
            extra["precision"] = make_reduced(onnx_path, qdq, loaded.module, tuple(loaded.input_shape), wants, inputs)
            onnx_path = qdq
        return export_trt(result.reference, onnx_path, loaded.input_shape, opts, output, extra,
                          inputs=artifact_inputs(loaded))


def trt_version() -> str:
    return str(require_tensorrt().__version__)


def int8_route(version: str, has_calibrator_api: bool = True) -> str:
    """How int8 reaches a TensorRT engine: "qdq" (explicit quantization, a Q/DQ ONNX made by
    gsdeploy) on TensorRT 11, which removed the calibrator; "calibrator" (implicit,
    IInt8EntropyCalibrator2 at build time) on TensorRT 10, where it still exists."""
    return "qdq" if trt_major(version) >= 11 or not has_calibrator_api else "calibrator"
