"""Where the time goes, layer by layer: an engine's own per-node profile joined to the plan's sites.

ONNX Runtime's profiler (SessionOptions.enable_profiling) writes one event per executed node
and run; TensorRT's IProfiler reports one time per engine layer and run. Both name what ran
after the engine's own graph rewriting (ORT fuses Conv+activation, moves convs to its blocked
NCHWc layout and inserts reorders; TensorRT fuses layers), so each executed node is traced back
to the module whose weights it reads:

  ONNX node  -> layer   the module path of its weight initializer (the exporter names
                        initializers after parameters: "features.1.0.body.0.0.weight"); a node
                        without weights (ReLU, Add, pooling) belongs to the layer that produced its
                        first input (a Concat: its last);
  layer      -> site    the site of either model's plan that covers its module path (a kept or
                        fused pair is one site, named by its layers' common prefix, under which
                        or above which lies the dense conv it replaced; bench/site_join), else
                        the layer itself;

so the deployed model and its dense baseline meet on the same site names; a block rebuilt
without a plan site (FGA VGG) meets the dense layer it replaced as that block. ORT's nodes after
optimisation are matched through the optimised graph ORT saves (`optimized_model_filepath`):
a node keeps its original name, or is named after an original tensor (NCHWc convs), or reads
an original weight; reorder nodes go with the conv they feed or drain.

The profiler slows inference down (2–5× measured here), so these runs are separate from the
timed ones and only ratios and shares mean anything; the deployed and the dense model are
profiled in alternating blocks, as the bench times them, so a passing load weighs on both.
"""

from __future__ import annotations

import bisect
import json
import math
import statistics
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from gsdeploy.atomic import scratch_dir
from gsdeploy.bench.runners.ort import OrtRunner
from gsdeploy.bench.runners.trt import TrtRunner
from gsdeploy.bench.site_join import common_blocks, decisions_at, grouping_sites, locate
from gsdeploy.errors import GsdeployError, MissingDependencyError
from gsdeploy.plan.site_rows import one_per_site
from gsdeploy.target import Target

UNATTRIBUTED = "(unattributed)"
LAYER_COLUMNS = ["model", "baseline", "engine", "provider", "device", "threads", "batch", "site", "action",
                 "deployed_shape", "dense_shape", "dense_us", "deployed_us", "speedup", "deployed_share", "deployed_ops", "dense_ops",
                 "runs", "command", "timestamp"]


# ---- ONNX graph -> layer of each node and tensor --------------------------------------------------


@dataclass
class LayerMap:
    """What each node and tensor of an exported ONNX graph belongs to (module paths)."""

    node: dict[str, str] = field(default_factory=dict)  # node name -> layer
    tensor: dict[str, str] = field(default_factory=dict)  # tensor name (node outputs) -> layer
    weight: dict[str, str] = field(default_factory=dict)  # initializer name -> layer


def _layer_of_initializer(name: str) -> str:
    """'features.1.0.body.0.0.weight' -> 'features.1.0.body.0.0'."""
    return name.rsplit(".", 1)[0] if "." in name else name


def layer_map(graph: Any) -> LayerMap:
    """The layers of an `onnx.GraphProto` exported from a torch module (nodes are in
    topological order, as ONNX requires). A node without weights goes with the layer of its
    first input, but a Concat with that of its last: DenseNet's cat((x, body(x)), 1) is the
    dense layer appending its new features, not part of the stem or transition x came from."""
    inits = {i.name for i in graph.initializer}
    # The exporter stores equal constants once (a fresh BN's statistics, equal biases) and names
    # the others through Identity nodes: their outputs are weights of the layer they are named after.
    aliases = {o for n in graph.node if n.op_type == "Identity" and n.input and n.input[0] in inits for o in n.output}
    weights_of = inits | aliases
    m = LayerMap(weight={n: _layer_of_initializer(n) for n in weights_of})
    for node in graph.node:
        weights = [o for o in node.output if o in aliases] or [i for i in node.input if i in weights_of]
        layer = None
        if weights:
            named = [w for w in weights if w.endswith(".weight")] or weights
            layer = m.weight[named[0]]
        else:
            inputs = list(node.input)[::-1] if node.op_type == "Concat" else list(node.input)
            layer = next((m.tensor[i] for i in inputs if i in m.tensor), None)
        layer = layer or UNATTRIBUTED
        m.node[node.name] = layer
        for o in node.output:
            m.tensor[o] = layer
    return m


def _strip(name: str) -> str:
    for suffix in ("_nchwc",):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def executed_layers(original: LayerMap, optimized_graph: Any) -> dict[str, str]:
    """Node name in ORT's optimised graph -> layer of the original graph."""
    nodes = list(optimized_graph.node)
    out: dict[str, str] = {}
    for n in nodes:
        layer = original.node.get(n.name)
        if layer is None:
            layer = next((original.weight[i] for i in n.input if i in original.weight and i.endswith(".weight")), None)
        if layer is None:
            layer = next((original.tensor[_strip(o)] for o in (*n.output, n.name) if _strip(o) in original.tensor),
                         None)
        if layer is not None and layer != UNATTRIBUTED:
            out[n.name] = layer
    # Layout reorders and other inserted nodes: the layer they feed, else the one they drain.
    producer = {o: n.name for n in nodes for o in n.output}
    consumers: dict[str, list[str]] = defaultdict(list)
    for n in nodes:
        for i in n.input:
            consumers[i].append(n.name)
    for _ in range(3):  # reorder chains are short
        for n in nodes:
            if n.name in out:
                continue
            fed = [c for o in n.output for c in consumers.get(o, []) if c in out]
            drained = [producer[i] for i in n.input if i in producer and producer[i] in out]
            if fed:
                out[n.name] = out[fed[0]]
            elif drained:
                out[n.name] = out[drained[0]]
    return out


# ---- profiles ------------------------------------------------------------------------------------


@dataclass
class SiteTimes:
    """One model's profile at one batch: median µs per inference of each site over the runs."""

    us: dict[str, float]  # site -> median over runs of the summed node time
    ops: dict[str, Counter]  # site -> op types executed
    order: list[str]  # sites in execution order
    runs: int
    decisions: dict[str, dict]  # site -> the plan decision that made it a site
    shapes: dict[str, str] = field(default_factory=dict)  # site -> its shape after deploy, where the plan says
    device: str = ""  # what ran it, as the runner names it (CPU model, GPU name)
    threads: int | None = None


def site_times(per_run: list[dict[str, float]], ops: dict[str, str], order: list[str], layers: dict[str, str],
               decisions: list[dict], sites: list[dict] | None = None) -> SiteTimes:
    """One model's node times summed per site, run by run, then the median over runs.

    `per_run`: node -> µs of each run; `ops`: node -> op type; `order`: nodes in execution order;
    `layers`: node -> the layer it belongs to; `decisions`: this model's plan. `sites`: the
    grouping decisions of every model this one is joined with (site_join.grouping_sites), so
    that all of them are cut into the same sites; default: this model's own. The action and
    shape of each site are this model's own plan's."""
    shared = grouping_sites(decisions if sites is None else sites)
    own_sites = decisions_at(shared, decisions)
    site_cache: dict[str, str] = {}

    def site(node: str) -> str:
        layer = layers.get(node, UNATTRIBUTED)
        if layer not in site_cache:
            site_cache[layer] = locate(layer, shared)[0] if layer != UNATTRIBUTED else UNATTRIBUTED
        return site_cache[layer]

    sums: list[dict[str, float]] = []
    for run in per_run:
        s: dict[str, float] = defaultdict(float)
        for node, us in run.items():
            s[site(node)] += us
        sums.append(s)
    names = list(dict.fromkeys(site(n) for n in order))
    op_counts: dict[str, Counter] = defaultdict(Counter)
    for n in order:
        op_counts[site(n)][ops.get(n, "?")] += 1
    us = {s: statistics.median(r.get(s, 0.0) for r in sums) for s in names}
    dec = {s: own_sites[s] for s in names if s in own_sites}
    # A site's shape: its grouping decision's, else that of the decision about the layer itself
    # (a BN fold names the conv's final shape, e.g. "1x1 64->32" of a pruned ResNet-50).
    own = {str(d.get("site")): str(d.get("shape_after") or "") for d in decisions if d.get("shape_after")}
    shapes = {s: str(dec[s].get("shape_after") or "") if s in dec else own.get(s, "") for s in names}
    return SiteTimes(us=us, ops=dict(op_counts), order=names, runs=len(per_run), decisions=dec, shapes=shapes)


def read_ort_trace(path: Path, skip_runs: int, drop: Iterable[int] = ()) -> tuple[list[dict[str, float]], dict[str, str],
                                                                                 list[str]]:
    """(per-run node µs, node -> op type, node execution order) from an ORT profile JSON;
    the first `skip_runs` runs (warm-up) and the runs numbered in `drop` (0-based, in time
    order) are dropped."""
    try:
        events = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise GsdeployError(f"cannot read ONNX Runtime's profile {path}: {e}") from None
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                  if e.get("cat") == "Session" and e.get("name") == "model_run")
    drop = set(drop)
    runs = [r for k, r in enumerate(runs) if k >= skip_runs and k not in drop]
    per_run: list[dict[str, float]] = [defaultdict(float) for _ in runs]
    ops: dict[str, str] = {}
    order: list[str] = []
    starts = [a for a, _ in runs]

    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        node = name[: -len("_kernel_time")]
        k = bisect.bisect_right(starts, e["ts"]) - 1
        if k < 0 or e["ts"] > runs[k][1]:
            continue
        per_run[k][node] += float(e["dur"])
        if node not in ops:
            ops[node] = str(e.get("args", {}).get("op_name", "?"))
            order.append(node)
    if not per_run:
        raise GsdeployError(f"ONNX Runtime's profile {path} has no timed runs")
    return per_run, ops, order


def profile_ort(onnx_path: Path, batch: int, decisions: list[dict], *, target: Target | None = None,
                warmup: int = 5, runs: int = 20, input_shape: tuple[int, ...] | None = None) -> SiteTimes:
    """Run `onnx_path` `warmup + runs` times under ORT's profiler, in a session made with
    `target`'s settings (default: ORT CPU), and sum node times per site."""
    return profile_ort_interleaved([(Path(onnx_path), decisions, input_shape)], batch, target=target, warmup=warmup,
                                   runs=runs)[0]


def profile_ort_interleaved(models: list[tuple[Path, list[dict], tuple[int, ...] | None]], batch: int, *,
                            target: Target | None = None, warmup: int = 5, runs: int = 20, block: int = 5,
                            pause_s: float = 0.05) -> list[SiteTimes]:
    """Profile several models (ONNX path, plan decisions, input shape) in blocks of `block`
    runs taken in turn, as the bench interleaves its timing: a load that comes and goes on a
    shared machine then weighs on every model alike, and their ratio stays fair. Each block
    starts after a short pause (an idle session's threads stop spinning) with one run that is
    dropped, like the first `warmup` runs of each session. Every model is cut into the sites of
    all their plans together (site_join), so their rows line up."""
    import onnx  # heavy: onnx

    shared = grouping_sites(*(decisions for _, decisions, _ in models))
    with scratch_dir("layers") as tmp:
        runners, optimized, dropped = [], [], []
        try:
            for i, (path, _, shape) in enumerate(models):
                opt = tmp / f"m{i}_optimized.onnx"

                def tune(so: Any, i: int = i, opt: Path = opt) -> None:
                    so.enable_profiling = True
                    so.profile_file_prefix = str(tmp / f"m{i}_ort_profile")
                    so.optimized_model_filepath = str(opt)
                    so.log_severity_level = 3  # ORT warns that an NCHWc graph is machine-specific: we know

                runner = OrtRunner(Path(path), target, input_shape=shape, tune=tune)
                runners.append(runner)
                optimized.append(opt)
                runner.prepare(batch)
                for _ in range(warmup):
                    runner.run_once()
                dropped.append(set(range(warmup)))
            done = [warmup] * len(runners)
            kept = [0] * len(runners)
            while min(kept) < runs:
                for i, runner in enumerate(runners):
                    time.sleep(pause_s)
                    n = min(block, runs - kept[i])
                    if n <= 0:
                        continue
                    dropped[i].add(done[i])  # the block's first run, after the switch
                    for _ in range(n + 1):
                        runner.run_once()
                    done[i] += n + 1
                    kept[i] += n
            traces = [r.end_profiling() for r in runners]
            info = [(r.device, r.threads) for r in runners]
        finally:
            for r in runners:
                r.close()
        out = []
        for (path, decisions, _), trace, opt, drop, (device, threads) in zip(models, traces, optimized, dropped, info):
            per_run, ops, order = read_ort_trace(trace, skip_runs=0, drop=drop)
            original = layer_map(onnx.load(str(path), load_external_data=False).graph)
            layers = dict(original.node)
            if opt.is_file():
                layers.update(executed_layers(original, onnx.load(str(opt), load_external_data=False).graph))
            times = site_times(per_run, ops, order, layers, decisions, sites=shared)
            times.device, times.threads = device, threads
            out.append(times)
    return out


def profile_trt(runner: Any, onnx_path: Path, batch: int, decisions: list[dict], *, warmup: int = 5,
                runs: int = 20, sites: list[dict] | None = None) -> SiteTimes:
    """TensorRT's per-layer times (IProfiler) of a prepared-able `TrtRunner`, joined to sites
    through the ONNX graph it was built from. TensorRT names a fused layer after the ONNX
    nodes it holds ("/body.0.0/Conv + /body.2/LeakyRelu"); the first node with a known layer
    names the site. `sites`: the grouping decisions shared with the models it is compared
    with (site_join.grouping_sites), default its own plan's."""
    try:
        import tensorrt as trt  # optional: the trt extra
    except ImportError as e:
        raise MissingDependencyError(f"TensorRT's layer profiler needs the tensorrt package ({e})") from None
    import onnx  # heavy: onnx

    class _Times(trt.IProfiler):
        def __init__(self) -> None:
            super().__init__()
            self.runs: list[dict[str, float]] = []
            self.current: dict[str, float] = {}

        def report_layer_time(self, layer_name: str, ms: float) -> None:  # TensorRT's signature
            self.current[layer_name] = self.current.get(layer_name, 0.0) + ms * 1e3

    prof = _Times()
    runner.prepare(batch)
    runner.trt.context.profiler = prof
    order: list[str] = []
    for i in range(warmup + runs):
        prof.current = {}
        runner.run_once()  # synchronous: the profiler has reported every layer when it returns
        if i >= warmup:
            prof.runs.append(prof.current)
            order.extend(n for n in prof.current if n not in order)
    original = layer_map(onnx.load(str(onnx_path), load_external_data=False).graph)
    layers = {}
    for name in order:
        parts = [p.strip() for p in name.replace("+", "\n").splitlines()]
        layers[name] = next((original.node[p] for p in parts if p in original.node), UNATTRIBUTED)
    ops = {name: "TensorRT layer" for name in order}
    times = site_times(prof.runs, ops, order, layers, decisions, sites=sites)
    times.device, times.threads = str(getattr(runner, "device", "")), 1
    return times


# ---- the table -----------------------------------------------------------------------------------


def _ops_text(c: Counter | None) -> str:
    if not c:
        return ""
    return ", ".join(f"{op}×{n}" if n > 1 else op for op, n in c.most_common())


def merge_sites(times: SiteTimes, rename: dict[str, str]) -> SiteTimes:
    """`times` with the sites named in `rename` merged into the site each maps to: their medians
    summed (the table's totals are sums of medians too), their op counts added, their shapes
    listed in execution order, their decisions merged."""
    if not any(s in rename for s in times.order):
        return times
    us: dict[str, float] = defaultdict(float)
    ops: dict[str, Counter] = defaultdict(Counter)
    parts: dict[str, list[str]] = defaultdict(list)
    for s in times.order:
        us[rename.get(s, s)] += times.us.get(s, 0.0)
        ops[rename.get(s, s)].update(times.ops.get(s) or Counter())
        parts[rename.get(s, s)].append(s)
    decisions = {new: one_per_site(dict(times.decisions[s], site=new) for s in old if s in times.decisions)[0]
                 for new, old in parts.items() if any(s in times.decisions for s in old)}
    shapes = {new: " + ".join(times.shapes[s] for s in old if times.shapes.get(s)) for new, old in parts.items()}
    return replace(times, us=dict(us), ops=dict(ops), order=list(parts), decisions=decisions, shapes=shapes)


def join_sites(deployed: SiteTimes, dense: SiteTimes) -> pd.DataFrame:
    """One row per site (deployed order, then sites only the dense model has): µs per
    inference in each, the speedup (dense / deployed) and the deployed model's share of time.
    Sites only one model has are first merged into the blocks both share where there are such
    (site_join.common_blocks); the rest stay rows with one side empty."""
    rename = common_blocks(deployed.order, dense.order)
    deployed, dense = merge_sites(deployed, rename), merge_sites(dense, rename)
    total = sum(deployed.us.values())
    sites = deployed.order + [s for s in dense.order if s not in deployed.us]
    rows = []
    for s in sites:
        dep, den = deployed.us.get(s), dense.us.get(s)
        d = deployed.decisions.get(s) or {}
        rows.append({
            "site": s, "action": d.get("action", ""), "deployed_shape": deployed.shapes.get(s, ""),
            "dense_shape": dense.shapes.get(s, ""),
            "dense_us": den if den is not None else math.nan, "deployed_us": dep if dep is not None else math.nan,
            "speedup": den / dep if den and dep else math.nan,
            "deployed_share": dep / total if dep is not None and total > 0 else math.nan,
            "deployed_ops": _ops_text(deployed.ops.get(s)), "dense_ops": _ops_text(dense.ops.get(s)),
            "runs": min(deployed.runs, dense.runs),
        })
    return pd.DataFrame(rows)


def layers_markdown(df: pd.DataFrame) -> str:
    """The per-layer rows as Markdown, one table per (model, engine, batch)."""
    lines = ["# Where the time goes, layer by layer", ""]
    keys = ["model", "baseline", "engine", "batch"]
    for key, g in df.groupby(keys, sort=False):
        model, base, engine, batch = key
        dep, den = g["deployed_us"].sum(), g["dense_us"].sum()
        lines += [f"## {model} vs {base}, {engine}, batch {batch}", "",
                  f"Sum of node times per inference under the profiler: dense {den:,.0f} µs, deployed {dep:,.0f} µs"
                  + (f" ({den / dep:.2f}×)." if dep > 0 else "."), "",
                  "| site | action | deployed | dense | dense µs | deployed µs | speedup | share | deployed ops |",
                  "|---|---|---|---|---:|---:|---:|---:|---|"]
        for r in g.to_dict("records"):
            f = lambda v, spec: "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)  # noqa: E731
            txt = lambda v: "–" if v is None or (isinstance(v, float) and math.isnan(v)) or v == "" else str(v)  # noqa: E731
            lines.append(f"| {r['site']} | {txt(r.get('action'))} | {txt(r.get('deployed_shape'))} | "
                         f"{txt(r.get('dense_shape'))} | {f(r['dense_us'], ',.1f')}"
                         f" | {f(r['deployed_us'], ',.1f')} | {f(r['speedup'], '.2f')} | {f(r['deployed_share'], '.1%')}"
                         f" | {r['deployed_ops']} |")
        lines.append("")
    cmds = sorted({str(c) for c in df.get("command", pd.Series(dtype=str)).dropna()})
    lines += [f"Command: `{c}`" for c in cmds]
    lines += ["", "Node times come from a separate profiled run after the timed one (ONNX Runtime's profiler "
              "slows inference down 2–5×): read ratios and shares, not absolute times.", ""]
    return "\n".join(lines)


def decisions_of(plan: Iterable[Any]) -> list[dict]:
    """Plan decisions (dataclasses or dicts) as dicts."""
    return [asdict(d) if is_dataclass(d) else dict(d) for d in plan]



def profile_pair(deployed: Any, dense: Any, deployed_plan: list[dict], dense_plan: list[dict], target: Target,
                 batch: int, *, runs: int = 20, warmup: int = 5) -> pd.DataFrame:
    """The per-site table of a compressed subject and its dense baseline (bench/sweep.Subject)
    on one target and batch. ORT targets use ORT's profiler in a session with the target's
    providers and settings; TensorRT targets use TensorRT's layer profiler on the built engines."""
    if target.engine == "trt":
        times = []
        shared = grouping_sites(deployed_plan, dense_plan)
        for subject, plan in ((deployed, deployed_plan), (dense, dense_plan)):
            engines = subject.trt_engines
            path = engines.get((target.label, target.precision, batch)) or \
                engines.get((target.label, target.precision, None))
            if path is None or subject.onnx_path is None:
                raise GsdeployError(f"per-layer profile on {target.label} needs the built engine of {subject.name}")
            runner = TrtRunner(path)
            try:
                times.append(profile_trt(runner, subject.onnx_path, batch, plan, warmup=warmup, runs=runs,
                                         sites=shared))
            finally:
                runner.close()
        provider = "tensorrt"
    elif target.engine == "ort":
        times = profile_ort_interleaved([(deployed.onnx_path, deployed_plan, deployed.input_shape),
                                         (dense.onnx_path, dense_plan, dense.input_shape)], batch, target=target,
                                        warmup=warmup, runs=runs)
        provider = target.providers[0]
    else:
        raise GsdeployError(f"no per-layer profiler for engine '{target.label}' (ORT engines and trt have one)")
    df = join_sites(*times)
    df.insert(0, "model", deployed.name)
    df.insert(1, "baseline", dense.name)
    df.insert(2, "engine", target.label)
    df.insert(3, "provider", provider)
    df.insert(4, "device", times[0].device)
    df.insert(5, "threads", times[0].threads)
    df.insert(6, "batch", int(batch))
    return df


def can_profile(target: Target) -> bool:
    return target.engine in ("ort", "trt")
