"""One self-contained HTML page for a results directory: tables, plots, environment, plans,
per-layer profiles, claim verdicts and the commands that produced them.

Self-contained means no network and no external file: styles are inline, plots are data: URIs,
there is no script, and a Content-Security-Policy forbids the browser to fetch anything, so a
page mailed to someone shows the same thing offline. The page is a pure function of its inputs
(no generation time), so two reports of the same files are byte-identical.
"""

from __future__ import annotations

import base64
import functools
import html
import math
from collections import Counter
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from gsdeploy.plan.site_rows import one_per_site
from gsdeploy.target import DEFAULT_MAX_COV
from gsdeploy.report.bundle import ReportInputs
from gsdeploy.report.tables import latency_table

# Environment columns of a result row, in the order a reader wants them (bench/rows.py COLUMNS).
ENV_FIELDS = [
    ("CPU", "cpu"), ("usable cores", "cores"), ("threads", "threads"), ("GPU", "gpu"), ("GPU driver", "gpu_driver"),
    ("CUDA", "cuda_version"), ("cuDNN", "cudnn_version"), ("TensorRT", "tensorrt_version"),
    ("ONNX Runtime", "ort_version"), ("ORT package", "ort_package"), ("ORT provider", "provider"),
    ("torch", "torch_version"), ("gsdeploy", "gsdeploy_version"), ("Jetson module", "jetson_module"),
    ("power mode", "power_mode"), ("profiles", "profile"), ("engines", "engine"), ("precisions", "precision"),
]
_EXACT_FOLDS = ("fold BN", "fold DReLU")  # exact rewrites every deploy does: counted, not listed
_PLAN_KNOWN = ("site", "action", "layers", "shape_before", "shape_after", "macs_before", "macs_after", "reason")

CSS = """
:root{--fg:#1d2330;--mut:#5b6475;--line:#dfe3ea;--bg2:#f5f7fa;--bad:#b3261e;--badbg:#fdecea;--warn:#8a5a00;
--warnbg:#fff4d6;--good:#1e6b35;--goodbg:#e7f5ea;--acc:#2f5fb3}
*{box-sizing:border-box}
body{font:13.5px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);
margin:0 auto;padding:24px 32px;max-width:1400px;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:2px solid var(--line);
padding-bottom:4px}h3{font-size:15px;margin:20px 0 6px}
p.sub{color:var(--mut);margin:0 0 12px}
nav{background:var(--bg2);padding:8px 12px;border-radius:6px;margin:12px 0}
nav a{margin-right:14px;color:var(--acc);text-decoration:none}
table{border-collapse:collapse;margin:6px 0 10px;font-variant-numeric:tabular-nums}
th,td{padding:3px 7px;border-bottom:1px solid var(--line);text-align:right;vertical-align:top;white-space:nowrap}
th{background:var(--bg2);font-weight:600;position:sticky;top:0}
td.t,th.t{text-align:left}td.wrap{white-space:normal;text-align:left;min-width:260px;max-width:560px}
tr.base td{color:var(--mut)}
td.slow{background:var(--badbg);color:var(--bad);font-weight:600}
td.fast{color:var(--good);font-weight:600}
td.noisy{background:var(--warnbg);color:var(--warn)}
span.tag{display:inline-block;padding:0 6px;border-radius:8px;font-size:12px;font-weight:600}
.PASS{background:var(--goodbg);color:var(--good)}.FAIL,.ERROR{background:var(--badbg);color:var(--bad)}
.SKIP{background:var(--bg2);color:var(--mut)}
dl.env{display:grid;grid-template-columns:max-content auto;gap:2px 14px;margin:6px 0 12px;
background:var(--bg2);padding:8px 12px;border-radius:6px}
dl.env dt{color:var(--mut)}dl.env dd{margin:0}
figure{margin:10px 0}figure img{max-width:100%;height:auto;border:1px solid var(--line)}
figcaption{color:var(--mut);font-size:12px}
.legend{color:var(--mut);font-size:12px;margin:2px 0 10px}
.bar{display:inline-block;height:9px;background:var(--acc);vertical-align:middle;margin-right:4px}
code{background:var(--bg2);padding:1px 4px;border-radius:3px;font-size:12.5px}
ul.notes{color:var(--mut);font-size:13px}
.scroll{overflow-x:auto}
@media print{body{padding:0;max-width:none;font-size:11px}th{position:static}nav{display:none}
tr,figure{break-inside:avoid}h2{break-after:avoid}.scroll{overflow:visible}}
"""


# ---- units ------------------------------------------------------------------------------------


def _missing(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and math.isnan(v))


def _or_dash(fmt: Callable[[float], str]) -> Callable[[Any], str]:
    """`fmt` of the value as a float, or an en dash where it is missing (None, NA, NaN)."""
    @functools.wraps(fmt)
    def formatted(v: Any) -> str:
        return "–" if _missing(v) else fmt(float(v))

    return formatted


@_or_dash
def fmt_ms(v: float) -> str:
    """Milliseconds with three significant digits: 0.0421 ms, 1.49 ms, 38.8 ms, 1234 ms."""
    if v >= 100:
        return f"{v:,.0f} ms"
    digits = max(0, 2 - int(math.floor(math.log10(abs(v))))) if v > 0 else 2
    return f"{v:.{min(digits, 4)}f} ms"


@_or_dash
def fmt_us(v: float) -> str:
    return f"{v:,.0f} µs" if v >= 100 else f"{v:.1f} µs"


@_or_dash
def fmt_count(v: float) -> str:
    """MACs and parameters: 850 k, 62.1 M, 4.09 G."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            x = v / div
            return f"{x:.3g} {unit}" if x < 100 else f"{x:.0f} {unit}"
    return f"{v:.0f}"


@_or_dash
def fmt_bytes(v: float) -> str:
    if v >= 1e9:
        return f"{v / 1e9:.2f} GB"
    return f"{v / 1e6:.2f} MB" if v >= 1e5 else f"{v / 1e3:.1f} kB"


@_or_dash
def fmt_x(v: float) -> str:
    return f"{v:.2f}×"


@_or_dash
def fmt_pct(v: float) -> str:
    return f"{v:.1%}"


def fmt_num(v: Any, spec: str = ".3g") -> str:
    if _missing(v):
        return "–"
    return format(float(v), spec) if isinstance(v, (int, float, np.integer, np.floating)) else str(v)


# ---- html helpers -------------------------------------------------------------------------------


def _e(v: Any) -> str:
    return html.escape("–" if _missing(v) else str(v))


def _td(text: str, cls: str = "", title: str = "") -> str:
    attrs = (f' class="{cls}"' if cls else "") + (f' title="{html.escape(title)}"' if title else "")
    return f"<td{attrs}>{html.escape(text)}</td>"


def _table(heads: list[tuple[str, str]], rows: Iterable[str]) -> str:
    """heads: (text, css class) pairs; rows: ready <tr> strings."""
    th = "".join(f'<th class="{c}">{html.escape(h)}</th>' if c else f"<th>{html.escape(h)}</th>" for h, c in heads)
    return f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>\n' + "\n".join(rows) + \
        "\n</tbody></table></div>"


def _anchor(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-") or "x"


def _speed_cell(v: Any) -> str:
    if _missing(v):
        return _td("–")
    if float(v) < 1.0:
        return _td(f"{float(v):.2f}× ▼", "slow", "slower than the dense baseline")
    return _td(f"{float(v):.2f}×", "fast" if float(v) >= 1.0 else "")


def _cov_cell(v: Any, limit: float) -> str:
    if _missing(v):
        return _td("–")
    if float(v) > limit:
        return _td(f"{float(v):.1%} ⚠", "noisy", f"CoV above the limit of {limit:.1%}: repeat before trusting it")
    return _td(f"{float(v):.1%}")


# ---- sections -----------------------------------------------------------------------------------


def _environment(rows: pd.DataFrame) -> str:
    items = []
    for label, col in ENV_FIELDS:
        if col not in rows.columns:
            continue
        vals = [v for v in pd.unique(rows[col].dropna()) if str(v).strip() and str(v) != "nan"]
        if not vals:
            continue
        vals = [str(int(v)) if isinstance(v, (float, np.floating)) and float(v).is_integer() else str(v) for v in vals]
        items.append(f"<dt>{html.escape(label)}</dt><dd>{html.escape(', '.join(vals))}</dd>")
    return '<dl class="env">' + "".join(items) + "</dl>" if items else "<p>No environment recorded.</p>"


_MEMORY = [("weights", "weights_bytes", fmt_bytes),
           ("peak RSS", "peak_rss_bytes", fmt_bytes), ("power", "avg_power_w", lambda v: fmt_num(v, ".2f") + " W"
                                                       if not _missing(v) else "–"),
           ("energy/inference", "energy_per_inference_mj", lambda v: fmt_num(v, ".2f") + " mJ"
            if not _missing(v) else "–")]


def _limit(row: dict, default: float) -> float:
    """The CoV limit a row was measured under (its profile's `max_cov`), else `default`."""
    v = row.get("max_cov")
    return default if _missing(v) or not math.isfinite(float(v)) else float(v)


def _headline(table: pd.DataFrame, cov_limit: float) -> str:
    flat = table.reset_index()
    extra = [(h, c, f) for h, c, f in _MEMORY if c in flat.columns and flat[c].notna().any()]
    heads = [("model", "t"), ("engine", "t"), ("precision", "t"), ("batch", ""), ("vs", "t"), ("median", ""),
             ("p90", ""), ("p99", ""), ("CoV", ""), ("MACs", ""), ("speedup", ""), ("FLOP speedup", ""),
             ("efficiency", "")] + [(h, "") for h, _, _ in extra]
    out = []
    notes: set[str] = set()
    for r in flat.to_dict("records"):
        base = r["role"] == "baseline"
        vs = "dense baseline" if base else (r.get("baseline") or "–")
        if not base and r.get("baseline_from") == "other run":
            vs += " †"
            notes.add("† the baseline row comes from another run: machine state may have differed.")
        if not base and isinstance(r.get("note"), str) and r["note"]:
            notes.add(f"No speedup for some rows: {r['note']}.")
        cells = [_td(str(r["model"]), "t"), _td(str(r["engine"]), "t"), _td(str(r["precision"]), "t"),
                 _td(str(r["batch"])), _td(vs, "t"), _td(fmt_ms(r["median_ms"])), _td(fmt_ms(r["p90_ms"])),
                 _td(fmt_ms(r["p99_ms"])), _cov_cell(r["cov"], _limit(r, cov_limit)), _td(fmt_count(r["macs"]))]
        if base:
            cells += [_td("1.00×"), _td("1.00×"), _td("1.00")]
        else:
            cells += [_speed_cell(r["speedup"]), _td(fmt_x(r["flop_speedup"])),
                      _td(fmt_num(r["efficiency"], ".2f"))]
        cells += [_td(f(r[c])) for _, c, f in extra]
        out.append(f'<tr class="{"base" if base else "comp"}">' + "".join(cells) + "</tr>")
    limits = sorted({_limit(r, cov_limit) for r in flat.to_dict("records")})
    legend = (f'<p class="legend">Speedup = dense median / median, both timed interleaved in one run; '
              f'<b style="color:var(--bad)">▼</b> slower than dense; ⚠ CoV above the profile\'s limit '
              f"({', '.join(f'{v:.1%}' for v in limits)}: noisy, repeat before trusting small differences); "
              f"efficiency = speedup / FLOP speedup; MACs per sample. Throughput, params and every other "
              f"column are in the result CSVs.</p>")
    foot = "".join(f"<li>{html.escape(n)}</li>" for n in sorted(notes))
    return _table(heads, out) + legend + (f'<ul class="notes">{foot}</ul>' if foot else "")


def _img(data: bytes, mime: str, alt: str, caption: str) -> str:
    b64 = base64.b64encode(data).decode("ascii")
    return (f'<figure><img alt="{html.escape(alt)}" src="data:{mime};base64,{b64}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _plot(table: pd.DataFrame) -> str:
    from gsdeploy.report.plots import figure_bytes  # heavy: matplotlib, only when the page has a plot

    data = figure_bytes(table, "svg")
    return _img(data, "image/svg+xml", "latency against MACs, and speedup against the FLOP promise per device",
                "Top: median latency against MACs per call (hollow: dense, filled: compressed). "
                "Below, per device: measured speedup (blue) beside the FLOP speedup the compression promised.")


def _plan_section(plan: dict) -> str:
    decisions = [d for d in plan.get("decisions", []) if isinstance(d, dict)]
    counts = Counter(str(d.get("action", "?")) for d in decisions)
    model = str(plan.get("model", "?"))
    opts = plan.get("options") or {}
    parts = [f'<h3 id="plan-{_anchor(model)}">{html.escape(model)}</h3>']
    facts = []
    if plan.get("macs_before") is not None:
        facts.append(f"MACs {fmt_count(plan.get('macs_before'))} → {fmt_count(plan.get('macs_after'))}")
    if plan.get("params_before") is not None:
        facts.append(f"params {fmt_count(plan.get('params_before'))} → {fmt_count(plan.get('params_after'))}")
    ver = plan.get("verification") or {}
    if ver.get("max_rel_err") is not None:
        facts.append(f"deployed vs original: max rel error {float(ver['max_rel_err']):.1e}")
    if opts:
        facts.append("options: " + ", ".join(f"{k}={_option(v)}" for k, v in opts.items() if v is not None))
    if plan.get("summary"):
        facts.append(str(plan["summary"]))
    parts.append("<p>" + html.escape("; ".join(facts)) + "</p>" if facts else "")
    parts.append("<p>" + html.escape(", ".join(f"{n} × {a}" for a, n in counts.most_common())) + "</p>")
    listed = [d for d in decisions if d.get("action") not in _EXACT_FOLDS]
    if len(listed) < len(decisions):
        parts.append(f'<p class="legend">{len(decisions) - len(listed)} BatchNorm and DReLU folds (exact rewrites, '
                     "always done) are counted above, not listed.</p>")
    shown = one_per_site(listed)  # a padded pair is one site with both actions, not two rows
    extra = [k for k in dict.fromkeys(k for d in shown for k in d) if k not in _PLAN_KNOWN]
    heads = [("site", "t"), ("action", "t"), ("before", "t"), ("after", "t"), ("MACs", "")] + \
        [(k.replace("_", " "), "") for k in extra] + [("why", "t")]
    rows = []
    for d in shown:
        cells = [_td(str(d.get("site", "")), "t"), _td(str(d.get("action", "")), "t"),
                 _td(str(d.get("shape_before", "")), "t"), _td(str(d.get("shape_after", "")), "t"),
                 _td(f"{fmt_count(d.get('macs_before'))} → {fmt_count(d.get('macs_after'))}")]
        cells += [_td(_plain(d.get(k))) for k in extra]
        cells.append(f'<td class="wrap">{_e(d.get("reason", ""))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    if rows:
        parts.append(_table(heads, rows))
    if plan.get("command"):
        parts.append(f'<p class="legend">from <code>{html.escape(str(plan["command"]))}</code> '
                     f'({html.escape(str(plan.get("source", "")))})</p>')
    return "\n".join(p for p in parts if p)


def _option(v: Any) -> str:
    """A deploy option in a few characters: a target (a dict) by its label and profile."""
    if isinstance(v, dict):
        label = v.get("label") or v.get("engine") or "?"
        return f"{label}@{v['profile']}" if v.get("profile") else str(label)
    return str(v)


def _plain(v: Any) -> str:
    if isinstance(v, float):
        return fmt_num(v, ".4g")
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    if isinstance(v, dict):
        return ", ".join(f"{k}={_plain(x)}" for k, x in v.items())
    return "–" if _missing(v) else str(v)


def _layers_section(layers: pd.DataFrame) -> str:
    keys = [k for k in ("model", "baseline", "engine", "device", "batch", "source") if k in layers.columns]
    parts = []
    for key, g in layers.groupby(keys, sort=False, dropna=False):
        info = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        title = f"{info.get('model')} vs {info.get('baseline')}, batch {info.get('batch')}"
        if info.get("engine") is not None:
            title += f", {info.get('engine')}"
        parts.append(f"<h3>{html.escape(title)}</h3>")
        total_dep = pd.to_numeric(g["deployed_us"], errors="coerce").sum()
        total_den = pd.to_numeric(g["dense_us"], errors="coerce").sum()
        parts.append(f"<p>Sum of node times per inference under the profiler: dense {fmt_us(total_den)}, "
                     f"deployed {fmt_us(total_dep)}"
                     + (f" ({total_den / total_dep:.2f}×)" if total_dep > 0 and total_den > 0 else "") + ".</p>")
        heads = [("site", "t"), ("action", "t"), ("deployed", "t"), ("dense", "t"), ("dense µs", ""),
                 ("deployed µs", ""), ("speedup", ""), ("share of deployed", "t")]
        rows = []
        for r in g.to_dict("records"):
            dep = r.get("deployed_us")
            share = float(dep) / total_dep if not _missing(dep) and total_dep > 0 else float("nan")
            bar = (f'<span class="bar" style="width:{max(1, round(share * 200))}px"></span>' if not math.isnan(share)
                   else "")
            speed = (float(r["dense_us"]) / float(dep) if not _missing(dep) and not _missing(r.get("dense_us"))
                     and float(dep) > 0 else float("nan"))
            rows.append("<tr>" + _td(str(r.get("site")), "t") + _td(_plain(r.get("action")), "t")
                        + _td(_plain(r.get("deployed_shape")), "t") + _td(_plain(r.get("dense_shape")), "t")
                        + _td(fmt_us(r.get("dense_us")))
                        + _td(fmt_us(dep)) + _speed_cell(speed)
                        + f'<td class="t">{bar}{html.escape(fmt_pct(share))}</td></tr>')
        parts.append(_table(heads, rows))
        cmd = g["command"].dropna().iloc[0] if "command" in g.columns and g["command"].notna().any() else None
        note = ("Node times from ONNX Runtime's profiler in a separate run after the timed one (the profiler "
                "slows inference down, so only ratios and shares are meaningful here); each node is "
                "attributed to the plan site of the layer whose weights it reads.")
        parts.append(f'<p class="legend">{html.escape(note)}'
                     + (f" Command: <code>{html.escape(str(cmd))}</code>." if cmd else "") + "</p>")
    return "\n".join(parts)


def _claims_section(claims: pd.DataFrame) -> str:
    heads = [("status", "t"), ("claim", "t"), ("metric", "t"), ("measured", ""), ("claimed", ""),
             ("tolerance", "t"), ("reason", "t"), ("file", "t")]
    rows = []
    for r in claims.to_dict("records"):
        status = str(r.get("status"))
        tol = _plain(r.get("tolerance")) + (f" ({r['direction']})" if not _missing(r.get("direction")) else "")
        rows.append(f'<tr><td class="t"><span class="tag {html.escape(status)}">{html.escape(status)}</span></td>'
                    + _td(str(r.get("id")), "t") + _td(str(r.get("metric")), "t")
                    + _td(fmt_num(r.get("measured"), ".4g")) + _td(fmt_num(r.get("claimed"), ".4g"))
                    + _td(tol, "t") + f'<td class="wrap">{_e(r.get("reason"))}</td>'
                    + _td(str(r.get("source")), "t") + "</tr>")
    counts = Counter(str(s) for s in claims["status"])
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    cmds = sorted({str(c) for c in claims["command"].dropna()}) if "command" in claims.columns else []
    cmd_html = "".join(f"<li><code>{html.escape(c)}</code></li>" for c in cmds)
    return (f"<p>{html.escape(summary)}</p>" + _table(heads, rows)
            + (f'<ul class="notes">{cmd_html}</ul>' if cmd_html else ""))


def _commands(rows: pd.DataFrame) -> str:
    heads = [("command", "t"), ("file", "t"), ("devices", "t"), ("rows", ""), ("timestamps (UTC)", "t")]
    out = []
    cols = [c for c in ("command", "source") if c in rows.columns]
    for key, g in rows.groupby(cols, sort=False, dropna=False):
        cmd, src = (key if isinstance(key, tuple) else (key, ""))
        stamps = sorted(str(s) for s in g["timestamp"].dropna()) if "timestamp" in g.columns else []
        when = "–" if not stamps else (stamps[0] if stamps[0] == stamps[-1] else f"{stamps[0]} … {stamps[-1]}")
        out.append("<tr>" + f'<td class="t"><code>{_e(cmd)}</code></td>' + _td(_plain(src), "t")
                   + _td(", ".join(map(str, pd.unique(g["device"]))), "t") + _td(str(len(g))) + _td(when, "t")
                   + "</tr>")
    return _table(heads, out)


# ---- the page -------------------------------------------------------------------------------------


def html_page(inputs: ReportInputs, *, title: str = "gsdeploy report", cov_limit: float = DEFAULT_MAX_COV,
              plots: bool = True) -> str:
    """The whole report as one HTML document (UTF-8 text). A row is flagged noisy above the
    CoV limit it records (`max_cov`, from its profile), else above `cov_limit`."""
    rows = inputs.rows
    table = latency_table(rows)
    flat = table.reset_index()
    devices = sorted(dict.fromkeys(flat["device"]))
    n_files = rows["source"].nunique() if "source" in rows.columns else 0
    comp = flat[flat["role"] == "compressed"]
    slow = int((comp["speedup"] < 1.0).sum())
    noisy = sum(1 for r in flat.to_dict("records") if not _missing(r["cov"]) and r["cov"] > _limit(r, cov_limit))

    sections: list[tuple[str, str, str]] = []  # (anchor, heading, body)
    for dev in devices:
        sub = rows[rows["device"].astype(str) == dev]
        body = "<h3>Environment</h3>" + _environment(sub) + "<h3>Latency</h3>" + \
            _headline(table[table.index.get_level_values("device") == dev], cov_limit)
        sections.append((f"device-{_anchor(dev)}", f"Device: {dev}", body))
    if plots:
        sections.append(("plots", "Plots", _plot(table)))
    if inputs.plans:
        sections.append(("plans", "Deployment plans",
                         '<p class="legend">What deploy did at each site of each compressed model, and why.</p>'
                         + "\n".join(_plan_section(p) for p in inputs.plans)))
    if inputs.layers is not None and not inputs.layers.empty:
        sections.append(("layers", "Where the time goes, layer by layer", _layers_section(inputs.layers)))
    if inputs.claims is not None and not inputs.claims.empty:
        sections.append(("claims", "Claims", _claims_section(inputs.claims)))
    sections.append(("commands", "Commands that produced these rows", _commands(rows)))
    if inputs.skipped:
        sections.append(("skipped", "Files not used",
                         '<ul class="notes">' + "".join(f"<li>{html.escape(s)}</li>" for s in inputs.skipped)
                         + "</ul>"))

    summary = (f"{len(rows)} rows from {n_files} file(s) on {len(devices)} device(s): "
               f"{', '.join(devices)}. {len(comp)} compressed configuration(s), {slow} slower than dense; "
               f"{noisy} row(s) with CoV above their profile's limit.")
    nav = "<nav>" + "".join(f'<a href="#{a}">{html.escape(h)}</a>' for a, h, _ in sections) + "</nav>"
    body = "\n".join(f'<section id="{a}"><h2>{html.escape(h)}</h2>\n{b}\n</section>' for a, h, b in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{CSS}</style></head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n<p class=\"sub\">{html.escape(summary)}</p>\n{nav}\n{body}\n"
            "</body></html>\n")
