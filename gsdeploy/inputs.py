"""Deterministic inputs: the one place gsdeploy makes up data to run a model on.

Two kinds of need:
  * numeric checks (deploy verification, ONNX/TensorRT checks): `sample_inputs`, plain noise
    plus image-like smooth noise, as torch tensors;
  * benchmarks: `seeded_input`, one fixed standard-normal numpy array per shape, so two runs
    (or two runners of the same model) time exactly the same data.

torch is imported inside `sample_inputs` only: the peak-RSS child process imports this module
for `seeded_input` and must not pay for (or count) torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

# Latency of dense CNNs does not depend on the values, but a seeded input makes any
# data-dependent effect reproducible.
INPUT_SEED = 0


def seeded_input(shape: tuple[int, ...], dtype: np.dtype | type = np.float32) -> np.ndarray:
    """Standard-normal input of `shape`, the same on every call (benchmarks)."""
    rng = np.random.default_rng(INPUT_SEED)
    return rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)


def sample_inputs(input_shape: tuple[int, ...], batch: int = 2, seed: int = 0) -> list["torch.Tensor"]:
    """Two kinds of input: plain N(0,1) noise, and image-like smooth noise with a per-channel offset
    (the form the Hinge fixtures use), since pure noise under-exercises BN shifts and ReLU regions:
    real inputs are spatially correlated and have a non-zero channel mean, and errors that only
    show with large, smooth activations (a wrong folded bias) hide under randn."""
    import torch  # heavy: torch; numpy-only callers (seeded_input) never load it
    import torch.nn.functional as F  # heavy: torch

    g = torch.Generator().manual_seed(seed)
    noise = torch.randn((batch, *input_shape), generator=g)
    if len(input_shape) != 3:
        return [noise]
    c, h, w = input_shape
    low = torch.randn((batch, c, max(1, h // 8), max(1, w // 8)), generator=g)
    low = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    image = 0.5 * torch.randn((batch, c, h, w), generator=g) + 1.5 * low + 0.5 * torch.randn((batch, c, 1, 1), generator=g)
    return [noise, image]
