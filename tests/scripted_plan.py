"""Scripted timings for the latency plan, where the winner at batch 1, the winner at every other
batch and the overall winner are three different models: what is under test is what the planner,
`bench` and the farm do with per-batch winners, not a speed.

All pairs fused is fastest at batch 1, as given (pairs kept) at every other batch, and the
per-site choices (fuse the 32x32 stage's pairs, keep the rest) are second at both, so their
geometric mean wins over all batches: the model `export` writes is fastest at no batch.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gsdeploy.plan import search
from gsdeploy.plan.cache import Timing

AT_1 = {"always": 1.0, "never": 3.0, "flops": 3.0, "latency": 1.2}
AT_OTHER = {"always": 3.0, "never": 1.0, "flops": 1.0, "latency": 1.2}
DENSE_MS = 2.0


def split_ms(batch: int, name: str) -> float:
    return (AT_1 if batch == 1 else AT_OTHER).get(name, DENSE_MS)


def split_site_ms(candidate: str, in_shape: tuple[int, ...]) -> float:
    if candidate == "fuse":
        return 0.5 if in_shape[-1] == 32 else 2.0
    return 1.0 if candidate == "keep" else 2.0  # padding never pays here


def split_time_modules(target, modules, input_shape, batches, cfg, rounds=1):  # noqa: ANN001, ANN201 - search.time_modules
    if set(modules) & set(search.VARIANTS):  # whole models (also the two a split batch is confirmed with)
        return {n: {b: Timing(split_ms(b, n), 0.01) for b in batches} for n in modules}
    return {n: {b: Timing(split_site_ms(n, tuple(input_shape)), 0.01) for b in batches} for n in modules}


def script_split_winners(monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> None:
    """Plans in this test use the scripted timings, in a timing cache of their own."""
    monkeypatch.setenv("GSDEPLOY_CACHE_DIR", str(cache_dir))
    monkeypatch.setattr(search, "time_modules", split_time_modules)
