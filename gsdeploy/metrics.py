"""MACs and parameter counts: conv/linear MACs (count_macs), and FLOPs as the Hinge paper's code counts them
(paper_flops), so claims can set a measured ratio beside the paper's own figure."""

from __future__ import annotations

import math

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


# ---- the Hinge paper's own FLOP convention ---------------------------------------------------
# Read from github ofsoundof/group_sparsity model/in_use/flops_counter.py (one sample): a k x k conv
# adds k*k * Cin/groups * Cout * H_out*W_out (no bias); a Linear In*Out; a BatchNorm2d 2*C*H*W when
# affine (C*H*W otherwise); each ReLU, PReLU, ELU, LeakyReLU, ReLU6 module the number of its
# outputs. Pooling, adds, functional activations (F.relu) and other modules count nothing; its
# parameter count is count_params. Claims set the paper's figures beside counts made this way, on
# the networks as loaded (BN not folded: the paper counts its networks, not a deployment of them).

PAPER_ACTIVATIONS: tuple[type, ...] = (nn.ReLU, nn.PReLU, nn.ELU, nn.LeakyReLU, nn.ReLU6)
PAPER_COUNTED: tuple[type, ...] = (nn.Conv2d, nn.Linear, nn.BatchNorm2d) + PAPER_ACTIVATIONS


def _flops(m: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    if isinstance(m, nn.Conv2d):
        kh, kw = m.kernel_size
        return kh * kw * m.in_channels * (m.out_channels // m.groups) * math.prod(out.shape[2:])
    if isinstance(m, nn.Linear):
        return m.in_features * m.out_features * (math.prod(out.shape[1:-1]) if out.dim() > 2 else 1)
    if isinstance(m, nn.BatchNorm2d):
        return m.num_features * math.prod(inp.shape[2:]) * (2 if m.affine else 1)
    return out[0].numel()  # an activation: one per output element of one sample


def paper_flops(module: nn.Module, input_shape: tuple[int, ...]) -> int:
    """FLOPs of one sample by the Hinge code's convention (module hooks; one forward pass)."""
    total = 0

    def hook(m: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        total += int(_flops(m, inputs[0], out))

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, PAPER_COUNTED)]
    first = next(module.parameters(), None)
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    try:
        with torch.no_grad():
            module(torch.zeros((1, *input_shape), dtype=dtype))
    finally:
        for h in handles:
            h.remove()
    return total
