"""patterns: single-use chains of module calls are found exactly, and fuse() replaces them exactly.

Random chains of 1x1 convs, BNs and ReLUs, some outputs also read elsewhere (a tap), some modules
called twice (shared), some outputs changed by an in-place op the next module reads: the chains
found must be exactly the windows a reference computed from the description (not from the graph)
allows, and fusing each into an nn.Sequential of its modules must leave the outputs bit for bit.
"""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from gsdeploy.transforms.patterns import Match, find, fits, fuse

C = 3
# tracing a 7-module chain takes milliseconds: many examples are cheap
SETTINGS = settings(max_examples=200, deadline=None)


def make(kind: str) -> nn.Module:
    if kind == "conv":
        return nn.Conv2d(C, C, 1)
    if kind == "bn":
        bn = nn.BatchNorm2d(C)
        with torch.no_grad():
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
        return bn
    return nn.ReLU(inplace=kind == "relu_")


class ChainNet(nn.Module):
    """mods[i] runs at position i, or the module of an earlier position (`reuse`: a shared
    module); a position in `taps` is also added to the result; after a position in `inplace`
    x.mul_(2) changes the tensor in place and the next module reads it."""

    def __init__(self, kinds: list[str], taps: set[int], reuse: dict[int, int], inplace: set[int]) -> None:
        super().__init__()
        self.mods = nn.ModuleList(make(k) for k in kinds)
        self.taps, self.reuse, self.inplace = taps, reuse, inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for i in range(len(self.mods)):
            x = self.mods[self.reuse.get(i, i)](x)
            if i in self.taps:
                outs.append(x)
            if i in self.inplace:
                x.mul_(2)
        for t in outs:
            x = x + t
        return x


KINDS = ["conv", "bn", "relu", "relu_"]
STEPS = [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, (nn.Conv2d, nn.BatchNorm2d), nn.Conv2d | nn.ReLU,
         lambda m: isinstance(m, nn.ReLU) and m.inplace]


@st.composite
def chain_case(draw):
    n = draw(st.integers(1, 7))
    kinds = [draw(st.sampled_from(KINDS)) for _ in range(n)]
    positions = st.sets(st.integers(0, n - 1), max_size=2)
    taps, inplace = draw(positions), draw(positions)
    reuse = {}
    for i in draw(st.sets(st.integers(1, n - 1), max_size=2)) if n > 1 else ():
        reuse[i] = draw(st.integers(0, i - 1))
    torch.manual_seed(draw(st.integers(0, 1000)))
    net = ChainNet(kinds, taps, reuse, inplace).eval()
    k = draw(st.integers(1, min(3, n)))
    if draw(st.booleans()):  # the classes of a window of the net itself: matches are common
        start = draw(st.integers(0, n - k))
        pattern = tuple(type(net.mods[net.reuse.get(i, i)]) for i in range(start, start + k))
    else:
        pattern = tuple(draw(st.sampled_from(STEPS)) for _ in range(k))
    return net, pattern


def expected_windows(net: ChainNet, pattern: tuple) -> list[tuple[int, tuple[str, ...]]]:
    """(first position, module names) of each window a match may cover, from the description of the net."""
    n, k = len(net.mods), len(pattern)
    owner = [net.reuse.get(i, i) for i in range(n)]
    shared = {o for o in owner if owner.count(o) > 1}
    out = []
    for i in range(n - k + 1):
        window = range(i, i + k)
        if any(owner[j] in shared for j in window):
            continue  # a module called twice cannot be rewritten for one call
        if any(j in net.taps or j in net.inplace for j in window[:-1]):
            continue  # an intermediate output read by a second node
        if all(fits(net.mods[owner[j]], step) for j, step in zip(window, pattern)):
            out.append((i, tuple(f"mods.{owner[j]}" for j in window)))
    return out


@SETTINGS
@given(chain_case())
def test_find_is_exactly_the_single_use_windows(case):
    net, pattern = case
    gm = fx.symbolic_trace(net)
    assert [m.names for m in find(gm, pattern)] == [w for _, w in expected_windows(net, pattern)]


@SETTINGS
@given(chain_case())
def test_fuse_into_sequential_keeps_outputs_and_takes_windows_greedily(case):
    net, pattern = case
    x = torch.randn(2, C, 4, 4)
    with torch.no_grad():
        want = net(x.clone())
    gm = fx.symbolic_trace(net)
    offered: list[tuple[str, ...]] = []

    def build(match: Match) -> nn.Module:
        offered.append(match.names)
        return nn.Sequential(*match.modules)

    count = fuse(gm, pattern, build)
    gm.graph.lint()
    # left to right, a window taken hides the windows that overlap it (a Sequential fits no step)
    greedy, end = [], -1
    for start, w in expected_windows(net, pattern):
        if start > end:
            greedy.append(w)
            end = start + len(w) - 1
    assert offered == greedy and count == len(greedy)
    calls = [n for n in gm.graph.nodes if n.op == "call_module"]
    assert len(calls) == len(net.mods) - sum(len(w) - 1 for w in greedy)
    with torch.no_grad():
        assert torch.equal(gm(x.clone()), want)


@SETTINGS
@given(chain_case())
def test_a_declined_chain_is_offered_once_and_nothing_changes(case):
    net, pattern = case
    gm = fx.symbolic_trace(net)
    code = gm.code
    offered: list[tuple[str, ...]] = []
    assert fuse(gm, pattern, lambda m: offered.append(m.names)) == 0
    assert offered == [w for _, w in expected_windows(net, pattern)] and gm.code == code


def test_a_fused_module_starts_the_next_match():
    """Linear -> Linear -> Linear folds pairwise into one Linear, as fold_linear relies on."""
    net = nn.Sequential(nn.Linear(4, 5), nn.Linear(5, 6), nn.Linear(6, 2)).eval()
    x = torch.randn(3, 4)
    gm = fx.symbolic_trace(net)

    def merge(match: Match) -> nn.Linear:
        a, b = match.modules
        f = nn.Linear(a.in_features, b.out_features)
        with torch.no_grad():
            f.weight.copy_(b.weight @ a.weight)
            f.bias.copy_(b.weight @ a.bias + b.bias)
        return f

    assert fuse(gm, (nn.Linear, nn.Linear), merge) == 2
    assert [type(m) for m in gm.children()] == [nn.Linear]
    torch.testing.assert_close(gm(x), net(x))


class TwoBranches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a1, self.b1, self.a2, self.b2 = nn.Conv2d(C, C, 1), nn.ReLU(), nn.Conv2d(C, C, 1), nn.ReLU()

    def forward(self, x):
        u, v = self.a1(x), self.a2(x)
        return self.b2(v) - self.b1(u)  # graph order: a1, a2, b2, b1


def test_order_by_picks_the_node_that_orders_the_offers():
    for order_by, want in ((0, [("a1", "b1"), ("a2", "b2")]), (-1, [("a2", "b2"), ("a1", "b1")])):
        gm = fx.symbolic_trace(TwoBranches())
        offered = []
        fuse(gm, (nn.Conv2d, nn.ReLU), lambda m: offered.append(m.names), order_by=order_by)
        assert offered == want


def test_an_only_user_that_reads_the_chain_twice_is_not_a_chain():
    class Square(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bilinear = nn.Conv2d(C, C, 1), nn.Bilinear(4, 4, 2)

        def forward(self, x):
            y = self.conv(x)
            return self.bilinear(y, y)  # y's only user, but not its only argument

    gm = fx.symbolic_trace(Square())
    assert len(gm.graph.find_nodes(op="call_module", target="conv")[0].users) == 1
    assert find(gm, (nn.Conv2d, nn.Bilinear)) == []
    assert find(gm, (nn.Bilinear,))[0].names == ("bilinear",)
