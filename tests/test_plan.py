"""The latency plan: candidates are exact, timings come from the target's runner and are cached per
fingerprint, the whole model decides, a second plan measures nothing and gives the same plan, LUTs are
checked like any untrusted file."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn

from gsdeploy.plan import cache as lut
from gsdeploy.plan import search, timing
from gsdeploy.plan.sites import FUSE, KEEP, candidate_module, check_candidate, find_sites, pad_widths
from gsdeploy.transforms import DeployOptions, deploy, verify_modules
from test_transforms_nets import init

pytest.importorskip("onnxruntime")


def cpu_target(batches=(1,)):
    from gsdeploy.target import make_target

    return make_target("ort", threads=1, batches=batches)


class Net(nn.Module):
    """A factorized pair of rank 5 and a pruned width 11 (conv -> ReLU -> conv)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.a = nn.Conv2d(16, 5, 3, padding=1)
        self.b = nn.Conv2d(5, 16, 1)
        self.p = nn.Conv2d(16, 11, 3, padding=1)
        self.q = nn.Conv2d(11, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = torch.relu(self.b(self.a(x)) + x)
        x = torch.relu(self.q(torch.relu(self.p(x))) + x)
        return self.fc(x.mean((2, 3)))


def net() -> nn.Module:
    m = Net()
    init(m, 0)
    return m.eval()


SHAPE = (3, 12, 12)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GSDEPLOY_CACHE_DIR", str(tmp_path / "cache"))  # an empty cache per test


def test_pad_widths_are_the_next_multiples():
    assert pad_widths(7, (16, 8)) == [8, 16]
    assert pad_widths(16, (16, 8)) == []
    assert pad_widths(29, (16, 8)) == [32]
    assert pad_widths(20, (16, 8)) == [24, 32]


def test_sites_and_their_candidates_are_exact():
    gm = deploy(net(), SHAPE, DeployOptions(fuse="never")).module
    sites = {s.name: s for s in find_sites(gm, SHAPE, (16, 8))}
    assert set(sites) == {"a", "p"}
    assert sites["a"].candidates == (KEEP, FUSE, "pad:8", "pad:16")
    assert sites["p"].candidates == (KEEP, "pad:16")
    assert sites["a"].in_shape == (16, 12, 12)
    for s in sites.values():
        for c in s.candidates:
            assert check_candidate(gm, s, c, candidate_module(gm, s, c)) < 1e-5


def test_a_lut_is_untrusted_input(tmp_path):
    good = lut.TimingTable({"engine": "ort", "threads": 1})
    good.put_site("sig", KEEP, 1, lut.Timing(0.1, 0.01))
    t = lut.parse_table(good.to_json(), "x")
    assert t.site("sig", KEEP, 1) == lut.Timing(0.1, 0.01)
    data = json.loads(good.to_json())
    bad_values = [[float("nan"), 0.0], [float("inf"), 0.0], [-1, 0.0], [1e12, 0.0], [1.0, -0.5], ["1", 0.1], [1.0],
                  True]
    for v in bad_values:
        data["sites"]["sig"][KEEP]["1"] = v
        with pytest.raises(lut.LutError):
            lut.parse_table(json.dumps(data), "x")  # json.dumps writes NaN / Infinity as bare words
    for text in ("not json", "[]", json.dumps({"format": "other"}), "{" * 100_000):
        with pytest.raises(lut.LutError):
            lut.parse_table(text, "x")
    data = json.loads(good.to_json())
    data["plans"] = {"k": {"winner": "latency", "model": "m", "choices": {"a": "rm -rf"}, "reasons": {}}}
    with pytest.raises(lut.LutError, match="not keep, fuse or pad"):
        lut.parse_table(json.dumps(data), "x")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (lut.MAX_FILE_BYTES + 1))
    with pytest.raises(lut.LutError, match="at most"):
        lut.read_table(big)


def test_a_lut_from_another_target_is_refused_naming_both():
    t = lut.TimingTable({"engine": "ort", "engine_version": "onnxruntime 1.0", "device": "CPU A"})
    with pytest.raises(lut.LutError, match="CPU A.*CPU B"):
        lut.check_matches(t, {"engine": "ort", "engine_version": "onnxruntime 1.0", "device": "CPU B"}, "f.json",
                          ("engine", "engine_version", "device"))


def test_plan_measures_on_the_target_then_replays_from_the_cache(monkeypatch):
    calls = []
    real = timing.time_modules

    def counting(target, modules, *args, **kwargs):
        calls.append(sorted(modules))
        return real(target, modules, *args, **kwargs)

    monkeypatch.setattr(search, "time_modules", counting)
    target = cpu_target()
    m = net()
    first = search.plan_latency(m, SHAPE, target)
    # two sites, then one whole-model run of every distinct variant
    assert len(calls) == 3 and "never" in calls[-1]
    assert first.measured_sites == 2 and first.winner in search.VARIANTS
    ratios = {v.name: math.prod(v.measured[b].median_ms for b in target.batches) for v in first.variants}
    assert ratios[first.winner] == min(ratios.values())  # the fastest whole model wins
    assert verify_modules(m, first.result.module, SHAPE).passed
    for sp in first.sites:
        assert set(sp.timings) == set(sp.site.candidates)
    calls.clear()
    second = search.plan_latency(m, SHAPE, target)
    assert calls == [] and second.models_cached
    assert (second.winner, second.options.choices) == (first.winner, first.options.choices)
    third = search.plan_latency(m, SHAPE, target, refresh=True)
    assert calls and third.measured_sites == 2


def test_a_lut_replays_the_plan_without_measuring(monkeypatch):
    target = cpu_target()
    m = net()
    made = search.plan_latency(m, SHAPE, target)
    table = lut.parse_table(made.table.to_json(), "lut.json")
    monkeypatch.setattr(search, "time_modules", lambda *a, **k: pytest.fail("a LUT plan must not measure"))
    again = search.plan_latency(m, SHAPE, target, table=table)
    assert (again.winner, again.options.choices) == (made.winner, made.options.choices)
    other = nn.Sequential(nn.Conv2d(3, 7, 3), nn.ReLU(), nn.Conv2d(7, 4, 1)).eval()
    with pytest.raises(lut.LutError, match="no timing for site"):
        search.plan_latency(other, SHAPE, target, table=table)


def test_a_lut_cannot_pad_a_width_beyond_what_a_plan_proposes():
    """A hand-edited LUT saying pad:999999 would allocate weights of any size: refused."""
    from gsdeploy.errors import GsdeployError

    target = cpu_target()
    m = net()
    made = search.plan_latency(m, SHAPE, target)
    record = next(iter(made.table.plans.values()))
    width_site = next(sp.site.name for sp in made.sites if sp.site.width is not None)
    record.update(winner="latency", batch_winners={}, choices={width_site: "pad:999999"})
    table = lut.parse_table(made.table.to_json(), "lut.json")
    with pytest.raises(GsdeployError, match="pads by more than"):
        search.plan_latency(m, SHAPE, target, table=table)


class Twins(nn.Module):
    """Two pairs of the same shapes on the same input shape (one site signature), one of another."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.a1, self.b1 = nn.Conv2d(16, 5, 3, padding=1), nn.Conv2d(5, 16, 1)
        self.a2, self.b2 = nn.Conv2d(16, 5, 3, padding=1), nn.Conv2d(5, 16, 1)
        self.a3, self.b3 = nn.Conv2d(16, 6, 3, padding=1), nn.Conv2d(6, 16, 1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        for a, b in ((self.a1, self.b1), (self.a2, self.b2), (self.a3, self.b3)):
            x = torch.relu(b(a(x)) + x)
        return x.mean((2, 3))


def test_equal_sites_and_equal_whole_models_are_timed_once(monkeypatch):
    """Sites with the same subgraph on the same input shape are one measurement (their weights
    differ, their timings cannot), and two variants that deploy to the same graph are one model
    to time; the whole plan deploys from one trace of the model."""
    import gsdeploy.transforms.deployment as deployment

    timed: list[list[str]] = []

    def fake(target, modules, input_shape, batches, cfg, rounds=1):
        timed.append(list(modules))
        return {n: {b: lut.Timing(1.0 + i, 0.0) for b in batches} for i, n in enumerate(modules)}

    traced = []
    real_trace = deployment.trace
    monkeypatch.setattr(deployment, "trace", lambda module: traced.append(1) or real_trace(module))
    monkeypatch.setattr(search, "time_modules", fake)
    m = Twins()
    init(m, 0)
    plan = search.plan_latency(m.eval(), SHAPE, cpu_target())
    by_name = {sp.site.name: sp for sp in plan.sites}
    assert set(by_name) == {"a1", "a2", "a3"}
    assert by_name["a1"].site.signature == by_name["a2"].site.signature != by_name["a3"].site.signature
    assert len(timed) == 3  # a1 (a2 reuses it), a3, then the whole models
    assert plan.measured_sites == 2 and by_name["a2"].cached and by_name["a2"].timings == by_name["a1"].timings
    # keep is fastest for every site here, so the latency plan deploys as given: timed once
    assert plan.options.choices == {} or set(plan.options.choices.values()) == {KEEP}
    assert len(timed[-1]) < len(search.VARIANTS) and "never" in timed[-1]
    assert {v.name for v in plan.variants} == set(search.VARIANTS)
    assert len(traced) == 1


@pytest.mark.parametrize("fastest_ms, says", [
    (0.8, None),  # faster than dense: nothing to say
    (1.02, "no deployment beat dense by more than this run's noise (5%): 0.98x at batch 1"),
    (1.3, "nothing beats dense at batch 1"),
])
def test_the_plan_says_when_nothing_beats_dense_and_when_it_cannot_tell(monkeypatch, fastest_ms, says):
    """Dense 2% faster in one short plan run is a tie, not a verdict (identical models read 3-5%
    apart here); 30% faster is."""
    def fake(target, modules, input_shape, batches, cfg, rounds=1):
        if "never" not in modules:  # sites: keep everything
            return {n: {b: lut.Timing(1.0 if n == KEEP else 2.0, 0.0) for b in batches} for n in modules}
        return {n: {b: lut.Timing(1.0 if n == "dense" else fastest_ms + 0.1 * (n != "never"), 0.0)
                    for b in batches} for n in modules}

    monkeypatch.setattr(search, "time_modules", fake)
    plan = search.plan_latency(net(), SHAPE, cpu_target(), dense=net())
    dense_notes = [n for n in plan.notes if "dense" in n]
    if says is None:
        assert dense_notes == []
    else:
        assert len(dense_notes) == 1 and says in dense_notes[0], plan.notes


@pytest.mark.parametrize("second_run_agrees", [True, False])
def test_a_batch_gets_its_own_model_only_if_a_second_run_agrees(monkeypatch, second_run_agrees):
    """The whole-model run says all fused is 30% faster at batch 2 than the overall winner; the
    two are timed again at batch 2 alone, and only if that run agrees does batch 2 get its model
    (a burst of noise once shipped a 1.04x model where 1.25x was there)."""
    calls: list[tuple[tuple[str, ...], tuple[int, ...]]] = []

    def fake(target, modules, input_shape, batches, cfg, rounds=1):
        calls.append((tuple(modules), tuple(batches)))
        if "never" not in modules and "latency" not in modules:  # sites: padding wins, so the proposal is
            # a model of its own (not as given, not all fused)
            return {n: {b: lut.Timing(0.5 if n.startswith("pad:") else 1.0, 0.0) for b in batches} for n in modules}
        if "never" in modules:  # the whole-model run: per-site choices win overall, all fused at batch 2
            ms = {1: {"latency": 1.0, "always": 1.5}, 2: {"latency": 1.0, "always": 0.7}}
            return {n: {b: lut.Timing(ms[b].get(n, 1.2), 0.0) for b in batches} for n in modules}
        again = {"latency": 1.0, "always": 0.7 if second_run_agrees else 0.99}  # the confirmation run
        return {n: {b: lut.Timing(again[n], 0.0) for b in batches} for n in modules}

    monkeypatch.setattr(search, "time_modules", fake)
    plan = search.plan_latency(Twins().eval(), SHAPE, cpu_target(batches=(1, 2)))
    assert plan.winner == "latency"
    assert calls[-1] == (("latency", "always"), (2,))  # only the split batch, only its two models
    if second_run_agrees:
        assert plan.batch_winners == {1: "latency", 2: "always"}
        assert not any("timed again" in n for n in plan.notes)
    else:
        assert plan.batch_winners == {1: "latency", 2: "latency"}
        assert any("at batch 2, all pairs fused read more than 5% faster" in n and "timed again" in n
                   for n in plan.notes), plan.notes
    # the cache keeps what was decided: the same command replays it
    again = search.plan_latency(Twins().eval(), SHAPE, cpu_target(batches=(1, 2)))
    assert again.batch_winners == plan.batch_winners
