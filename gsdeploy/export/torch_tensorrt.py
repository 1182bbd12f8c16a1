"""`gsdeploy export --engine torch-trt`: compile the module with torch-tensorrt (dynamo path) and save it.

The result is a PyTorch program whose TensorRT subgraphs run as engines (unsupported ops stay in
PyTorch), saved as an ExportedProgram (.ep, the default format) or TorchScript (.ts). As with
`--engine trt`, the saved file is loaded back, checked against the fp32 module, and written with
its manifest only within tolerance.

torch-tensorrt 2.x changed how precision is asked for, so the keyword arguments are chosen from
the installed version's own `torch_tensorrt.dynamo.compile` signature:
- up to 2.9: weak typing; fp16 via enabled_precisions={torch.float16}.
- from 2.10: use_explicit_typing defaults to True and rejects enabled_precisions other than fp32;
  fp16 via enable_autocast=True, autocast_low_precision_type=torch.float16 (the replacement for
  TensorRT 11's removed weak typing).
  https://docs.pytorch.org/TensorRT/user_guide/compilation/compilation_settings.html
  https://docs.pytorch.org/TensorRT/contributors/autocast.html
  (checked in py/torch_tensorrt/dynamo/_compiler.py and _defaults.py at v2.5.0, v2.8.0, v2.10.0, v2.12.1)
Saving: torch_tensorrt.save(module, path, output_format=..., inputs=[example]) and
torch_tensorrt.load(path), present with these arguments from 2.5 on.
  https://docs.pytorch.org/TensorRT/user_guide/runtime_performance/saving_models.html
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import logging
import math
from pathlib import Path
from typing import Any, Collection, Sequence

import torch

from gsdeploy.errors import GsdeployError, MissingDependencyError, NumericMismatchError
from gsdeploy.errors import TrtConfigError
from gsdeploy.export.artifact import check_output_path, manifest_json, manifest_path, staged_artifact
from gsdeploy.export.tensorrt import cuda_device
from gsdeploy.export.trt_rules.batches import BatchRange, profile_shapes, verification_batches
from gsdeploy.export.trt_rules.options import TOLERANCE, within_tolerance
from gsdeploy.inputs import sample_inputs
from gsdeploy.numerics import compare_outputs

log = logging.getLogger(__name__)

TORCH_TRT_MISSING = ("torch-tensorrt is not installed: pip install 'gsdeploy[trt]' on a machine with an NVIDIA GPU "
                     "and CUDA (its version must match torch's; on Jetson use NVIDIA's wheel for your JetPack)")

OUTPUT_FORMATS = {".ep": "exported_program", ".ts": "torchscript"}


def require_torch_tensorrt():
    try:
        import torch_tensorrt  # optional: the trt extra
    except ImportError:
        raise MissingDependencyError(TORCH_TRT_MISSING) from None
    except OSError as e:  # the wheel's libtorchtrt or TensorRT libraries fail to load
        raise MissingDependencyError(f"{TORCH_TRT_MISSING} (import failed: {str(e).splitlines()[0]})") from None
    return torch_tensorrt


def output_format(path: Path) -> str:
    """torch_tensorrt.save's output_format for OUT.ep / OUT.ts."""
    fmt = OUTPUT_FORMATS.get(Path(path).suffix)
    if fmt is None:
        raise TrtConfigError(f"--engine torch-trt writes .ep (ExportedProgram) or .ts (TorchScript), got {path}")
    return fmt


def torch_trt_precision_kwargs(precision: str, compile_params: Collection[str]) -> dict[str, Any]:
    """Keyword arguments for torch_tensorrt.compile that give `precision` on the installed version,
    whose torch_tensorrt.dynamo.compile parameter names are `compile_params`.

    fp32 also disables TF32 (on by default in TensorRT) so "fp32" means fp32, as in `--engine trt`.
    int8 is refused: torch-tensorrt has no calibrator of its own; quantization comes from ModelOpt.
    """
    params = set(compile_params)
    if precision == "fp32":
        return {"disable_tf32": True} if "disable_tf32" in params else {}
    if precision == "fp16":
        if "enable_autocast" in params:
            return {"enable_autocast": True, "autocast_low_precision_type": torch.float16}
        if "enabled_precisions" in params:
            return {"enabled_precisions": {torch.float16}}
        raise TrtConfigError("this torch-tensorrt offers neither enable_autocast nor enabled_precisions: "
                             "cannot request fp16")
    if precision == "int8":
        raise TrtConfigError("torch-tensorrt int8 needs a module quantized with NVIDIA ModelOpt beforehand; use "
                             "`--engine trt --precision int8` (TensorRT 10.x calibrates from --calib-data) instead")
    raise TrtConfigError(f"precision must be fp32, fp16 or int8, got {precision!r}")


def export_torch_trt(module, input_shape, precision: str, batch: BatchRange, output: Path,
                     extra_manifest: dict[str, Any] | None = None, *,
                     workspace_mb: int | None = None, inputs: Sequence[Path] = ()) -> dict[str, Any]:
    """Compile `module` for batches in `batch`, save it, reload and verify it; write OUT.ep|.ts and
    OUT.manifest.json only if the reloaded program is within tolerance. `workspace_mb` bounds
    TensorRT's per-layer scratch memory (compile's workspace_size; None: TensorRT's default)."""
    output = Path(output)
    check_output_path(output, inputs)
    fmt = output_format(output)
    if precision == "int8":
        torch_trt_precision_kwargs(precision, ())  # raises the explanatory error before any GPU work
    tt = require_torch_tensorrt()

    gpu_name, cc = cuda_device()
    input_shape = tuple(int(d) for d in input_shape)
    mn, op, mx = profile_shapes(input_shape, batch)
    params = inspect.signature(tt.dynamo.compile).parameters
    kwargs = torch_trt_precision_kwargs(precision, params)
    if workspace_mb is not None:
        if isinstance(workspace_mb, bool) or not isinstance(workspace_mb, int) or workspace_mb < 1:
            raise TrtConfigError(f"workspace must be a positive number of MiB, got {workspace_mb!r}")
        kwargs["workspace_size"] = int(workspace_mb) << 20

    gpu_module = copy.deepcopy(module).eval().cuda()  # the caller's CPU module stays the fp32 reference
    if batch.static:
        spec = tt.Input(shape=op, dtype=torch.float32)
    else:  # a dynamic batch: one TensorRT profile per engine, tuned at opt
        spec = tt.Input(min_shape=mn, opt_shape=op, max_shape=mx, dtype=torch.float32)
    try:
        compiled = tt.compile(gpu_module, ir="dynamo", inputs=[spec], **kwargs)
    except Exception as e:  # noqa: BLE001 - converter/build failures come in many types
        raise GsdeployError(f"torch-tensorrt could not compile the model: {str(e).splitlines()[0][:300]}") from None

    with staged_artifact(output, inputs) as staged:
        tmp_model = staged.temp(output, keep_suffix=True)  # the savers/loaders pick the container by it
        example = torch.randn(op, device="cuda")
        tt.save(compiled, str(tmp_model), output_format=fmt, inputs=[example])
        loaded = tt.load(str(tmp_model))
        program = loaded.module() if hasattr(loaded, "module") and not isinstance(loaded, torch.nn.Module) else loaded
        rows, worst = [], 0.0
        for b in verification_batches(batch):
            for i, x in enumerate(sample_inputs(input_shape, b, seed=b)):
                with torch.no_grad():
                    ref = module(x).float().numpy()
                    out = program(x.cuda())
                out = (out[0] if isinstance(out, (tuple, list)) else out).float().cpu().numpy()
                err = compare_outputs(ref.reshape(b, -1), out.reshape(b, -1), tolerance=math.inf).max_rel_err
                rows.append({"batch": b, "input": ["noise", "image-like"][i] if i < 2 else str(i), "max_rel_err": err})
                worst = max(worst, err)
        verification = {"precision": precision, "tolerance": TOLERANCE[precision], "max_rel_err": worst,
                        "passed": within_tolerance(precision, worst), "checks": rows,
                        "metric": "max |program - torch| / max |torch| over each batch",
                        "reference": "torch fp32 on cpu", "checked": "the saved file, reloaded"}
        if not verification["passed"]:
            raise NumericMismatchError(
                f"torch-tensorrt {precision} program differs from the original: max relative error {worst:.3e} "
                f"exceeds tolerance {TOLERANCE[precision]:.0e}; nothing written")
        data = tmp_model.read_bytes()
        manifest: dict[str, Any] = dict(extra_manifest or {})
        manifest["artifact"] = {"engine": "torch-trt", "path": str(output), "format": fmt,
                                "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        manifest["precision"] = precision
        manifest["torch_tensorrt"] = {
            "version": str(tt.__version__), "tensorrt_version": _trt_version(),
            "gpu": {"name": gpu_name, "compute_capability": cc}, "ir": "dynamo",
            "compile_kwargs": {k: str(v) for k, v in kwargs.items()},
            "profile": {"min": list(mn), "opt": list(op), "max": list(mx)}}
        manifest["engine_vs_original"] = verification
        staged.write_text(manifest_path(output), manifest_json(manifest))
        staged.commit()
        return manifest


def _trt_version() -> str | None:
    try:
        import tensorrt  # optional: the trt extra

        return str(tensorrt.__version__)
    except Exception:  # noqa: BLE001 - recorded as unknown
        return None
