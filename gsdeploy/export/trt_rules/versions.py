"""TensorRT version numbers and GPU compute capabilities as gsdeploy compares them."""

from __future__ import annotations

import re

from gsdeploy.errors import TrtConfigError


def parse_version(version: str) -> tuple[int, ...]:
    """'10.16.0.72' -> (10, 16, 0, 72); '2.5.0+cu124' -> (2, 5, 0). Leading numeric fields only."""
    parts: list[int] = []
    for piece in str(version).strip().split("."):
        m = re.match(r"\d+", piece)
        if not m:
            break
        parts.append(int(m.group()))
        if m.end() != len(piece):  # '0+cu124', '0rc1': the number ends inside this field
            break
    if not parts:
        raise TrtConfigError(f"cannot read a version number from {version!r}")
    return tuple(parts)


def trt_major(version: str) -> int:
    return parse_version(version)[0]


def compute_capability_str(major: int, minor: int) -> str:
    return f"{int(major)}.{int(minor)}"
