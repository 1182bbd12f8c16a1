"""Masked variants: a compressed model written back into its full-width architecture.

This is what a checkpoint saved during group-sparsity training looks like: the pruned groups
are still present, as exact zeros on one side (zero filters with zero BN affine parameters, or
zero input columns), and the other side holds arbitrary non-zero values that are dead.
"""

from __future__ import annotations

import torch
import torch.nn as nn

IndexMap = dict[int, torch.Tensor]  # tensor dim -> indices in the full tensor


def embed(small: torch.Tensor, full: torch.Tensor, index: IndexMap) -> None:
    """Write `small` into `full` at the index grid given per dimension; other entries stay."""
    view = full
    dims = sorted(index)
    grid = [torch.arange(full.shape[d]) for d in range(full.dim())]
    for d in dims:
        grid[d] = index[d]
    view = full[torch.meshgrid(*grid, indexing="ij")] if full.dim() else full
    if view.shape != small.shape:
        raise ValueError(f"cannot embed {tuple(small.shape)} into {tuple(full.shape)} at {view.shape}")
    full[torch.meshgrid(*grid, indexing="ij")] = small


def zero_except(t: torch.Tensor, dim: int, keep: torch.Tensor) -> None:
    mask = torch.ones(t.shape[dim], dtype=torch.bool)
    mask[keep] = False
    t.index_fill_(dim, mask.nonzero().flatten(), 0.0)


def kept_indices(full: int, kept: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(full, generator=generator)[:kept].sort().values


def embed_module(small: nn.Module, full: nn.Module, out_idx: torch.Tensor | None, in_idx: torch.Tensor | None,
                 zero_outside_out: bool, zero_outside_in: bool) -> None:
    """Copy a conv/linear/BN of the compressed model into the full one.

    `zero_outside_out` makes the filters (and BN affine) of pruned outputs exactly zero: the
    channel is dead because its producer writes zero. `zero_outside_in` zeroes the input
    columns of pruned inputs: the channel is dead because this consumer ignores it.
    """
    with torch.no_grad():
        for name, t_small in list(small.named_parameters(recurse=False)) + list(small.named_buffers(recurse=False)):
            t_full = getattr(full, name)
            if t_full.dim() == 0:
                t_full.copy_(t_small)
                continue
            index: IndexMap = {}
            if out_idx is not None:
                index[0] = out_idx
            if in_idx is not None and t_full.dim() >= 2:
                index[1] = in_idx
            if zero_outside_out and out_idx is not None and name in ("weight", "bias"):
                zero_except(t_full, 0, out_idx)
            if zero_outside_in and in_idx is not None and t_full.dim() >= 2:
                zero_except(t_full, 1, in_idx)
            embed(t_small, t_full, index)
