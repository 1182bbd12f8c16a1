"""The user's TensorRT build settings (`TrtBuildOptions`), their version-independent checks, and
the error each precision may show against the fp32 module."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gsdeploy.errors import TrtConfigError
from gsdeploy.export.trt_rules.batches import BatchRange
from gsdeploy.export.trt_rules.calibration import RANDOM_CALIBRATION_WARNING
from gsdeploy.export.trt_rules.dla import check_dla_options


PRECISIONS = ("fp32", "fp16", "int8")


# Max relative error (gsdeploy.numerics.compare_outputs' max_rel_err) of an engine against the fp32 torch module. int8 has
# no pass/fail bound: its error depends on the calibration data, so it is measured and reported.
TOLERANCE: dict[str, float | None] = {"fp32": 1e-3, "fp16": 2e-2, "int8": None}


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
        warnings += check_dla_options(o.dla_core, o.precision, o.batch, o.gpu_fallback)
    if o.precision == "int8" and o.calib_data is None:
        warnings.append(RANDOM_CALIBRATION_WARNING)
    if o.calib_data is not None:
        if o.precision != "int8":
            warnings.append(f"--calib-data is only used for int8; ignored for {o.precision}")
        elif not (Path(o.calib_data).is_dir() or (Path(o.calib_data).is_file() and Path(o.calib_data).suffix == ".npz")):
            raise TrtConfigError(f"--calib-data {o.calib_data} is not a directory of .npy files or a .npz file")
    if o.timing_cache is not None:
        parent = Path(o.timing_cache).parent
        if not parent.is_dir():
            raise TrtConfigError(f"--timing-cache {o.timing_cache}: directory {parent} does not exist")
        if Path(o.timing_cache).is_dir():
            raise TrtConfigError(f"--timing-cache {o.timing_cache} is a directory; give a file name")
    return warnings


def within_tolerance(precision: str, error: float) -> bool:
    """int8 has no bound (reported only) but a non-finite output fails at every precision."""
    if not np.isfinite(error):
        return False
    tol = TOLERANCE[precision]
    return tol is None or error <= tol
