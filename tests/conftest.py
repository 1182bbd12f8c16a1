from __future__ import annotations

import os
from pathlib import Path

# One intra-op thread for torch in tests: on a shared 2-core machine two threads made small CIFAR
# forwards 20-200x slower whenever another process held a core. Benchmarks set their own threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
# shared/ sits beside the checkout in development and in CI (a fresh clone with shared/ beside it).
SHARED_FIXTURES = Path(os.environ.get("GSDEPLOY_SHARED", REPO.parent / "shared")) / "fixtures" / "hinge"


@pytest.fixture(scope="session")
def hinge_fixtures() -> Path:
    if not (SHARED_FIXTURES / "manifest.json").exists():
        pytest.skip(f"official Hinge fixtures not found at {SHARED_FIXTURES} (set GSDEPLOY_SHARED)")
    return SHARED_FIXTURES
