"""`gsdeploy export --engine onnx`: deployed module -> verified .onnx + manifest, or nothing."""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gsdeploy.accuracy import check_drop, evaluate
from gsdeploy.atomic import scratch_dir
from gsdeploy.errors import NumericMismatchError
from gsdeploy.export.artifact import artifact_inputs, base_manifest, manifest_json, manifest_path, staged_artifact
from gsdeploy.export.onnx import check_onnx, export_onnx
from gsdeploy.export.reduced import make_reduced


def write_onnx_artifact(loaded, result, options, output: Path, precision=None, inputs=None) -> dict[str, Any]:
    """`precision` (a reduced.PrecisionRequest) and `inputs` (its checked PrecisionInputs) ask
    for an fp16 or int8 artifact and/or an accuracy check; without them, plain fp32."""
    reduced = precision is not None and precision.precision != "fp32"
    data_files = [Path(p) for p in (getattr(precision, "calib_data", None), getattr(precision, "eval_data", None)) if p]
    with staged_artifact(output, artifact_inputs(loaded) + data_files) as staged, scratch_dir("onnx") as scratch:
        # The fp32 ONNX is the artifact itself, or the scratch input of the reduced one.
        tmp = scratch / "fp32.onnx" if reduced else staged.temp(output)
        written = export_onnx(result.module, loaded.input_shape, tmp)
        result_check = check_onnx(tmp, result.reference, loaded.input_shape)
        check = result_check.verification
        if not check.passed:
            raise NumericMismatchError(
                f"ONNX model in ONNX Runtime differs from {_against(options)}: max relative error "
                f"{check.max_rel_err:.3e} exceeds tolerance {check.tolerance:.0e} (max abs {check.max_abs_err:.3e}); "
                "nothing written")
        manifest = base_manifest(loaded, result, options)
        final = tmp
        if reduced:
            final = staged.temp(output)
            manifest["precision"] = make_reduced(tmp, final, loaded.module, tuple(loaded.input_shape),
                                                 precision, inputs)
            manifest["precision"]["fp32_sha256"] = hashlib.sha256(tmp.read_bytes()).hexdigest()
        elif inputs is not None and inputs.evaluation is not None:
            report = evaluate(loaded.module, {"fp32": tmp}, inputs.evaluation)
            manifest["precision"] = {"precision": "fp32", "accuracy": report.to_dict() | {
                "max_drop_pts": precision.max_accuracy_drop}}
            check_drop(report, "fp32", precision.max_accuracy_drop)
        manifest["artifact"] = {"engine": "onnx", "path": str(output), "exporter": written.exporter,
                                "nodes": {"exported": written.nodes_exported, "after_folding": written.nodes,
                                          "folding": written.folding},
                                "precision": precision.precision if precision is not None else "fp32",
                                "sha256": hashlib.sha256(final.read_bytes()).hexdigest(),
                                "bytes": final.stat().st_size, "dynamic_batch": True}
        manifest["onnx_vs_original"] = asdict(check) | {
            "runtime": "onnxruntime CPUExecutionProvider", "reference": f"{_against(options)} in float64",
            "original_fp32_rel_err": result_check.original_fp32_rel_err, "tolerance_rule": result_check.tolerance_rule}
        staged.write_text(manifest_path(output), manifest_json(manifest))
        staged.commit()
        return manifest


def _against(options) -> str:
    """What the ONNX is checked against: with --prune-threshold, the original with its small groups
    zeroed (the threshold's own error is reported separately, as threshold_error)."""
    return "the thresholded original" if getattr(options, "prune_threshold", None) is not None else "the original"
