"""Reduced-precision ONNX: int8 Q/DQ (post-training static quantization) and fp16.

Both use ONNX Runtime's own tools (`onnxruntime.quantization.quantize_static` in QDQ format and
`onnxruntime.transformers.float16`), which ship with the `onnxruntime` package gsdeploy already
needs. NVIDIA ModelOpt's ONNX PTQ was the other candidate; on Linux x86-64 its `[onnx]` extra
pins `onnxruntime-gpu~=1.24` (which must never sit beside the CPU `onnxruntime`), `onnx~=1.21`
(older than ours) and `cupy-cuda12x`, so it cannot install into a CPU environment (README).

The int8 *scheme* depends on the target, not on taste:
- ONNX Runtime's x86-64 CPU kernels are built for uint8 activations x int8 weights (U8S8). On the
  50%-pruned ResNet-50 here, int8 activations (S8S8) ran 0.65x its fp32 model at batch 32 while
  U8S8 ran 3.0x (issue 11's probe; re-timed here by benchmarks/int8_schemes.py: 0.63x vs
  2.89x at batch 32, results/int8_schemes_b32.txt).
- TensorRT's explicit quantization takes symmetric signed int8 only: Q/DQ with zero points of 0,
  per-channel weight scales on the output-channel axis, on the inputs of Conv/Gemm/MatMul, and
  float biases (TensorRT fuses the bias itself; it has no int32 DequantizeLinear).
Weights are int8, symmetric, per output channel (axis 0) in both.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from gsdeploy.errors import GsdeployError
from gsdeploy.limits import short

# Calibration runs every sample through an augmented fp32 graph that outputs every tensor; a
# few hundred images fix the ranges of a CNN (ORT's and TensorRT's examples use 100-1000).
MAX_CALIBRATION_SAMPLES = 512
CALIBRATION_BATCH = 16


@dataclass(frozen=True)
class Int8Scheme:
    """How to quantize for one kind of target, and why."""

    name: str  # "U8S8" | "S8S8"
    activations: str  # "uint8" | "int8"
    activation_symmetric: bool  # zero point 0 (int8 only)
    quantize_bias: bool  # int32 bias + DequantizeLinear (ORT) or float bias (TensorRT)
    op_types: tuple[str, ...] | None  # None: every op ORT can quantize
    target: str
    reason: str
    weights: str = "int8, symmetric, per output channel (axis 0)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


U8S8_ORT_CPU = Int8Scheme(
    name="U8S8", activations="uint8", activation_symmetric=False, quantize_bias=True, op_types=None,
    target="ONNX Runtime CPU",
    reason="ONNX Runtime's x86-64 CPU int8 kernels take uint8 activations x int8 weights; int8 activations "
           "(S8S8) ran 0.65x the fp32 model on the pruned ResNet-50 here, uint8 (U8S8) 3.0x")
S8S8_TENSORRT = Int8Scheme(
    name="S8S8", activations="int8", activation_symmetric=True, quantize_bias=False,
    op_types=("Conv", "Gemm", "MatMul"), target="TensorRT",
    reason="TensorRT's explicit quantization takes symmetric signed int8 (zero points of 0) Q/DQ on the inputs of "
           "Conv/Gemm/MatMul, per-channel weight scales on axis 0, and float biases")
SCHEMES = {s.name: s for s in (U8S8_ORT_CPU, S8S8_TENSORRT)}
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def scheme_for(engine: str, providers: Sequence[str] = ()) -> Int8Scheme:
    """The int8 scheme of a target: `engine` is a profile engine name (ort, trt, trtexec,
    torch-trt), `providers` the ORT providers it asks for."""
    if engine in ("trt", "trtexec", "torch-trt"):
        return S8S8_TENSORRT
    if engine == "ort":
        if any(p in GPU_PROVIDERS for p in providers):
            return S8S8_TENSORRT  # ORT's TensorRT EP builds TensorRT engines; its CUDA EP follows the same rule
        return U8S8_ORT_CPU
    raise GsdeployError(f"no int8 scheme for engine '{engine}': int8 artifacts are made for ort and trt targets")


class _Batches:
    """onnxruntime.quantization.CalibrationDataReader over an in-memory array."""

    def __init__(self, input_name: str, x: np.ndarray, batch: int) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter(
            {input_name: np.ascontiguousarray(x[i:i + batch])} for i in range(0, len(x), batch))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:  # part of the reader protocol; calibration reads once
        raise NotImplementedError


@contextlib.contextmanager
def _quiet_ort_tools() -> Iterator[None]:
    """ORT's quantization tools log advice ("consider pre-processing") on the root logger;
    gsdeploy's CLI prints one line per error, not library chatter."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(fp32_onnx: Path, output: Path, calibration: np.ndarray, scheme: Int8Scheme,
                  input_name: str = "input") -> dict[str, Any]:
    """Write a Q/DQ int8 copy of `fp32_onnx` calibrated on `calibration` (N, *input_shape);
    returns what the manifest records about it."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static  # optional: the cpu/gpu extra (onnxruntime)

    if calibration.ndim < 2 or len(calibration) == 0:
        raise GsdeployError("int8 calibration needs at least one sample")
    used = calibration[:MAX_CALIBRATION_SAMPLES]
    reader = _Batches(input_name, used, CALIBRATION_BATCH)
    extra = {"ActivationSymmetric": scheme.activation_symmetric, "WeightSymmetric": True,
             "QuantizeBias": scheme.quantize_bias}
    act = QuantType.QUInt8 if scheme.activations == "uint8" else QuantType.QInt8
    try:
        with _quiet_ort_tools():
            quantize_static(str(fp32_onnx), str(output), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=act, weight_type=QuantType.QInt8,
                            op_types_to_quantize=list(scheme.op_types) if scheme.op_types else None,
                            calibrate_method=CalibrationMethod.MinMax, extra_options=extra)
    except Exception as e:  # noqa: BLE001 - ORT raises plain Exceptions for graphs it cannot quantize
        raise GsdeployError("ONNX Runtime could not quantize the model: "
                            f"{short(str(e).splitlines()[0]) if str(e) else type(e).__name__}") from None
    return {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "calibration_method": "MinMax",
            "calibration_samples": int(len(used)), "samples_given": int(len(calibration)),
            "scheme": scheme.to_dict()}


def convert_fp16(fp32_onnx: Path, output: Path, keep_io_types: bool) -> dict[str, Any]:
    """Write an fp16 copy of `fp32_onnx` (weights and compute in fp16); with `keep_io_types` its
    input and output stay fp32 (Cast nodes at the edges), so callers feed the same arrays."""
    import onnx  # heavy: onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16  # optional: the cpu/gpu extra
    from onnxruntime.transformers.onnx_model import OnnxModel  # optional: the cpu/gpu extra

    model = onnx.load(str(fp32_onnx))
    with _quiet_ort_tools():
        half = convert_float_to_float16(model, keep_io_types=keep_io_types)
        # The converter appends the I/O Cast nodes at the end of the node list; onnx.checker
        # (and the ONNX spec) want nodes in topological order.
        wrapped = OnnxModel(half)
        wrapped.topological_sort()
    onnx.save(wrapped.model, str(output))
    return {"tool": "onnxruntime.transformers.float16.convert_float_to_float16", "keep_io_types": keep_io_types,
            "io_dtype": "float32" if keep_io_types else "float16"}
