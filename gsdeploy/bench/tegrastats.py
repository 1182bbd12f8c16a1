"""Power on Jetson from `tegrastats`: parse its lines, sample it during a timed loop.

tegrastats prints one line per interval. Power rails appear as `NAME current/average`, where
both are milliwatts from the module's INA3221 monitors. The unit is printed from JetPack 5
(L4T r34+) on and the line may carry a third field (max); JetPack 4 prints bare numbers:

  JetPack 4 (L4T r32), Nano:        ... POM_5V_IN 1750/1628 POM_5V_GPU 0/0 POM_5V_CPU 366/406
  JetPack 4 (L4T r32), AGX Xavier:  ... GPU 0/0 CPU 216/216 SOC 864/864 CV 0/0 VDDRQ 144/144 SYS5V 1889/1889
  JetPack 5/6 (L4T r35/r36), AGX Orin:
      ... VDD_GPU_SOC 3212mW/3212mW VDD_CPU_CV 401mW/401mW VIN_SYS_5V0 4543mW/4543mW VDDQ_VDD2_1V8AO 504mW/504mW
  JetPack 5/6, Orin NX / Orin Nano:  ... VDD_IN 4956mW/4956mW VDD_CPU_GPU_CV 595mW/595mW VDD_SOC 1469mW/1469mW

Sources for the formats and rail names:
  - NVIDIA L4T 32.5 Development Guide, "tegrastats Utility" (format table, `VDD_xxx X/Y`:
    current / average power in mW):
    https://docs.nvidia.com/jetson/archives/l4t-archived/l4t-325/Tegra%20Linux%20Driver%20Package%20Development%20Guide/AppendixTegraStats.html
  - NVIDIA Jetson Linux Developer Guide r35.6 / r36.3 / r36.4.3, "Jetson Orin Nano Series, Jetson
    Orin NX Series and Jetson AGX Orin Series" (power monitor rails: AGX Orin VDD_GPU_SOC,
    VDD_CPU_CV, VIN_SYS_5V0, VDDQ_VDD2_1V8AO, the last one included in VIN_SYS_5V0; Orin NX /
    Nano VDD_IN, VDD_CPU_GPU_CV, VDD_SOC):
    https://docs.nvidia.com/jetson/archives/r36.4.3/DeveloperGuide/SD/PlatformPowerAndPerformance/JetsonOrinNanoSeriesJetsonOrinNxSeriesAndJetsonAgxOrinSeries.html
  - NVIDIA L4T 32.x "Power Management for Jetson Nano and Jetson TX1 Devices" (POM_5V_IN is
    the module input, POM_5V_GPU / POM_5V_CPU are parts of it):
    https://docs.nvidia.com/jetson/archives/l4t-archived/l4t-3273/Tegra%20Linux%20Driver%20Package%20Development%20Guide/power_management_nano.html
  - Jetson AGX Xavier design guide, power monitor section (GPU, CPU, SOC, CV, VDDRQ and
    SYS5V are six separate supplies on two INA3221s; none is the total).
The sample lines in tests/test_tegrastats.py are real device output published in public
repositories (monitoring-agent test fixtures and users' logs); each is annotated there.

What "total" means differs by module (see `TOTAL_RAILS`): where a rail measures the module
input (VDD_IN, POM_5V_IN) it IS the total and the other rails are parts of it, so adding
them would count power twice; on AGX Xavier and AGX Orin no rail measures the input, so the
total is the sum of the separate supplies.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Mapping

from gsdeploy.errors import GsdeployError, MissingDependencyError

# NAME cur/avg[/max], each optionally with "mW"; the look-ahead keeps "RAM 1923/3964MB" and
# "IRAM 0/252kB(lfb ...)" out (a unit other than mW follows the number).
_RAIL_RE = re.compile(
    r"(?:^|\s)(?P<name>[A-Za-z][A-Za-z0-9_]*)\s+(?P<cur>\d+)(?:mW)?/(?P<avg>\d+)(?:mW)?(?:/(?P<max>\d+)(?:mW)?)?(?=\s|$)")
_NOT_RAILS = {"RAM", "SWAP", "IRAM", "LFB"}

# Module kind -> how to get the module's total power from its rails.
#   ("input", rail): that rail measures the whole module input.
#   ("sum", rails):  no input rail; add up these separate supplies (those present).
TOTAL_RAILS: dict[str, tuple[str, tuple[str, ...]]] = {
    # VDDQ_VDD2_1V8AO (DDR) is already inside VIN_SYS_5V0, per the rail descriptions of NVIDIA's
    # r36.4.3 Orin power page ("Software-based power consumption modeling"), as quoted in
    # public monitoring code: adding it would count the DDR power twice.
    "orin-agx": ("sum", ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0")),
    "orin-nx": ("input", ("VDD_IN",)),  # Orin NX and Orin Nano share the rail layout
    "xavier-agx": ("sum", ("GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V")),
    "xavier-nx": ("input", ("VDD_IN",)),
    "nano": ("input", ("POM_5V_IN",)),
}
MODULE_KINDS = ("auto", *TOTAL_RAILS)


def parse_line(line: str) -> dict[str, int]:
    """Rail name -> current (instantaneous) power in mW, for every power rail on the line.

    Other fields (RAM, CPU loads, frequencies, temperatures) are ignored. A line without any
    rail gives an empty dict (e.g. a Jetson Nano 2GB, which has no power monitor).
    """
    rails: dict[str, int] = {}
    for m in _RAIL_RE.finditer(line):
        name = m.group("name")
        if name.upper() in _NOT_RAILS:
            continue
        rails[name] = int(m.group("cur"))
    return rails


def detect_module(sample: Mapping[str, float]) -> str:
    """Module kind from the rail names present in one parsed line."""
    names = set(sample)
    if "POM_5V_IN" in names:
        return "nano"
    if "VDD_GPU_SOC" in names or "VDD_CPU_CV" in names:
        return "orin-agx"
    if {"GPU", "CPU", "SOC"} <= names:
        return "xavier-agx"
    if "VDD_IN" in names:
        # Orin NX/Nano and Xavier NX both report VDD_IN as the total: the same rule applies.
        return "orin-nx"
    raise GsdeployError(f"cannot tell the Jetson module from the tegrastats rails {sorted(names) or '(none)'}; "
                        f"set power.module in the profile to one of {', '.join(TOTAL_RAILS)}")


def total_power_mw(sample: Mapping[str, float], module_kind: str = "auto") -> float:
    """The module's total power in mW from one parsed sample (see `TOTAL_RAILS` for why
    some modules use one rail and others a sum)."""
    kind = detect_module(sample) if module_kind == "auto" else module_kind
    if kind not in TOTAL_RAILS:
        raise GsdeployError(f"unknown Jetson module kind '{module_kind}'; choose from {', '.join(MODULE_KINDS)}")
    rule, rails = TOTAL_RAILS[kind]
    present = [r for r in rails if r in sample]
    if rule == "input":
        if not present:
            raise GsdeployError(f"tegrastats line has no {rails[0]} rail, which is the total on {kind}; "
                                f"rails seen: {sorted(sample) or '(none)'}")
        return float(sample[present[0]])
    if not present:
        raise GsdeployError(f"tegrastats line has none of the {kind} rails {', '.join(rails)}; "
                            f"rails seen: {sorted(sample) or '(none)'}")
    return float(sum(sample[r] for r in present))


# ---- sampling during a timed loop -----------------------------------------------------------


@dataclass(frozen=True)
class PowerResult:
    """What a sampled loop cost. All None with `skipped` set when power could not be read."""

    avg_power_w: float | None
    energy_per_inference_mj: float | None
    energy_j: float | None
    duration_s: float | None
    samples: int
    inferences: int
    module: str | None
    skipped: str | None = None


def tegrastats_unavailable_reason(executable: str = "tegrastats") -> str | None:
    if shutil.which(executable) is None:
        return (f"'{executable}' is not on PATH (it ships with Jetson Linux / JetPack); "
                "power and energy are not measured")
    return None


class TegrastatsSampler:
    """Run `tegrastats --interval N` while the `with` block runs and average its power.

        with TegrastatsSampler(100) as power:
            for _ in range(n): runner.run_once()
        result = power.result(inferences=n * batch)

    Where tegrastats is missing the block still runs (the latency measurement must not depend
    on power sampling) and `result()` says why power was skipped; `strict=True` raises
    MissingDependencyError instead.

    Average power is the mean of the samples printed inside the block; energy = average power
    × wall time of the block. tegrastats samples the INA3221 readings (themselves averaged over
    a few ms) once per interval, so a loop needs many intervals for a stable figure: fewer than
    `min_samples` is reported as skipped rather than as a number that looks precise.
    """

    def __init__(self, interval_ms: int = 100, module_kind: str = "auto", executable: str = "tegrastats",
                 strict: bool = False, min_samples: int = 3) -> None:
        if interval_ms <= 0:
            raise ValueError("interval_ms must be positive")
        if module_kind not in MODULE_KINDS:
            raise GsdeployError(f"unknown Jetson module kind '{module_kind}'; choose from {', '.join(MODULE_KINDS)}")
        self.interval_ms = int(interval_ms)
        self.module_kind = module_kind
        self.executable = executable
        self.strict = strict
        self.min_samples = min_samples
        self.samples: list[tuple[float, float]] = []  # (perf_counter time, total mW)
        self.module: str | None = None
        self.skipped: str | None = None
        self.errors: list[str] = []
        self.lines_without_rails = 0
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._t0 = self._t1 = 0.0

    def __enter__(self) -> "TegrastatsSampler":
        self.samples.clear()
        self.lines_without_rails = 0
        self.skipped = tegrastats_unavailable_reason(self.executable)
        if self.skipped:
            if self.strict:
                raise MissingDependencyError(self.skipped)
        else:
            try:
                self._proc = subprocess.Popen([self.executable, "--interval", str(self.interval_ms)],
                                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
            except OSError as e:
                self.skipped = f"could not start {self.executable}: {e}"
                if self.strict:
                    raise MissingDependencyError(self.skipped) from None
            else:
                self._thread = threading.Thread(target=self._read, name="tegrastats-reader", daemon=True)
                self._thread.start()
        self._t0 = time.perf_counter()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            now = time.perf_counter()
            rails = parse_line(line)
            if not rails:
                self.lines_without_rails += 1
                continue
            try:
                if self.module is None:
                    self.module = detect_module(rails) if self.module_kind == "auto" else self.module_kind
                mw = total_power_mw(rails, self.module)
            except GsdeployError as e:
                if len(self.errors) < 3:
                    self.errors.append(str(e))
                continue
            with self._lock:
                self.samples.append((now, mw))

    def __exit__(self, *exc: object) -> None:
        self._t1 = time.perf_counter()
        if self._proc is not None:
            self._proc.terminate()
            try:
                _, err = self._proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                _, err = self._proc.communicate()
            if self._thread is not None:
                self._thread.join(timeout=5)
            if not self.samples and err and err.strip():
                self.errors.append(err.strip().splitlines()[-1])
            self._proc = None

    def result(self, inferences: int) -> PowerResult:
        """Average power over the block and energy per inference (`inferences` = samples
        processed in the block, i.e. runs × batch)."""
        if inferences <= 0:
            raise ValueError("inferences must be positive")
        with self._lock:
            window = [mw for t, mw in self.samples if self._t0 <= t <= self._t1]
        skipped = self.skipped
        if skipped is None and len(window) < self.min_samples:
            skipped = (f"only {len(window)} tegrastats sample(s) during the loop (need {self.min_samples}); "
                       f"time the loop for longer than {self.min_samples} × {self.interval_ms} ms")
            if self.errors:
                skipped += f" ({self.errors[0]})"
            elif not window and self.lines_without_rails:
                skipped += (" (tegrastats printed no power rails: some Jetson Linux images show them only to "
                            "root, and a Jetson Nano 2GB has no power monitor)")
        if skipped is not None:
            return PowerResult(None, None, None, None, len(window), inferences, self.module, skipped)
        duration = self._t1 - self._t0
        avg_w = sum(window) / len(window) / 1000.0
        energy_j = avg_w * duration
        return PowerResult(avg_power_w=avg_w, energy_per_inference_mj=energy_j / inferences * 1000.0,
                           energy_j=energy_j, duration_s=duration, samples=len(window), inferences=inferences,
                           module=self.module)
