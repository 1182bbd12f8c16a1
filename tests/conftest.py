from __future__ import annotations

import os
from pathlib import Path

# One intra-op thread for torch in tests: on a shared 2-core machine two threads made small CIFAR
# forwards 20-200x slower whenever another process held a core. Benchmarks set their own threads.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import lzma  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from hypothesis import settings  # noqa: E402

# Wall-clock deadlines measure the machine, not the pass: on a shared 2-core VM (and while a
# benchmark pauses the tests) one example can take seconds. Property tests check results only.
settings.register_profile("gsdeploy", deadline=None)
settings.load_profile("gsdeploy")

REPO = Path(__file__).resolve().parents[1]
# shared/ sits beside the checkout in development and in CI (a fresh clone with shared/ beside it).
SHARED_FIXTURES = Path(os.environ.get("GSDEPLOY_SHARED", REPO.parent / "shared")) / "fixtures" / "hinge"


@pytest.fixture(scope="session")
def hinge_fixtures() -> Path:
    if not (SHARED_FIXTURES / "manifest.json").exists():
        pytest.skip(f"official Hinge fixtures not found at {SHARED_FIXTURES} (set GSDEPLOY_SHARED)")
    return SHARED_FIXTURES


OFFICIAL = Path(__file__).resolve().parent / "fixtures" / "official"


@pytest.fixture(scope="module")
def unpack(tmp_path_factory):
    """Official fixtures are stored xz-compressed; give the path of the decompressed .pt file."""
    out = tmp_path_factory.mktemp("official")

    def get(name: str) -> str:
        path = out / f"{name}.pt"
        if not path.exists():
            path.write_bytes(lzma.decompress((OFFICIAL / f"{name}.pt.xz").read_bytes()))
        return str(path)

    return get


def rel_err_to_reference(loaded, name: str, ref_dir: Path = OFFICIAL) -> float:
    ref = torch.load(ref_dir / f"{name}.ref.pt", weights_only=True)
    with torch.no_grad():
        y = loaded.module(ref["input"])
    return float((y - ref["output"]).abs().max() / ref["output"].abs().max())


@pytest.fixture(scope="session")
def _plan_cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("timing-cache")


@pytest.fixture(autouse=True)
def quick_latency_plan(_plan_cache_dir, monkeypatch):
    """Every test plans into a private timing cache (never the user's), shared by the session so a
    model is planned once, and with a small timing budget: tests check what the planner does with
    its measurements; how fast the plans are is measured in benchmarks/plan_check.py."""
    monkeypatch.setenv("GSDEPLOY_CACHE_DIR", str(_plan_cache_dir))
    from gsdeploy.bench.measure import MeasureConfig
    from gsdeploy.plan import search

    quick = MeasureConfig(warmup_s=0.005, min_iterations=5, min_duration_s=0.005, settle_max_s=0.01)
    monkeypatch.setattr(search, "SITE_CONFIG", quick)
    monkeypatch.setattr(search, "MODEL_CONFIG", quick)
    monkeypatch.setattr(search, "MODEL_ROUNDS", 1)
