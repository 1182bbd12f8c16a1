"""Widths that a concat carries into the rest of the network (DenseNet) cannot be timed as one
site; the latency variant aligns them to the target's input multiple, the whole-model run judges
it, and the cache and LUTs replay it.

Whole-model timings are scripted (what is under test is what the planner does with them); site
timings are real, from the session's quick budget."""

from __future__ import annotations

import pytest
import torch.nn as nn

from gsdeploy.plan import cache as lut
from gsdeploy.plan import search, timing
from gsdeploy.plan.cache import Timing
from gsdeploy.target import make_target
from test_transforms_align import Dense, _randomize_bn
from test_transforms_nets import init

pytest.importorskip("onnxruntime")

FAST_T = dict(threads=1, warmup_s=0.02, min_iterations=3, min_duration_s=0.02)


def scripted(real, fastest: str):
    def time_modules(target, modules, input_shape, batches, cfg, rounds=1):
        if "never" not in modules:  # a site's candidates: measure them
            return real(target, modules, input_shape, batches, cfg, rounds)
        return {n: {b: Timing(1.0 if n == fastest else 2.0, 0.01) for b in batches} for n in modules}
    return time_modules


def dense_net() -> nn.Module:
    net = Dense(6, [5, 7, 3], 9, [5, 6], nn.ReLU(), False)  # odd widths everywhere
    init(net, 7)
    _randomize_bn(net, 7)
    return net.eval()


def conv_inputs(module: nn.Module) -> dict[str, int]:
    return {n: m.in_channels for n, m in module.named_modules() if isinstance(m, nn.Conv2d) and n != "stem"}


def test_ort_cpu_aligns_concat_widths_to_four_and_the_cache_replays_it(monkeypatch, tmp_path):
    monkeypatch.setenv("GSDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    # the net has no pairs, so all fused and the per-site choices are one model (timed once, as "always")
    monkeypatch.setattr(search, "time_modules", scripted(timing.time_modules, "always"))
    target = make_target("ort", batches=(1,), **FAST_T)
    assert timing.input_multiple(target) == 4
    net = dense_net()
    plan = search.plan_latency(net, (2, 8, 8), target)
    assert plan.winner == "always"
    assert plan.options.align == 4
    widths = conv_inputs(plan.result.module)
    assert widths and all(w % 4 == 0 for w in widths.values()), widths
    assert plan.result.module.get_submodule("fc").in_features % 4 == 0
    assert plan.result.verification.passed
    pads = [d for d in plan.result.plan if d.action == "pad width"]
    assert pads and all("concat" in d.reason for d in pads)
    # the references it is measured against are not aligned; all pairs fused is a proposal too
    assert all(plan.variant_options[n].align == 0 for n in ("never", "flops"))
    assert plan.variant_options["always"].align == 4
    assert next(iter(plan.table.plans.values()))["align"] == 4
    assert any("aligned to multiples of 4" in n for n in plan.notes)

    monkeypatch.setattr(search, "time_modules", lambda *a, **k: pytest.fail("a cached plan must not measure"))
    again = search.plan_latency(net, (2, 8, 8), target)
    assert conv_inputs(again.result.module) == widths


def test_when_another_variant_wins_nothing_is_aligned(monkeypatch, tmp_path):
    monkeypatch.setenv("GSDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(search, "time_modules", scripted(timing.time_modules, "never"))
    net = dense_net()
    plan = search.plan_latency(net, (2, 8, 8), make_target("ort", batches=(1,), **FAST_T))
    assert plan.winner == "never"
    assert not [d for d in plan.result.plan if d.action == "pad width"]
    assert any(w % 4 for w in conv_inputs(plan.result.module).values())


@pytest.mark.parametrize("bad", [3, "4", True, 64, -4, 4.0, None])
def test_a_lut_with_a_bad_align_is_refused(bad):
    table = lut.TimingTable({"engine": "ort"})
    table.plans["k"] = {"winner": "latency", "model": "m", "choices": {}, "reasons": {}, "align": 4}
    assert lut.parse_table(table.to_json(), "lut.json").plans["k"]["align"] == 4
    table.plans["k"]["align"] = bad
    with pytest.raises(lut.LutError, match="align"):
        lut.parse_table(table.to_json(), "lut.json")


def test_a_plan_cached_by_another_planner_version_is_made_again(monkeypatch, tmp_path):
    monkeypatch.setenv("GSDEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(search, "time_modules", scripted(timing.time_modules, "never"))
    net = dense_net()
    target = make_target("ort", batches=(1,), **FAST_T)
    assert search.plan_latency(net, (2, 8, 8), target).winner == "never"
    again = search.plan_latency(net, (2, 8, 8), target)
    assert any("from the timing cache" in n for n in again.notes)  # replayed
    monkeypatch.setattr(search, "PLANNER_VERSION", search.PLANNER_VERSION + 1)
    anew = search.plan_latency(net, (2, 8, 8), target)
    # made again: the same whole models' timings are still good measurements and are reused
    assert not any("from the timing cache" in n for n in anew.notes) and anew.models_cached
