"""Registry of official checkpoint layouts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from gsdeploy.errors import LoadError


@dataclass(frozen=True)
class OfficialArch:
    name: str
    # state_dict -> dense template with the file's module names (depth/classes read from keys/shapes)
    template: Callable[[dict[str, torch.Tensor]], nn.Module]
    input_shape: tuple[int, ...]
    description: str
    baseline_arch: str | None = None  # the dense arch of the same family
    ignore: frozenset[str] = field(default_factory=frozenset)  # keys the official loader ignores too
    source: str = ""  # the official code this layout was read from
    # reads depth and block types from the file, so it also fits files a named arch fits:
    # auto-detection tries it only when no named arch fits
    generic: bool = False


ARCHS: dict[str, OfficialArch] = {}


def register_arch(arch: OfficialArch) -> None:
    ARCHS[arch.name] = arch


def register_dense_and_hinge(dense: str, template: Callable[[bool, str], Callable[[dict[str, torch.Tensor]], nn.Module]],
                             *, dense_description: str, hinge_description: str, source: str,
                             hinge_ignore: frozenset[str] = frozenset(), generic: bool = False,
                             input_shape: tuple[int, ...] = (3, 32, 32)) -> None:
    """An official dense layout `dense` and its Hinge variant `hinge_<dense>`, whose baseline it is;
    `template(hinge, name)` gives each one's state_dict -> module builder."""
    register_arch(OfficialArch(name=dense, template=template(False, dense), input_shape=input_shape,
                               description=dense_description, source=source, generic=generic))
    hinge = f"hinge_{dense}"
    register_arch(OfficialArch(name=hinge, template=template(True, hinge), input_shape=input_shape,
                               description=hinge_description, baseline_arch=dense, ignore=hinge_ignore,
                               source=source, generic=generic))


def get_arch(name: str) -> OfficialArch:
    if name not in ARCHS:
        known = ", ".join(sorted(ARCHS))
        raise LoadError(f"unknown --arch '{name}'; known: {known}")
    return ARCHS[name]
