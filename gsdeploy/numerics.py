"""Numerics: one home for comparing outputs and for the verdict a comparison gives.

`compare_outputs` knows nothing about where outputs came from (torch, ONNX Runtime,
TensorRT), so the deploy verification and every export check use it. The error is relative
to the output scale, max|y - y_ref| / max|y_ref|, which stays meaningful for logits near zero
(element-wise relative error explodes there); a non-finite candidate gives +inf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import torch

from gsdeploy.errors import GsdeployError


class OutputMismatchError(GsdeployError, ValueError):
    """Two outputs cannot be compared: different numbers of outputs or different shapes."""


@dataclass
class Verification:
    max_abs_err: float
    max_rel_err: float  # max|y - y_ref| / max|y_ref|   (relative to output scale)
    tolerance: float
    passed: bool

    def describe(self) -> str:
        return (f"max relative error {self.max_rel_err:.1e} "
                f"{'within' if self.passed else 'exceeds'} tolerance {self.tolerance:.0e} "
                f"(max abs {self.max_abs_err:.1e})")


def output_arrays(out: Any) -> list[np.ndarray]:
    """Tensors/arrays of a (possibly nested) output, in order, as float64 numpy arrays."""
    if isinstance(out, torch.Tensor):
        return [out.detach().cpu().double().numpy()]
    if isinstance(out, np.ndarray):
        return [out.astype(np.float64)]
    if isinstance(out, dict):
        return [a for k in out for a in output_arrays(out[k])]
    if isinstance(out, (list, tuple)):
        return [a for o in out for a in output_arrays(o)]
    if isinstance(out, (int, float)):
        return [np.asarray(out, dtype=np.float64)]
    raise TypeError(f"cannot compare output of type {type(out).__name__}")


def compare_outputs(reference: Any, candidate: Any, tolerance: float) -> Verification:
    """Max abs and max relative (to max|reference|) error between two outputs of the same structure."""
    refs, cands = output_arrays(reference), output_arrays(candidate)
    if len(refs) != len(cands):
        raise OutputMismatchError(f"reference has {len(refs)} outputs, candidate {len(cands)}")
    max_abs = max_rel = 0.0
    for r, c in zip(refs, cands):
        if r.shape != c.shape:
            raise OutputMismatchError(f"output shapes differ: reference {r.shape}, candidate {c.shape}")
        if r.size == 0:
            continue
        diff = np.abs(r - c)
        abs_err = float(np.nanmax(diff)) if not np.isnan(diff).any() else float("inf")
        scale = float(np.max(np.abs(r)))
        rel_err = abs_err / scale if scale > 0 else (0.0 if abs_err == 0 else float("inf"))
        max_abs, max_rel = max(max_abs, abs_err), max(max_rel, rel_err)
    return Verification(max_abs_err=max_abs, max_rel_err=max_rel, tolerance=tolerance,
                        passed=bool(max_rel <= tolerance))


def merge(results: Iterable[Verification], tolerance: float) -> Verification:
    results = list(results)
    max_abs = max((r.max_abs_err for r in results), default=0.0)
    max_rel = max((r.max_rel_err for r in results), default=0.0)
    return Verification(max_abs, max_rel, tolerance, bool(max_rel <= tolerance))
