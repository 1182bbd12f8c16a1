"""The timing scheduler: warm up by time, then interleave runners in blocks.

Why this shape (docs/measuring.md):
- Stop rule like trtexec/MLPerf: a minimum number of iterations AND a minimum duration,
  so fast models get many samples and slow ones still run long enough to average drift.
- Baseline and compressed model are timed in the same run, alternately, so frequency
  scaling, thermal state and noisy neighbours hit both alike and cancel in the speedup.
- Alternation is in turns (blocks of >= 30 runs and >= 0.1 s), not run by run: an idle
  ORT session's intra-op threads keep spinning for a while after each run and steal cores
  from the other session; switching every run roughly doubled the medians. Between turns
  the scheduler waits until the process has stopped burning CPU (`settle`), so the next
  turn starts on quiet cores, and drops the first run of each turn (thread wake-up).

The scheduler only sees the `Runner` interface and produces plain durations; `stats.py`
turns them into numbers. Nothing here knows which engine it is timing.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from gsdeploy.bench.runners.base import RunnerLike
from gsdeploy.bench.stats import TimingStats, summarize


@dataclass
class MeasureConfig:
    warmup_s: float = 0.5  # run time each runner spends warming up (trtexec: 200 ms)
    min_iterations: int = 50  # timed runs per runner, at least
    min_duration_s: float = 2.0  # summed timed run time per runner, at least
    block: int = 30  # runs per turn before switching to the next runner
    pause_s: float = 0.01  # minimum idle gap between turns
    # After the minimum gap, keep waiting (up to this long) while the process still burns
    # CPU: the runner that just finished has threads spinning for work that will not come.
    # Measured here: an ORT 1.32 session's intra-op worker spins 30-70 ms after its last
    # run, so a fixed 10 ms pause left it competing with the next runner for the first ~15
    # runs of every turn (those runs +60 %, the medians +50 %). Waiting for the CPU to go
    # quiet adapts to any engine's spin policy (ORT, OpenMP in torch) and costs nothing on
    # a GPU.
    settle_max_s: float = 0.25
    # A turn also ends after this much run time, so a slow model (ResNet-50 at batch 64)
    # does not hold the machine for 30 × 1 s while the other one waits.
    block_max_s: float = 0.5
    # A turn goes on past `block` runs until it has lasted this long, so the settle wait
    # (30-70 ms after an ORT turn) stays small next to the turn even when one run takes
    # microseconds: 30 runs of a 20 µs model would otherwise spend 98 % of the wall time
    # waiting. 0 makes turns exactly `block` runs.
    block_min_s: float = 0.1
    # Untimed runs at the start of each turn when several runners alternate: the first run
    # after a switch wakes the runner's parked threads and refills its caches, a cost that
    # a back-to-back loop never pays; dropping it makes the samples comparable to one.
    block_warmup_runs: int = 1

    def __post_init__(self) -> None:
        if self.warmup_s < 0 or self.min_duration_s < 0 or self.pause_s < 0:
            raise ValueError("warmup_s, min_duration_s and pause_s must be >= 0")
        if self.min_iterations < 1 or self.block < 1:
            raise ValueError("min_iterations and block must be >= 1")
        if self.settle_max_s < 0:
            raise ValueError("settle_max_s must be >= 0")
        if self.block_max_s <= 0 or self.block_min_s < 0:
            raise ValueError("block_max_s must be > 0 and block_min_s >= 0")
        if self.block_warmup_runs < 0:
            raise ValueError("block_warmup_runs must be >= 0")


def _clock(runner: RunnerLike) -> Callable[[], float]:
    """The runner's own timer if it has one (e.g. CUDA events), else the host clock."""
    own = getattr(runner, "time_once", None)
    if callable(own):
        return own
    run_once = runner.run_once
    perf = time.perf_counter

    def host_clock() -> float:
        t0 = perf()
        run_once()
        return perf() - t0

    return host_clock


# Quiet = the process used under this share of one core during a probe slice. The slice
# must span a few scheduler ticks: Linux often accounts process CPU time per tick (4 ms at
# 250 Hz), so a 2 ms probe reads 0 or 2 cores at random while a thread spins.
_QUIET_CPU_SHARE = 0.1
_PROBE_S = 0.01


def settle(min_s: float, max_s: float) -> float:
    """Sleep `min_s`, then until this process stops using CPU or `max_s` (total) has passed.

    Returns the seconds waited. Process CPU time covers every thread of the process, so it
    sees engine worker threads spinning in the background without knowing the engine.
    """
    t0 = time.perf_counter()
    if min_s > 0:
        time.sleep(min_s)
    while time.perf_counter() - t0 < max_s:
        c0, w0 = time.process_time(), time.perf_counter()
        time.sleep(_PROBE_S)
        if time.process_time() - c0 < _QUIET_CPU_SHARE * (time.perf_counter() - w0):
            break
    return time.perf_counter() - t0


def measure_interleaved(runners: Mapping[str, RunnerLike], batch: int, cfg: MeasureConfig | None = None,
                        on_progress: Callable[[float], None] | None = None,
                        samples_out: dict[str, list[float]] | None = None) -> dict[str, TimingStats]:
    """Time every runner on `batch` samples, alternating in blocks; returns stats by name.

    Each sample is the duration of one `run_once` (seconds, from `time_once` where the
    runner provides it). Turns go A B A B ... in full rounds until every runner has at
    least `min_iterations` samples and `min_duration_s` of summed run time, so all runners
    see the same number of turns spread over the same stretch of time. `on_progress`
    receives a non-decreasing fraction in [0, 1]; `samples_out`, if given, is filled with
    the raw durations (seconds) per runner.
    """
    cfg = cfg or MeasureConfig()
    if not runners:
        raise ValueError("measure_interleaved needs at least one runner")
    names = list(runners)
    clocks = {n: _clock(runners[n]) for n in names}
    several = len(names) > 1
    samples: dict[str, list[float]] = {n: [] for n in names}
    spent = {n: 0.0 for n in names}

    # Progress: warm-up and measurement weighted by their planned run time.
    planned_warm = cfg.warmup_s
    planned_meas = max(cfg.min_duration_s, 1e-9)
    w = planned_warm / (planned_warm + planned_meas)
    last = [0.0]

    def report(fraction: float) -> None:
        fraction = min(1.0, max(last[0], fraction))
        last[0] = fraction
        if on_progress is not None:
            on_progress(fraction)

    for n in names:
        runners[n].prepare(batch)

    # If the process never goes quiet (an engine configured to spin forever, e.g. OpenMP
    # with OMP_WAIT_POLICY=active), waiting for it is pointless: after a few capped waits
    # fall back to the fixed pause. The count is not reset by a quiet probe, because on a
    # loaded machine a spinning thread that is merely descheduled also looks quiet.
    capped = [0]

    def between_turns() -> None:
        if capped[0] >= 3:
            time.sleep(cfg.pause_s)
            return
        waited = settle(cfg.pause_s, cfg.settle_max_s)
        if cfg.settle_max_s > 0 and waited >= cfg.settle_max_s:
            capped[0] += 1

    # The collector pausing mid-series would add a spike to whichever runner is unlucky;
    # collect once now and keep it off while timing (timeit does the same).
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        report(0.0)
        # Warm-up, by time and in turns, so each runner is warm when its timed turns begin
        # and the alternation pattern itself is already in steady state.
        warm = {n: 0.0 for n in names}
        while True:
            pending = [n for n in names if warm[n] < cfg.warmup_s]
            if not pending and all(warm[n] > 0 for n in names):
                break
            for i, n in enumerate(names):
                if i and several:
                    between_turns()
                clock = clocks[n]
                t_block = 0.0
                while True:  # at least one run, so even warmup_s=0 initialises lazy state
                    t_block += clock()
                    if t_block >= min(cfg.block_max_s, max(cfg.warmup_s - warm[n], 0.0)):
                        break
                warm[n] += t_block
            report(w * min(min(warm[n] / cfg.warmup_s, 1.0) if cfg.warmup_s else 1.0 for n in names))
            if several:
                between_turns()

        def done(n: str) -> bool:
            return len(samples[n]) >= cfg.min_iterations and spent[n] >= cfg.min_duration_s

        def fraction() -> float:
            return min(min(len(samples[n]) / cfg.min_iterations,
                           spent[n] / cfg.min_duration_s if cfg.min_duration_s else 1.0, 1.0) for n in names)

        first_turn = True
        while not all(done(n) for n in names):
            for n in names:
                if several and not first_turn:
                    between_turns()
                first_turn = False
                clock = clocks[n]
                if several:
                    for _ in range(cfg.block_warmup_runs):
                        clock()
                out = samples[n]
                t_block = 0.0
                runs = 0
                while True:
                    t = clock()
                    out.append(t)
                    t_block += t
                    runs += 1
                    if t_block >= cfg.block_max_s:
                        break
                    if runs >= cfg.block and t_block >= cfg.block_min_s:
                        break
                spent[n] += t_block
            report(w + (1.0 - w) * fraction())
    finally:
        if gc_was_enabled:
            gc.enable()

    report(1.0)
    if samples_out is not None:
        for n in names:
            samples_out[n] = list(samples[n])
    return {n: summarize(samples[n]) for n in names}
