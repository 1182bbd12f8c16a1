"""What every pass gets besides the graph: the input shape, the options, shapes on demand."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch._subclasses.fake_tensor import FakeTensorMode

from gsdeploy.transforms.fxutil import shape_prop
from gsdeploy.transforms.decisions import DeployOptions

# A real forward slower than this switches shape propagation to fake tensors for the rest of the
# deploy: fake tensors cost ~1 ms per node whatever the input size; real ones cost the convs.
REAL_SHAPES_BUDGET_S = 0.25


@dataclass
class PassContext:
    input_shape: tuple[int, ...]
    options: DeployOptions = field(default_factory=DeployOptions)
    # module name -> the module of the graph the passes started from whose output it computes now:
    # a fused pair lives on under its k x k's name but computes its 1 x 1's output, and a plan's
    # choices name the layers of that starting graph
    computes: dict[str, str] = field(default_factory=dict)
    _fake_mode: Any = field(default=None, repr=False)

    def example(self) -> torch.Tensor:
        return torch.zeros((1, *self.input_shape))

    def origin(self, name: str) -> str:
        """The module of the starting graph whose output the module `name` computes now."""
        return self.computes.get(name, name)

    def choice(self, name: str) -> str | None:
        """The plan's choice for the site whose producer is the module `name` now."""
        return self.options.choices.get(self.origin(name))

    def shapes(self, gm: fx.GraphModule) -> dict[fx.Node, torch.Size]:
        """Fresh shapes of every tensor node (the graph may have changed since the last call)."""
        if self._fake_mode is not None:
            return shape_prop(gm, self.example(), self._fake_mode)
        start = time.perf_counter()
        shapes = shape_prop(gm, self.example())
        if time.perf_counter() - start > REAL_SHAPES_BUDGET_S:
            # one mode for the whole deploy: it memoizes the fake copies of unchanged weights
            self._fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
        return shapes
