"""Artifacts on disk: atomic writes, output-path checks and the manifest that travels beside each file."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gsdeploy import __version__
from gsdeploy.errors import OutputPathError


def manifest_path(output: Path) -> Path:
    """OUT.onnx -> OUT.manifest.json (beside it)."""
    return output.with_name(output.stem + ".manifest.json")


def check_output_path(output: Path) -> None:
    parent = output.parent if str(output.parent) else Path(".")
    if output.is_dir():
        raise OutputPathError(f"output {output} is a directory; give a file name")
    if not parent.is_dir():
        raise OutputPathError(f"cannot write {output}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputPathError(f"cannot write {output}: directory {parent} is not writable")


def temp_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.tmp-{os.getpid()}")


def publish(files: dict[Path, Path]) -> None:
    """Move finished temp files to their final names; only called once everything verified."""
    for tmp, final in files.items():
        os.replace(tmp, final)


def discard(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")


def versions() -> dict[str, str | None]:
    import torch

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
        "deployed_vs_original": asdict(result.verification),
        "deployed_vs_original_fp32": asdict(result.fp32_error) if result.fp32_error else None,
        "threshold_error": asdict(result.threshold_error) if result.threshold_error else None,
        "versions": versions(),
    }
