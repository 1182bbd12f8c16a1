"""Timing cache and latency look-up tables (LUTs): measurements kept per target fingerprint.

A fingerprint names everything that changes a timing: engine and its version, the device
(CPU or GPU model), threads, precision and the engine's settings; batch is part of every
entry's key. Entries are kept in the user's cache directory (platformdirs), one JSON file per
fingerprint, so a second plan on the same machine costs seconds. A LUT is the same JSON
written where the user asks (`gsdeploy plan --save-lut F.json`), to plan on the device and
export anywhere.

Files are untrusted input: JSON only (never pickle), size-bounded, every key a bounded
string, every number finite and in range, or the file is refused with one line.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import platformdirs

from gsdeploy.atomic import lock_problem, locked, write_text_atomic
from gsdeploy.errors import GsdeployError
from gsdeploy.limits import ALIGN_MULTIPLES, MAX_TIMING_MS, MIN_TIMING_MS, brief, parse_json, read_json

FORMAT = "gsdeploy-timing-lut"
VERSION = 1
MAX_FILE_BYTES = 16 * 1024 * 1024
MAX_ENTRIES = 100_000
MAX_KEY_CHARS = 200
# limits' bounds on a timing (5e-324 / 1e7 is 0: log(0) failed)
MAX_MS = MAX_TIMING_MS
MIN_MS = MIN_TIMING_MS
MAX_COV = 100.0
MAX_BATCH = 1 << 20
MAX_BATCHES = 64
# The whole-model variants a plan chooses among, in the order a tie goes (the simpler model first).
PLAN_VARIANTS = ("never", "flops", "always", "latency")
# What may be in a fingerprint: short scalars only.
MAX_FP_FIELDS = 32
CHOICE_RE = re.compile(r"keep|fuse|pad:[1-9][0-9]{0,5}")


class LutError(GsdeployError):
    """A LUT or cache file that is not what it claims, or belongs to another target."""


@dataclass(frozen=True)
class Timing:
    median_ms: float
    cov: float


@dataclass
class TimingTable:
    """Per-site and whole-model timings for one fingerprint."""

    fingerprint: dict[str, Any]
    # sites[signature][candidate][batch] and models[key][variant][batch]
    sites: dict[str, dict[str, dict[int, Timing]]] = field(default_factory=dict)
    models: dict[str, dict[str, dict[int, Timing]]] = field(default_factory=dict)
    # plans[key] = {"winner": variant, "model": models key, "choices": {site: choice}, "reasons": {site: text},
    #               "batch_winners": {batch: variant}, "align": multiple}:
    # the decision for one model, so the same command gives the same plan without re-planning
    plans: dict[str, dict[str, Any]] = field(default_factory=dict)

    def site(self, signature: str, candidate: str, batch: int) -> Timing | None:
        return self.sites.get(signature, {}).get(candidate, {}).get(int(batch))

    def put_site(self, signature: str, candidate: str, batch: int, t: Timing) -> None:
        self.sites.setdefault(signature, {}).setdefault(candidate, {})[int(batch)] = t

    def model(self, key: str) -> dict[str, dict[int, Timing]] | None:
        return self.models.get(key)

    def put_model(self, key: str, timings: Mapping[str, Mapping[int, Timing]]) -> None:
        self.models[key] = {v: dict(b) for v, b in timings.items()}

    def update(self, other: "TimingTable") -> None:
        """Add `other`'s timings and plans, its values winning where both have one."""
        for sig, cands in other.sites.items():
            for c, bs in cands.items():
                self.sites.setdefault(sig, {}).setdefault(c, {}).update(bs)
        self.models.update(other.models)
        self.plans.update(other.plans)

    def to_json(self) -> str:
        def block(d):
            return {k: {c: {str(b): [t.median_ms, t.cov] for b, t in sorted(bs.items())} for c, bs in v.items()}
                    for k, v in sorted(d.items())}

        return json.dumps({"format": FORMAT, "version": VERSION, "fingerprint": self.fingerprint,
                           "sites": block(self.sites), "models": block(self.models), "plans": self.plans},
                          indent=1, sort_keys=True)


def fingerprint_key(fp: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def describe_fingerprint(fp: Mapping[str, Any]) -> str:
    keys = ("engine", "engine_version", "provider", "device", "threads", "precision")
    return ", ".join(f"{k}={fp[k]}" for k in keys if k in fp) or "a target it does not name"


# ---- reading untrusted JSON -----------------------------------------------------------------


def _key(x: Any, where: str) -> str:
    if not isinstance(x, str) or not 0 < len(x) <= MAX_KEY_CHARS:
        raise LutError(f"{where}: keys must be strings of 1-{MAX_KEY_CHARS} characters")
    return _printable(x, where)


def _printable(x: str, where: str) -> str:
    """Text from a LUT is printed (plan tables, reasons, the fingerprint): gsdeploy writes none
    with control characters, and one that has them could drive the user's terminal (ANSI)."""
    if not x.isprintable():
        raise LutError(f"{where}: text with control characters")
    return x


def _timings(obj: Any, where: str, count: list[int]) -> dict[str, dict[str, dict[int, Timing]]]:
    if not isinstance(obj, dict):
        raise LutError(f"{where} must be an object")
    out: dict[str, dict[str, dict[int, Timing]]] = {}
    for k, cands in obj.items():
        _key(k, where)
        if not isinstance(cands, dict):
            raise LutError(f"{where}.{k} must be an object")
        for c, batches in cands.items():
            _key(c, f"{where}.{k}")
            if not isinstance(batches, dict):
                raise LutError(f"{where}.{k}.{c} must be an object")
            for b, v in batches.items():
                count[0] += 1
                if count[0] > MAX_ENTRIES:
                    raise LutError(f"more than {MAX_ENTRIES} timings")
                if not is_batch_key(b):
                    raise LutError(f"{where}.{k}.{c}: batch {b!r} is not an integer in 1..{MAX_BATCH}")
                if not (isinstance(v, list) and len(v) == 2 and all(type(x) in (int, float) for x in v)):
                    raise LutError(f"{where}.{k}.{c}.{b} must be [median_ms, cov]")
                ms, cov = float(v[0]), float(v[1])
                if not (math.isfinite(ms) and MIN_MS <= ms <= MAX_MS and math.isfinite(cov) and 0 <= cov <= MAX_COV):
                    raise LutError(f"{where}.{k}.{c}.{b}: [{v[0]}, {v[1]}] out of range "
                                   f"(median {MIN_MS:g}..{MAX_MS:g} ms, CoV 0..{MAX_COV:g})")
                out.setdefault(k, {}).setdefault(c, {})[int(b)] = Timing(ms, cov)
    return out


def is_batch_key(b: Any) -> bool:
    """A JSON key naming a batch: ASCII digits (str.isdigit also takes '²'), 1..MAX_BATCH."""
    return isinstance(b, str) and 0 < len(b) <= 8 and b.isascii() and b.isdigit() and 0 < int(b) <= MAX_BATCH


def _plans(obj: Any, count: list[int]) -> dict[str, dict[str, Any]]:
    if not isinstance(obj, dict):
        raise LutError("plans must be an object")
    out = {}
    for k, rec in obj.items():
        _key(k, "plans")
        if not isinstance(rec, dict) or set(rec) - {"batch_winners", "align"} != {"winner", "model", "choices", "reasons"}:
            raise LutError(f"plans.{k} must have exactly winner, model, choices, reasons (and batch_winners, align)")
        align = rec.get("align", 0)
        if type(align) is not int or align not in ALIGN_MULTIPLES:
            raise LutError(f"plans.{k}.align must be one of {', '.join(map(str, ALIGN_MULTIPLES))}, got {align!r}")
        if rec["winner"] not in PLAN_VARIANTS:  # here, so a cache naming another one is damaged (re-measured)
            raise LutError(f"plans.{k}.winner: {brief(rec['winner'])} is not one of {', '.join(PLAN_VARIANTS)}")
        _key(rec["model"], f"plans.{k}.model")
        winners = rec.get("batch_winners", {})
        if not isinstance(winners, dict) or len(winners) > MAX_BATCHES:
            raise LutError(f"plans.{k}.batch_winners must be an object of at most {MAX_BATCHES} batches")
        for b, name in winners.items():
            if not is_batch_key(b) or not isinstance(name, str) or name not in PLAN_VARIANTS:
                raise LutError(f"plans.{k}.batch_winners: {b!r}: {name!r} is not a batch (1..{MAX_BATCH}) and one "
                               f"of {', '.join(PLAN_VARIANTS)}")
        for part in ("choices", "reasons"):
            if not isinstance(rec[part], dict):
                raise LutError(f"plans.{k}.{part} must be an object")
            for site, v in rec[part].items():
                count[0] += 1
                if count[0] > MAX_ENTRIES:
                    raise LutError(f"more than {MAX_ENTRIES} entries")
                _key(site, f"plans.{k}.{part}")
                limit = MAX_KEY_CHARS if part == "choices" else 4000
                if not isinstance(v, str) or len(v) > limit:
                    raise LutError(f"plans.{k}.{part}.{site} must be a string of at most {limit} characters")
                _printable(v, f"plans.{k}.{part}.{site}")
                if part == "choices" and not CHOICE_RE.fullmatch(v):
                    raise LutError(f"plans.{k}.choices.{site}: {v!r} is not keep, fuse or pad:N")
        out[k] = rec
    return out


TOP_KEYS = {"format", "version", "fingerprint", "sites", "models", "plans"}


def parse_table(text: str, source: str) -> TimingTable:
    return table_from_json(parse_json(text, source, LutError), source)  # no NaN/Infinity, no key twice


def table_from_json(data: Any, source: str) -> TimingTable:
    """The table a parsed LUT holds, every key and number checked."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise LutError(f"{source} is not a gsdeploy timing LUT (no \"format\": \"{FORMAT}\")")
    if data.get("version") != VERSION:
        raise LutError(f"{source} has LUT version {brief(data.get('version'))}; this gsdeploy reads version {VERSION}")
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise LutError(f"{source}: unknown key {brief(unknown[0])} (a LUT has {', '.join(sorted(TOP_KEYS))})")
    fp = data.get("fingerprint")
    if not isinstance(fp, dict) or not fp or len(fp) > MAX_FP_FIELDS or not all(
            isinstance(k, str) and len(k) <= MAX_KEY_CHARS and (
                (isinstance(v, str) and len(v) <= MAX_KEY_CHARS) or type(v) is bool or
                (type(v) is int and abs(v) <= MAX_BATCH) or v is None) for k, v in fp.items()):
        raise LutError(f"{source}: fingerprint must be an object of short strings, integers or booleans")
    for k, v in fp.items():
        _printable(k, f"{source}: fingerprint")
        if isinstance(v, str):
            _printable(v, f"{source}: fingerprint.{k}")
    count = [0]
    try:
        return TimingTable(fp, _timings(data.get("sites", {}), "sites", count),
                           _timings(data.get("models", {}), "models", count), _plans(data.get("plans", {}), count))
    except LutError as e:
        raise LutError(f"{source}: {e}") from None


def read_table(path: Path) -> TimingTable:
    return table_from_json(read_json(path, "LUT", LutError, MAX_FILE_BYTES), str(path))


def check_matches(table: TimingTable, fp: Mapping[str, Any], source: str, compare: tuple[str, ...]) -> None:
    """Refuse a table measured on another target: every field in `compare` must agree."""
    diff = [k for k in compare if table.fingerprint.get(k) != fp.get(k)]
    if diff:
        raise LutError(f"{source} was measured on another target ({describe_fingerprint(table.fingerprint)}); "
                       f"this target is {describe_fingerprint(fp)} (differs in {', '.join(diff)})")


# ---- the user's cache directory -------------------------------------------------------------


def cache_dir() -> Path:
    """$GSDEPLOY_CACHE_DIR, else platformdirs' user cache dir for gsdeploy."""
    env = os.environ.get("GSDEPLOY_CACHE_DIR")
    if env:
        return Path(env)

    return Path(platformdirs.user_cache_dir("gsdeploy", appauthor=False)) / "timings"


def cache_path(fp: Mapping[str, Any]) -> Path:
    return cache_dir() / f"{fingerprint_key(fp)}.json"


def lock_path(fp: Mapping[str, Any]) -> Path:
    """The lock that serializes writers of this fingerprint's cache file (save_cached)."""
    return cache_dir() / f"{fingerprint_key(fp)}.lock"


def load_cached(fp: Mapping[str, Any]) -> TimingTable:
    """The cached table of this fingerprint; an empty one if there is none or it is unreadable
    (a cache is only a shortcut: a damaged one is re-measured, not an error)."""
    try:
        t = read_table(cache_path(fp))  # every OSError (a name too long, no permission) is a LutError
    except LutError:
        return TimingTable(dict(fp))
    return t if t.fingerprint == dict(fp) else TimingTable(dict(fp))


def cache_problem(fp: Mapping[str, Any], reading: bool = True) -> str | None:
    """Why the cache will not serve this fingerprint as it should, for one warning line (the plan
    still works: a cache is a shortcut): its file is damaged or is not a file (`reading`; it is
    re-measured), or the cache directory or its lock file cannot be written (the timings are not
    kept). None when
    all is well, also when there is no cache file yet."""
    d = cache_dir()
    path = cache_path(fp)
    if reading and os.path.lexists(path):
        if not os.path.isfile(path):
            return f"timing cache entry {path} is not a regular file: re-measuring, and the timings are not kept"
        try:
            table = read_table(path)
        except LutError as e:
            return f"damaged timing cache file ({e}): re-measuring and replacing it"
        if table.fingerprint != dict(fp):
            return f"timing cache file {path} holds another target's timings: re-measuring and replacing it"
    existing, why = d, None
    while why is None:
        try:
            st = os.stat(existing)
        except FileNotFoundError:  # made when the timings are saved: look at what holds it
            if existing == existing.parent:
                break
            existing = existing.parent
            continue
        except OSError as e:  # a name too long, a loop of links, a file where a directory should be
            why = f"{existing}: {e.strerror or e}"
            break
        if not stat.S_ISDIR(st.st_mode) or not os.access(existing, os.W_OK | os.X_OK):
            why = f"{existing} is not a writable directory"
        break
    if why is not None:
        return (f"timing cache directory {d} cannot be written ({why}): the timings are not kept (set "
                "GSDEPLOY_CACHE_DIR to a writable directory)")
    why = lock_problem(lock_path(fp))
    if why is not None:
        return (f"timing cache lock file {lock_path(fp)} cannot be used ({why}): the timings are not kept "
                "(remove it)")
    return None


def save_cached(table: TimingTable) -> Path | None:
    """Add the table to the cache; None (and nothing written) when the cache dir cannot be made.
    Under a lock, what is on disk is read again and kept where `table` does not replace it: two
    plans on one machine (two models, one target) each keep their timings, not the last one's."""
    d = cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
        with locked(lock_path(table.fingerprint)):
            on_disk = load_cached(table.fingerprint)
            on_disk.update(table)
            return write_text_atomic(cache_path(table.fingerprint), on_disk.to_json())
    except (OSError, GsdeployError):
        return None
