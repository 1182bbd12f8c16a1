"""The HTML report in a real browser (headless Chromium): no console errors, no network, the
tables and plots visible on the screenshot, and a PDF print.

Chromium is Debian's `chromium` package; .ci/run installs it when missing (root with apt), so the
test skips only where it cannot be installed."""

from __future__ import annotations

import io
import re

import pytest

from gsdeploy.report import load_inputs
from gsdeploy.report.page import html_page
from tests.chromium import check_page, find_chromium
from tests.test_report_page import sweep_dir

PIL = pytest.importorskip("PIL.Image", reason="Pillow (a matplotlib dependency) reads the screenshot")


@pytest.fixture(scope="module")
def browser() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("no Chromium on PATH and it could not be installed here (apt-get install chromium)")
    return path


def ink(image, box: dict) -> float:
    """Share of pixels in the box (CSS px = screenshot px at scale 1) that are not near-white."""
    x, y, w, h = (int(round(box[k])) for k in ("x", "y", "w", "h"))
    region = image.crop((x, y, x + w, y + h)).convert("L")
    hist = region.histogram()
    return 1.0 - sum(hist[235:]) / max(1, w * h)


def test_ink_tells_blank_from_drawn():
    blank = PIL.new("RGB", (100, 50), "white")
    assert ink(blank, {"x": 0, "y": 0, "w": 100, "h": 50}) == 0.0
    blank.paste((0, 0, 0), (10, 10, 30, 30))
    assert ink(blank, {"x": 0, "y": 0, "w": 100, "h": 50}) == pytest.approx(400 / 5000)


def test_report_renders_without_errors_and_prints(tmp_path, browser):
    page = tmp_path / "report.html"
    page.write_text(html_page(load_inputs([sweep_dir(tmp_path)])), encoding="utf-8")
    check = check_page(page, browser)
    assert check.console == []
    assert check.external_requests == [] and check.requests[0] == page.resolve().as_uri()
    assert all(u.startswith("data:image/") for u in check.requests[1:])  # the inline plot

    tables = [b for b in check.boxes if b["tag"] == "table"]
    images = [b for b in check.boxes if b["tag"] == "img"]
    assert len(tables) >= 6  # two devices, plan, per-layer, claims, commands
    assert len(images) == 1 and images[0]["loaded"] and images[0]["w"] > 400 and images[0]["h"] > 300

    shot = PIL.open(io.BytesIO(check.screenshot))
    assert shot.size == (check.width, check.height) and check.height > 1500
    for t in tables:
        assert t["w"] > 100 and t["h"] > 30 and ink(shot, t) > 0.02, t
    assert ink(shot, images[0]) > 0.05  # the plot drew something, not an empty frame
    below = {"x": 0, "y": check.height - 16, "w": check.width, "h": 16}
    assert ink(shot, below) < 0.01  # the page ends in the body's white margin: nothing was clipped

    assert check.pdf.startswith(b"%PDF-") and len(check.pdf) > 20_000
    assert len(re.findall(rb"/Type\s*/Page[^s]", check.pdf)) >= 2


def test_the_check_catches_a_page_that_is_not_self_contained(tmp_path, browser):
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img src="http://192.0.2.1/x.png"><script>console.error("boom")</script>'
                   "</body></html>")
    check = check_page(bad, browser)
    assert check.external_requests == ["http://192.0.2.1/x.png"]
    assert any("boom" in line for line in check.console)
