"""A deploy's decisions as people read them: one row per site.

The passes decide one after another, so one site can carry several decisions: a factorized pair
the plan keeps and whose rank it pads is a "keep" from the pair pass and a "pad width" from the
alignment pass, both named by the pair's common prefix. The plan tables (inspect, export, plan,
the HTML report) show the site once, through `one_per_site`, its actions joined as the per-layer
join names them (bench/site_join.site_of).
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any, Iterable


def one_per_site(decisions: Iterable[Any]) -> list[dict[str, Any]]:
    """Decisions (transforms.Decision or their dicts) merged per site, in the order each site first
    appears: the actions in the order they were taken ("keep, pad width"), the shape and MACs
    before the first and after the last, every layer and every distinct reason once. Decisions
    without a site name are kept as they are."""
    rows: list[dict[str, Any]] = []
    by_site: dict[str, dict[str, Any]] = {}
    for d in decisions:
        d = asdict(d) if is_dataclass(d) else dict(d)
        site = str(d.get("site") or "")
        row = by_site.get(site) if site else None
        if row is None:
            row = {**d, "layers": list(d.get("layers") or [])}
            rows.append(row)
            if site:
                by_site[site] = row
            continue
        actions = str(row.get("action", "")).split(", ")
        if d.get("action") and d["action"] not in actions:
            row["action"] = ", ".join([*actions, str(d["action"])])
        row["layers"] += [x for x in d.get("layers") or [] if x not in row["layers"]]
        for key in ("shape_after", "macs_after"):  # after the last decision
            if d.get(key) is not None:
                row[key] = d[key]
        reasons = [r for r in str(row.get("reason") or "").split("; ") if r]
        new = str(d.get("reason") or "")
        if new and new not in reasons:
            row["reason"] = "; ".join([*reasons, new])
        for key, value in d.items():  # fields only a later pass gives (a report shows extra columns)
            row.setdefault(key, value)
    return rows
