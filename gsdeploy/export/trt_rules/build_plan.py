"""Network typing and builder flags for a precision on TensorRT 10 versus 11 (`BuildPlan`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from gsdeploy.errors import TrtConfigError
from gsdeploy.export.trt_rules.dla import dla_release_warning
from gsdeploy.export.trt_rules.onnx_precision import OnnxPrecision
from gsdeploy.export.trt_rules.options import TrtBuildOptions, validate_options
from gsdeploy.export.trt_rules.versions import trt_major


QDQ_HINT = ("quantize the ONNX explicitly (Q/DQ nodes, e.g. NVIDIA ModelOpt: "
            "python -m modelopt.onnx.quantization --onnx_path MODEL.onnx --quantize_mode int8 "
            "--calibration_data calib.npy) and build that ONNX")


@dataclass(frozen=True)
class BuildPlan:
    """How to configure the builder; `tensorrt.build_engine` applies it mechanically."""

    trt_version: str
    precision: str
    strongly_typed: bool  # NetworkDefinitionCreationFlag.STRONGLY_TYPED (always on in 11.x)
    set_flags: tuple[str, ...]  # BuilderFlag member names to set
    clear_flags: tuple[str, ...]  # BuilderFlag member names to clear
    calibrate: bool  # implicit int8 calibration with IInt8EntropyCalibrator2 (10.x only)
    autocast_fp16: bool  # convert the fp32 ONNX to fp16 with ModelOpt AutoCast before parsing (11.x)
    device: str  # "GPU" or "DLA"
    dla_core: int | None
    precision_source: str  # "builder flags" (weak typing) or "model types" (strong typing)
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_plan(o: TrtBuildOptions, trt_version: str, onnx: OnnxPrecision,
               has_calibrator_api: bool = True) -> BuildPlan:
    """Decide network typing and builder flags for `o` on TensorRT `trt_version`.

    10.x, plain fp32 ONNX: weak typing; fp16 sets BuilderFlag.FP16; int8 sets INT8 (+FP16 so
    layers without an int8 kernel fall back to fp16 rather than fp32) and calibrates.
    10.x, ONNX with Q/DQ or fp16 types: strongly typed, no precision flags (NVIDIA's advice).
    11.x: always strongly typed; fp16 from an fp32 ONNX needs ModelOpt AutoCast first; int8
    needs a Q/DQ ONNX since the calibrator API is gone.
    fp32 clears TF32 (enabled by default in TensorRT): an "fp32" engine should compute in fp32,
    and TF32's 10-bit mantissa would eat most of the 1e-3 tolerance.
    """
    validate_options(o)
    major = trt_major(trt_version)
    if major < 10:
        raise TrtConfigError(f"gsdeploy needs TensorRT 10 or newer, found {trt_version}")
    p = o.precision
    warns: list[str] = []
    set_flags: list[str] = []
    clear_flags: list[str] = []
    calibrate = autocast = False
    model_typed = onnx.has_qdq or onnx.has_fp16

    if onnx.has_qdq and p != "int8":
        warns.append(f"the ONNX has Q/DQ nodes, so TensorRT runs those layers in int8 although --precision is {p}")
    if onnx.has_fp16 and p == "fp32":
        warns.append("the ONNX already has fp16 tensors; they stay fp16 in an fp32 build")

    if major >= 11:
        strongly_typed = True
        source = "model types"
        if p == "fp16" and not onnx.has_fp16:
            autocast = True
            warns.append("TensorRT 11 removed BuilderFlag.FP16: the fp32 ONNX is converted to fp16 "
                         "with ModelOpt AutoCast (keep_io_types=True) before building")
        if p == "int8" and not onnx.has_qdq:
            raise TrtConfigError(
                f"TensorRT {trt_version} has no implicit int8 calibration (IInt8Calibrator and "
                f"BuilderFlag.INT8 were removed in 11.0): {QDQ_HINT}, or build with TensorRT 10.x")
    elif model_typed:
        strongly_typed = True
        source = "model types"
    else:
        strongly_typed = False
        source = "builder flags"
        if p == "fp16":
            set_flags.append("FP16")
        elif p == "int8":
            if not has_calibrator_api:
                raise TrtConfigError(
                    f"this TensorRT {trt_version} has no IInt8EntropyCalibrator2 (implicit int8 calibration, "
                    f"deprecated since 10.1): {QDQ_HINT}")
            set_flags += ["INT8", "FP16"]
            calibrate = True

    if p == "fp32":
        clear_flags.append("TF32")

    device = "GPU"
    if o.dla_core is not None:
        device = "DLA"
        unsupported = dla_release_warning(trt_version)
        if unsupported:
            warns.append(unsupported)
        if o.gpu_fallback:
            set_flags.append("GPU_FALLBACK")

    return BuildPlan(trt_version=trt_version, precision=p, strongly_typed=strongly_typed,
                     set_flags=tuple(set_flags), clear_flags=tuple(clear_flags), calibrate=calibrate,
                     autocast_fp16=autocast, device=device, dla_core=o.dla_core, precision_source=source,
                     warnings=tuple(warns))
