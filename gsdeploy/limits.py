"""Limits on what gsdeploy reads, and the one check every number from a flag or a file passes.

A number that is NaN, infinite or absurdly large turns a benchmark into an endless loop or an
allocation of the whole machine (`--min-duration-s nan`, `min_duration_s: .inf`, `batch=inf`),
so each one is checked here before any work starts, with a message that names where it came
from. Sizes of files read as text (YAML, JSON, CSV) are bounded for the same reason, and every
value quoted back in an error goes through `short` so a hostile file cannot make the message
itself huge.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import reprlib
import stat
from pathlib import Path
from typing import Any

from gsdeploy.errors import GsdeployError, LoadError

MAX_YAML_BYTES = 1 << 20  # profiles and claim files are a few KB
MAX_YAML_DEPTH = 32
MAX_YAML_NODES = 100_000
MAX_JSON_BYTES = 64 << 20  # a .pt2's program description and payload configs
MAX_CSV_BYTES = 256 << 20  # result tables: a million rows is far beyond any sweep
MAX_BATCH = 1 << 16
MAX_THREADS = 4096
MAX_SECONDS = 24 * 3600.0
MAX_ITERATIONS = 10**9
MAX_SAMPLE_ELEMENTS = 1 << 28  # one input sample (1 GiB in fp32); 3x224x224 is 150k
MAX_BATCH_ELEMENTS = 1 << 31  # a whole batch (8 GiB in fp32)
# A timing under a nanosecond or over ~3 hours is not a timing; with both bounds every ratio of
# two timings (speedups, geometric means) stays a finite, non-zero float. Timing caches, LUTs and
# result tables share them.
MIN_TIMING_MS = 1e-6
MAX_TIMING_MS = 1e7
MAX_BYTES = 1 << 50
# What each number of a results table (bench/rows.py COLUMNS) may be: (lowest, highest), both
# inclusive, highest None for no bound but finiteness. A hand-edited row of 1e300 ms or 1e300
# MACs made the report print speedups of 1e300; 1e-320 ms made one of 0.
RESULT_RANGES: dict[str, tuple[float, float | None]] = {
    **dict.fromkeys(("latency_ms_median", "latency_ms_mean", "latency_ms_p90", "latency_ms_p95", "latency_ms_p99",
                     "latency_ms_min", "latency_ms_max"), (MIN_TIMING_MS, MAX_TIMING_MS)),
    "latency_cov": (0, 100.0), "batch": (1, MAX_BATCH), "threads": (0, MAX_THREADS), "cores": (0, 1 << 20),
    "iterations": (1, MAX_ITERATIONS), "throughput_per_s": (0, 1e15),
    **dict.fromkeys(("speedup_vs_baseline", "flop_speedup", "efficiency"), (0, 1e9)),
    "macs": (0, 1e16), "params": (0, 1e13), "max_rel_err": (0, None),
    **dict.fromkeys(("weights_bytes", "artifact_bytes", "activation_bytes", "peak_rss_bytes", "cuda_peak_bytes"),
                    (0, MAX_BYTES)),
    "avg_power_w": (0, 1e5), "energy_per_inference_mj": (0, 1e12), "max_cov": (0, 10.0),
    "top1": (0, 100.0), "top1_agreement": (0, 100.0),
    **dict.fromkeys(("gpu_sm_clock_mhz", "gpu_mem_clock_mhz", "gpu_max_sm_clock_mhz"), (0, 1e6)),
}
INTEGER_RESULTS = frozenset({"batch", "threads", "iterations"})


def result_range_problem(col: str, value: float) -> str | None:
    """Why `value` cannot be column `col` of a results table ("must be ..."), or None."""
    low, high = RESULT_RANGES.get(col, (0, None))
    integer = col in INTEGER_RESULTS
    ok = math.isfinite(value) and low <= value and (high is None or value <= high)
    if ok and (not integer or float(value).is_integer()):
        return None
    kind = "an integer" if integer else "a finite number"
    return f"must be {kind} >= {low:g}" + (f" and <= {high:g}" if high is not None else "")


# --prune-threshold / a sweep's prune_threshold: an L2 norm of a group of weights; above this
# every group of any trained network goes, which is a typo, not a threshold
MAX_PRUNE_THRESHOLD = 1e6
# The multiples a deploy may align widths to (DeployOptions.align; 0: off): what targets' kernels want
ALIGN_MULTIPLES = (0, 2, 4, 8, 16, 32)

_repr = reprlib.Repr()
_repr.maxstring = 80
_repr.maxother = 80
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6
_repr.maxlevel = 3


def short(text: str, limit: int = 160) -> str:
    """`text` cut to `limit` characters, with control characters (ANSI colour codes among them)
    removed, for quoting file contents and foreign messages in one error line."""
    clean = "".join(ch if ch.isprintable() else " " for ch in strip_ansi(str(text)))
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def brief(value: Any) -> str:
    """A bounded repr of any value (a YAML alias bomb expands to gigabytes when repr'd in full)."""
    return short(_repr.repr(value), 200)


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])", "", text)


def is_out_of_memory(e: BaseException) -> bool:
    """torch and ONNX Runtime report a failed allocation as a RuntimeError (or their own type),
    not as MemoryError."""
    if isinstance(e, MemoryError):
        return True
    text = str(e).lower()
    return any(p in text for p in ("not enough memory", "can't allocate memory", "out of memory",
                                   "cannot allocate memory", "bad_alloc", "bad allocation"))


def check_number(what: str, value: Any, *, integer: bool = False, minimum: float | None = None,
                 maximum: float | None = None, above: float | None = None,
                 error: type[GsdeployError] = GsdeployError) -> Any:
    """Return `value` if it is a finite number (an int when `integer`) within [minimum, maximum]
    (and > `above`); otherwise raise `error` naming `what`."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and integer and isinstance(value, float):
        ok = value.is_integer()
    if ok:
        ok = math.isfinite(value)
    if ok and minimum is not None:
        ok = value >= minimum
    if ok and above is not None:
        ok = value > above
    if ok and maximum is not None:
        ok = value <= maximum
    if not ok:
        kind = "an integer" if integer else "a finite number"
        bounds = []
        if above is not None:
            bounds.append(f"> {above:g}")
        if minimum is not None:
            bounds.append(f">= {minimum:g}")
        if maximum is not None:
            bounds.append(f"<= {maximum:g}")
        rng = f" {' and '.join(bounds)}" if bounds else ""
        raise error(f"{what} must be {kind}{rng}, not {brief(value)}")
    return int(value) if integer else value


def comma_list(text: str, what: str, expected: str, error: type[GsdeployError] = GsdeployError) -> list[str]:
    """The items of a comma-separated flag value, stripped. An empty item (`1,,2`, a trailing
    comma, '' from an unset shell variable) is refused, not skipped: the user meant something
    there."""
    items = [p.strip() for p in str(text).split(",")]
    if not all(items):
        raise error(f"{what} must list {expected}, separated by single commas, not '{short(text)}'")
    return items


def parse_batches(text: str, what: str = "--batch", error: type[GsdeployError] = GsdeployError) -> tuple[int, ...]:
    """'1,8,32' -> (1, 8, 32): plain decimal integers 1..MAX_BATCH (no '1e3', '1_000', '+1',
    non-ASCII digits, which int() would take)."""
    expected = f"integers 1..{MAX_BATCH}"
    items = comma_list(text, what, expected, error)
    bad = [p for p in items if not re.fullmatch(r"[0-9]{1,12}", p)]
    if bad:
        raise error(f"{what} must be a comma-separated list of integers, not '{short(text)}'")
    values = tuple(int(p) for p in items)
    if any(v < 1 or v > MAX_BATCH for v in values):
        raise error(f"{what} must list {expected}, not '{short(text)}'")
    return values


def parse_json(text: str | bytes, source: str, error: type[GsdeployError] = GsdeployError) -> Any:
    """JSON from a file gsdeploy did not write itself: NaN/Infinity (which json accepts) and a key
    written twice in one object (json keeps the last) are refused, and nesting deep enough to
    exhaust the stack is an error, not a crash."""
    def no_constants(name: str) -> None:
        raise error(f"{source}: {name} is not a number")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise error(f"{source}: key {brief(k)} is written twice in one object")
            out[k] = v
        return out

    try:
        return json.loads(text, parse_constant=no_constants, object_pairs_hook=no_duplicates)
    except RecursionError:
        raise error(f"{source} is not valid JSON: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError of bytes, an integer of 5000 digits
        raise error(f"{source} is not valid JSON: {short(str(e))}") from None


def read_json(path: Path, what: str, error: type[GsdeployError] = GsdeployError,
              max_bytes: int = MAX_JSON_BYTES) -> Any:
    """A JSON file that must be a regular file (a FIFO or device is never opened) of at most
    `max_bytes`, UTF-8, parsed by parse_json; every problem is `error` naming the file."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{path} is {size} bytes; a {what} may be at most {max_bytes} bytes")
        if not path.is_file():
            raise error(f"{path} is not a regular file")
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as e:
        raise error(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{path} is not UTF-8 JSON") from None
    return parse_json(text, str(path), error)


def check_readable(path: Path, what: str = "checkpoint file") -> None:
    """A regular, non-empty file we may read. Devices and FIFOs are refused without opening them
    (reading /dev/zero never ends; opening a FIFO blocks until someone writes)."""
    try:
        st = path.stat()
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise LoadError(f"{path} is a symbolic link loop") from None
        if e.errno == errno.EACCES:
            raise LoadError(f"cannot read {path}: permission denied") from None
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise LoadError(f"no such file: {path}") from None
        raise LoadError(f"cannot read {path}: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise LoadError(f"{path} is a directory, not a {what}")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a device" if
                stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "not a regular file")
        raise LoadError(f"{path} is {kind}, not a {what}")
    if st.st_size == 0:
        raise LoadError(f"{path}: the file is empty")
    if not os.access(path, os.R_OK):
        raise LoadError(f"cannot read {path}: permission denied")
