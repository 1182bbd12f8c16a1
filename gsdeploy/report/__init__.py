"""The report stage: result rows -> latency tables, plots and claim verdicts.

Importing this package does not import matplotlib (only `plot` and the HTML page do, when
called) or torch (only claim evaluation does), so `gsdeploy report` starts fast.
"""

from __future__ import annotations

from gsdeploy.atomic import write_bytes_atomic, write_text_atomic
from gsdeploy.errors import GsdeployError
from gsdeploy.report.bundle import ReportInputs, load_inputs
from gsdeploy.report.page import html_page
from gsdeploy.report.rows import load_rows
from gsdeploy.report.tables import FORMATS, latency_table, table_text

__all__ = ["FORMATS", "ReportInputs", "load_inputs", "load_rows", "latency_table", "table_text", "report_text", "plot",
           "write_text_atomic", "write_bytes_atomic"]


def report_text(inputs: ReportInputs, fmt: str = "md") -> str:
    """The report of `inputs` as Markdown or CSV (the latency table) or HTML (the whole page)."""
    if fmt == "html":
        return html_page(inputs)
    if fmt not in FORMATS:
        raise GsdeployError(f"unknown report format '{fmt}'; choose from {', '.join(FORMATS)}")
    return table_text(latency_table(inputs.rows), fmt)


def plot(df, out_png):  # noqa: ANN001 — thin lazy wrapper, see gsdeploy.report.plots.plot
    """See `gsdeploy.report.plots.plot` (imported lazily: matplotlib is slow to import)."""
    from gsdeploy.report.plots import plot as _plot  # heavy: matplotlib

    return _plot(df, out_png)
