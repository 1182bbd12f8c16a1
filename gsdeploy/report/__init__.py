"""The report stage: result rows -> latency tables, plots and claim verdicts.

Importing this package does not import matplotlib (only `plot` does, when called) or torch
(only claim evaluation does), so `gsdeploy report` starts fast.
"""

from __future__ import annotations

from gsdeploy.atomic import write_bytes_atomic, write_text_atomic
from gsdeploy.report.rows import load_rows
from gsdeploy.report.tables import FORMATS, latency_table, render

__all__ = ["FORMATS", "load_rows", "latency_table", "render", "plot", "write_text_atomic", "write_bytes_atomic"]


def plot(df, out_png):  # noqa: ANN001 — thin lazy wrapper, see gsdeploy.report.plots.plot
    """See `gsdeploy.report.plots.plot` (imported lazily: matplotlib is slow to import)."""
    from gsdeploy.report.plots import plot as _plot

    return _plot(df, out_png)
