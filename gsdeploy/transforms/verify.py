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


class Reference:
    """A reference module with what checking a candidate against it costs, kept: its copy in
    each dtype, the batch size it takes, the inputs and its outputs on them.

    A latency plan deploys one model four ways (as given, FLOP plan, all fused, its choices) and
    every deploy is checked against the same original; without this each check copied the
    original to float64 and ran it again on the same inputs, a third of a deploy's time. The
    module must not change while a Reference of it is in use (the outputs would be stale)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self._copies: dict[torch.dtype, nn.Module | None] = {}
        self._batch: dict[tuple, int] = {}
        self._inputs: dict[tuple, list[torch.Tensor]] = {}
        self._outputs: dict[tuple, object] = {}

    def in_dtype(self, dtype: torch.dtype, probe: torch.Tensor) -> nn.Module | None:
        if dtype not in self._copies:
            self._copies[dtype] = _in_dtype(self.module, dtype, probe)
        return self._copies[dtype]

    def batch_size(self, module: nn.Module, probe: torch.Tensor, key: tuple) -> int:
        """The batch `module` (this reference, in some dtype) takes; `key` names the dtype and shape."""
        if key not in self._batch:
            self._batch[key] = _batch_size_for(module, probe)
        return self._batch[key]

    def inputs(self, shape: tuple[int, ...], batch: int, seed: int) -> list[torch.Tensor]:
        # keyed by the default dtype too: sample_inputs makes tensors in it (deploy works in float64)
        key = (shape, batch, seed, torch.get_default_dtype())
        if key not in self._inputs:
            self._inputs[key] = sample_inputs(shape, batch, seed)
        return self._inputs[key]

    def output(self, module: nn.Module, x: torch.Tensor, key: tuple) -> object:
        """`module` (this reference, in some dtype) on `x`; `key` names the input and the dtype."""
        if key not in self._outputs:
            with torch.no_grad():
                self._outputs[key] = module(x)
        return self._outputs[key]


def verify_modules(reference: nn.Module | Reference, candidate: nn.Module, input_shape: tuple[int, ...],
                   batches: int = 2, seed: int = 0, tolerance: float = 1e-5, *,
                   dtype: torch.dtype = torch.float64) -> Verification:
    """Run both modules on the same random inputs (randn and image-like) and compare outputs.

    By default both run in float64 (on copies): that measures what a transform changed in the
    function, not the float32 rounding that any two orders of summation differ by (which,
    relative to a small output, can exceed 1e-5 on its own). dtype=torch.float32 compares the
    modules as they are. A module that cannot run in float64 makes the check fall back to float32.
    `reference` may be a Reference, to check several candidates against one module while
    running it once per input.
    """
    refs = reference if isinstance(reference, Reference) else Reference(reference)
    shape = tuple(input_shape)
    probe = torch.zeros((1, *shape))
    ref, cand = refs.in_dtype(dtype, probe), _in_dtype(candidate, dtype, probe)
    as_is = ref is None or cand is None
    if as_is:
        ref, cand, dtype = refs.module, candidate, torch.float32
    mode = "as is" if as_is else dtype
    bs = min(refs.batch_size(ref, probe.to(dtype), (mode, shape)), _batch_size_for(cand, probe.to(dtype)))
    results = []
    with torch.no_grad():
        for i in range(max(1, batches)):
            for j, x in enumerate(refs.inputs(shape, bs, seed + i)):
                x = x.to(dtype)
                expected = refs.output(ref, x, (mode, shape, bs, seed + i, j, torch.get_default_dtype()))
                results.append(compare_outputs(expected, cand(x), tolerance))
    return merge(results, tolerance)
