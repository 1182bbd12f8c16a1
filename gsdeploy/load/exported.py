"""`.pt2` files written by torch.export.save."""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn

from gsdeploy.errors import LoadError
from gsdeploy.limits import short
from gsdeploy.load.pt2_audit import audit_pt2

# torch.export.load logs a full traceback (and retries an older layout) before raising; the user
# gets gsdeploy's one line instead.
_NOISY_LOGGERS = ("torch.export", "torch._export", "torch.export.pt2_archive._package",
                  "torch._export.serde.serialize")


@contextlib.contextmanager
def _quiet_torch_export() -> Iterator[None]:
    loggers = [logging.getLogger(n) for n in _NOISY_LOGGERS]
    saved = [lg.disabled for lg in loggers]
    for lg in loggers:
        lg.disabled = True
    try:
        yield
    finally:
        for lg, was in zip(loggers, saved):
            lg.disabled = was


@contextlib.contextmanager
def _weights_only_torch_load() -> Iterator[None]:
    """Second line of defence behind audit_pt2: while an untrusted .pt2 loads, every torch.load
    inside torch.export (use_pickle payloads, the sample inputs' weights_only=False fallback)
    is weights_only."""
    original = torch.load

    @functools.wraps(original)
    def weights_only_load(*args, **kwargs):
        kwargs["weights_only"] = True
        return original(*args, **kwargs)

    torch.load = weights_only_load
    try:
        yield
    finally:
        torch.load = original


def load_exported(path: Path, trust: bool = False) -> tuple[nn.Module, tuple[int, ...] | None]:
    """The program's module and, when recorded, the per-sample input shape. Without `trust` the
    archive must pass `audit_pt2` (plain data only). A program saved with a fixed batch size
    (torch.export's default) is refused with the fix: deploy, verify and bench all run it at
    several batch sizes."""
    audit_pt2(path, trust)
    guard = contextlib.nullcontext() if trust else _weights_only_torch_load()
    try:
        with _quiet_torch_export(), guard:
            program = torch.export.load(str(path))
            module = program.module()
    except MemoryError:
        raise LoadError(f"{path}: not enough memory to load this program") from None
    except Exception as e:  # noqa: BLE001 - torch.export.load fails in many ways on foreign or cut files
        text = str(e).strip().splitlines()
        raise LoadError(f"{path} is not a readable torch.export program (.pt2): "
                        f"{short(text[0]) if text else type(e).__name__}") from None
    shape, fixed_batch = None, None
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name not in program.graph_signature.inputs_to_parameters \
                and node.name not in program.graph_signature.inputs_to_buffers:
            val = node.meta.get("val")
            if val is not None and hasattr(val, "shape") and len(val.shape) >= 2:
                fixed_batch = val.shape[0] if isinstance(val.shape[0], int) else None
                try:
                    shape = tuple(int(d) for d in val.shape[1:])
                except TypeError:  # symbolic sizes
                    shape = None
                break
    if fixed_batch is not None:
        raise LoadError(f"{path} was exported with a fixed batch size of {fixed_batch} (torch.export's default); "
                        "gsdeploy verifies and times the model at several batch sizes, so it needs a dynamic batch: "
                        "re-export with torch.export.export(model, (x,), "
                        "dynamic_shapes=({0: torch.export.Dim('batch')},))")
    return module, shape
