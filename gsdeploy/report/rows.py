"""Read result rows back: CSV files and directories of CSVs from many runs and devices."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import pandas as pd

from gsdeploy.errors import GsdeployError
from gsdeploy.limits import MAX_CSV_BYTES, RESULT_RANGES, brief, check_readable, result_range_problem, short

# A file is a gsdeploy results CSV when it has at least these columns (bench/rows.py COLUMNS
# is the full schema); everything else is optional so older or partial files still load.
REQUIRED_COLUMNS = ("model", "role", "engine", "precision", "batch", "device", "latency_ms_median")
OPTIONAL_COLUMNS = (
    "provider", "threads", "macs", "params", "latency_ms_mean", "latency_ms_p90", "latency_ms_p95",
    "latency_ms_p99", "latency_ms_min", "latency_ms_max", "latency_cov", "iterations", "throughput_per_s",
    "speedup_vs_baseline", "flop_speedup", "efficiency", "max_rel_err", "weights_bytes", "artifact_bytes",
    "cpu", "gsdeploy_version", "torch_version", "ort_version", "timestamp", "command", "baseline_model",
    "profile", "max_cov",
)
ROLES = ("baseline", "compressed")
NUMERIC = ("batch", "threads", "macs", "params", "latency_ms_median", "latency_ms_mean", "latency_ms_p90",
           "latency_ms_p95", "latency_ms_p99", "latency_ms_min", "latency_ms_max", "latency_cov", "iterations",
           "throughput_per_s", "speedup_vs_baseline", "flop_speedup", "efficiency", "max_rel_err",
           "weights_bytes", "artifact_bytes", "max_cov")


class NotResultsError(GsdeployError):
    """A CSV that is not a gsdeploy results file."""


def _read_one(path: Path) -> pd.DataFrame:
    try:
        check_readable(path, "results CSV")  # a FIFO named x.csv in a results folder would block the read
    except GsdeployError as e:
        raise NotResultsError(str(e)) from None
    if path.stat().st_size > MAX_CSV_BYTES:
        raise NotResultsError(f"{path}: {path.stat().st_size} bytes; a results CSV is at most {MAX_CSV_BYTES} bytes")
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise NotResultsError(f"{path}: not a gsdeploy results CSV (the file is empty)") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NotResultsError(f"{path}: not a gsdeploy results CSV (unreadable as CSV: {short(first)})") from None
    except OSError as e:
        raise GsdeployError(f"cannot read {path}: {e.strerror or e}") from None
    if "status" in df.columns:  # a sweep table: jobs that failed for good carry a reason, no timings
        failed = df["status"].astype(str) == "failed"
        df = df.loc[~failed].reset_index(drop=True)
        df.attrs["failed_jobs"] = int(failed.sum())
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise NotResultsError(f"{path}: not a gsdeploy results CSV (missing columns: {', '.join(missing)}; "
                              "results come from `gsdeploy bench`)")
    bad_roles = sorted({str(r) for r in df["role"].dropna().unique()} - set(ROLES))
    if bad_roles or df["role"].isna().any():
        raise NotResultsError(f"{path}: column 'role' must be baseline or compressed, found "
                              f"{brief(bad_roles or ['(empty)'])}")
    check_numbers(df, path)
    return df


def check_numbers(df: pd.DataFrame, path: Path | str) -> None:
    """Every number in a results table is finite and in its column's range (limits.RESULT_RANGES:
    a batch an integer 1..MAX_BATCH, a latency 1 ns..~3 h, MACs, bytes, ratios bounded). batch and
    the median latency are required; other numeric columns may be empty (a batch of inf crashed
    the report, a NaN median made a speedup out of nothing, 1e300 MACs a FLOP speedup of 1e300)."""
    for col in (c for c in RESULT_RANGES if c in df.columns):
        required = col in ("batch", "latency_ms_median")
        values = pd.to_numeric(df[col], errors="coerce")
        for i, (raw, v) in enumerate(zip(df[col], values)):
            if not required and (pd.isna(raw) or not str(raw).strip()):
                continue
            problem = result_range_problem(col, float(v))
            if problem is not None:
                raise NotResultsError(f"{path}: column '{col}' (line {i + 2}) {problem}, "  # +1 header, +1 one-based
                                      f"not {brief(raw if pd.isna(v) else v)}")


def _expand(paths: Iterable[str | os.PathLike], exclude: set[Path]) -> tuple[list[Path], list[Path]]:
    """(explicit files, files found in directories), each without duplicates; files found in
    directories whose resolved path is in `exclude` are left out."""
    explicit: list[Path] = []
    found: list[Path] = []
    seen: set[Path] = set(exclude)
    for p in map(Path, paths):
        if p.is_dir():
            # Hidden files are skipped: atomic writers leave ".name.tmp" files while writing.
            for f in sorted(p.rglob("*.csv")):
                if not any(part.startswith(".") for part in f.relative_to(p).parts) and f.resolve() not in seen:
                    seen.add(f.resolve())
                    found.append(f)
        elif p.is_file():
            if p.resolve() not in seen:
                seen.add(p.resolve())
                explicit.append(p)
        else:
            raise GsdeployError(f"{p} does not exist")
    return explicit, found


def load_rows(paths: Iterable[str | os.PathLike], exclude: Iterable[Path] = ()) -> pd.DataFrame:
    """Merge result CSVs (files, or directories searched recursively for *.csv).

    A file named explicitly that is not a gsdeploy results CSV is an error. In a directory
    such files are skipped (a results folder may hold other CSVs, e.g. per-layer profiles)
    and listed in `df.attrs["skipped"]` as "path: reason", so the caller can say so.
    Every row gets a `source` column (the file it came from); optional schema columns that a
    file lacks are added as empty; rows repeated verbatim (the same file copied into two
    folders) are kept once. `exclude` names files (resolved paths) that a directory search
    must not read as rows: the report's side files (bundle.py).
    """
    paths = list(paths)
    if not paths:
        raise GsdeployError("no result files or directories given")
    explicit, found = _expand(paths, {Path(p).resolve() for p in exclude})
    frames: list[pd.DataFrame] = []
    skipped: list[str] = []
    for f in explicit + found:
        try:
            one = _read_one(f)
        except NotResultsError as e:
            if f in explicit:
                raise
            skipped.append(str(e))
            continue
        if one.attrs.get("failed_jobs"):
            skipped.append(f"{f}: {one.attrs['failed_jobs']} failed sweep job(s) without timings (reasons in the file)")
        frames.append(one.assign(source=str(f)))
    frames = [f for f in frames if not f.empty]
    if not frames:
        where = ", ".join(map(str, paths))
        raise GsdeployError(f"no gsdeploy result rows found in {where}" + (f" ({len(skipped)} CSV file(s) skipped: "
                            f"{skipped[0]})" if skipped else ""))
    df = pd.concat(frames, ignore_index=True, sort=False)
    for col in OPTIONAL_COLUMNS:
        if col not in df.columns:
            df[col] = pd.NA
    for col in NUMERIC:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["batch"] = df["batch"].astype(int)
    for col in ("model", "role", "engine", "precision", "device"):
        df[col] = df[col].astype(str)
    content = [c for c in df.columns if c != "source"]
    df = df.loc[~df.duplicated(subset=content, keep="first")].reset_index(drop=True)
    df.attrs["skipped"] = skipped
    return df
