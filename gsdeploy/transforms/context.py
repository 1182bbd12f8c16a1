"""What every pass gets besides the graph: the input shape, the options, shapes on demand."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx

from gsdeploy.transforms.fxutil import shape_prop
from gsdeploy.transforms.plan import DeployOptions


@dataclass
class PassContext:
    input_shape: tuple[int, ...]
    options: DeployOptions = field(default_factory=DeployOptions)
    # "zero" for prune_zero: 0.0 means exact zeros; the planner sets a threshold only for the
    # step that zeroes small groups, so that every later step is exact.
    zero_tol: float = 0.0
    _fake_mode: Any = field(default=None, repr=False)

    def example(self) -> torch.Tensor:
        return torch.zeros((1, *self.input_shape))

    def shapes(self, gm: fx.GraphModule) -> dict[fx.Node, torch.Size]:
        """Fresh shapes of every tensor node (the graph may have changed since the last call)."""
        gm.recompile()
        if self._fake_mode is None:
            from torch._subclasses.fake_tensor import FakeTensorMode

            # one mode for the whole deploy: it memoizes the fake copies of unchanged weights
            self._fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
        return shape_prop(gm, self.example(), self._fake_mode)
