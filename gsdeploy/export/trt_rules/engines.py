"""A built engine's record: its manifest, whether it can run on this TensorRT and GPU, the version
in a plan file's header."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, Sequence

from gsdeploy.errors import EngineCompatError
from gsdeploy.export.trt_rules.batches import profile_shapes
from gsdeploy.export.trt_rules.build_plan import BuildPlan
from gsdeploy.export.trt_rules.options import TrtBuildOptions
from gsdeploy.export.trt_rules.versions import parse_version


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
