"""Small helpers for reading an official state_dict's layout (depth, widths, classes) from its keys and
shapes. Every failure is an ArchMismatchError that names the tensors that do not fit."""

from __future__ import annotations

import re

import torch

from gsdeploy.errors import ArchMismatchError


def mismatch(arch: str, what: str) -> ArchMismatchError:
    return ArchMismatchError(f"the checkpoint does not fit --arch {arch}: {what}")


def name_list(keys: list[str], n: int = 5) -> str:
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def need(state: dict[str, torch.Tensor], arch: str, *keys: str) -> None:
    """All `keys` must be present; otherwise name the missing ones."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise mismatch(arch, f"missing {len(missing)} tensors ({name_list(missing)})")


def shape(state: dict[str, torch.Tensor], key: str, arch: str, dim: int | None = None) -> tuple[int, ...]:
    need(state, arch, key)
    s = tuple(state[key].shape)
    if dim is not None and len(s) != dim:
        raise mismatch(arch, f"tensors of another rank ({key} {s}, expected {dim}-D)")
    return s


def indices(state: dict[str, torch.Tensor], pattern: str) -> list[int]:
    """Sorted distinct integers captured by the first group of `pattern` (a regex matched at key start)."""
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in state if (m := rx.match(k))})


def count_blocks(state: dict[str, torch.Tensor], pattern: str, arch: str, stages: list[str]) -> int:
    """Blocks per stage, equal in every stage; `pattern` has '{stage}' and one capture group for the block."""
    counts = [len(indices(state, pattern.format(stage=re.escape(s)))) for s in stages]
    example = pattern.format(stage=stages[0]).replace(r"(\d+)", "0").replace("\\", "").rstrip("$")
    if not counts or counts[0] == 0:
        raise mismatch(arch, f"missing its residual blocks (no tensors like {example})")
    if any(c != counts[0] for c in counts):
        raise mismatch(arch, f"blocks per stage {counts} (tensors like {example})")
    return counts[0]
