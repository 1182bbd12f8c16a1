"""`gsdeploy export --engine trt`: verified ONNX -> TensorRT engine + manifest, or nothing.

The decisions (profile, flags per TensorRT version, DLA, manifest, compatibility) are made by the
pure functions in `trt_rules/`; this module applies them to the TensorRT Python API and owns
the GPU side: building, running the engine with torch CUDA tensors as buffers (no pycuda), and
checking it against the fp32 torch module before anything is written.

API pages relied on (TensorRT 10.x and 11.x Python API; behaviour cross-checked in the TensorRT
OSS bindings, python/src/infer/pyCore.cpp and python/docstrings/infer/pyCoreDoc.h at v10.16/v11.1):
- Builder/network/parser: Builder.create_network(flags), OnnxParser.parse(model, path),
  NetworkDefinitionCreationFlag.STRONGLY_TYPED ("Deprecated in TensorRT 11.0. Strongly typed mode
  is always enabled ... ignored").
- IBuilderConfig: set_memory_pool_limit(MemoryPoolType.WORKSPACE, bytes), set_flag/clear_flag,
  add_optimization_profile, default_device_type / DLA_core, int8_calibrator and
  set_calibration_profile (10.x only, deprecated since 10.1, removed in 11.0), create_timing_cache /
  set_timing_cache(cache, ignore_mismatch) / get_timing_cache.
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/BuilderConfig.html
- IOptimizationProfile.set_shape(input, min, opt, max): min <= opt <= max per dimension, fixed
  dimensions equal in all three.
  https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Core/OptimizationProfile.html
- Runtime.deserialize_cuda_engine, ICudaEngine.num_io_tensors/get_tensor_name/get_tensor_mode/
  get_tensor_dtype/get_tensor_profile_shape, IExecutionContext.set_input_shape/set_tensor_address/
  execute_async_v3(stream_handle) (use a non-default stream: the default one makes TensorRT add
  device-wide synchronisation).
- Migration 10.x -> 11.x (removed weak typing and calibration, ModelOpt AutoCast for fp16):
  https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-reference.html
  https://docs.nvidia.com/deeplearning/tensorrt/latest/api/migration/tensorrt-10x-to-11x-python-api-patterns.html
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from gsdeploy.atomic import write_bytes_atomic
from gsdeploy.errors import GsdeployError, MissingDependencyError, NumericMismatchError
from gsdeploy.errors import EngineCompatError, TrtConfigError
from gsdeploy.export.artifact import check_output_path, manifest_json, manifest_path, staged_artifact
from gsdeploy.export.trt_rules.batches import BatchRange, profile_shapes, verification_batches
from gsdeploy.export.trt_rules.build_plan import BuildPlan, build_plan
from gsdeploy.export.trt_rules.calibration import (RANDOM_CALIBRATION_WARNING, load_calibration_batches,
                                                   random_calibration_batches)
from gsdeploy.export.trt_rules.dla import check_dla_cores
from gsdeploy.export.trt_rules.engines import check_engine_compat, engine_manifest, plan_header_version
from gsdeploy.export.trt_rules.onnx_precision import onnx_precision_info
from gsdeploy.export.trt_rules.options import TOLERANCE, TrtBuildOptions, validate_options, within_tolerance
from gsdeploy.export.trt_rules.versions import compute_capability_str, parse_version
from gsdeploy.inputs import sample_inputs
from gsdeploy.numerics import compare_outputs

log = logging.getLogger(__name__)

TENSORRT_MISSING = ("TensorRT is not installed: pip install 'gsdeploy[trt]' on a machine with an NVIDIA GPU "
                    "and CUDA (on Jetson it ships with JetPack)")
CUDA_MISSING = ("TensorRT needs an NVIDIA GPU, and torch sees none here (torch.cuda.is_available() is False): "
                "run on a CUDA machine with a CUDA build of torch")
MODELOPT_MISSING = ("TensorRT 11 builds fp16 only from an fp16 ONNX (BuilderFlag.FP16 was removed): install NVIDIA "
                    "ModelOpt (pip install 'nvidia-modelopt[onnx]') so gsdeploy can convert it with AutoCast, "
                    "or use --precision fp32")

# TensorRT DataType member name -> torch dtype attribute, for engine I/O buffers.
_TORCH_DTYPE = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "INT32": "int32",
                "INT64": "int64", "BOOL": "bool", "UINT8": "uint8"}


def require_tensorrt():
    """The `tensorrt` module, or MissingDependencyError with the one line the CLI prints.

    TensorRT lives in the optional `trt` extra, so every entry point imports it through here.
    """
    try:
        import tensorrt  # optional: the trt extra
    except ImportError:  # not installed, or a wheel whose native libraries fail to load
        raise MissingDependencyError(TENSORRT_MISSING) from None
    except OSError as e:  # libnvinfer present but unloadable (driver / CUDA mismatch)
        raise MissingDependencyError(f"{TENSORRT_MISSING} (import failed: {str(e).splitlines()[0]})") from None
    return tensorrt


def cuda_device(index: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability 'M.m') of CUDA device `index`, via torch."""
    if not torch.cuda.is_available():
        raise MissingDependencyError(CUDA_MISSING)
    props = torch.cuda.get_device_properties(index)
    return props.name, compute_capability_str(props.major, props.minor)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _make_logger(trt):
    """A TensorRT ILogger that keeps errors (to put in our one-line messages) and forwards
    warnings to Python logging; INFO/VERBOSE chatter is dropped."""

    class _Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)  # required for Python subclasses (ILogger docs)
            self.errors: list[str] = []

        def log(self, severity, msg) -> None:  # noqa: ANN001 - TensorRT's signature
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(str(msg))
                log.debug("TensorRT error: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                log.info("TensorRT: %s", msg)

        def last_errors(self, n: int = 3) -> str:
            return " | ".join(self.errors[-n:]) or "no error message from TensorRT"

    return _Logger()


def _make_calibrator(trt, batches: list[np.ndarray], device: int):
    """IInt8EntropyCalibrator2 over pre-loaded batches, fed through one torch CUDA buffer.

    EntropyCalibrator2 is NVIDIA's preferred calibrator for CNNs and the one DLA requires. The
    Python get_batch returns a list of device pointers (one per input) or None when done; in
    explicit-batch networks the batch shape is the calibration profile's opt shape, which is
    why every batch has the same size. No calibration cache is read: a cache from other data or
    another model would silently change the scales.
    https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/Int8/Calibrator.html
    """
    base = getattr(trt, "IInt8EntropyCalibrator2", None)
    if base is None:  # build_plan already refuses this; kept so the error is clear if called directly
        raise TrtConfigError("this TensorRT has no IInt8EntropyCalibrator2: build from a Q/DQ ONNX instead")

    class _Calibrator(base):
        def __init__(self) -> None:
            base.__init__(self)  # pybind11 trampolines need the base constructor called explicitly
            self._batches = batches
            self._next = 0
            self._buffer = torch.empty(batches[0].shape, dtype=torch.float32, device=f"cuda:{device}")
            self.cache_bytes = 0

        def get_batch_size(self) -> int:
            return int(self._batches[0].shape[0])

        def get_batch(self, names):  # noqa: ANN001
            if self._next >= len(self._batches):
                return None
            self._buffer.copy_(torch.from_numpy(self._batches[self._next]))
            torch.cuda.synchronize(self._buffer.device)  # TensorRT reads it on its own stream
            self._next += 1
            return [int(self._buffer.data_ptr())] * len(names)

        def read_calibration_cache(self):
            return None

        def write_calibration_cache(self, cache) -> None:  # noqa: ANN001
            self.cache_bytes = len(memoryview(cache))

    return _Calibrator()


def _autocast_fp16(onnx_path: Path) -> bytes:
    """fp32 ONNX -> mixed-precision fp16 ONNX with ModelOpt AutoCast, TensorRT 11's documented
    replacement for BuilderFlag.FP16 (keep_io_types keeps the engine's I/O in fp32)."""
    try:
        import modelopt.onnx.autocast as autocast  # optional: NVIDIA ModelOpt, not a dependency
    except ImportError:
        raise MissingDependencyError(MODELOPT_MISSING) from None
    model = autocast.convert_to_mixed_precision(onnx_path=str(onnx_path), low_precision_type="fp16",
                                                keep_io_types=True)
    return model.SerializeToString()


@dataclass
class BuiltEngine:
    blob: bytes
    plan: BuildPlan
    trt_version: str
    gpu_name: str
    compute_capability: str
    input_name: str
    onnx_sha256: str
    built_onnx_sha256: str
    timing_cache: bytes | None
    calibration: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)


def _check_network_input(network, input_shape: tuple[int, ...], batch: BatchRange):
    if network.num_inputs != 1:
        raise GsdeployError(f"gsdeploy builds single-input models; this ONNX has {network.num_inputs} inputs")
    inp = network.get_input(0)
    dims = tuple(int(d) for d in inp.shape)
    if len(dims) != len(input_shape) + 1:
        raise TrtConfigError(f"the ONNX input {inp.name} has shape {dims}; expected (batch, {input_shape})")
    for d, want in zip(dims[1:], input_shape):
        if d not in (-1, want):
            raise TrtConfigError(f"the ONNX input {inp.name} has shape {dims}; expected (batch, *{input_shape})")
    if dims[0] != -1 and not (batch.static and batch.min == dims[0]):
        raise TrtConfigError(f"the ONNX has a fixed batch of {dims[0]} but batch {batch} was asked for: export "
                             "the ONNX with a dynamic batch axis (gsdeploy's ONNX export does)")
    return inp


def _build(onnx_path: Path, input_shape: Sequence[int], opts: TrtBuildOptions, device: int = 0) -> BuiltEngine:
    validate_options(opts)
    trt = require_tensorrt()

    gpu_name, cc = cuda_device(device)
    torch.cuda.set_device(device)  # TensorRT builds for the current CUDA device
    input_shape = tuple(int(d) for d in input_shape)
    onnx_path = Path(onnx_path)
    version = str(trt.__version__)
    info = onnx_precision_info(onnx_path)
    plan = build_plan(opts, version, info, has_calibrator_api=hasattr(trt, "IInt8EntropyCalibrator2"))
    # The random-calibration warning only applies when calibration really runs (not for Q/DQ models).
    warnings = [w for w in validate_options(opts) if plan.calibrate or w != RANDOM_CALIBRATION_WARNING]
    warnings += [w for w in plan.warnings if w not in warnings]
    for w in warnings:
        log.warning("WARNING: %s" if w == RANDOM_CALIBRATION_WARNING else "%s", w)

    original = onnx_path.read_bytes()
    onnx_bytes = _autocast_fp16(onnx_path) if plan.autocast_fp16 else original

    logger = _make_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    if plan.strongly_typed and int(parse_version(version)[0]) < 11:
        # 10.x: opt in to strong typing. 11.x: always strongly typed, the flag is deprecated and ignored.
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes, str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise GsdeployError(f"TensorRT could not parse {onnx_path}: {' | '.join(errors[:3]) or logger.last_errors()}")
    inp = _check_network_input(network, input_shape, opts.batch)

    config = builder.create_builder_config()
    # The workspace pool bounds the scratch memory any one layer's tactic may use; tactics that
    # need more are skipped rather than failing the build.
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(opts.workspace_mb) << 20)
    if opts.builder_optimization_level is not None:
        config.builder_optimization_level = int(opts.builder_optimization_level)
    for name in plan.set_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.clear_flags:
        if hasattr(trt.BuilderFlag, name):
            config.clear_flag(getattr(trt.BuilderFlag, name))

    mn, op, mx = profile_shapes(input_shape, opts.batch)
    profile = builder.create_optimization_profile()
    profile.set_shape(inp.name, mn, op, mx)
    if config.add_optimization_profile(profile) < 0:
        raise TrtConfigError(f"TensorRT rejected the optimisation profile {mn}..{mx} (opt {op})")

    if plan.device == "DLA":
        check_dla_cores(int(opts.dla_core), int(builder.num_DLA_cores), gpu_name)
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(opts.dla_core)

    calibrator = None
    calibration: dict[str, Any] | None = None
    if plan.calibrate:
        if opts.calib_data is not None:
            batches = load_calibration_batches(opts.calib_data, input_shape, opts.batch.opt)
            source = str(opts.calib_data)
        else:
            batches = random_calibration_batches(input_shape, opts.batch.opt)
            source = "random"  # warned above, loudly, and recorded in the manifest
        calibrator = _make_calibrator(trt, batches, device)
        config.int8_calibrator = calibrator
        # Networks with runtime dimensions need a calibration profile; TensorRT overwrites its
        # min and max with opt, so calibration runs at the opt batch (set_calibration_profile doc).
        cal_profile = builder.create_optimization_profile()
        cal_profile.set_shape(inp.name, op, op, op)
        config.set_calibration_profile(cal_profile)
        calibration = {"algorithm": "IInt8EntropyCalibrator2", "source": source, "batches": len(batches),
                       "batch": opts.batch.opt, "samples": len(batches) * opts.batch.opt,
                       "representative": source != "random"}
    elif plan.precision == "int8":
        calibration = {"algorithm": "explicit Q/DQ in the ONNX", "source": "model", "representative": True}

    timing_cache_in = b""
    if opts.timing_cache is not None:
        path = Path(opts.timing_cache)
        if path.exists():
            timing_cache_in = path.read_bytes()
        cache = config.create_timing_cache(timing_cache_in)
        if cache is None:
            raise TrtConfigError(f"--timing-cache {path} is not a TensorRT timing cache")
        # ignore_mismatch=False: a cache recorded on another GPU/TensorRT is refused rather than
        # silently feeding wrong timings into tactic selection (set_timing_cache doc).
        if not config.set_timing_cache(cache, False):
            raise TrtConfigError(f"--timing-cache {path} was recorded on another GPU or TensorRT version and cannot "
                                 "be reused here: delete it or pass another path")

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise GsdeployError(f"TensorRT failed to build the engine: {logger.last_errors()}")
    blob = bytes(memoryview(serialized))
    timing_cache_out = None
    if opts.timing_cache is not None:
        timing_cache_out = bytes(memoryview(config.get_timing_cache().serialize()))
    if calibrator is not None:
        calibration["cache_bytes"] = calibrator.cache_bytes
    return BuiltEngine(blob=blob, plan=plan, trt_version=version, gpu_name=gpu_name, compute_capability=cc,
                       input_name=inp.name, onnx_sha256=_sha256(original), built_onnx_sha256=_sha256(onnx_bytes),
                       timing_cache=timing_cache_out, calibration=calibration, warnings=warnings)


def build_engine(onnx_path: Path, input_shape: Sequence[int], opts: TrtBuildOptions) -> bytes:
    """Build a serialized engine (plan) from an ONNX file; the timing cache, if asked for, is
    updated. Use `export_trt` for the verified artifact with its manifest."""
    built = _build(onnx_path, input_shape, opts)
    if opts.timing_cache is not None and built.timing_cache:
        write_bytes_atomic(Path(opts.timing_cache), built.timing_cache)
    return built.blob


# --------------------------------------------------------------------------------------------
# running an engine


class TrtEngine:
    """A deserialized engine with one execution context whose buffers are torch CUDA tensors."""

    def __init__(self, blob: bytes, device: int = 0) -> None:
        trt = require_tensorrt()

        self._trt, self._torch = trt, torch
        self.gpu_name, self.compute_capability = cuda_device(device)
        self.device = torch.device("cuda", device)
        torch.cuda.set_device(self.device)
        self._logger = _make_logger(trt)  # must outlive the runtime and engine
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise EngineCompatError(f"TensorRT {trt.__version__} could not load this engine on {self.gpu_name}: "
                                    f"{self._logger.last_errors()}")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise GsdeployError(f"TensorRT could not create an execution context: {self._logger.last_errors()}")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in inputs]
        if len(inputs) != 1 or not self.output_names:
            raise GsdeployError(f"expected an engine with one input and some outputs, got inputs {inputs}")
        self.input_name = inputs[0]
        shape = tuple(int(d) for d in self.engine.get_tensor_shape(self.input_name))
        self.sample_shape = shape[1:]
        if shape[0] == -1:
            mn, op, mx = self.engine.get_tensor_profile_shape(self.input_name, 0)
            self.batch = BatchRange(int(mn[0]), int(op[0]), int(mx[0]))
        else:
            self.batch = BatchRange(shape[0], shape[0], shape[0])
        self.stream = torch.cuda.Stream(device=self.device)
        self.bound_batch: int | None = None
        self.input: Any = None
        self.outputs: dict[str, Any] = {}

    def _dtype(self, name: str):
        dt = self.engine.get_tensor_dtype(name).name
        if dt not in _TORCH_DTYPE:
            raise GsdeployError(f"engine tensor {name} has type {dt}, which gsdeploy's runner does not handle")
        return getattr(self._torch, _TORCH_DTYPE[dt])

    def bind(self, batch: int) -> None:
        """Set the input shape and allocate/bind device buffers for `batch` (no-op if bound)."""
        if batch == self.bound_batch:
            return
        if not self.batch.contains(batch):
            raise TrtConfigError(f"batch {batch} is outside this engine's profile {self.batch}: rebuild with "
                                 f"a batch range that includes it")
        torch = self._torch
        full = (batch, *self.sample_shape)
        if not self.context.set_input_shape(self.input_name, full):
            raise GsdeployError(f"TensorRT refused input shape {full}: {self._logger.last_errors()}")
        self.input = torch.empty(full, dtype=self._dtype(self.input_name), device=self.device)
        self.outputs = {}
        for name in self.output_names:
            oshape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in oshape):
                raise GsdeployError(f"output {name} has data-dependent shape {oshape}; not supported")
            self.outputs[name] = torch.empty(oshape, dtype=self._dtype(name), device=self.device)
        for name, tensor in [(self.input_name, self.input), *self.outputs.items()]:
            if not self.context.set_tensor_address(name, tensor.data_ptr()):
                raise GsdeployError(f"TensorRT refused the buffer for {name}: {self._logger.last_errors()}")
        self.bound_batch = batch

    def execute(self) -> None:
        """Enqueue one inference on `self.stream` (asynchronous)."""
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise GsdeployError(f"TensorRT inference failed: {self._logger.last_errors()}")

    def infer(self, x: np.ndarray) -> list[np.ndarray]:
        """Host in, host out (fp32 numpy for floating outputs), synchronously."""
        torch = self._torch
        x = np.ascontiguousarray(x)
        if tuple(x.shape[1:]) != self.sample_shape:
            raise TrtConfigError(f"input shape {x.shape} does not fit the engine's (batch, {self.sample_shape})")
        self.bind(int(x.shape[0]))
        host = torch.from_numpy(x).to(self.input.dtype)
        with torch.cuda.stream(self.stream):
            self.input.copy_(host)
            self.execute()
            outs = [self.outputs[n].float() if self.outputs[n].is_floating_point() else self.outputs[n]
                    for n in self.output_names]
            host_outs = [o.to("cpu", non_blocking=False) for o in outs]
        self.stream.synchronize()
        return [o.numpy() for o in host_outs]

    def close(self) -> None:
        self.outputs = {}
        self.input = None
        self.context = None
        self.engine = None


def load_engine(path: Path, device: int = 0) -> tuple[TrtEngine, dict[str, Any] | None]:
    """Load OUT.engine after checking, from OUT.manifest.json, that it was built by this TensorRT
    for this GPU (TensorRT has no compatibility preflight: a foreign plan fails deep inside
    deserialisation with a cryptic message, or not at all). Without a manifest, the version in
    the plan header is checked instead."""
    trt = require_tensorrt()
    path = Path(path)
    if not path.is_file():
        raise GsdeployError(f"engine file {path} does not exist")
    gpu_name, cc = cuda_device(device)
    blob = path.read_bytes()
    manifest = None
    mpath = manifest_path(path)
    if mpath.is_file():
        manifest = json.loads(mpath.read_text())
        for w in check_engine_compat(manifest, str(trt.__version__), gpu_name, cc):
            log.warning("%s", w)
    else:
        built = plan_header_version(blob)
        if built is not None:
            check_engine_compat({"version": built, "gpu": {}}, str(trt.__version__), gpu_name, cc)
        log.warning("no manifest beside %s: cannot check which GPU it was built for", path)
    return TrtEngine(blob, device), manifest


# --------------------------------------------------------------------------------------------
# export


def verify_engine(engine: TrtEngine, reference_module, input_shape: Sequence[int], precision: str,
                  batches: BatchRange) -> dict[str, Any]:
    """Engine vs the fp32 torch module on the project's deterministic inputs, at the ends and the
    opt point of the profile. The reference runs where the module lives (the CPU for loaded
    models), in fp32, so TF32 on the GPU cannot leak into it."""
    ref_device = next((p.device for p in reference_module.parameters()), torch.device("cpu"))
    rows, worst = [], 0.0
    for b in verification_batches(batches):
        for i, x in enumerate(sample_inputs(tuple(input_shape), b, seed=b)):
            with torch.no_grad():
                ref = reference_module(x.to(ref_device).float()).float().cpu().numpy()
            out = engine.infer(x.numpy())[0]
            err = compare_outputs(ref.reshape(b, -1), out.reshape(b, -1), tolerance=math.inf).max_rel_err
            rows.append({"batch": b, "input": ["noise", "image-like"][i] if i < 2 else str(i), "max_rel_err": err})
            worst = max(worst, err)
    return {"precision": precision, "tolerance": TOLERANCE[precision], "max_rel_err": worst,
            "passed": within_tolerance(precision, worst), "checks": rows,
            "metric": "max |engine - torch| / max |torch| over each batch",
            "reference": f"torch fp32 on {ref_device}"}


def export_trt(reference_module, onnx_path: Path, input_shape: Sequence[int], opts: TrtBuildOptions, output: Path,
               extra_manifest: dict[str, Any] | None = None, inputs: Sequence[Path] = ()) -> dict[str, Any]:
    """Build, run and check the engine; write OUT.engine and OUT.manifest.json (atomically,
    together) only when it is within the precision's tolerance. Any failure writes nothing,
    and the timing cache is only updated after a successful export."""
    output = Path(output)
    inputs = [*inputs, Path(onnx_path)]
    check_output_path(output, inputs)
    validate_options(opts)  # option errors first: before any GPU work
    require_tensorrt()
    cuda_device()
    input_shape = tuple(int(d) for d in input_shape)
    built = _build(Path(onnx_path), input_shape, opts)
    engine = TrtEngine(built.blob)
    try:
        verification = verify_engine(engine, reference_module, input_shape, opts.precision, opts.batch)
    finally:
        engine.close()
    if not verification["passed"]:
        bad = max(verification["checks"], key=lambda r: r["max_rel_err"])
        raise NumericMismatchError(
            f"TensorRT {opts.precision} engine differs from the original: max relative error "
            f"{verification['max_rel_err']:.3e} exceeds tolerance {verification['tolerance']:.0e} "
            f"(batch {bad['batch']}, {bad['input']} input); nothing written")
    if opts.precision == "int8":
        log.warning("int8 engine: max relative error vs fp32 is %.3e (reported, no pass/fail bound)",
                    verification["max_rel_err"])
    manifest = engine_manifest(
        opts=opts, plan=built.plan, input_name=built.input_name, input_shape=input_shape,
        trt_version=built.trt_version, gpu_name=built.gpu_name, compute_capability=built.compute_capability,
        onnx_sha256=built.onnx_sha256, built_onnx_sha256=built.built_onnx_sha256, engine_sha256=_sha256(built.blob),
        engine_bytes=len(built.blob), verification=verification, warnings=built.warnings, output=output,
        calibration=built.calibration, extra=extra_manifest)
    with staged_artifact(output, inputs) as staged:
        staged.write_bytes(output, built.blob)
        staged.write_text(manifest_path(output), manifest_json(manifest))
        staged.commit()
    if opts.timing_cache is not None and built.timing_cache:
        write_bytes_atomic(Path(opts.timing_cache), built.timing_cache)
    return manifest


def runtime_trt_version() -> str | None:
    """Installed TensorRT version, or None (never raises: for environment records)."""
    try:
        return str(require_tensorrt().__version__)
    except MissingDependencyError:
        return None


__all__ = ["BuiltEngine", "CUDA_MISSING", "TENSORRT_MISSING", "TrtEngine", "build_engine", "cuda_device",
           "export_trt", "load_engine", "parse_version", "require_tensorrt", "runtime_trt_version", "verify_engine"]
