"""DLA's rules (documented limits; which TensorRT releases have it; how many cores a device has)."""

from __future__ import annotations

from gsdeploy.errors import TrtConfigError
from gsdeploy.export.trt_rules.batches import BatchRange
from gsdeploy.export.trt_rules.versions import parse_version


# DLA's documented hard limit on the batch dimension.
DLA_MAX_BATCH = 4096


def check_dla_options(dla_core: int, precision: str, batch: BatchRange, gpu_fallback: bool) -> list[str]:
    """DLA's own rules for a build on core `dla_core`: errors raise TrtConfigError, warnings are returned."""
    if isinstance(dla_core, bool) or not isinstance(dla_core, int) or dla_core < 0:
        raise TrtConfigError(f"--dla-core must be a DLA core index (0, 1, ...), got {dla_core!r}")
    if precision == "fp32":
        raise TrtConfigError("DLA supports fp16 and int8 only: use --precision fp16 or int8 with --dla-core")
    if not batch.static:
        raise TrtConfigError(
            f"DLA does not support dynamic shapes (profile min, opt and max must be equal), got batch {batch}: "
            "give a single --batch N for a DLA engine")
    if batch.max > DLA_MAX_BATCH:
        raise TrtConfigError(f"DLA supports batches up to {DLA_MAX_BATCH}, got {batch.max}")
    return [] if gpu_fallback else ["DLA without --gpu-fallback: the build fails if any layer cannot run on DLA"]


def check_dla_cores(dla_core: int, available: int, gpu_name: str) -> None:
    """builder.num_DLA_cores is the authority on whether this device has DLA at all."""
    if available <= 0:
        raise TrtConfigError(
            f"--dla-core {dla_core}: {gpu_name} has no DLA cores visible to TensorRT (DLA exists on Jetson "
            "AGX Orin/Xavier and Orin NX; TensorRT with DLA: JetPack's 10.x up to 10.7, or 11.4.1+ on JetPack 7.2.2+)")
    if dla_core >= available:
        raise TrtConfigError(f"--dla-core {dla_core}: this device has {available} DLA core(s), "
                             f"use 0..{available - 1}")


def dla_release_warning(trt_version: str) -> str | None:
    """A warning when NVIDIA lists no DLA support for this TensorRT release, else None."""
    v = parse_version(trt_version) + (0, 0, 0)
    if (10, 8) <= v[:2] < (11, 0) or (11, 0, 0) <= v[:3] < (11, 4, 1):
        return (f"NVIDIA lists no DLA support in TensorRT {trt_version} (10.7 was the last 10.x release "
                "with DLA; 11.x has it again from 11.4.1 on Jetson AGX Orin with JetPack 7.2.2+)")
    return None
