"""Property tests on models gsdeploy has no template for (tests/odd_nets.py): whatever a user's CNN
looks like, every deployment — each fuse mode, each align multiple, any mix of the plan's per-site
choices — computes what the original computes, every zero channel that could go went, and a plan's
choice is either carried out or said in a decision, never dropped."""

from __future__ import annotations

import random

import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gsdeploy.plan.sites import candidate_module, check_candidate, find_sites
from gsdeploy.transforms import DeployOptions, deploy, verify_modules
from odd_nets import ACTS, make_act, odd_nets
from test_transforms_nets import init, removable_left

FEW = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _wide_enough(net: nn.Module, shape: tuple[int, ...]) -> bool:
    """tests/test_transforms_nets.well_conditioned for every output of a net that may have two."""
    with torch.no_grad():
        y = net(torch.randn(2, *shape, generator=torch.Generator().manual_seed(0)))
    return all(bool(t.abs().max() >= 1e-3) for t in (y if isinstance(y, tuple) else (y,)))


@FEW
@given(odd_nets(), st.sampled_from(["never", "flops", "always"]), st.sampled_from([0, 4, 8, 16]))
def test_odd_nets_deploy_exactly_in_every_mode(case, fuse, align):
    net, shape = case
    if not _wide_enough(net, shape):
        return
    r = deploy(net, shape, DeployOptions(fuse=fuse, align=align))
    assert verify_modules(net, r.module, shape, batches=1, seed=5).max_rel_err <= 1e-5
    if align == 0:  # aligned widths are zero filters on purpose
        assert not removable_left(r.module, shape)


def _pads_done(plan) -> set[str]:
    """Producers the plan padded, by their names in the as-given graph (a fused pair pads as its 1 x 1)."""
    fused_into = {d.layers[1]: d.layers[0] for d in plan if d.action == "fuse pair"}
    padded = {d.layers[0] for d in plan if d.action == "pad width"}
    named = set()
    for name in {d for d in fused_into} | padded:
        now = name
        while now in fused_into:
            now = fused_into[now]
        if now in padded:
            named.add(name)
    return named


@FEW
@given(odd_nets(), st.sampled_from([0, 4]), st.integers(0, 2**16))
def test_any_mix_of_plan_choices_is_exact_and_carried_out_or_said(case, align, seed):
    net, shape = case
    if not _wide_enough(net, shape):
        return
    as_given = deploy(net, shape, DeployOptions(fuse="never"))
    sites = find_sites(as_given.module, shape, (4, 8, 16))
    for s in sites:
        for c in s.candidates:
            assert check_candidate(as_given.module, s, c, candidate_module(as_given.module, s, c)) <= 1e-5
    rnd = random.Random(seed)
    # fusing a pair and padding the width after it (its 1 x 1's site) is the mix that renames sites
    choices = {s.name: "fuse" if "fuse" in s.candidates and rnd.random() < 0.5 else rnd.choice(s.candidates[1:])
               for s in sites}
    r = deploy(net, shape, DeployOptions(fuse="flops", align=align, choices=choices))
    assert verify_modules(net, r.module, shape, batches=1, seed=5).max_rel_err <= 1e-5
    said = {layer for d in r.plan if d.action == "keep" and d.reason.startswith("plan chose") for layer in d.layers}
    done = _pads_done(r.plan)
    for name, choice in choices.items():
        if choice.startswith("pad:"):
            assert name in done or name in said, (name, choice, [(d.action, d.layers) for d in r.plan])


class PairThenWidth(nn.Module):
    """A factorized pair (k x k A -> 1 x 1 B) whose output, through an activation and maybe a BN, is
    read by one or two convs: B's width is a site of its own, and fusing A into B keeps it."""

    def __init__(self, cin: int, rank: int, width: int, groups: int, act: str, bn: bool, readers: int,
                 chained: bool) -> None:
        super().__init__()
        self.a = nn.Conv2d(cin, rank, 3, padding=1, groups=groups)
        self.b = nn.Conv2d(rank, width, 1)
        # chained: a second 1 x 1 right after B, so (B, c) is a pair too and fusing A renames it
        self.c = nn.Conv2d(width, width + 1, 1) if chained else nn.Identity()
        out = width + 1 if chained else width
        self.norm = nn.BatchNorm2d(out) if bn else nn.Identity()
        self.act = make_act(act)
        self.readers = nn.ModuleList(nn.Conv2d(out, 3, k, padding=k // 2) for k in (3, 1)[:readers])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm(self.c(self.b(self.a(x)))))
        return sum(r(y) for r in self.readers)


@st.composite
def pair_then_width(draw):
    cin = draw(st.integers(1, 6))
    groups = draw(st.sampled_from([d for d in range(1, cin + 1) if cin % d == 0]))
    net = PairThenWidth(cin, groups * draw(st.integers(1, 3)), draw(st.integers(1, 13)), groups,
                        draw(st.sampled_from(ACTS)), draw(st.booleans()), draw(st.integers(1, 2)), draw(st.booleans()))
    init(net, draw(st.integers(0, 2**16)))
    return net.eval(), (cin, draw(st.integers(1, 5)), draw(st.integers(1, 5)))


@FEW
@given(pair_then_width(), st.sampled_from(["keep", "fuse"]), st.sampled_from(["keep", "fuse"]), st.integers(0, 2))
def test_a_fused_pair_keeps_the_choices_of_its_1x1(case, first, second, pad):
    """The plan names sites by the as-given layers: after A -> B fuses (under A's name), B's pad
    choice pads the fused conv, and B's own pair with a following 1 x 1 follows B's choice, not A's."""
    net, shape = case
    as_given = deploy(net, shape, DeployOptions(fuse="never"))
    sites = {s.name: s for s in find_sites(as_given.module, shape, (8, 16))}
    last = "c" if isinstance(net.c, nn.Conv2d) else "b"
    choices = {"a": first}
    if last == "c":
        choices["b"] = second
    if pad and last in sites:
        choices[last] = sites[last].candidates[-pad]
    r = deploy(net, shape, DeployOptions(fuse="never", choices=choices))
    assert verify_modules(net, r.module, shape, batches=1, seed=5).max_rel_err <= 1e-5
    fused = {tuple(d.layers) for d in r.plan if d.action == "fuse pair"}
    assert (("a", "b") in fused) == (first == "fuse")
    if last == "c":
        # B's pair with c, whatever A did: fused only when the plan said so for B
        assert any(d.layers[1] == "c" for d in r.plan if d.action == "fuse pair") == (choices["b"] == "fuse")
    if choices.get(last, "").startswith("pad:"):
        assert last in _pads_done(r.plan)
        widths = [m.out_channels for n, m in r.module.named_modules() if isinstance(m, nn.Conv2d)
                  and not n.startswith("readers")]
        assert widths[-1] == int(choices[last][4:])
