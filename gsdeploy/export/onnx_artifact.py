"""`gsdeploy export --engine onnx`: deployed module -> verified .onnx + manifest, or nothing."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gsdeploy.errors import NumericMismatchError
from gsdeploy.export.artifact import (base_manifest, check_output_path, discard, manifest_path, publish, temp_path,
                                      write_json)
from gsdeploy.export.onnx import check_onnx, export_onnx


def write_onnx_artifact(loaded, result, options, output: Path) -> dict[str, Any]:
    check_output_path(output)
    tmp, tmp_manifest = temp_path(output), temp_path(manifest_path(output))
    try:
        exporter = export_onnx(result.module, loaded.input_shape, tmp)
        result_check = check_onnx(tmp, loaded.module, loaded.input_shape)
        check = result_check.verification
        if not check.passed:
            raise NumericMismatchError(
                f"ONNX model in ONNX Runtime differs from the original: max relative error {check.max_rel_err:.3e} "
                f"exceeds tolerance {check.tolerance:.0e} (max abs {check.max_abs_err:.3e}); nothing written")
        manifest = base_manifest(loaded, result, options)
        manifest["artifact"] = {"engine": "onnx", "path": str(output), "exporter": exporter,
                                "sha256": hashlib.sha256(tmp.read_bytes()).hexdigest(),
                                "bytes": tmp.stat().st_size, "dynamic_batch": True}
        manifest["onnx_vs_original"] = asdict(check) | {
            "runtime": "onnxruntime CPUExecutionProvider", "reference": "original module in float64",
            "original_fp32_rel_err": result_check.original_fp32_rel_err, "tolerance_rule": result_check.tolerance_rule}
        write_json(tmp_manifest, manifest)
        publish({tmp: output, tmp_manifest: manifest_path(output)})
        return manifest
    finally:
        discard(tmp, tmp_manifest)
