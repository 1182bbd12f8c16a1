"""Numerics are a contract: compare a candidate against a reference on random inputs.

`compare_outputs` knows nothing about where outputs came from (torch, ONNX Runtime,
TensorRT), so export checks reuse it. The error is relative to the output scale,
max|y - y_ref| / max|y_ref|, which stays meaningful for logits near zero.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from gsdeploy.transforms.plan import Verification


def _flatten(out: Any) -> list[np.ndarray]:
    """Tensors/arrays of a (possibly nested) output, in order, as float64 numpy arrays."""
    if isinstance(out, torch.Tensor):
        return [out.detach().cpu().double().numpy()]
    if isinstance(out, np.ndarray):
        return [out.astype(np.float64)]
    if isinstance(out, dict):
        return [a for k in out for a in _flatten(out[k])]
    if isinstance(out, (list, tuple)):
        return [a for o in out for a in _flatten(o)]
    if isinstance(out, (int, float)):
        return [np.asarray(out, dtype=np.float64)]
    raise TypeError(f"cannot compare output of type {type(out).__name__}")


def compare_outputs(reference: Any, candidate: Any, tolerance: float) -> Verification:
    """Max abs and max relative (to max|reference|) error between two outputs of the same structure."""
    refs, cands = _flatten(reference), _flatten(candidate)
    if len(refs) != len(cands):
        raise ValueError(f"reference has {len(refs)} outputs, candidate {len(cands)}")
    max_abs = max_rel = 0.0
    for r, c in zip(refs, cands):
        if r.shape != c.shape:
            raise ValueError(f"output shapes differ: reference {r.shape}, candidate {c.shape}")
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


def image_like(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Smooth low-frequency noise plus a per-channel offset: closer to real images than randn.

    Real inputs are spatially correlated and have a non-zero channel mean; plain randn hides
    errors that only show with large, smooth activations (e.g. a wrong folded bias).
    """
    if len(shape) == 4:
        n, c, h, w = shape
        coarse = torch.randn(n, c, max(1, h // 8), max(1, w // 8), generator=generator)
        smooth = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
        offset = torch.randn(1, c, 1, 1, generator=generator) * 0.5
        return smooth + offset + 0.1 * torch.randn(shape, generator=generator)
    offset = torch.randn((1, *shape[1:]), generator=generator) * 0.5
    return offset + 0.5 * torch.randn(shape, generator=generator)


def make_inputs(input_shape: tuple[int, ...], batches: int, seed: int, batch_size: int = 2) -> list[torch.Tensor]:
    """For each batch, one plain randn input and one image-like input (fixed seed)."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch_size, *input_shape)
    xs: list[torch.Tensor] = []
    for _ in range(max(1, batches)):
        xs.append(torch.randn(shape, generator=g))
        xs.append(image_like(shape, g))
    return xs


def _batch_size_for(module: nn.Module, x: torch.Tensor) -> int:
    # Modules from torch.export are often specialised to batch 1; test with 2 where possible
    # so that batch-mixing bugs show, else fall back to 1.
    try:
        with torch.no_grad():
            module(torch.cat([x, x]))
        return 2
    except Exception:  # noqa: BLE001 - any failure means batch 2 is not accepted
        return 1


def _in_dtype(module: nn.Module, dtype: torch.dtype, probe: torch.Tensor) -> nn.Module | None:
    """A copy of `module` in `dtype` that runs on `probe`, or None (then compare in float32)."""
    if all(p.dtype == dtype for p in module.parameters()):
        return module
    try:
        m = copy.deepcopy(module).to(dtype)
        with torch.no_grad():
            m(probe.to(dtype))
        return m
    except Exception:  # noqa: BLE001 - graphs with dtype-specific ops stay in float32
        return None


def verify_modules(reference: nn.Module, candidate: nn.Module, input_shape: tuple[int, ...], batches: int = 2,
                   seed: int = 0, tolerance: float = 1e-5, *, dtype: torch.dtype = torch.float64) -> Verification:
    """Run both modules on the same random inputs (randn and image-like) and compare outputs.

    By default both run in float64 (on copies): that measures what a transform changed in the
    function, not the float32 rounding that any two orders of summation differ by (which,
    relative to a small output, can exceed 1e-5 on its own). dtype=torch.float32 compares the
    modules as they are. A module that cannot run in float64 makes the check fall back to float32.
    """
    shape = tuple(input_shape)
    probe = torch.zeros((1, *shape))
    ref, cand = _in_dtype(reference, dtype, probe), _in_dtype(candidate, dtype, probe)
    if ref is None or cand is None:
        ref, cand, dtype = reference, candidate, torch.float32
    bs = min(_batch_size_for(ref, probe.to(dtype)), _batch_size_for(cand, probe.to(dtype)))
    results = []
    with torch.no_grad():
        for x in make_inputs(shape, batches, seed, bs):
            results.append(compare_outputs(ref(x.to(dtype)), cand(x.to(dtype)), tolerance))
    return merge(results, tolerance)
