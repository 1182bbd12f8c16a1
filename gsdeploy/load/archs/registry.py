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


def get_arch(name: str) -> OfficialArch:
    if name not in ARCHS:
        known = ", ".join(sorted(ARCHS))
        raise LoadError(f"unknown --arch '{name}'; known: {known}")
    return ARCHS[name]
