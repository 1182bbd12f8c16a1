"""Plots of a report: latency against MACs, and measured speedup against the FLOP promise.

Drawn on a bare `matplotlib.figure.Figure` (Agg canvas) rather than through pyplot: no
global backend switch, no display needed, nothing left open between calls.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import pandas as pd

from gsdeploy.errors import GsdeployError
from gsdeploy.atomic import write_bytes_atomic
from gsdeploy.report.tables import INDEX, latency_table

_MAX_BARS = 40  # per device; beyond that the labels are unreadable


def _as_table(df: pd.DataFrame) -> pd.DataFrame:
    if list(df.index.names) == INDEX and "speedup" in df.columns:
        return df
    return latency_table(df)


def plot(df: pd.DataFrame, out_png: str | os.PathLike) -> Path:
    """Write a PNG with (top) latency vs MACs per call, one series per device/engine, and
    (below, one panel per device) the measured speedup of each compressed configuration with
    its FLOP speedup drawn beside it. Accepts result rows or a `latency_table`."""
    return write_bytes_atomic(out_png, figure_bytes(df, "png"))


def figure_bytes(df: pd.DataFrame, fmt: str = "png") -> bytes:
    """The figure of `plot` as PNG or SVG bytes (SVG keeps its text as text: small, sharp in print)."""
    import matplotlib  # heavy: matplotlib (seconds); `gsdeploy report` without a plot never loads it

    if fmt not in ("png", "svg"):
        raise ValueError(f"fmt must be png or svg, got {fmt!r}")
    # text.parse_math off: labels are model and device names from result files, and a "$" in one
    # (a file "model$1.pt") would be parsed as TeX and fail the whole report
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "gsdeploy", "text.parse_math": False}):
        fig = _figure(df)
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=110, metadata={"Date": None} if fmt == "svg" else None)
    return buf.getvalue()


def _figure(df: pd.DataFrame):
    from matplotlib.figure import Figure  # heavy: matplotlib
    from matplotlib.ticker import FuncFormatter  # heavy: matplotlib

    table = _as_table(df).reset_index()
    if table.empty:
        raise GsdeployError("nothing to plot: no result rows")
    devices = list(dict.fromkeys(table["device"]))
    fig = Figure(figsize=(11, 4 + 3.6 * len(devices)), layout="constrained")
    axes = fig.subplots(1 + len(devices), 1, squeeze=False)[:, 0]

    # Latency vs MACs per call (MACs in the rows are per sample): for one engine a dense CNN
    # sits near a line; compressed models below the baseline's line turned FLOPs into time.
    ax = axes[0]
    cmap = [f"C{i}" for i in range(10)]
    for k, ((dev, eng), g) in enumerate(table.groupby(["device", "engine"], sort=True)):
        x = g["macs"] * g["batch"]
        ok = x.notna() & g["median_ms"].notna()
        if not ok.any():
            continue
        color = cmap[k % len(cmap)]
        for role, marker in (("baseline", "o"), ("compressed", "^")):
            sel = ok & (g["role"] == role)
            if sel.any():
                ax.scatter(x[sel], g.loc[sel, "median_ms"], marker=marker, color=color,
                           facecolors="none" if role == "baseline" else color,
                           label=f"{dev} / {eng} ({role})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    # "2" and "50", not "2×10⁰" and "5×10¹"; minor ticks labelled at 2 and 5 only, so they never crowd
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(
        lambda v, _: f"{v:g}" if v > 0 and round(v / 10 ** math.floor(math.log10(v))) in (2, 5) else ""))
    ax.set_xlabel("MACs per call (MACs per sample × batch)")
    ax.set_ylabel("median latency (ms)")
    ax.set_title("latency vs MACs (hollow: dense baseline, filled: compressed)")
    if ax.collections:
        ax.legend(fontsize=7, loc="best")
    ax.grid(True, which="both", alpha=0.3)

    # Speedup per device, FLOP speedup beside each bar for comparison.
    for ax, dev in zip(axes[1:], devices):
        g = table[(table["device"] == dev) & (table["role"] == "compressed")]
        g = g[g["speedup"].notna()].head(_MAX_BARS)
        ax.set_title(f"speedup vs dense baseline on {dev}")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        if g.empty:
            ax.text(0.5, 0.5, "no compressed rows with a baseline on this device", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_xticks([])
            continue
        pos = list(range(len(g)))
        w = 0.4
        ax.bar([p - w / 2 for p in pos], g["speedup"], width=w, color="C0", label="measured speedup")
        flop = g["flop_speedup"].where(g["flop_speedup"].notna(), 0.0)
        ax.bar([p + w / 2 for p in pos], flop, width=w, color="none", edgecolor="C3", hatch="//",
               label="FLOP speedup (the promise)")
        for p, s in zip(pos, g["speedup"]):
            if not math.isnan(s):
                ax.annotate(f"{s:.2f}×", (p - w / 2, s), ha="center", va="bottom", fontsize=7)
        ax.set_xlim(-0.8, max(len(g), 4) - 0.2)  # a lone bar should not fill the panel
        labels = [f"{m}\n{e} {pr} b{b}" for m, e, pr, b in zip(g["model"], g["engine"], g["precision"], g["batch"])]
        ax.set_xticks(pos, labels, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("× faster than dense")
        ax.legend(fontsize=7, loc="upper left")
        ax.grid(True, axis="y", alpha=0.3)

    return fig
