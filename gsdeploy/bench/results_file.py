"""DIR/<stem>.csv and .md while one bench run owns them: the lock, the rows kept by --resume
(checked before anything is written), and the tables rewritten as each group finishes.

Earlier results are never lost to a run that measures nothing: the files are first replaced
when the first new (engine, batch) group is finished, so a bad argument, a failing deploy or an
out-of-memory first batch leaves them as they were. Two runs on one stem are refused (an
flock on DIR/<stem>.lock, which the kernel drops when its process dies, so a killed run
never blocks the next one).
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import stat
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from gsdeploy.atomic import check_targets, umask
from gsdeploy.bench.rows import COLUMNS, GROUP_KEYS, ROLES, write_results
from gsdeploy.errors import GsdeployError, OutputPathError
from gsdeploy.limits import MAX_CSV_BYTES, RESULT_RANGES, result_range_problem, short

MAX_STEM = 200
# Files a run writes beside DIR/<stem>.csv (plan, per-layer profile): an earlier run's go when the
# new rows arrive, so a report never pairs them with rows they do not belong to.
SIDE_SUFFIXES = (".plan.json", ".layers.csv", ".layers.md")
# Filled by every bench row; a resumed row without one of them was cut or not written by gsdeploy.
KEY_COLUMNS = ("model", "role", "engine", "provider", "precision", "batch", "device", "threads")
TIMING_COLUMNS = ("latency_ms_median", "latency_ms_mean", "latency_ms_p90", "latency_ms_p95", "latency_ms_p99",
                  "latency_ms_min", "latency_ms_max", "latency_cov", "iterations", "throughput_per_s")
TEXT_COLUMNS = ("timestamp", "command")
# Every column of COLUMNS that holds text (the others are numbers, converted when a file is resumed)
TEXT_VALUES = frozenset({"model", "role", "engine", "provider", "precision", "device", "cpu", "timestamp", "command",
                         "gsdeploy_version", "torch_version", "ort_version", "gpu", "gpu_driver", "cuda_version",
                         "cudnn_version", "tensorrt_version", "ort_package", "power_skipped", "jetson_module",
                         "power_mode", "profile"})


def check_stem(stem: str) -> str:
    """A results stem is one plain file name inside the output directory: never a path."""
    bad = [c for c in stem if c in "/\\\0" or not c.isprintable()]
    if (not stem or stem in (".", "..") or stem.startswith(".") or bad or len(stem) > MAX_STEM
            or (os.sep and os.sep in stem) or (os.altsep and os.altsep in stem)):
        raise GsdeployError(f"--name must be a plain file name (no '/', '\\', leading '.' or control characters, "
                            f"at most {MAX_STEM} characters), not {stem[:MAX_STEM]!r}")
    return stem


def default_stem(model_name: str) -> str:
    """bench_<model>, with anything a file name cannot hold replaced (model names come from files)."""
    safe = "".join(c if c.isprintable() and c not in "/\\\0" else "_" for c in model_name).lstrip(".")
    return f"bench_{safe or 'model'}"[:MAX_STEM]


class BenchLockedError(GsdeployError):
    """Another bench run is writing the same DIR/<stem>."""


class _Lock:
    """An exclusive flock on DIR/<stem>.lock, never waited for."""

    def __init__(self, path: Path, what: Path) -> None:
        self.path, self.what, self.fd = path, what, None

    def acquire(self) -> None:
        try:
            import fcntl  # optional: POSIX only
        except ImportError:  # no flock (Windows): run unlocked
            return
        for _ in range(10):
            try:
                st = os.lstat(self.path)
                if not stat.S_ISREG(st.st_mode):
                    raise OutputPathError(f"refusing to use {self.path} as a lock file: it is not a regular file")
            except FileNotFoundError:
                pass
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666 & ~umask())
            except OSError as e:
                raise OutputPathError(f"cannot create lock file {self.path}: {e.strerror or e}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
                os.close(fd)
                raise BenchLockedError(f"another gsdeploy bench (pid {holder}) is writing {self.what}; wait for it "
                                       "to finish or pass another --name") from None
            except OSError:  # a file system without locks (some network mounts): run unlocked
                os.close(fd)
                return
            # A run that finished between our open and flock removed the file we now hold: retry.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return
            os.close(fd)
        raise BenchLockedError(f"could not lock {self.path}: other runs keep replacing it")

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()  # while still holding it, so no one locks a file that is going away
        os.close(self.fd)
        self.fd = None


def resume_error(csv_path: Path, why: str) -> GsdeployError:
    """The one error line for an earlier run's table that --resume cannot trust (bench and sweep)."""
    return GsdeployError(f"--resume: {csv_path} {why}; nothing was written (fix or move the file, or run without "
                         "--resume to replace it)")


def _numbers(df: pd.DataFrame, col: str) -> pd.Series:
    return pd.to_numeric(df[col], errors="coerce")


def read_resumed_text(csv_path: Path) -> str:
    """An earlier run's CSV as text ("" when there is none). The caller has refused directories,
    devices and FIFOs in its place (atomic.check_targets); a file above MAX_CSV_BYTES is refused
    before it is read (a million rows is far beyond any run), and one that is not UTF-8 too."""
    try:
        size = csv_path.stat().st_size
    except FileNotFoundError:
        return ""
    except OSError as e:
        raise GsdeployError(f"--resume: cannot read {csv_path}: {e.strerror or e}") from None
    if size > MAX_CSV_BYTES:
        raise resume_error(csv_path, f"is {size} bytes; a results table is at most {MAX_CSV_BYTES} bytes")
    try:
        return csv_path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise resume_error(csv_path, "is not a UTF-8 text CSV file") from None
    except OSError as e:
        raise GsdeployError(f"--resume: cannot read {csv_path}: {e.strerror or e}") from None


def parse_resumed(text: str, csv_path: Path) -> pd.DataFrame:
    """The cells of an earlier run's CSV as text (empty ones NaN), nothing converted yet, or an
    error: a row cut off at the end, or not CSV at all."""
    if not text.endswith("\n"):
        raise resume_error(csv_path, "ends in the middle of a row (gsdeploy writes whole lines)")
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise resume_error(csv_path, f"is not a readable CSV ({short(first)})") from None


def check_resumed(text: str, csv_path: Path, models: dict[str, str] | None = None) -> pd.DataFrame:
    """The rows of an earlier bench run's CSV, in the current schema, or an error saying what is
    wrong with them (check_resumed_rows)."""
    if not text.strip():
        return pd.DataFrame(columns=COLUMNS)
    return check_resumed_rows(parse_resumed(text, csv_path), csv_path, models)


def check_resumed_rows(df: pd.DataFrame, csv_path: Path, models: dict[str, str] | None = None,
                       extra_columns: Sequence[str] = (), group_by: Sequence[str] = ()) -> pd.DataFrame:
    """Rows from parse_resumed, in the current schema, or an error saying what is wrong with them:
    a row cut off, a foreign file, numbers that are not finite, a group without exactly one
    baseline and one compressed row, or (with `models`, role -> name) another pair of models than
    this run's. `extra_columns` may be there too (a sweep's own; kept as text), and `group_by`
    splits the groups further (a sweep's job). Errors name the line of the file (the index + 2)."""
    def line(mask: pd.Series) -> int:
        return int(mask[mask].index[0]) + 2  # +1 header, +1 one-based

    unknown = [c for c in df.columns if c not in COLUMNS and c not in extra_columns]
    missing = [c for c in (*KEY_COLUMNS, *TIMING_COLUMNS, *TEXT_COLUMNS, *group_by) if c not in df.columns]
    if unknown or missing:
        parts = ([f"columns gsdeploy does not write: {', '.join(short(str(c), 40) for c in unknown[:5])}"]
                 if unknown else []) + ([f"missing columns: {', '.join(missing[:5])}"] if missing else [])
        raise resume_error(csv_path, f"is not a gsdeploy results file ({'; '.join(parts)})")
    for i, r in zip(df.index, df.to_dict("records")):
        empty = [c for c in (*KEY_COLUMNS, *TIMING_COLUMNS, *TEXT_COLUMNS, *group_by) if r[c] is None or
                 (isinstance(r[c], float) and math.isnan(r[c]))]
        if empty:
            raise resume_error(csv_path, f"line {int(i) + 2} has no {empty[0]} (a row cut off, or not written by "
                                         "gsdeploy)")
    if not df["role"].isin(ROLES).all():
        bad = df.loc[~df["role"].isin(ROLES), "role"].iloc[0]
        raise resume_error(csv_path, f"has role {short(bad, 40)!r}; rows are baseline or compressed")
    required = {*TIMING_COLUMNS, "batch", "threads", "iterations"}
    for col in (c for c in RESULT_RANGES if c in df.columns):  # finite and in the column's range
        raw = df[col]
        v = _numbers(df, col)
        problems = v.map(lambda x, col=col: result_range_problem(col, x))
        bad = problems.notna() & (raw.notna() | (col in required))
        if bad.any():
            raise resume_error(csv_path, f"line {line(bad)}: {col} {problems[bad].iloc[0]}, "
                                         f"not {short(str(raw[bad].iloc[0]), 40)!r}")
    keys = [*group_by, *(k for k in GROUP_KEYS if k in df.columns)]
    for key, g in df.groupby(keys, dropna=False, sort=False):
        roles = sorted(g["role"])
        if roles != ["baseline", "compressed"]:
            what = ", ".join(f"{k}={short(str(v), 120)}" for k, v in zip(keys, key))
            raise resume_error(csv_path, f"has {len(g)} row(s) ({', '.join(roles)}) for {what}; every group has "
                                         "one baseline and one compressed row")
    if models:
        for role, name in models.items():
            found = sorted(set(df.loc[df["role"] == role, "model"]) - {name})
            if found:
                raise resume_error(csv_path, f"holds {role} {found[0][:80]!r}, but this run's {role} is {name!r}; "
                                             "pass another --name")
    out = df.reindex(columns=[*COLUMNS, *(c for c in extra_columns if c not in COLUMNS)])
    for col in COLUMNS:
        if col not in TEXT_VALUES:
            out[col] = pd.to_numeric(out[col], errors="coerce")
    for col in ("batch", "threads", "iterations"):
        out[col] = out[col].astype(int)
    return out


def done_keys(rows: pd.DataFrame) -> set[tuple]:
    """(model, engine, provider, batch, precision) of every row, as run_sweep's skip_group sees them."""
    if rows.empty:
        return set()
    return {(str(m), str(e), str(p), int(b), str(pr))
            for m, e, p, b, pr in zip(rows["model"], rows["engine"], rows["provider"], rows["batch"], rows["precision"])}


class ResultsFile:
    """Owns DIR/<stem>.csv and .md for one run (a context manager: lock on enter, unlock on exit).

    `kept` are the rows --resume keeps; `add(group)` rewrites both files with kept + every group
    so far, so an interrupted run keeps what it measured and a run that measures nothing
    leaves the old files alone."""

    def __init__(self, out_dir: Path, stem: str, resume: bool = False, models: dict[str, str] | None = None,
                 inputs: Iterable[Path] = ()) -> None:
        self.out_dir = Path(out_dir)
        self.stem = check_stem(stem)
        self.csv, self.md = self.out_dir / f"{stem}.csv", self.out_dir / f"{stem}.md"
        self.resume, self.models, self.inputs = resume, models, list(inputs)
        self._lock = _Lock(self.out_dir / f"{stem}.lock", self.csv)
        self.kept = pd.DataFrame(columns=COLUMNS)
        self.groups: list[pd.DataFrame] = []
        self._pending: dict[Path, str] = {}
        self._stale_sides = not resume  # an earlier run's side files, removed with the first new rows

    def side(self, suffix: str) -> Path:
        return self.out_dir / f"{self.stem}{suffix}"

    def __enter__(self) -> "ResultsFile":
        check_targets([self.csv, self.md, *(self.side(s) for s in SIDE_SUFFIXES)], self.inputs)
        self._lock.acquire()
        try:
            if self.resume:
                self.kept = self._read_kept()
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()

    def _read_kept(self) -> pd.DataFrame:
        return check_resumed(read_resumed_text(self.csv), self.csv, self.models)

    def done(self) -> set[tuple]:
        return done_keys(self.kept)

    def rows(self) -> pd.DataFrame:
        frames = [f for f in (self.kept, *self.groups) if not f.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)

    def attach(self, suffix: str, text: str) -> Path:
        """DIR/<stem><suffix>, published with the next rows (not before: until then the old one,
        if any, stays beside the old rows)."""
        path = self.side(suffix)
        self._pending[path] = text
        return path

    def _write(self) -> list[Path]:
        files = list(write_results(self.rows(), self.out_dir, self.stem, self._pending))
        if self._stale_sides:
            for path in (self.side(s) for s in SIDE_SUFFIXES):
                if path not in self._pending:
                    path.unlink(missing_ok=True)
            self._stale_sides = False
        self._pending = {}
        return files

    def add(self, group: pd.DataFrame) -> None:
        self.groups.append(group)
        self._write()

    def finish(self) -> list[Path]:
        """The final tables (also when every group was resumed: the kept rows in today's schema)."""
        return self._write()[:2]
