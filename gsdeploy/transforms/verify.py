"""Numerics are a contract: run a candidate module and its reference on the same inputs
(gsdeploy/inputs.py) and compare their outputs (gsdeploy/numerics.py)."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from gsdeploy.inputs import sample_inputs
from gsdeploy.numerics import Verification, compare_outputs, merge


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
        for x in (x for i in range(max(1, batches)) for x in sample_inputs(shape, bs, seed + i)):
            results.append(compare_outputs(ref(x.to(dtype)), cand(x.to(dtype)), tolerance))
    return merge(results, tolerance)
