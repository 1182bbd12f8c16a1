"""MACs and parameter counts (convention of the Hinge paper: MACs of conv and linear layers)."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode


def count_macs(module: nn.Module, input_shape: tuple[int, ...], batch: int = 1) -> int:
    """MACs of one forward pass for `batch` samples, counted by torch's FlopCounterMode.

    FlopCounterMode counts 2 FLOPs per multiply-accumulate of conv/matmul ops and nothing for
    BN, activations, pooling or adds, which is the paper's MAC convention minus the small
    element-wise terms.
    """
    # Models built on the meta device (for listings) are counted without any arithmetic.
    first = next(module.parameters(), None)
    x = torch.zeros((batch, *input_shape), device=first.device if first is not None else "cpu",
                    dtype=first.dtype if first is not None and first.is_floating_point() else torch.float32)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(x)
    return int(counter.get_total_flops()) // 2


def count_params(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def weight_bytes(module: nn.Module) -> int:
    tensors = list(module.parameters()) + list(module.buffers())
    return int(sum(t.numel() * t.element_size() for t in tensors))
