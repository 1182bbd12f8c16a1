"""Drive headless Chromium over the DevTools protocol (a pipe, no extra packages) to check an
HTML page as a person would see it: console errors, network requests, a full-page screenshot,
where the tables and images are, and a PDF print.

Used by tests/test_report_browser.py; also a script, to keep a screenshot of a report:
    python tests/chromium.py results/report.html results/report.png
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Flags that work in this project's containers (root, no display, no network, no D-Bus).
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--hide-scrollbars", "--mute-audio"]
NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# What a page may load and still be "self-contained".
LOCAL_SCHEMES = ("file:", "data:", "about:")


def find_chromium() -> str | None:
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageCheck:
    console: list[str] = field(default_factory=list)  # console errors/warnings and uncaught exceptions
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    boxes: list[dict] = field(default_factory=list)  # tables and images: tag, x, y, w, h (CSS px), loaded
    screenshot: bytes = b""  # PNG of the whole page at width `width`
    pdf: bytes = b""
    width: int = 0
    height: int = 0

    @property
    def external_requests(self) -> list[str]:
        return [u for u in self.requests if not u.startswith(LOCAL_SCHEMES)]


class _Pipe:
    """Chromium's --remote-debugging-pipe: JSON messages ended by NUL on fds 3 (in) and 4 (out)."""

    def __init__(self, browser: str, user_data_dir: str) -> None:
        to_child_r, self._w = os.pipe()
        self._r, from_child_w = os.pipe()

        def fds() -> None:  # in the child: its fd 3 reads our commands, fd 4 writes its answers
            import fcntl

            r, w = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10), fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)  # dup2 leaves the copies inheritable; the originals (PEP 446) are not
            os.dup2(w, 4)

        # close_fds=False: the child's fds 3 and 4 are made in preexec_fn, after pass_fds would have
        # been applied; only inheritable fds (these two) cross exec, Python's own are non-inheritable.
        self.proc = subprocess.Popen([browser, *FLAGS, f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe",
                                      "about:blank"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=fds, close_fds=False)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self._read(deadline)
            if m.get("id") == self._id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        while True:
            m = self._read(deadline)
            if m.get("method") == method:
                return m
            self.events.append(m)

    def _read(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise TimeoutError("Chromium did not answer" + (" (it exited)" if self.proc.poll() is not None else ""))
            ready, _, _ = select.select([self._r], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    raise TimeoutError("Chromium closed the DevTools pipe")
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def close(self) -> None:
        try:
            os.write(self._w, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for fd in (self._r, self._w):
            try:
                os.close(fd)
            except OSError:
                pass


_BOXES = """JSON.stringify(Array.from(document.querySelectorAll('table, img')).map(e => {
  const r = e.getBoundingClientRect();
  return {tag: e.tagName.toLowerCase(), x: r.x + scrollX, y: r.y + scrollY, w: r.width, h: r.height,
          loaded: e.tagName !== 'IMG' || (e.complete && e.naturalWidth > 0)};
}))"""


def check_page(page: Path, browser: str, width: int = 1400, timeout: float = 60.0) -> PageCheck:
    """Load `page` in a fresh headless Chromium profile and collect what a reader would get."""
    out = PageCheck(width=width)
    with tempfile.TemporaryDirectory(prefix="gsdeploy-chromium-") as profile:
        pipe = _Pipe(browser, profile)
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
            session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                pipe.send(f"{domain}.enable", session=session)
            pipe.send("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
            pipe.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
            pipe.wait_event("Page.loadEventFired", timeout=timeout)
            boxes = pipe.send("Runtime.evaluate", {"expression": _BOXES, "returnByValue": True}, session=session)
            out.boxes = json.loads(boxes["result"]["value"])
            metrics = pipe.send("Page.getLayoutMetrics", session=session)
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            out.height = int(size["height"])
            shot = pipe.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                        "clip": {"x": 0, "y": 0, "width": width,
                                                                 "height": out.height, "scale": 1}},
                             session=session, timeout=timeout)
            out.screenshot = base64.b64decode(shot["data"])
            pdf = pipe.send("Page.printToPDF", {"printBackground": True}, session=session, timeout=timeout)
            out.pdf = base64.b64decode(pdf["data"])
        finally:
            pipe.close()
    for e in pipe.events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
            out.console.append(f"console.{p['type']}: " + " ".join(str(a.get("value", a.get("description", "")))
                                                                    for a in p.get("args", [])))
        elif m == "Runtime.exceptionThrown":
            out.console.append("exception: " + str(p.get("exceptionDetails", {}).get("text")))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
            out.console.append(f"log.{p['entry']['level']}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        elif m == "Network.requestWillBeSent":
            out.requests.append(p.get("request", {}).get("url", ""))
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python tests/chromium.py PAGE.html OUT.png", file=sys.stderr)
        return 2
    browser = find_chromium()
    if browser is None:
        print("error: no Chromium found (apt-get install chromium)", file=sys.stderr)
        return 1
    check = check_page(Path(argv[0]), browser)
    Path(argv[1]).write_bytes(check.screenshot)
    for line in check.console + [f"external request: {u}" for u in check.external_requests]:
        print(line, file=sys.stderr)
    print(f"wrote {argv[1]} ({check.width}x{check.height} px, {len(check.pdf)} bytes of PDF)")
    return 1 if check.console or check.external_requests else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
