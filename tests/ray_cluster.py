"""A real Ray cluster on the loopback address for tests: a head and worker nodes, each a
`ray start --block` process in its own session, stopped (and killed if need be) by the test.

Every node gets `--node-ip-address 127.0.0.1` and the dashboard stays off. Ray's CLI swaps a
loopback address for the machine's routable one when it has one (services.resolve_ip_for_localhost);
on a machine with a network interface a worker would then register under that interface, so each
node is started through a two-line launcher that keeps the address as given. The driver side
does the same with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (see DRIVER_ENV), which makes a driver
resolve "this node" to 127.0.0.1 and changes nothing else for a driver.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import shutil
import sys
import tempfile
import time
from pathlib import Path

LAUNCH = ("import sys, ray._private.services as s; s.resolve_ip_for_localhost = lambda h: h; "
          "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()")
DRIVER_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
NODE_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # notice a killed node within seconds, not the default half minute
    "RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> list[str]:
    """Command lines of every process below `pid` (Linux /proc; no psutil needed)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        try:
            out.append((Path("/proc") / str(child) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass
        todo.extend(children.get(child, []))
    return out


class LocalRayCluster:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        # Not under pytest's tmp_path: pytest runs of other checkouts prune old basetemps, and
        # Ray's socket paths must stay short.
        self.workdir = Path(tempfile.mkdtemp(prefix="gsd-ray-"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, **NODE_ENV, **(env or {})}
        self.nodes: dict[str, subprocess.Popen] = {}

    def _start(self, name: str, args: list[str]) -> None:
        log = open(self.workdir / f"ray-{name}.log", "w")
        self.nodes[name] = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, "start", "--block", "--node-ip-address", "127.0.0.1",
             "--disable-usage-stats", *args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start_head(self, num_cpus: int = 1) -> None:
        self._start("head", ["--head", "--port", str(self.port), "--include-dashboard=false",
                             "--ray-client-server-port", str(free_port()), "--num-cpus", str(num_cpus),
                             "--temp-dir", str(self.workdir / "r")])

    def add_worker(self, name: str, resources: dict[str, float], num_cpus: int = 1) -> None:
        self._start(name, ["--address", self.address, "--num-cpus", str(num_cpus), "--temp-dir", str(self.workdir / "r"),
                           "--resources", json.dumps(resources)])

    def nodes_info(self) -> list[dict]:
        """ray.nodes() as seen by a separate driver process (the test process stays Ray-free)."""
        code = ("import json, logging, ray; ray.init(address=%r, logging_level=logging.ERROR); "
                "print(json.dumps([{'id': n['NodeID'], 'alive': n['Alive'], 'ip': n['NodeManagerAddress'], "
                "'resources': n['Resources']} for n in ray.nodes()]))" % self.address)
        out = subprocess.run([sys.executable, "-c", code], env={**self.env, **DRIVER_ENV}, capture_output=True,
                             text=True, timeout=120, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def wait_nodes(self, n: int, timeout_s: float = 180.0) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while True:
            dead = [k for k, p in self.nodes.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"ray node(s) {dead} exited; see {self.workdir}/ray-*.log")
            try:
                info = self.nodes_info()
                if sum(1 for x in info if x["alive"]) >= n:
                    return info
            except subprocess.SubprocessError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{n} ray nodes did not come up in {timeout_s:g} s")
            time.sleep(1.0)

    def running(self, name: str, text: str) -> bool:
        """Whether a process of node `name` has `text` in its command line (Ray names a worker
        after the task it runs, e.g. ray::_timing_stage)."""
        p = self.nodes.get(name)
        return p is not None and any(text in cmd for cmd in descendants(p.pid))

    def kill(self, name: str) -> None:
        """The node dies as a machine would: every process of it at once, no clean shutdown."""
        p = self.nodes.pop(name)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(30)

    def stop(self) -> None:
        """SIGTERM each `ray start --block` (it stops its node's processes), then kill what is left."""
        for p in self.nodes.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name in list(self.nodes):
            p = self.nodes[name]
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)  # the node's own session: nothing else is in it
            except (ProcessLookupError, PermissionError):
                pass
            p.wait(10)
        self.nodes.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)
