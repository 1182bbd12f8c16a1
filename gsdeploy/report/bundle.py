"""Everything a report can show, read from result files and directories.

A results directory (one `bench` run, or a sweep merged from many devices) holds, besides the
result rows (`*.csv`, see rows.py):
  <stem>.plan.json     the deployment plan of a compressed model (written by `bench`)
  <stem>.layers.csv    a per-layer profile, deployed vs dense (written by `bench --per-layer`)
  *.csv with claim verdict columns (written by `validate --output`)
These are recognised by name or columns, so they are neither read as rows nor reported as skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pandas as pd

from gsdeploy.errors import GsdeployError
from gsdeploy.limits import MAX_CSV_BYTES, brief, read_json, result_range_problem
from gsdeploy.report.rows import load_rows

PLAN_SUFFIX = ".plan.json"
LAYERS_SUFFIX = ".layers.csv"
PLAN_KIND = "gsdeploy-plan"
LAYERS_COLUMNS = ("model", "baseline", "batch", "site", "deployed_us", "dense_us")
CLAIM_COLUMNS = ("id", "status", "metric", "measured", "claimed")


@dataclass
class ReportInputs:
    rows: pd.DataFrame  # result rows, as load_rows gives them
    plans: list[dict] = field(default_factory=list)  # plan records, each with a "source"
    layers: pd.DataFrame | None = None  # per-layer rows of every profile found, with "source"
    claims: pd.DataFrame | None = None  # claim verdicts, with "source" (and "command" when recorded)
    skipped: list[str] = field(default_factory=list)  # "path: reason" for files that were not understood


def _walk(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(f for f in sorted(p.rglob("*"))
                         if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts))
    return files


def _read_plan(path: Path) -> dict:
    data = read_json(path, "plan file")  # bounded, no NaN, not nested past the stack
    if not isinstance(data, dict) or data.get("kind") != PLAN_KIND or not isinstance(data.get("decisions"), list):
        raise GsdeployError(f"{path}: not a gsdeploy plan file (no kind: {PLAN_KIND} with a decisions list)")
    problem = _plan_problem(data)
    if problem is not None:
        raise GsdeployError(f"{path}: not a gsdeploy plan file ({problem})")
    data["source"] = str(path)
    return data


# What the report reads from a plan file, and the results column whose range each number has
_PLAN_NUMBERS = {"macs_before": "macs", "macs_after": "macs", "params_before": "params", "params_after": "params"}
_PLAN_TEXTS = ("model", "summary", "command", "timestamp")


def _plan_problem(data: dict) -> str | None:
    """What is wrong with the parts of a plan file the page shows (a hand-edited one made the
    report fail with an internal error), or None."""
    def number(where: str, v: object, col: str) -> str | None:
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"{where} must be a number, not {brief(v)}"
        why = result_range_problem(col, float(v))
        return f"{where} {why}, not {brief(v)}" if why else None

    for k in _PLAN_TEXTS:
        if data.get(k) is not None and not isinstance(data[k], str):
            return f"{k} must be text, not {brief(data[k])}"
    for k in ("options", "verification"):
        if data.get(k) is not None and not isinstance(data[k], dict):
            return f"{k} must be an object, not {brief(data[k])}"
    checks = [(k, data.get(k), col) for k, col in _PLAN_NUMBERS.items()]
    checks.append(("verification.max_rel_err", (data.get("verification") or {}).get("max_rel_err"), "max_rel_err"))
    for i, d in enumerate(data["decisions"]):
        if not isinstance(d, dict):
            return f"decisions[{i}] must be an object, not {brief(d)}"
        checks += [(f"decisions[{i}].{k}", d.get(k), "macs") for k in ("macs_before", "macs_after")]
    for where, v, col in checks:
        why = number(where, v, col)
        if why is not None:
            return why
    return None


def _read_side_csv(path: Path, columns: tuple[str, ...]) -> pd.DataFrame | None:
    """The CSV when it has `columns`, else None (an unreadable CSV is None too: the caller says so)."""
    try:
        if path.stat().st_size > MAX_CSV_BYTES:  # as for result CSVs: never read a huge file whole
            return None
        df = pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    if not all(c in df.columns for c in columns):
        return None
    return df.assign(source=str(path))


def load_inputs(paths: Iterable[str | os.PathLike]) -> ReportInputs:
    """Result rows plus the plans, per-layer profiles and claim verdicts found beside them.

    Files named explicitly must be result CSVs (as for `load_rows`); side files are looked
    for inside the directories given. A side file that cannot be read is listed in `skipped`,
    never silently dropped.
    """
    paths = [Path(p) for p in paths]
    skipped: list[str] = []
    plans: list[dict] = []
    layers: list[pd.DataFrame] = []
    claims: list[pd.DataFrame] = []
    side: set[Path] = set()
    for f in _walk(paths):
        if f.name.endswith(PLAN_SUFFIX):
            side.add(f.resolve())
            try:
                plans.append(_read_plan(f))
            except GsdeployError as e:
                skipped.append(str(e))
        elif f.suffix == ".csv":
            if f.name.endswith(LAYERS_SUFFIX):
                side.add(f.resolve())
                df = _read_side_csv(f, LAYERS_COLUMNS)
                if df is None:
                    skipped.append(f"{f}: not a gsdeploy per-layer profile (needs columns {', '.join(LAYERS_COLUMNS)})")
                else:
                    layers.append(df)
                continue
            df = _read_side_csv(f, CLAIM_COLUMNS)
            if df is not None:
                side.add(f.resolve())
                claims.append(df)
    rows = load_rows(paths, exclude=side)
    skipped = list(rows.attrs.get("skipped", [])) + skipped
    return ReportInputs(
        rows=rows, plans=plans,
        layers=pd.concat(layers, ignore_index=True) if layers else None,
        claims=pd.concat(claims, ignore_index=True) if claims else None,
        skipped=skipped)
