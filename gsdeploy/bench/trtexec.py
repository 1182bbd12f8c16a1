"""trtexec as a cross-check of gsdeploy's own TensorRT timings (`benchmarks/trt_truth.py`).

trtexec is NVIDIA's reference benchmark, so a latency we report for an engine should agree with
it. Its defaults are a trap: TensorRT 11.0 flipped three of them (10.x: data transfers on,
spin-wait off, CUDA graph off; 11.x: transfers off, spin-wait on, CUDA graph on, and the
profiler always in a separate run). The same command line therefore measures different things
on the two versions. Here every timing setting is decided by us, passed explicitly where the
detected version has a switch for it, and returned with the result.

Flag names and semantics are from TensorRT's own trtexec sources (samples/common/sampleOptions.cpp
at tags v10.16 and v11.1 of github.com/NVIDIA/TensorRT) and the migration page
https://docs.nvidia.com/deeplearning/tensorrt/11.4.1/api/migration/tensorrt-10x-to-11x-trtexec.html .
trtexec's boolean switches can only turn their behaviour *on* (the parser treats presence as
true), so on 10.x "transfers on / spin-wait off / graph off" are expressed by omitting the switch;
that is why `settings` is returned beside `argv`.

The --exportTimes format is from sampleReporting.cpp (exportJSONTrace, unchanged 10.x to 11.x):
a JSON list, one object per timed iteration (warm-up excluded), with startEnqMs, endEnqMs,
startH2dMs, endH2dMs, startComputeMs, endComputeMs, startD2hMs, endD2hMs, h2dMs, computeMs, d2hMs
and latencyMs (= h2dMs + computeMs + d2hMs), all in milliseconds.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from gsdeploy.atomic import scratch_dir
from gsdeploy.errors import GsdeployError, MissingDependencyError

TRTEXEC_MISSING = ("trtexec was not found: it ships with TensorRT (the tar/zip package's bin/, or "
                   "/usr/src/tensorrt/bin on Jetson with JetPack); add it to PATH on the CUDA machine")

EXPORT_TIMES_KEYS = ("startEnqMs", "endEnqMs", "startH2dMs", "endH2dMs", "startComputeMs", "endComputeMs",
                     "startD2hMs", "endD2hMs", "h2dMs", "computeMs", "d2hMs", "latencyMs")


# Flags whose value gsdeploy decides; extra arguments may not override them.
PINNED_FLAGS = frozenset({
    "--loadEngine", "--onnx", "--shapes", "--warmUp", "--iterations", "--duration", "--avgRuns", "--percentile",
    "--infStreams", "--streams", "--sleepTime", "--idleTime", "--noDataTransfers", "--includeDataTransfers",
    "--useSpinWait", "--noSpinWait", "--useCudaGraph", "--noCudaGraph", "--separateProfileRun", "--exportTimes",
    "--exportProfile"})


class TrtexecError(GsdeployError):
    """trtexec failed, or its output could not be read."""


@dataclass(frozen=True)
class TrtexecTiming:
    """How trtexec times an engine. Defaults measure GPU compute like gsdeploy's TrtRunner does:
    no host<->device copies (reported separately by the runner), spin-wait so the host sees the
    end of each inference without a sleep/wake delay, no CUDA graph (the Python runner launches
    without one, so the two stay comparable; set cuda_graph=True for TensorRT's best case)."""

    warmup_ms: float = 500.0  # trtexec default 200 ms; longer lets GPU clocks settle
    iterations: int = 100  # a minimum, like duration: trtexec runs until both are met
    duration_s: float = 10.0
    avg_runs: int = 10  # only affects trtexec's printed averages, not the exported samples
    percentiles: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0)
    data_transfers: bool = False
    spin_wait: bool = True
    cuda_graph: bool = False
    infer_streams: int = 1  # >1 makes per-inference latencies invalid (trtexec warns so)
    sleep_ms: float = 0.0
    idle_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.warmup_ms < 0 or self.sleep_ms < 0 or self.idle_ms < 0:
            raise TrtexecError("trtexec warm-up, sleep and idle times cannot be negative")
        if self.iterations < 1 or self.duration_s <= 0 or self.avg_runs < 1 or self.infer_streams < 1:
            raise TrtexecError("trtexec iterations, duration, avg runs and streams must be positive")
        if not self.percentiles or any(not 0 <= p <= 100 for p in self.percentiles):
            raise TrtexecError(f"percentiles must lie in [0, 100], got {self.percentiles}")


@dataclass(frozen=True)
class TrtexecCommand:
    argv: list[str]
    version: tuple[int, ...]
    settings: dict[str, Any]  # the effective timing settings, whatever the flags look like


def _num(v: float) -> str:
    """3.0 -> '3', 2.5 -> '2.5': trtexec parses both, integers read better in a recorded command."""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def parse_trtexec_version(text: str) -> tuple[int, int, int]:
    """Version from trtexec's output: 'TensorRT version: 10.16.0' (printed when it runs) or the
    banner '&&&& RUNNING TensorRT.trtexec [TensorRT v101600] [b72]' (printed first, even for
    --help), where v = major*10000 + minor*100 + patch (NV_TENSORRT_VERSION)."""
    m = re.search(r"TensorRT version:\s*(\d+)\.(\d+)\.(\d+)", text)
    if m:
        return int(m.group(1)), int(m.group(2)), int(m.group(3))
    m = re.search(r"\[TensorRT v(\d+)\]", text)
    if m:
        v = int(m.group(1))
        return v // 10000, (v // 100) % 100, v % 100
    raise TrtexecError("could not find the TensorRT version in trtexec's output")


def _shape_spec(shapes: Mapping[str, Sequence[int]]) -> str:
    for name in shapes:
        if not name or any(c in name for c in ",:"):
            raise TrtexecError(f"input name {name!r} cannot be passed to trtexec --shapes")
    return ",".join(f"{name}:{'x'.join(str(int(d)) for d in shape)}" for name, shape in shapes.items())


def trtexec_command(engine_path: Path, shapes: Mapping[str, Sequence[int]], version: Sequence[int],
                    timing: TrtexecTiming = TrtexecTiming(), export_times: Path | None = None,
                    export_profile: Path | None = None, exe: str = "trtexec",
                    extra_args: Sequence[str] = ()) -> TrtexecCommand:
    """The command line that benchmarks a built engine with every timing setting pinned.

    `shapes` gives the full input shape per input name (batch included): required for engines
    with a dynamic batch, and harmless otherwise. `export_profile` asks for per-layer times,
    which trtexec must take in a separate run so the profiler does not slow the timed one
    (10.x: --separateProfileRun; 11.x: always separate, the flag is deprecated). `extra_args`
    (e.g. --useManagedMemory, --persistentCacheRatio=...) are appended, but none may set a flag
    listed in PINNED_FLAGS: those go through `timing` so the recorded settings stay true.
    """
    version = tuple(int(v) for v in version)
    if not version or version[0] < 10:
        raise TrtexecError(f"gsdeploy drives trtexec from TensorRT 10 on, found {'.'.join(map(str, version))}")
    t = timing
    argv = [exe, f"--loadEngine={engine_path}"]
    if shapes:
        argv.append(f"--shapes={_shape_spec(shapes)}")
    argv += [
        f"--warmUp={_num(t.warmup_ms)}",
        f"--iterations={t.iterations}",
        f"--duration={_num(t.duration_s)}",
        f"--avgRuns={t.avg_runs}",
        "--percentile=" + ",".join(_num(p) for p in t.percentiles),
        f"--infStreams={t.infer_streams}",
        f"--sleepTime={_num(t.sleep_ms)}",
        f"--idleTime={_num(t.idle_ms)}",
    ]
    if version[0] >= 11:
        # 11.x defaults: transfers off, spin-wait on, CUDA graph on; switches turn them back.
        if t.data_transfers:
            argv.append("--includeDataTransfers")
        if not t.spin_wait:
            argv.append("--noSpinWait")
        if not t.cuda_graph:
            argv.append("--noCudaGraph")
    else:
        # 10.x defaults: transfers on, spin-wait off, CUDA graph off; switches turn them on/off.
        if not t.data_transfers:
            argv.append("--noDataTransfers")
        if t.spin_wait:
            argv.append("--useSpinWait")
        if t.cuda_graph:
            argv.append("--useCudaGraph")
    if export_times is not None:
        argv.append(f"--exportTimes={export_times}")
    if export_profile is not None:
        if version[0] < 11:
            argv.append("--separateProfileRun")
        argv.append(f"--exportProfile={export_profile}")
    for arg in extra_args:
        name = str(arg).split("=", 1)[0]
        if name in PINNED_FLAGS:
            raise TrtexecError(f"extra trtexec argument {arg} would override a setting gsdeploy pins; "
                               "set it through the timing options instead")
        argv.append(str(arg))
    settings = asdict(t) | {"percentiles": list(t.percentiles), "separate_profile_run": export_profile is not None,
                            "trtexec_version": ".".join(map(str, version)), "extra_args": list(map(str, extra_args))}
    return TrtexecCommand(argv=argv, version=version, settings=settings)


@dataclass(frozen=True)
class TrtexecTimes:
    """Per-iteration samples from --exportTimes, in milliseconds (warm-up already excluded)."""

    latency_ms: np.ndarray  # H2D + compute + D2H, as trtexec defines latency
    compute_ms: np.ndarray  # GPU compute
    h2d_ms: np.ndarray
    d2h_ms: np.ndarray
    enqueue_ms: np.ndarray  # host time to enqueue one inference
    start_ms: np.ndarray  # enqueue start of each iteration, trtexec's clock

    def __len__(self) -> int:
        return int(self.latency_ms.shape[0])

    @property
    def latency_s(self) -> list[float]:
        return (self.latency_ms / 1e3).tolist()

    @property
    def compute_s(self) -> list[float]:
        return (self.compute_ms / 1e3).tolist()

    def summary(self) -> dict[str, float]:
        """Median and p90/p99 of compute and latency, for a quick look next to trtexec's own print."""
        out: dict[str, float] = {"iterations": float(len(self))}
        for name, arr in (("compute_ms", self.compute_ms), ("latency_ms", self.latency_ms)):
            for q in (50, 90, 99):
                out[f"{name}_p{q}"] = float(np.percentile(arr, q))
        return out


def parse_export_times(data: str | bytes | Sequence[Mapping[str, Any]]) -> TrtexecTimes:
    """Parse --exportTimes output (text or already-decoded JSON) into per-iteration samples."""
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as e:
            raise TrtexecError(f"trtexec --exportTimes output is not JSON: {e}") from None
    if not isinstance(data, list):
        raise TrtexecError("trtexec --exportTimes output must be a JSON list of iterations")
    if not data:
        raise TrtexecError("trtexec --exportTimes output holds no iterations")
    cols: dict[str, list[float]] = {k: [] for k in EXPORT_TIMES_KEYS}
    for i, row in enumerate(data):
        if not isinstance(row, Mapping):
            raise TrtexecError(f"trtexec --exportTimes entry {i} is not an object")
        missing = [k for k in EXPORT_TIMES_KEYS if k not in row]
        if missing:
            raise TrtexecError(f"trtexec --exportTimes entry {i} lacks {', '.join(missing)}")
        for k in EXPORT_TIMES_KEYS:
            v = row[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
                raise TrtexecError(f"trtexec --exportTimes entry {i}: {k} is not a finite number ({v!r})")
            cols[k].append(float(v))
    a = {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}
    for k in ("h2dMs", "computeMs", "d2hMs", "latencyMs"):
        if np.any(a[k] < 0):
            raise TrtexecError(f"trtexec --exportTimes has negative {k}")
    return TrtexecTimes(latency_ms=a["latencyMs"], compute_ms=a["computeMs"], h2d_ms=a["h2dMs"], d2h_ms=a["d2hMs"],
                        enqueue_ms=a["endEnqMs"] - a["startEnqMs"], start_ms=a["startEnqMs"])


# --------------------------------------------------------------------------------------------
# running it (needs trtexec and a GPU; the functions above are what the tests pin down)


def find_trtexec(exe: str = "trtexec") -> str:
    for candidate in (exe, "/usr/src/tensorrt/bin/trtexec"):
        path = shutil.which(candidate)
        if path:
            return path
    raise MissingDependencyError(TRTEXEC_MISSING)


def trtexec_version(exe: str = "trtexec", timeout_s: float = 120.0) -> tuple[int, int, int]:
    """Ask trtexec itself: its banner carries the version even for --help."""
    path = find_trtexec(exe)
    proc = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=timeout_s, check=False)
    return parse_trtexec_version(proc.stdout + proc.stderr)


@dataclass
class TrtexecResult:
    times: TrtexecTimes
    command: list[str]
    settings: dict[str, Any]
    log_tail: str = field(repr=False, default="")


def run_trtexec(engine_path: Path, shapes: Mapping[str, Sequence[int]], timing: TrtexecTiming = TrtexecTiming(),
                exe: str = "trtexec", timeout_s: float = 1800.0, extra_args: Sequence[str] = ()) -> TrtexecResult:
    """Benchmark `engine_path` with trtexec and return its per-iteration samples."""
    path = find_trtexec(exe)
    version = trtexec_version(path)
    with scratch_dir("trtexec") as tmp:
        times_path = Path(tmp) / "times.json"
        cmd = trtexec_command(engine_path, shapes, version, timing, export_times=times_path, exe=path,
                              extra_args=extra_args)
        proc = subprocess.run(cmd.argv, capture_output=True, text=True, timeout=timeout_s, check=False)
        out = (proc.stdout + proc.stderr)[-4000:]
        if proc.returncode != 0 or not times_path.exists():
            last = [ln for ln in out.splitlines() if ln.strip()][-3:]
            raise TrtexecError(f"trtexec failed (exit {proc.returncode}): {' | '.join(last)}")
        times = parse_export_times(times_path.read_text())
    return TrtexecResult(times=times, command=cmd.argv, settings=cmd.settings, log_tail=out)
