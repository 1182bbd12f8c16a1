"""The data that flows out of the load stage."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn


@dataclass
class LoadedModel:
    """A model ready for planning: an eval-mode fp32 CPU module plus where it came from."""

    module: nn.Module
    input_shape: tuple[int, ...]  # one sample, without the batch axis, e.g. (3, 32, 32)
    name: str
    arch: str | None = None
    source: str | None = None  # path of the file it was read from, None for zoo models
    sha256: str | None = None
    baseline: str | None = None  # zoo name of the dense baseline, where known
    notes: dict = field(default_factory=dict)
