"""Deterministic test inputs for numeric checks."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_inputs(input_shape: tuple[int, ...], batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    """Two kinds of input: plain N(0,1) noise, and image-like smooth noise with a per-channel offset
    (the form the Hinge fixtures use), since pure noise under-exercises BN shifts and ReLU regions."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((batch, *input_shape), generator=g)
    if len(input_shape) != 3:
        return [noise]
    c, h, w = input_shape
    low = torch.randn((batch, c, max(1, h // 8), max(1, w // 8)), generator=g)
    low = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    image = 0.5 * torch.randn((batch, c, h, w), generator=g) + 1.5 * low + 0.5 * torch.randn((batch, c, 1, 1), generator=g)
    return [noise, image]
