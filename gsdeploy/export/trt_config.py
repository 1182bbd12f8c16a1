"""Pure logic behind `gsdeploy export --engine trt|torch-trt`: no TensorRT import anywhere here.

Everything that can be decided without a GPU lives in this module so it is tested on every
machine: batch ranges and optimisation-profile shapes, which builder flags a precision needs on
TensorRT 10 versus 11, DLA rules, the manifest, engine/runtime compatibility, calibration data,
and the ONNX Runtime GPU provider options. `tensorrt.py` only applies these decisions to the real
API, so the code that cannot be tested here stays mechanical.

TensorRT facts this relies on (read from NVIDIA's docs and the TensorRT OSS sources):
- TensorRT 11 removed weak typing: BuilderFlag.FP16/INT8, IBuilderConfig.int8_calibrator and
  set_calibration_profile are gone; precision comes from the network's own types (ModelOpt
  AutoCast for fp16, Q/DQ nodes for int8).
  https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html
  https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-patterns.html
- In 10.x implicit INT8 calibration still works but is deprecated since 10.1 ("Superseded by
  explicit quantization"); weak typing is deprecated since 10.12.
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Int8/Calibrator.html
- Q/DQ networks: "Use explicit quantization with Strong Typing. Precision-control build flags
  are not required and should not be specified."
  https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/quantized-types-explicit-quantization.html
- DLA: fp16/int8 only, no dynamic dimensions ("the profile's min, max, and opt values must be
  equal"), batch <= 4096; unavailable in TensorRT 11.0-11.4.0, back in 11.4.1 on Jetson AGX
  Orin with JetPack 7.2.2+; 10.7 was the last 10.x release with DLA.
  https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/dla-layer-restrictions.html
  https://docs.nvidia.com/deeplearning/tensorrt/11.4.1/inference-library/work-with-dla.html
- Engines are not portable across TensorRT versions (without the version-compatible flag) nor
  across GPU architectures (without hardware compatibility mode).
  https://docs.nvidia.com/deeplearning/tensorrt/11.4.1/getting-started/support-matrix.html
"""

from __future__ import annotations

import logging
import re
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from gsdeploy.errors import GsdeployError

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")

# Max relative error (gsdeploy.numerics.compare_outputs' max_rel_err) of an engine against the fp32 torch module. int8 has
# no pass/fail bound: its error depends on the calibration data, so it is measured and reported.
TOLERANCE: dict[str, float | None] = {"fp32": 1e-3, "fp16": 2e-2, "int8": None}

# DLA's documented hard limit on the batch dimension.
DLA_MAX_BATCH = 4096

RANDOM_CALIBRATION_WARNING = (
    "int8 calibration without --calib-data uses RANDOM inputs: the int8 scales, and so the "
    "engine's accuracy, are NOT representative of real data. Pass --calib-data DIR with .npy "
    "samples of real inputs for a usable int8 engine.")

QDQ_HINT = ("quantize the ONNX explicitly (Q/DQ nodes, e.g. NVIDIA ModelOpt: "
            "python -m modelopt.onnx.quantization --onnx_path MODEL.onnx --quantize_mode int8 "
            "--calibration_data calib.npy) and build that ONNX")


class TrtConfigError(GsdeployError, ValueError):
    """Invalid TensorRT build settings. A ValueError too, so plain callers can catch it as one."""


class EngineCompatError(GsdeployError):
    """An engine built by another TensorRT version or for another GPU."""


# --------------------------------------------------------------------------------------------
# versions


def parse_version(version: str) -> tuple[int, ...]:
    """'10.16.0.72' -> (10, 16, 0, 72); '2.5.0+cu124' -> (2, 5, 0). Leading numeric fields only."""
    parts: list[int] = []
    for piece in str(version).strip().split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
        if m.end() != len(piece):  # '0+cu124', '0rc1': the number ends inside this field
            break
    if not parts:
        raise TrtConfigError(f"cannot read a version number from {version!r}")
    return tuple(parts)


def trt_major(version: str) -> int:
    return parse_version(version)[0]


# --------------------------------------------------------------------------------------------
# batch ranges -> optimisation profile


@dataclass(frozen=True)
class BatchRange:
    """One optimisation profile's batch dimension: TensorRT tunes kernels for `opt` and accepts
    any batch in [min, max] at run time."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        for name in ("min", "opt", "max"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TrtConfigError(f"batch {name} must be an integer, got {v!r}")
            if v < 1:
                raise TrtConfigError(f"batch {name} must be at least 1, got {v}")
        if not self.min <= self.opt <= self.max:
            raise TrtConfigError(
                f"batch range must satisfy min <= opt <= max, got min={self.min} opt={self.opt} max={self.max}")

    @property
    def static(self) -> bool:
        return self.min == self.max

    def contains(self, batch: int) -> bool:
        return self.min <= batch <= self.max

    def __str__(self) -> str:
        return str(self.min) if self.static else f"{self.min}..{self.max} (opt {self.opt})"


def batch_range(batches: Sequence[int] | None, min_batch: int | None = None, opt_batch: int | None = None,
                max_batch: int | None = None) -> BatchRange:
    """The profile for `--batch 1,8,32` or `--min-batch/--opt-batch/--max-batch`.

    A list covers [smallest, largest] and is tuned at its median element (1,8,32 -> opt 8): one
    profile cannot be optimal at every batch, and the median is the least-bad single choice;
    pass --opt-batch (or build one engine per batch) to tune for a particular one. A single
    batch gives a static profile (min = opt = max), which is also what DLA requires.
    With the three flags, a missing min is 1, a missing max is opt (or min), a missing opt is max.
    Nothing given: a static batch of 1 (the latency case, MLPerf's SingleStream).
    """
    explicit = (min_batch, opt_batch, max_batch)
    if batches is not None and any(v is not None for v in explicit):
        raise TrtConfigError("give either --batch or --min-batch/--opt-batch/--max-batch, not both")
    if batches is not None:
        values = list(batches)
        if not values:
            raise TrtConfigError("--batch needs at least one batch size")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise TrtConfigError(f"batch sizes must be positive integers, got {v!r}")
        uniq = sorted(set(int(v) for v in values))
        return BatchRange(uniq[0], uniq[(len(uniq) - 1) // 2], uniq[-1])
    if all(v is None for v in explicit):
        return BatchRange(1, 1, 1)
    lo = 1 if min_batch is None else min_batch
    hi = max_batch if max_batch is not None else (opt_batch if opt_batch is not None else lo)
    opt = opt_batch if opt_batch is not None else hi
    return BatchRange(lo, opt, hi)


def parse_batch_list(text: str) -> list[int]:
    """'1,8,32' -> [1, 8, 32], for the CLI's --batch option."""
    try:
        return [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise TrtConfigError(f"--batch takes comma-separated integers like 1,8,32, got {text!r}") from None


def _check_sample_shape(input_shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(input_shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 for d in shape):
        raise TrtConfigError(f"input shape must be positive integers without the batch axis, got {shape}")
    return tuple(int(d) for d in shape)


Shape = tuple[int, ...]


def profile_shapes(input_shape: Sequence[int], r: BatchRange) -> tuple[Shape, Shape, Shape]:
    """(min, opt, max) full shapes for IOptimizationProfile.set_shape; `input_shape` is one
    sample without the batch axis (the project's convention, e.g. (3, 32, 32))."""
    s = _check_sample_shape(input_shape)
    return (r.min, *s), (r.opt, *s), (r.max, *s)


def verification_batches(r: BatchRange) -> list[int]:
    """Batches the built engine is checked at: both ends of the profile and the tuned one, since
    TensorRT may pick different kernels across the range."""
    return sorted({r.min, r.opt, r.max})


# --------------------------------------------------------------------------------------------
# build options


@dataclass(frozen=True)
class TrtBuildOptions:
    precision: str = "fp16"
    batch: BatchRange = field(default_factory=lambda: BatchRange(1, 1, 1))
    workspace_mb: int = 4096
    timing_cache: Path | None = None
    dla_core: int | None = None
    gpu_fallback: bool = False
    calib_data: Path | None = None
    # IBuilderConfig.builder_optimization_level, 0-5; None keeps TensorRT's default (3). Higher
    # levels search more tactics: longer builds, sometimes faster engines.
    builder_optimization_level: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["timing_cache"] = str(self.timing_cache) if self.timing_cache else None
        d["calib_data"] = str(self.calib_data) if self.calib_data else None
        return d


def validate_options(o: TrtBuildOptions) -> list[str]:
    """Errors raise TrtConfigError; returns warnings to show the user (and record in the manifest).

    Only version-independent rules live here; `build_plan` adds those that depend on the
    installed TensorRT and on the ONNX model.
    """
    warnings: list[str] = []
    if o.precision not in PRECISIONS:
        raise TrtConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {o.precision!r}")
    if not isinstance(o.batch, BatchRange):
        raise TrtConfigError("batch must be a BatchRange (see batch_range())")
    if isinstance(o.workspace_mb, bool) or not isinstance(o.workspace_mb, int) or o.workspace_mb < 1:
        raise TrtConfigError(f"--workspace-mb must be a positive integer, got {o.workspace_mb!r}")
    lvl = o.builder_optimization_level
    if lvl is not None and (isinstance(lvl, bool) or not isinstance(lvl, int) or not 0 <= lvl <= 5):
        raise TrtConfigError(f"builder optimization level must be an integer 0-5, got {lvl!r}")
    if o.gpu_fallback and o.dla_core is None:
        raise TrtConfigError("--gpu-fallback only applies to DLA builds: add --dla-core N")
    if o.dla_core is not None:
        if isinstance(o.dla_core, bool) or not isinstance(o.dla_core, int) or o.dla_core < 0:
            raise TrtConfigError(f"--dla-core must be a DLA core index (0, 1, ...), got {o.dla_core!r}")
        if o.precision == "fp32":
            raise TrtConfigError("DLA supports fp16 and int8 only: use --precision fp16 or int8 with --dla-core")
        if not o.batch.static:
            raise TrtConfigError(
                f"DLA does not support dynamic shapes (profile min, opt and max must be equal), got batch {o.batch}: "
                "give a single --batch N for a DLA engine")
        if o.batch.max > DLA_MAX_BATCH:
            raise TrtConfigError(f"DLA supports batches up to {DLA_MAX_BATCH}, got {o.batch.max}")
        if not o.gpu_fallback:
            warnings.append("DLA without --gpu-fallback: the build fails if any layer cannot run on DLA")
    if o.precision == "int8" and o.calib_data is None:
        warnings.append(RANDOM_CALIBRATION_WARNING)
    if o.calib_data is not None:
        if o.precision != "int8":
            warnings.append(f"--calib-data is only used for int8; ignored for {o.precision}")
        elif not Path(o.calib_data).is_dir():
            raise TrtConfigError(f"--calib-data {o.calib_data} is not a directory of .npy files")
    if o.timing_cache is not None:
        parent = Path(o.timing_cache).parent
        if not parent.is_dir():
            raise TrtConfigError(f"--timing-cache {o.timing_cache}: directory {parent} does not exist")
        if Path(o.timing_cache).is_dir():
            raise TrtConfigError(f"--timing-cache {o.timing_cache} is a directory; give a file name")
    return warnings


# --------------------------------------------------------------------------------------------
# what the ONNX model says about its own precision


@dataclass(frozen=True)
class OnnxPrecision:
    has_qdq: bool  # QuantizeLinear/DequantizeLinear: explicitly quantized (int8 decided by the model)
    has_fp16: bool  # fp16 initialisers, casts or tensors: already mixed precision
    input_names: tuple[str, ...]
    input_shapes: tuple[tuple[int | None, ...], ...]  # None for symbolic dims (e.g. a dynamic batch)


_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def onnx_precision_info(onnx_path: Path) -> OnnxPrecision:
    """Read the precision-relevant facts from an ONNX file (structure only, no weights needed)."""
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(onnx_path), load_external_data=False)
    g = model.graph
    fp16 = TensorProto.FLOAT16

    def nodes(graph) -> Iterable:
        for n in graph.node:
            yield n
            for a in n.attribute:  # If/Loop bodies
                if a.type == onnx.AttributeProto.GRAPH:
                    yield from nodes(a.g)
                for sub in a.graphs:
                    yield from nodes(sub)

    has_qdq = False
    has_fp16 = any(t.data_type == fp16 for t in g.initializer)
    for n in nodes(g):
        if n.op_type in _QDQ_OPS:
            has_qdq = True
        if n.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in n.attribute):
            has_fp16 = True
        if n.op_type == "Constant" and any(a.t.data_type == fp16 for a in n.attribute if a.HasField("t")):
            has_fp16 = True
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.tensor_type.elem_type == fp16:
            has_fp16 = True
    init_names = {t.name for t in g.initializer}
    inputs = [vi for vi in g.input if vi.name not in init_names]
    shapes = tuple(tuple(d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim)
                   for vi in inputs)
    return OnnxPrecision(has_qdq, has_fp16, tuple(vi.name for vi in inputs), shapes)


# --------------------------------------------------------------------------------------------
# precision / DLA flags per TensorRT version


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
        v = parse_version(trt_version) + (0, 0, 0)
        if (10, 8) <= v[:2] < (11, 0) or (11, 0, 0) <= v[:3] < (11, 4, 1):
            warns.append(f"NVIDIA lists no DLA support in TensorRT {trt_version} (10.7 was the last 10.x release "
                         "with DLA; 11.x has it again from 11.4.1 on Jetson AGX Orin with JetPack 7.2.2+)")
        if o.gpu_fallback:
            set_flags.append("GPU_FALLBACK")

    return BuildPlan(trt_version=trt_version, precision=p, strongly_typed=strongly_typed,
                     set_flags=tuple(set_flags), clear_flags=tuple(clear_flags), calibrate=calibrate,
                     autocast_fp16=autocast, device=device, dla_core=o.dla_core, precision_source=source,
                     warnings=tuple(warns))


def check_dla_cores(dla_core: int, available: int, gpu_name: str) -> None:
    """builder.num_DLA_cores is the authority on whether this device has DLA at all."""
    if available <= 0:
        raise TrtConfigError(
            f"--dla-core {dla_core}: {gpu_name} has no DLA cores visible to TensorRT (DLA exists on Jetson "
            "AGX Orin/Xavier and Orin NX; TensorRT with DLA: JetPack's 10.x up to 10.7, or 11.4.1+ on JetPack 7.2.2+)")
    if dla_core >= available:
        raise TrtConfigError(f"--dla-core {dla_core}: this device has {available} DLA core(s), "
                             f"use 0..{available - 1}")


# --------------------------------------------------------------------------------------------
# numerics


def within_tolerance(precision: str, error: float) -> bool:
    """int8 has no bound (reported only) but a non-finite output fails at every precision."""
    if not np.isfinite(error):
        return False
    tol = TOLERANCE[precision]
    return tol is None or error <= tol


# --------------------------------------------------------------------------------------------
# manifest and compatibility


def engine_manifest(*, opts: TrtBuildOptions, plan: BuildPlan, input_name: str, input_shape: Sequence[int],
                    trt_version: str, gpu_name: str, compute_capability: str, onnx_sha256: str,
                    engine_sha256: str, engine_bytes: int, verification: dict[str, Any],
                    warnings: Sequence[str] = (), output: Path | None = None,
                    built_onnx_sha256: str | None = None, calibration: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What travels beside OUT.engine. `extra` is the lead's base manifest (source, plan, MACs,
    versions...) and is kept; the TensorRT-specific keys are added on top."""
    mn, op, mx = profile_shapes(input_shape, opts.batch)
    manifest: dict[str, Any] = dict(extra or {})
    manifest["artifact"] = {
        "engine": "trt", "path": str(output) if output else None, "sha256": engine_sha256, "bytes": engine_bytes,
        "onnx_sha256": onnx_sha256,
        # differs from onnx_sha256 when the ONNX was converted before building (fp16 AutoCast on 11.x)
        "built_onnx_sha256": built_onnx_sha256 or onnx_sha256,
    }
    manifest["precision"] = opts.precision
    manifest["tensorrt"] = {
        "version": trt_version,
        "gpu": {"name": gpu_name, "compute_capability": compute_capability},
        "strongly_typed": plan.strongly_typed,
        "precision_source": plan.precision_source,
        "builder_flags": list(plan.set_flags),
        "cleared_flags": list(plan.clear_flags),
        "device": plan.device,
        "dla_core": plan.dla_core,
        "gpu_fallback": opts.gpu_fallback,
        "workspace_mb": opts.workspace_mb,
        "builder_optimization_level": opts.builder_optimization_level,
        "timing_cache": str(opts.timing_cache) if opts.timing_cache else None,
        "profile": {"input": input_name, "min": list(mn), "opt": list(op), "max": list(mx)},
        "calibration": calibration,
        "options": opts.to_dict(),
    }
    manifest["engine_vs_original"] = verification
    manifest["warnings"] = list(dict.fromkeys([*manifest.get("warnings", []), *warnings]))
    return manifest


def _cc(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ".".join(str(int(v)) for v in value)
    return str(value).strip()


def check_engine_compat(engine_meta: dict[str, Any], runtime_trt_version: str, gpu_name: str,
                        compute_capability: str | tuple[int, int]) -> list[str]:
    """Raise EngineCompatError naming both sides when the engine cannot run here; returns warnings.

    `engine_meta` is the manifest (or its "tensorrt" section). Versions must agree on
    major.minor.patch (a differing build number is only warned about); the compute capability
    must agree (different architectures cannot run each other's kernels). Same capability but
    another GPU model loads, and TensorRT itself warns it may be slow or fail, so we warn too.
    """
    meta = engine_meta.get("tensorrt", engine_meta)
    built_version = meta.get("version")
    gpu = meta.get("gpu") or {}
    built_gpu, built_cc = gpu.get("name"), gpu.get("compute_capability")
    if not built_version:
        raise EngineCompatError("the engine's manifest records no TensorRT version; rebuild the engine")
    here_cc = _cc(compute_capability)
    problems: list[str] = []
    warnings: list[str] = []
    bv, rv = parse_version(built_version), parse_version(runtime_trt_version)
    if (bv + (0, 0))[:3] != (rv + (0, 0))[:3]:
        problems.append(f"it was built with TensorRT {built_version} "
                        f"but this runtime is TensorRT {runtime_trt_version}")
    elif len(bv) > 3 and len(rv) > 3 and bv[3] != rv[3]:
        warnings.append(f"engine built with TensorRT {built_version}, runtime is {runtime_trt_version} (other build)")
    if built_cc is not None and _cc(built_cc) != here_cc:
        problems.append(f"it was built for {built_gpu or 'a GPU'} (compute capability {_cc(built_cc)}) "
                        f"but this GPU is {gpu_name} (compute capability {here_cc})")
    elif built_gpu and built_gpu != gpu_name:
        warnings.append(f"engine built on {built_gpu}, running on {gpu_name} (same compute capability {here_cc}): "
                        "TensorRT may run it slower; rebuild here for reliable timings")
    if problems:
        raise EngineCompatError("cannot load this engine: " + "; ".join(problems)
                                + ". TensorRT engines only run on the TensorRT version and GPU they were built for: "
                                  "rebuild it here with `gsdeploy export ... --engine trt`")
    return warnings


_PLAN_TAG = 0x74727466  # "ftrt" as little-endian uint32, from TensorRT's samples/common/sampleEngines.cpp


def plan_header_version(blob: bytes) -> str | None:
    """TensorRT version written in a serialized plan's header, or None if the layout is unknown.

    Layout from trtexec's --getPlanVersionOnly (samples/common/sampleEngines.cpp, same in 10.2
    through 11.1): uint32 tag 0x74727466, uint32 serialization version; for version 0 the bytes
    24..27 are major, minor, patch, build. Used only when an engine has no manifest.
    """
    if len(blob) < 28:
        return None
    tag, serialization = struct.unpack_from("<II", blob, 0)
    if tag != _PLAN_TAG or serialization != 0:
        return None
    return ".".join(str(b) for b in blob[24:28])


# --------------------------------------------------------------------------------------------
# calibration data


def load_calibration_batches(directory: Path, input_shape: Sequence[int], batch: int) -> list[np.ndarray]:
    """Every .npy file in `directory` (sorted by name), as float32 batches of exactly `batch`.

    A file holds one sample (C,H,W) or a stack (N,C,H,W). Calibration feeds TensorRT buffers of
    the calibration profile's opt shape, so every batch has the same size and a remainder that
    does not fill one is dropped (logged). Files are read with allow_pickle=False: calibration
    data is user input and must never run code.
    """
    directory = Path(directory)
    shape = _check_sample_shape(input_shape)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise TrtConfigError(f"calibration batch must be a positive integer, got {batch!r}")
    if not directory.is_dir():
        raise TrtConfigError(f"calibration data {directory} is not a directory")
    files = sorted(p for p in directory.iterdir() if p.suffix == ".npy" and p.is_file())
    if not files:
        raise TrtConfigError(f"no .npy files in calibration directory {directory}")
    samples: list[np.ndarray] = []
    for f in files:
        try:
            arr = np.load(f, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise TrtConfigError(f"cannot read calibration file {f}: {e} (pickled arrays are refused)") from None
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise TrtConfigError(f"calibration file {f} has dtype {arr.dtype}; expected a real numeric array")
        if arr.shape == shape:
            arr = arr[None]
        elif not (arr.ndim == len(shape) + 1 and arr.shape[1:] == shape and arr.shape[0] > 0):
            raise TrtConfigError(
                f"calibration file {f} has shape {arr.shape}; expected one sample {shape} or a stack "
                f"(N, {', '.join(map(str, shape))})")
        arr = arr.astype(np.float32, copy=False)
        if not np.all(np.isfinite(arr)):
            raise TrtConfigError(f"calibration file {f} contains NaN or infinite values")
        samples.append(arr)
    data = np.concatenate(samples)
    n = data.shape[0]
    if n < batch:
        raise TrtConfigError(f"calibration needs at least {batch} samples (one batch of the opt batch size); "
                             f"{directory} holds {n}")
    usable = n - n % batch
    if usable != n:
        log.warning("calibration uses %d of %d samples: the last %d do not fill a batch of %d",
                    usable, n, n - usable, batch)
    return [np.ascontiguousarray(data[i:i + batch]) for i in range(0, usable, batch)]


def random_calibration_batches(input_shape: Sequence[int], batch: int, n_batches: int = 8,
                               seed: int = 0) -> list[np.ndarray]:
    """Seeded N(0,1) batches, used only when no --calib-data is given (see RANDOM_CALIBRATION_WARNING)."""
    shape = _check_sample_shape(input_shape)
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((batch, *shape), dtype=np.float32) for _ in range(n_batches)]


# --------------------------------------------------------------------------------------------
# GPU description helpers shared by the exporters and runners


def compute_capability_str(major: int, minor: int) -> str:
    return f"{int(major)}.{int(minor)}"


def dtype_name_to_numpy(name: str) -> np.dtype:
    """TensorRT DataType member name -> numpy dtype (for host buffers)."""
    table = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
             "BOOL": np.bool_, "UINT8": np.uint8}
    if name not in table:
        raise TrtConfigError(f"engine I/O of TensorRT type {name} is not supported by gsdeploy's runner")
    return np.dtype(table[name])
