"""Which plan site a layer belongs to, decided the same way for a deployed model and its dense baseline.

A grouping decision (a Hinge pair kept or fused, a width padded, a linear chain folded) names its
site by the common module prefix of the layers it changed: "features.1.0.body.0" for the pair
body.0.0 + body.0.1 of a ResNet, "features.1.0.body" for the pair body.2 + body.3 of a DenseNet
layer whose body is [BN, ReLU, 3x3, 1x1], "features.1.0.body.0.conv" for an FGA pair that
replaced the conv body.0. The dense model never had that pair, so its own plan has no such site;
cut by its own plan alone, its conv and BN would be rows of their own that meet the deployed site
nowhere. So both models are cut by the sites of *both* plans, and a layer of either belongs to
the site that covers its module path:

  1. a site whose decisions name the layer (or that is named like it);
  2. else the longest site the layer lies under (the BN and ReLU a DenseNet pair shares its
     container with, the dense conv a ResNet pair replaced);
  3. else the one site that lies under the layer (the dense conv an FGA pair replaced);
  4. else the layer is a site of its own, so no node is ever dropped.

Decisions that share a layer (a linear chain the dense plan folded and the deployed plan kept
link by link, a padded width across a pair) are one site, named by the broadest of them.
"""

from __future__ import annotations

from typing import Iterable

from gsdeploy.plan.site_rows import one_per_site

# Plan actions that do not group layers into a site (one layer each, or none left in the graph).
NOT_GROUPING = ("fold BN", "remove zero groups", "fold DReLU")


def _groups(d: dict) -> bool:
    """Whether a decision makes its layers one site: a grouping action whose site name covers
    every layer it names. Zero channels kept (leftovers) name the layers that read them all
    over the network, under the blocking layer's name, and group nothing."""
    site = str(d.get("site") or "")
    return bool(site) and d.get("action") not in NOT_GROUPING and all(_under(str(x), site) for x in d.get("layers") or [])


def _grouping(decisions: Iterable[dict]) -> list[dict]:
    return one_per_site(d for d in decisions if _groups(d))


def grouping_sites(*plans: Iterable[dict]) -> list[dict]:
    """The decisions of every plan given that group layers, one row per site: every action, every
    layer, the shape after the last (site_rows.one_per_site); rows that share a layer (or name
    one another's site) are merged into one, named by the shortest site name among them. Each
    row's "sites" lists the site names it holds."""
    merged: list[dict] = []
    for row in _grouping(d for plan in plans for d in plan):
        names = list(row.get("sites") or [row["site"]])
        keys = set(row["layers"]) | set(names)
        linked = [i for i, m in enumerate(merged) if keys & (set(m["layers"]) | set(m["sites"]))]
        if not linked:
            merged.append({**row, "sites": names})
            continue
        parts = [merged[i] for i in linked] + [row]
        group = one_per_site(dict(m, site=row["site"]) for m in parts)[0]
        group["sites"] = list(dict.fromkeys(n for m in parts for n in (m.get("sites") or [m["site"]])))
        group["site"] = min(group["sites"], key=len)  # the broadest; the first of equals
        merged[linked[0]] = group  # where the first of them stood
        merged = [m for i, m in enumerate(merged) if i not in linked[1:]]
    return merged


def _under(layer: str, site: str) -> bool:
    return layer == site or layer.startswith(site + ".")


def site_of(layer: str, decisions: Iterable[dict]) -> tuple[str, dict | None]:
    """The plan site a layer belongs to (by the rules above) and that site's merged decision,
    else (the layer, None)."""
    return locate(layer, grouping_sites(decisions))


def locate(layer: str, rows: list[dict]) -> tuple[str, dict | None]:
    """site_of on the rows of `grouping_sites` (made once for many layers)."""
    named = [r for r in rows if layer in r["layers"] or layer in r["sites"]]
    if named:  # rows that share a layer were merged: at most one names it
        return named[0]["site"], named[0]
    under = [(max(len(n) for n in r["sites"] if _under(layer, n)), r) for r in rows
             if any(_under(layer, n) for n in r["sites"])]
    if under:
        best = max(under, key=lambda u: u[0])[1]  # the most specific place
        return best["site"], best
    above = [r for r in rows if any(_under(n, layer) for n in r["sites"])]
    if len(above) == 1:
        return above[0]["site"], above[0]
    return layer, None


def decisions_at(shared: list[dict], decisions: Iterable[dict]) -> dict[str, dict]:
    """One model's own grouping decisions per site of `shared` (grouping_sites of every plan
    joined): what that model did at each site (its action and shape), merged per site."""
    mine = _grouping(decisions)
    out = {}
    for row in shared:
        here = [d for d in mine if d["site"] in row["sites"]]
        if here:
            out[row["site"]] = one_per_site(dict(d, site=row["site"]) for d in here)[0]
    return out


def _enclosing(name: str) -> list[str]:
    """The name, then every module path that encloses it, innermost first."""
    parts = name.split(".")
    return [".".join(parts[:k]) for k in range(len(parts), 0, -1)]


def common_blocks(a: Iterable[str], b: Iterable[str]) -> dict[str, str]:
    """Sites only one of two models has, renamed to the smallest module that also holds sites only
    the other has and no site both have: where a block was rebuilt without a plan site to say so
    (FGA VGG's [grouped 3x3, BN, ReLU, 1x1, BN, ReLU] at features.4.conv.* for the dense conv
    features.4.0, neither a pair the plan could fuse), the block is the row both sides share.
    Repeated until nothing changes; what still has no counterpart keeps its name."""
    rename: dict[str, str] = {}
    a, b = set(a), set(b)
    while True:
        step: dict[str, str] = {}
        both = a & b
        for name in (a - b) | (b - a):
            other = (b - a) if name in a else (a - b)
            for block in _enclosing(name):
                if any(_under(m, block) for m in both):
                    break  # every larger block holds it too
                if any(_under(o, block) for o in other):
                    if block != name:
                        step[name] = block
                    break
        if not step:
            return rename
        rename = {k: step.get(v, v) for k, v in rename.items()} | {k: v for k, v in step.items() if k not in rename}
        a, b = {step.get(n, n) for n in a}, {step.get(n, n) for n in b}
