from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# shared/ sits beside the checkout in development and in CI (a fresh clone with shared/ beside it).
SHARED_FIXTURES = Path(os.environ.get("GSDEPLOY_SHARED", REPO.parent / "shared")) / "fixtures" / "hinge"


@pytest.fixture(scope="session")
def hinge_fixtures() -> Path:
    if not (SHARED_FIXTURES / "manifest.json").exists():
        pytest.skip(f"official Hinge fixtures not found at {SHARED_FIXTURES} (set GSDEPLOY_SHARED)")
    return SHARED_FIXTURES
