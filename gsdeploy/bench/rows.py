"""The result row schema and its writers (CSV for machines, Markdown for people).

One row = one model × engine × precision × batch × device, measured in one interleaved run
with its dense baseline. Speedups are only ever computed between rows of the same run
(same engine, provider, device, threads, batch and precision), never across runs.
"""

from __future__ import annotations

import io
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import pandas as pd

from gsdeploy.bench.stats import NOISY_COV, TimingStats
from gsdeploy.atomic import Staged
from gsdeploy.errors import OutputPathError

COLUMNS = [
    "model", "role", "engine", "provider", "precision", "batch", "device", "threads",
    "macs", "params",
    "latency_ms_median", "latency_ms_mean", "latency_ms_p90", "latency_ms_p95", "latency_ms_p99",
    "latency_ms_min", "latency_ms_max", "latency_cov", "iterations", "throughput_per_s",
    "speedup_vs_baseline", "flop_speedup", "efficiency",
    "max_rel_err", "weights_bytes", "artifact_bytes",
    "cpu", "gsdeploy_version", "torch_version", "ort_version", "timestamp", "command",
    # appended later; the order above stays stable for old CSVs and scripts
    "cores", "gpu", "gpu_driver", "cuda_version", "cudnn_version", "tensorrt_version", "ort_package",
    "activation_bytes", "peak_rss_bytes", "avg_power_w", "energy_per_inference_mj", "power_skipped",
    "jetson_module", "power_mode", "cuda_peak_bytes",
    "profile", "max_cov",  # the profile the target came from, and its CoV limit (reports flag rows above it)
    "top1", "top1_agreement",  # with --eval-data: top-1 (%) and top-1 agreement with the original module (%)
    # GPU clocks read right after a GPU group's timed runs (a throttled or unlocked GPU shows here)
    "gpu_sm_clock_mhz", "gpu_mem_clock_mhz", "gpu_max_sm_clock_mhz",
]

ROLES = ("baseline", "compressed")
# Rows with equal values here were timed against each other in one interleaved run.
GROUP_KEYS = ["engine", "provider", "precision", "batch", "device", "threads"]


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def make_row(*, model: str, role: str, engine: str, provider: str, precision: str, batch: int, device: str,
             threads: int, macs: int | None, params: int | None, stats: TimingStats,
             max_rel_err: float | None = None, weights_bytes: int | None = None,
             artifact_bytes: int | None = None, env: dict | None = None, command: str = "",
             timestamp: str | None = None, activation_bytes: int | None = None,
             peak_rss_bytes: int | None = None, avg_power_w: float | None = None,
             energy_per_inference_mj: float | None = None, power_skipped: str | None = None, cuda_peak_bytes: int | None = None,
             profile: str | None = None, max_cov: float | None = None,
             top1: float | None = None, top1_agreement: float | None = None,
             gpu_clocks: dict | None = None) -> dict:
    """One result row. `macs` are per sample (the convention of `flops.count_macs` with
    batch=1); the speedup columns are NaN until `add_speedups` fills them. `env` is a
    `capture_env()` dict (plus "tensorrt", the TensorRT package version, if any)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    env = env or {}
    nan = float("nan")
    row = {
        "model": model, "role": role, "engine": engine, "provider": provider, "precision": precision,
        "batch": int(batch), "device": device, "threads": int(threads),
        "macs": macs, "params": params,
        "latency_ms_median": stats.median_ms, "latency_ms_mean": stats.mean_ms,
        "latency_ms_p90": stats.p90_ms, "latency_ms_p95": stats.p95_ms, "latency_ms_p99": stats.p99_ms,
        "latency_ms_min": stats.min_ms, "latency_ms_max": stats.max_ms, "latency_cov": stats.cov,
        "iterations": stats.n,
        "throughput_per_s": batch * 1000.0 / stats.median_ms if stats.median_ms > 0 else nan,
        "speedup_vs_baseline": nan, "flop_speedup": nan, "efficiency": nan,
        "max_rel_err": max_rel_err, "weights_bytes": weights_bytes, "artifact_bytes": artifact_bytes,
        "cpu": env.get("cpu"), "gsdeploy_version": env.get("gsdeploy"), "torch_version": env.get("torch"),
        "ort_version": env.get("onnxruntime"), "timestamp": timestamp or utc_now(), "command": command,
        "cores": env.get("usable_cores"), "gpu": env.get("gpu") or "", "gpu_driver": env.get("gpu_driver"),
        "cuda_version": env.get("cuda"), "cudnn_version": env.get("cudnn"), "tensorrt_version": env.get("tensorrt"),
        "ort_package": env.get("onnxruntime_dist"),
        "activation_bytes": activation_bytes, "peak_rss_bytes": peak_rss_bytes, "avg_power_w": avg_power_w,
        "energy_per_inference_mj": energy_per_inference_mj, "power_skipped": power_skipped,
        "jetson_module": env.get("jetson_module"), "power_mode": env.get("power_mode"),
        "cuda_peak_bytes": cuda_peak_bytes, "profile": profile, "max_cov": max_cov,
        "top1": top1, "top1_agreement": top1_agreement,
        **{k: (gpu_clocks or {}).get(k) for k in ("gpu_sm_clock_mhz", "gpu_mem_clock_mhz", "gpu_max_sm_clock_mhz")},
    }
    assert list(row) == COLUMNS
    return row


def add_speedups(df: pd.DataFrame, keys: list[str] | None = None) -> pd.DataFrame:
    """Fill speedup_vs_baseline, flop_speedup and efficiency; returns a new frame.

    Within each group of rows timed together (GROUP_KEYS), the single baseline row is the
    reference: speedup = baseline median / this median (> 1 is faster), flop_speedup =
    baseline MACs / this MACs (the promise), efficiency = speedup / flop_speedup (the share
    of the promise that became real time). A group without a baseline gets NaN; a group with
    two baselines is ambiguous and an error. `keys` replaces GROUP_KEYS, e.g. without precision
    for the rows of one interleaved run, where int8 rows are compared with the fp32 baseline.
    """
    out = df.copy()
    for col in ("speedup_vs_baseline", "flop_speedup", "efficiency"):
        out[col] = float("nan")
    if out.empty:
        return out
    keys = [k for k in (GROUP_KEYS if keys is None else keys) if k in out.columns]
    for _, idx in out.groupby(keys, dropna=False, sort=False).groups.items():
        group = out.loc[idx]
        base = group[group["role"] == "baseline"]
        if len(base) == 0:
            continue
        if len(base) > 1:
            raise ValueError(f"several baseline rows ({', '.join(map(str, base['model']))}) were timed "
                             "in one group; speedups would be ambiguous")
        b = base.iloc[0]
        median = group["latency_ms_median"].astype(float)
        speed = float(b["latency_ms_median"]) / median
        macs = pd.to_numeric(group["macs"], errors="coerce").astype(float)
        b_macs = float(pd.to_numeric(pd.Series([b["macs"]]), errors="coerce").iloc[0])
        flop = b_macs / macs
        out.loc[idx, "speedup_vs_baseline"] = speed.values
        out.loc[idx, "flop_speedup"] = flop.values
        out.loc[idx, "efficiency"] = (speed / flop).values
    return out


# -- writers --------------------------------------------------------------------------------

def _ordered(df: pd.DataFrame) -> pd.DataFrame:
    """Schema columns first, in order; anything extra a caller added is kept at the end."""
    cols = [c for c in COLUMNS if c in df.columns] + [c for c in df.columns if c not in COLUMNS]
    return df[cols]


def to_csv_text(df: pd.DataFrame, header: bool = True) -> str:
    buf = io.StringIO()
    _ordered(df).to_csv(buf, index=False, header=header, lineterminator="\n")
    return buf.getvalue()


def _fmt(value: object, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|")


def _unique(df: pd.DataFrame, col: str) -> str:
    if col not in df.columns:
        return "–"
    vals = [str(v) for v in pd.unique(df[col].dropna())]
    return ", ".join(vals) if vals else "–"


MD_COLUMNS = [  # (header, column, digits)
    ("model", "model", 0), ("role", "role", 0), ("engine", "engine", 0), ("batch", "batch", 0),
    ("median ms", "latency_ms_median", 3), ("p90 ms", "latency_ms_p90", 3), ("p99 ms", "latency_ms_p99", 3),
    ("CoV", "latency_cov", 3), ("throughput /s", "throughput_per_s", 1),
    ("speedup", "speedup_vs_baseline", 2), ("FLOP speedup", "flop_speedup", 2), ("efficiency", "efficiency", 2),
    ("top-1 %", "top1", 2), ("top-1 agreement %", "top1_agreement", 2),
]
OPTIONAL_MD = {"top1", "top1_agreement"}  # shown only when some row has them (--eval-data)


def to_markdown(df: pd.DataFrame) -> str:
    lines = ["# gsdeploy bench", ""]
    lines.append(f"- device: {_unique(df, 'device')} (provider: {_unique(df, 'provider')}); "
                 f"threads: {_unique(df, 'threads')}; cpu: {_unique(df, 'cpu')}")
    lines.append(f"- versions: gsdeploy {_unique(df, 'gsdeploy_version')}, torch {_unique(df, 'torch_version')}, "
                 f"onnxruntime {_unique(df, 'ort_version')}")
    lines.append(f"- timestamp (UTC): {_unique(df, 'timestamp')}")
    commands = [str(c) for c in pd.unique(df["command"].dropna())] if "command" in df.columns else []
    for c in commands or ["–"]:
        lines.append(f"- command: `{c}`")
    lines.append("")
    cols = [(h, c, d) for h, c, d in MD_COLUMNS if c in df.columns
            and (c not in OPTIONAL_MD or pd.to_numeric(df[c], errors="coerce").notna().any())]
    lines.append("| " + " | ".join(h for h, _, _ in cols) + " |")
    lines.append("|" + "|".join("---" if d == 0 else "---:" for _, _, d in cols) + "|")
    # to_dict("records") keeps each column's type (iterrows would turn ints into floats).
    for row in df.to_dict("records"):
        lines.append("| " + " | ".join(_fmt(row[c], d) if d else _fmt(row[c]) for _, c, d in cols) + " |")
    n_noisy = int((pd.to_numeric(df["latency_cov"], errors="coerce") > NOISY_COV).sum()) if "latency_cov" in df else 0
    if n_noisy:
        lines.append("")
        lines.append(f"Note: {n_noisy} row(s) have CoV > {NOISY_COV:.1%}; the machine was noisy "
                     "(other load, frequency scaling): repeat before trusting small differences.")
    lines.append("")
    return "\n".join(lines)


def write_results(df: pd.DataFrame, out_dir: Path, stem: str, extra: dict[Path, str] | None = None) -> tuple[Path, Path]:
    """Write `<stem>.csv` (all columns) and `<stem>.md` (key columns + provenance header), and
    the `extra` files (path -> text) with them, all published together."""
    out_dir = Path(out_dir)
    csv_path, md_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.md"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputPathError(f"cannot write to {out_dir}: {e.strerror or e}") from None
    extra = extra or {}
    with Staged([csv_path, md_path, *extra]) as staged:  # the tables change together
        staged.write_text(csv_path, to_csv_text(df))
        staged.write_text(md_path, to_markdown(df))
        for path, text in extra.items():
            staged.write_text(path, text)
        staged.commit()
    return csv_path, md_path


def read_results(paths: Iterable[Path]) -> pd.DataFrame:
    """Concatenate result CSVs (e.g. for the report stage)."""
    return pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
