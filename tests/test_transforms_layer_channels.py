"""layer_channels: each layer class says what its layer reads, writes and keeps when channels go.

Each claim is checked against what the torch module computes, on random shapes, widths, groups
and zero patterns: `reads` against perturbing one input channel, `writes` against the output for
a zero (or random) input, `cut` against the full layer with the removed inputs zeroed, and
`silence_group` against the layer's output before. Then GroupNorm, the type added through this
registry alone: a model with it deploys, matches the original, loses exactly the groups that can
go, and reports the zero channels it had to keep.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gsdeploy.transforms.layer_channels import channel_layer, mixing_layer
from test_transforms_nets import check_deploy

FAST = settings(max_examples=60, deadline=None)


@st.composite
def layer_case(draw):
    """(module, input) with random widths, groups and zeroed rows / columns / parameters."""
    kind = draw(st.sampled_from(["conv", "linear", "bn", "prelu", "gn"]))
    g = draw(st.integers(1, 3))
    cin = g * draw(st.integers(1, 3))
    torch.manual_seed(draw(st.integers(0, 10_000)))
    if kind == "conv":
        m = nn.Conv2d(cin, g * draw(st.integers(1, 3)), draw(st.sampled_from([1, 3])), padding=1, groups=g,
                      bias=draw(st.booleans()))
        x = torch.randn(2, cin, 5, 5, dtype=torch.float64)
    elif kind == "linear":
        m = nn.Linear(cin, draw(st.integers(1, 6)), bias=draw(st.booleans()))
        x = torch.randn(3, cin, dtype=torch.float64)
    elif kind == "bn":
        m = nn.BatchNorm2d(cin)
        with torch.no_grad():
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-1, 1)
        x = torch.randn(2, cin, 3, 3, dtype=torch.float64)
    elif kind == "prelu":
        m = nn.PReLU(draw(st.sampled_from([1, cin])))
        with torch.no_grad():
            m.weight.uniform_(-0.5, 0.5)
        x = torch.randn(2, cin, 3, 3, dtype=torch.float64)
    else:
        m = nn.GroupNorm(g, cin, affine=draw(st.booleans()))
        if m.affine:
            with torch.no_grad():
                m.weight.uniform_(-1, 1)
                m.bias.uniform_(-1, 1)
        x = torch.randn(2, cin, 3, 3, dtype=torch.float64)
    m = m.double().eval()
    params = [p for p in (getattr(m, "weight", None), getattr(m, "bias", None)) if p is not None]
    with torch.no_grad():
        for p in params:  # zero whole rows (output channels) and, for weights, whole columns
            rows = torch.tensor(draw(st.lists(st.booleans(), min_size=p.shape[0], max_size=p.shape[0])))
            p[rows] = 0
            if p.dim() > 1:
                cols = torch.tensor(draw(st.lists(st.booleans(), min_size=p.shape[1], max_size=p.shape[1])))
                p[:, cols] = 0
    return m, x


def _out_channels(y: torch.Tensor) -> torch.Tensor:
    """(C, everything else) view of an output."""
    return y.transpose(0, 1).reshape(y.shape[1], -1)


@FAST
@given(layer_case())
def test_reads_is_what_a_perturbed_input_channel_changes(case):
    m, x = case
    layer = mixing_layer(m)
    if layer is None:
        return  # pointwise layers couple channel c to channel c; they read nothing else
    reads = layer.reads(m, 0.0)
    with torch.no_grad():
        y = m(x)
        for c in range(x.shape[1]):
            x2 = x.clone()
            x2[:, c] += torch.randn_like(x2[:, c])
            changed = bool((m(x2) != y).any())
            assert reads[c] or not changed, c  # never says unread where the channel matters
            if not isinstance(m, nn.GroupNorm):  # (GroupNorm says every channel is read: its statistics)
                assert changed == bool(reads[c]), c


@FAST
@given(layer_case())
def test_writes_is_where_an_output_can_be_non_zero(case):
    m, x = case
    layer = channel_layer(m)
    writes = np.broadcast_to(layer.writes(m, 0.0), (x.shape[1] if layer.pointwise else layer.out_channels(m),))
    with torch.no_grad():
        if layer.pointwise:  # non-zero for a zero input
            seen = _out_channels(m(torch.zeros_like(x))).ne(0).any(dim=1).numpy()
            assert (seen == writes).all()
        else:  # for random inputs: non-zero exactly where it says so
            out = _out_channels(m(x)).ne(0).any(dim=1).numpy()
            assert (out == writes).all()


@FAST
@given(layer_case(), st.data())
def test_cut_computes_the_kept_channels_of_the_full_layer(case, data):
    m, x = case
    layer = channel_layer(m)
    cin = x.shape[1]
    g = layer.whole_groups(m) if not layer.pointwise else 0
    if layer.pointwise:
        keep = np.array(sorted(data.draw(st.sets(st.integers(0, cin - 1), min_size=1))))
        keep_in = keep_out = keep
    elif g:  # whole groups only
        groups = np.array(sorted(data.draw(st.sets(st.integers(0, g - 1), min_size=1))))
        in_g, out_g = layer.in_channels(m) // g, layer.out_channels(m) // g
        keep_in = (groups[:, None] * in_g + np.arange(in_g)).ravel()
        keep_out = (groups[:, None] * out_g + np.arange(out_g)).ravel()
    else:
        keep_in = np.array(sorted(data.draw(st.sets(st.integers(0, cin - 1), min_size=1))))
        keep_out = np.array(sorted(data.draw(st.sets(st.integers(0, layer.out_channels(m) - 1), min_size=1))))
    with torch.no_grad():
        xz = x.clone()
        gone = np.setdiff1d(np.arange(cin), keep_in)
        if g and not isinstance(m, nn.GroupNorm):
            xz[:, gone] = 0  # a removed group's inputs feed only the removed group's outputs
        elif not g and not layer.pointwise:
            xz[:, gone] = 0  # what the analysis removes is zero or read by nobody kept
        want = m(xz)[:, keep_out]
        shared_slope = isinstance(m, nn.PReLU) and m.num_parameters == 1
        layer.cut(m, keep_in, keep_out)
        got = m(x[:, keep_in])
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    if shared_slope:
        assert m.num_parameters == 1
    else:
        assert (layer.in_channels(m), layer.out_channels(m)) == (len(keep_in), len(keep_out))


@FAST
@given(layer_case(), st.data())
def test_a_silenced_group_changes_no_output_when_its_inputs_are_zero(case, data):
    m, x = case
    layer = mixing_layer(m)
    if layer is None or layer.whole_groups(m) <= 1:
        return
    g = layer.whole_groups(m)
    j = data.draw(st.integers(0, g - 1))
    in_g = layer.in_channels(m) // g
    x = x.clone()
    x[:, j * in_g:(j + 1) * in_g] = 0
    with torch.no_grad():
        before = m(x)
        silenced = layer.silence_group(m, j)
        after = m(x)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    out_g = layer.out_channels(m) // g
    if silenced:  # its weights (a GroupNorm's scale) are zero now
        assert not m.weight[j * out_g:(j + 1) * out_g].ne(0).any()


@FAST
@given(layer_case(), st.data())
def test_zeroed_rows_and_columns_are_no_longer_written_or_read(case, data):
    m, x = case
    layer = mixing_layer(m)
    if layer is None or isinstance(m, nn.GroupNorm):
        return  # GroupNorm: only channels that already write zero are zeroed, and none is unread
    rows = np.array(sorted(data.draw(st.sets(st.integers(0, layer.out_channels(m) - 1)))), dtype=np.int64)
    cols = np.array(sorted(data.draw(st.sets(st.integers(0, layer.in_channels(m) - 1)))), dtype=np.int64)
    layer.zero_out(m, rows)
    layer.zero_in(m, cols)
    assert not layer.writes(m, 0.0)[rows].any() and not layer.reads(m, 0.0)[cols].any()


# ---- GroupNorm end to end --------------------------------------------------------------------


class GNNet(nn.Module):
    """conv -> GroupNorm -> ReLU -> 1x1 conv, optionally with a second reader of the first conv."""

    def __init__(self, cin: int, groups: int, size: int, cout: int, second_reader: bool) -> None:
        super().__init__()
        width = groups * size
        self.conv1 = nn.Conv2d(cin, width, 3, padding=1)
        self.gn = nn.GroupNorm(groups, width)
        self.conv2 = nn.Conv2d(width, cout, 1)
        self.side = nn.Conv2d(width, cout, 1) if second_reader else None

    def forward(self, x):
        y = self.conv1(x)
        out = self.conv2(F.relu(self.gn(y)))
        return out + self.side(y) if self.side is not None else out


GROUP_ZEROS = ["none", "filters", "filters+bias", "filters+partial-bias", "some-filters", "gn", "columns"]


@st.composite
def gn_net(draw):
    groups, size = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    net = GNNet(draw(st.integers(1, 3)), groups, size, draw(st.integers(1, 4)), draw(st.booleans()))
    torch.manual_seed(draw(st.integers(0, 10_000)))
    # group 0 stays as it is: a tensor always keeps a channel, and that must not decide the test
    plan = ["none"] + [draw(st.sampled_from(GROUP_ZEROS)) for _ in range(groups - 1)]
    with torch.no_grad():
        net.gn.weight.uniform_(0.5, 1.5)
        net.gn.bias.uniform_(0.1, 1.0)
        for j, what in enumerate(plan):
            s = slice(j * size, (j + 1) * size)
            if what.startswith("filters"):
                net.conv1.weight[s] = 0
                net.conv1.bias[s] = 0
            if what == "filters":  # pruned together with its GroupNorm shift: the group writes zero
                net.gn.bias[s] = 0
            if what == "filters+partial-bias":
                net.gn.bias[j * size] = 0
            if what == "some-filters":
                net.conv1.weight[j * size] = 0
                net.conv1.bias[j * size] = 0
            if what == "gn":
                net.gn.weight[s] = 0
                net.gn.bias[s] = 0
            if what == "columns":
                net.conv2.weight[:, s] = 0
    return net.eval(), plan, size


def goes(what: str, size: int) -> bool:
    """Whether a group zeroed this way can go exactly: its inputs are zero (their conv's filters)
    and then it writes zero (its shift is zero everywhere: it writes its shift)."""
    return what == "filters" or (what == "filters+partial-bias" and size == 1)


@settings(max_examples=20, deadline=None)
@given(gn_net())
def test_a_model_with_groupnorm_deploys_exactly_and_reports_what_stays(case):
    net, plan, size = case
    r = check_deploy(net, (net.conv1.in_channels, 6, 6), fuse="never")  # exact, and nothing removable left
    gone = [j for j, what in enumerate(plan) if goes(what, size)]
    gn = r.module.get_submodule("gn")
    assert gn.num_groups == len(plan) - len(gone)
    assert r.module.get_submodule("conv1").out_channels == gn.num_channels == gn.num_groups * size
    # zero filters in a group that stays: kept because of the GroupNorm, and said so
    kept_zero_filters = sum(size if what.startswith("filters") else 1 if what == "some-filters" else 0
                            for j, what in enumerate(plan) if j not in gone)
    by_gn = [k for k in r.kept_zeros if k.op == "GroupNorm"]
    if kept_zero_filters:
        assert by_gn and "GroupNorm normalizes" in by_gn[0].why and "conv1" in by_gn[0].layers
        assert sum(k.channels for k in by_gn) >= kept_zero_filters
    if any(what in ("gn", "columns") for what in plan):  # zero outputs or unread outputs the group keeps
        assert by_gn
    removed = [d for d in r.plan if d.action == "remove zero groups" and d.site == "gn"]
    assert bool(removed) == bool(gone)
    if gone:
        assert removed[0].shape_after == f"GN {gn.num_channels}/g{gn.num_groups}"


def test_a_one_group_groupnorm_keeps_its_zero_channels_and_says_so():
    net = GNNet(2, 1, 4, 3, False).eval()
    with torch.no_grad():
        net.conv1.weight[1:3] = 0
        net.conv1.bias[1:3] = 0
        net.gn.bias.zero_()
    r = check_deploy(net, (2, 6, 6), fuse="never")
    assert r.module.get_submodule("gn").num_channels == 4
    (k,) = [k for k in r.kept_zeros if k.op == "GroupNorm"]
    assert k.site == "gn" and k.channels >= 2
