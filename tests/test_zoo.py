from __future__ import annotations

import pytest
import torch

from gsdeploy.metrics import count_macs
from gsdeploy.zoo import DEFAULT_MODEL, create_model, list_entries


def test_default_is_hinge_resnet56_at_half_flops():
    m, base = create_model(DEFAULT_MODEL), create_model("resnet56")
    ratio = count_macs(m.module, m.input_shape) / count_macs(base.module, base.input_shape)
    assert m.baseline == "resnet56"
    assert 0.45 < ratio < 0.55


def test_weights_are_deterministic():
    a, b = create_model("resnet20_hinge50").module, create_model("resnet20_hinge50").module
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


@pytest.mark.parametrize("masked,compact", [("resnet20_hinge50_masked", "resnet20_hinge50"),
                                            ("resnet20_pruned50_masked", "resnet20_pruned50"),
                                            ("resnet20_dwgl_masked", "resnet20_dwgl")])
def test_masked_variant_computes_what_the_compact_one_does(masked, compact):
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ya, yb = create_model(masked).module(x), create_model(compact).module(x)
    assert float((ya - yb).abs().max() / yb.abs().max()) < 1e-5


def test_batchnorm_statistics_are_not_trivial():
    m = create_model("resnet20").module
    bn = m.features[0][1]
    assert bn.running_mean.abs().max() > 0 and (bn.running_var - 1).abs().max() > 0


def test_every_cifar_entry_runs():
    for e in list_entries():
        if e.input_shape != (3, 32, 32) or "110" in e.name:
            continue
        with torch.no_grad():
            y = e.build()(torch.randn(1, *e.input_shape))
        assert y.shape == (1, 10) and torch.isfinite(y).all()


def test_public_registry_answers_by_name():
    from gsdeploy import zoo
    from gsdeploy.errors import LoadError

    names = zoo.list_models()
    assert DEFAULT_MODEL in names and "resnet56" in names
    assert names == [e.name for e in zoo.list_entries()]
    assert zoo.is_model("resnet20") and not zoo.is_model("resnet20.pt") and not zoo.is_model("nope")
    m = zoo.create("resnet20_pruned50")
    assert m.name == "resnet20_pruned50" and m.baseline == "resnet20" and not m.module.training
    with pytest.raises(LoadError, match="unknown zoo model 'nope'"):
        zoo.create("nope")
