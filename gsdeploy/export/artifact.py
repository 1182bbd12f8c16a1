"""Artifacts on disk: the artifact + manifest pair (written through gsdeploy.atomic) and what the
manifest that travels beside each file says."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from gsdeploy import __version__
from gsdeploy.atomic import Staged, check_targets


def manifest_path(output: Path) -> Path:
    """OUT.onnx -> OUT.manifest.json (beside it)."""
    return output.with_name(output.stem + ".manifest.json")


def artifact_inputs(loaded) -> list[Path]:
    """The files an export reads, which its outputs must never replace."""
    source = getattr(loaded, "source", None)
    return [Path(source)] if source and Path(source).exists() else []


def check_output_path(output: Path, inputs: Iterable[Path] = ()) -> None:
    """Fail before any work if OUT or OUT.manifest.json cannot be written or would replace an input."""
    inputs = list(inputs)
    check_targets([output], inputs)  # first: '' or '/' name a directory and have no manifest name
    check_targets([output, manifest_path(output)], inputs)


def staged_artifact(output: Path, inputs: Iterable[Path] = ()) -> Staged:
    """OUT and OUT.manifest.json staged as one pair: both published, or neither."""
    return Staged([output, manifest_path(output)], inputs)


def manifest_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, default=str) + "\n"


def versions() -> dict[str, str | None]:
    import torch  # heavy: torch; the CLI imports this module before parsing

    out: dict[str, str | None] = {"gsdeploy": __version__, "torch": torch.__version__, "python": platform.python_version()}
    for name in ("onnx", "onnxruntime", "tensorrt", "torch_tensorrt"):
        try:
            out[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - absent or broken optional packages are recorded as None
            out[name] = None
    return out


def base_manifest(loaded, result, options) -> dict[str, Any]:
    """What every artifact's manifest says: where it came from, the plan, and how it was checked."""
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": {"name": loaded.name, "path": loaded.source, "sha256": loaded.sha256, "arch": loaded.arch},
        "input_shape": list(loaded.input_shape),
        "options": asdict(options),
        "macs": {"before": result.macs_before, "after": result.macs_after},
        "params": {"before": result.params_before, "after": result.params_after},
        "plan": [asdict(d) for d in result.plan],
        "kept_zero_channels": [asdict(k) for k in getattr(result, "kept_zeros", [])],
        "deployed_vs_original": asdict(result.verification),
        "deployed_vs_original_fp32": asdict(result.fp32_error) if result.fp32_error else None,
        "threshold_error": asdict(result.threshold_error) if result.threshold_error else None,
        "versions": versions(),
    }
