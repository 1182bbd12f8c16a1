"""The latency table: one row per model × device × engine × precision × batch, with the
speedup over the dense baseline recomputed from the rows (never copied from the files).

Which baseline row a compressed row is compared with, in order of preference:
  1. the same interleaved group: same file, command and timestamp (bench writes one
     timestamp per engine × batch group), and the same device, engine, provider, precision,
     batch and threads — the only comparison where both models shared the machine's state
     (in that group any precision: `bench --precision fp32,int8` times int8 rows against the
     dense fp32 baseline of the same interleaved run);
  2. the same run (same file and command), same settings, another group;
  3. another run with the same settings (another file: e.g. the dense model benched once, the
     compressed ones later); the latest such baseline is used and `baseline_from` says
     "other run", because machine state may differ between runs.
A row's `baseline_model`, where present, restricts candidates to that model; otherwise the
zoo's known baseline of a zoo model breaks ties; a tie that remains is reported, not guessed.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import pandas as pd

from gsdeploy.errors import GsdeployError

INDEX = ["model", "device", "engine", "precision", "batch"]
MATCH_KEYS = ["device", "engine", "provider", "precision", "batch", "threads"]
TABLE_COLUMNS = [
    "role", "baseline", "median_ms", "p90_ms", "p99_ms", "cov", "throughput_per_s", "macs", "params",
    "speedup", "flop_speedup", "efficiency", "baseline_from", "provider", "threads", "n_runs", "note",
]
# Optional row columns carried into the table when the rows have them (memory from the bench
# rows; power/energy on Jetson from bench/tegrastats.py, under these names).
PASSTHROUGH = ("weights_bytes", "artifact_bytes", "peak_rss_bytes", "avg_power_w", "energy_per_inference_mj",
               "max_cov")
FORMATS = ("md", "csv", "html")  # html: report/page.py


def _norm(v: Any) -> str:
    """A comparable key part: NaN/None -> "", 4.0 -> "4" (threads read as float in one file
    and int in another must still match)."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return ""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _zoo_baseline(model: str) -> str | None:
    # heavy: the zoo builds torch modules, and a report otherwise runs without importing torch
    from gsdeploy import zoo

    return zoo.get_entry(model).baseline if zoo.is_model(model) else None


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df.columns else pd.Series([pd.NA] * len(df), index=df.index)


def _pick_baselines(df: pd.DataFrame) -> tuple[list[Any], list[str], list[str]]:
    """For each row: the index of its baseline row (or None), where it came from, and a note."""
    key = [tuple(_norm(v) for v in t) for t in zip(*(_col(df, k) for k in MATCH_KEYS))]
    source = [_norm(v) for v in _col(df, "source")]
    command = [_norm(v) for v in _col(df, "command")]
    stamp = [_norm(v) for v in _col(df, "timestamp")]
    wanted = [_norm(v) for v in _col(df, "baseline_model")]
    roles = list(df["role"])
    models = list(df["model"])
    idx = list(df.index)

    any_precision = [k for k in MATCH_KEYS if k != "precision"]
    key_ap = [tuple(_norm(v) for v in t) for t in zip(*(_col(df, k) for k in any_precision))]
    by_key: dict[tuple, list[int]] = {}
    by_key_ap: dict[tuple, list[int]] = {}
    for i, (r, k) in enumerate(zip(roles, key)):
        if r == "baseline":
            by_key.setdefault(k, []).append(i)
            by_key_ap.setdefault(key_ap[i], []).append(i)

    base_of: list[Any] = []
    origin: list[str] = []
    notes: list[str] = []
    for i in range(len(df)):
        if roles[i] == "baseline":
            base_of.append(idx[i])
            origin.append("itself")
            notes.append("")
            continue
        cands = by_key.get(key[i], [])
        group = [j for j in by_key_ap.get(key_ap[i], [])
                 if (source[j], command[j], stamp[j]) == (source[i], command[i], stamp[i])]
        if wanted[i]:
            cands = [j for j in cands if models[j] == wanted[i]]
            group = [j for j in group if models[j] == wanted[i]]
        tiers = [
            ("same run", group),
            ("same run", [j for j in cands if (source[j], command[j]) == (source[i], command[i])]),
            ("other run", cands),
        ]
        chosen, where = None, ""
        note = "no baseline row with the same device, engine, provider, precision, batch, threads"
        for name, tier in tiers:
            if not tier:
                continue
            if len({models[j] for j in tier}) > 1:
                zoo = _zoo_baseline(models[i])
                narrowed = [j for j in tier if models[j] == zoo] if zoo else []
                if not narrowed:
                    chosen, note = None, (f"ambiguous baseline ({', '.join(sorted({models[j] for j in tier}))}); "
                                          "add a baseline_model column")
                    break
                tier = narrowed
            # Several rows of one baseline model: the latest measurement.
            chosen = max(tier, key=lambda j: (stamp[j], j))
            where, note = name, ""
            break
        base_of.append(idx[chosen] if chosen is not None else None)
        origin.append(where)
        notes.append(note)
    return base_of, origin, notes


def latency_table(df: pd.DataFrame) -> pd.DataFrame:
    """Rows (from `load_rows` or `bench`) -> the latency table, indexed by INDEX.

    speedup = baseline median / median (> 1 is faster); flop_speedup = baseline MACs / MACs
    (the promise); efficiency = speedup / flop_speedup (the share of the promise that became
    time). Several runs of one index key (the same configuration measured again) collapse to
    the latest, with `n_runs` saying how many there were.
    """
    missing = [c for c in ("model", "role", "engine", "precision", "batch", "device", "latency_ms_median")
               if c not in df.columns]
    if missing:
        raise GsdeployError(f"result rows lack column(s) {', '.join(missing)}")
    if df.empty:
        return pd.DataFrame(columns=INDEX + TABLE_COLUMNS).set_index(INDEX)
    df = df.reset_index(drop=True)
    base_of, origin, notes = _pick_baselines(df)
    median = pd.to_numeric(df["latency_ms_median"], errors="coerce").astype(float)
    macs = pd.to_numeric(_col(df, "macs"), errors="coerce").astype(float)
    b_median = pd.Series([median[b] if b is not None else np.nan for b in base_of], dtype=float)
    b_macs = pd.Series([macs[b] if b is not None else np.nan for b in base_of], dtype=float)
    speedup = b_median / median
    flop = b_macs / macs
    out = pd.DataFrame({
        "model": df["model"], "device": df["device"], "engine": df["engine"], "precision": df["precision"],
        "batch": df["batch"].astype(int), "role": df["role"],
        # A baseline row is its own reference; naming it again in the table would be noise.
        "baseline": [df.at[b, "model"] if b is not None and r != "baseline" else None
                     for b, r in zip(base_of, df["role"])],
        "median_ms": median, "p90_ms": pd.to_numeric(_col(df, "latency_ms_p90"), errors="coerce"),
        "p99_ms": pd.to_numeric(_col(df, "latency_ms_p99"), errors="coerce"),
        "cov": pd.to_numeric(_col(df, "latency_cov"), errors="coerce"),
        "throughput_per_s": pd.to_numeric(_col(df, "throughput_per_s"), errors="coerce"),
        "macs": macs, "params": pd.to_numeric(_col(df, "params"), errors="coerce"),
        "speedup": speedup, "flop_speedup": flop, "efficiency": speedup / flop,
        "baseline_from": origin, "provider": _col(df, "provider"), "threads": _col(df, "threads"),
        "note": notes, "_stamp": [_norm(v) for v in _col(df, "timestamp")],
    })
    extra = [c for c in PASSTHROUGH if c in df.columns and df[c].notna().any()]
    for c in extra:
        out[c] = pd.to_numeric(df[c], errors="coerce")
    # Collapse repeats of one configuration to the latest measurement.
    out["n_runs"] = out.groupby(INDEX, dropna=False)["median_ms"].transform("size").astype(int)
    out = out.sort_values("_stamp", kind="stable").drop_duplicates(INDEX, keep="last")
    out = out.drop(columns="_stamp").set_index(INDEX).sort_index()
    return out[TABLE_COLUMNS + extra]


# ---- rendering ------------------------------------------------------------------------------

_MD = [  # (header, column, format)
    ("role", "role", "s"), ("baseline", "baseline", "s"),
    ("median ms", "median_ms", ".3f"), ("p90 ms", "p90_ms", ".3f"), ("p99 ms", "p99_ms", ".3f"),
    ("speedup", "speedup", ".2f"), ("FLOP speedup", "flop_speedup", ".2f"), ("efficiency", "efficiency", ".2f"),
    ("power W", "avg_power_w", ".2f"), ("mJ/inference", "energy_per_inference_mj", ".2f"),
]


def _fmt(v: Any, spec: str) -> str:
    if v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and math.isnan(v)):
        return "–"
    if spec != "s" and isinstance(v, (int, float, np.integer, np.floating)):
        return format(float(v), spec)
    return str(v).replace("|", "\\|")


def _markdown(table: pd.DataFrame) -> str:
    flat = table.reset_index()
    heads = INDEX + [h for h, c, _ in _MD if c in flat.columns]
    cols = [(c, "s") for c in INDEX] + [(c, f) for _, c, f in _MD if c in flat.columns]
    lines = ["| " + " | ".join(heads) + " |",
             "|" + "|".join("---" if f == "s" and c != "batch" else "---:" for c, f in cols) + "|"]
    for row in flat.to_dict("records"):
        lines.append("| " + " | ".join(_fmt(row[c], f) for c, f in cols) + " |")
    footnotes = []
    if "baseline_from" in flat.columns and (flat["baseline_from"] == "other run").any():
        footnotes.append("Some speedups compare against a baseline from another run (column baseline_from in "
                         "the CSV): machine state may have differed; bench both in one run to be sure.")
    if "note" in flat.columns:
        for note in sorted({n for n in flat["note"] if isinstance(n, str) and n}):
            footnotes.append(f"No speedup for some rows: {note}.")
    if footnotes:
        lines.append("")
        lines.extend(f"- {f}" for f in footnotes)
    return "\n".join(lines) + "\n"


def table_text(table: pd.DataFrame, fmt: str = "md") -> str:
    """The table as Markdown (for people) or CSV (every column, full precision). The HTML
    report is a page of its own (report/page.py): it needs the rows' environment too."""
    if fmt == "md":
        return _markdown(table)
    if fmt == "csv":
        buf = io.StringIO()
        table.reset_index().to_csv(buf, index=False, lineterminator="\n")
        return buf.getvalue()
    if fmt == "html":
        raise GsdeployError("the HTML report is made from the rows, not the table: use gsdeploy.report.report_text")
    raise GsdeployError(f"unknown report format '{fmt}'; choose from {', '.join(FORMATS)}")
