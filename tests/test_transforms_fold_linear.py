"""fold_linear: Linear -> Linear with nothing between becomes one Linear (when MACs do not rise)."""

from __future__ import annotations

import torch.nn as nn
from hypothesis import given
from hypothesis import strategies as st

from gsdeploy.transforms import DeployOptions, deploy
from gsdeploy.zoo import create_model
from test_transforms_nets import SETTINGS, check_deploy, init


class Chain(nn.Module):
    def __init__(self, dims: list[int], biases: list[bool], hw: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, dims[0] // (hw * hw), 3, padding=1, stride=8 // hw)
        self.fc = nn.Sequential(*[nn.Linear(a, b, bias=bias) for a, b, bias in zip(dims, dims[1:], biases)])

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


@st.composite
def chain(draw):
    hw = draw(st.sampled_from([1, 2, 4]))
    c = draw(st.integers(1, 4))
    n = draw(st.integers(2, 4))
    dims = [c * hw * hw] + [draw(st.integers(1, 12)) for _ in range(n)]
    net = Chain(dims, [draw(st.booleans()) for _ in range(n)], hw)
    init(net, draw(st.integers(0, 10_000)))
    return net.eval()


@SETTINGS
@given(chain(), st.sampled_from(["flops", "always", "never"]))
def test_linear_chains_fold_exactly(net, mode):
    r = check_deploy(net, (2, 8, 8), fuse=mode)
    linears = [m for m in r.module.modules() if isinstance(m, nn.Linear)]
    n = len(net.fc)
    if mode == "always":
        assert len(linears) == 1
    elif mode == "never":
        assert len(linears) == n
    else:
        assert 1 <= len(linears) <= n
        folds = [d for d in r.plan if d.action == "fold linear chain"]
        assert all(d.macs_after <= d.macs_before for d in folds)


def test_wide_chain_folds_into_one_linear():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 10), nn.Linear(10, 10), nn.Linear(10, 3)).eval()
    init(net, 0)
    r = check_deploy(net, (12, 1, 1))
    assert [type(m) for m in r.module.modules() if isinstance(m, nn.Linear)] == [nn.Linear]
    (d,) = [d for d in r.plan if d.action == "fold linear chain"]
    assert d.layers == ["1", "2", "3"] and d.shape_before == "linear 12->10->10->3"


def test_low_rank_chain_is_kept_by_flops():
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 2), nn.Linear(2, 64)).eval()
    init(net, 0)
    r = deploy(net, (64, 1, 1))
    assert sum(isinstance(m, nn.Linear) for m in r.module.modules()) == 2
    assert any(d.action == "keep" for d in r.plan)
    forced = deploy(net, (64, 1, 1), DeployOptions(fuse="always"))
    assert sum(isinstance(m, nn.Linear) for m in forced.module.modules()) == 1


def test_vgg16_hinge_classifier_becomes_one_linear():
    lm = create_model("vgg16_hinge50")
    r = deploy(lm.module, lm.input_shape)
    linears = [n for n, m in r.module.named_modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 1
    (d,) = [d for d in r.plan if d.action == "fold linear chain"]
    assert d.site == "classifier" and d.shape_after == "linear 512->10"
