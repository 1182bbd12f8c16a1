"""`.pt2` files written by torch.export.save."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from gsdeploy.errors import LoadError


def load_exported(path: Path) -> tuple[nn.Module, tuple[int, ...] | None]:
    """Returns the program's module and, when recorded, the per-sample input shape."""
    try:
        program = torch.export.load(str(path))
    except Exception as e:
        raise LoadError(f"{path} is not a readable torch.export program (.pt2): {str(e).splitlines()[0][:200] if str(e) else type(e).__name__}") from None
    shape = None
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name not in program.graph_signature.inputs_to_parameters \
                and node.name not in program.graph_signature.inputs_to_buffers:
            val = node.meta.get("val")
            if val is not None and hasattr(val, "shape") and len(val.shape) >= 2:
                try:
                    shape = tuple(int(d) for d in val.shape[1:])
                except TypeError:  # symbolic sizes
                    shape = None
                break
    return program.module(), shape
