"""Official CIFAR DenseNet-40 (dense and Hinge SVD) checkpoints written by github ofsoundof/group_sparsity."""

from __future__ import annotations

import lzma
from pathlib import Path

import pytest
import torch

from gsdeploy.errors import ArchMismatchError
from gsdeploy.load import load_model

OFFICIAL = Path(__file__).resolve().parent / "fixtures" / "official"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These CIFAR-sized forwards are as fast on one intra-op thread, and one thread does not collapse
    (10-100x) when other processes share the CPU, as OpenMP's spinning threads do."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def unpack(tmp_path_factory):
    """Official fixtures are stored xz-compressed; give the path of the decompressed .pt file."""
    out = tmp_path_factory.mktemp("official")

    def get(name: str) -> str:
        path = out / f"{name}.pt"
        if not path.exists():
            path.write_bytes(lzma.decompress((OFFICIAL / f"{name}.pt.xz").read_bytes()))
        return str(path)

    return get


def rel_err_to_reference(loaded, name: str, ref_dir: Path = OFFICIAL) -> float:
    ref = torch.load(ref_dir / f"{name}.ref.pt", weights_only=True)
    with torch.no_grad():
        y = loaded.module(ref["input"])
    return float((y - ref["output"]).abs().max() / ref["output"].abs().max())


def test_hinge_densenet40_reproduces_official_output(unpack):
    loaded = load_model(unpack("hinge_densenet40_cifar10"), arch="hinge_densenet40")
    assert rel_err_to_reference(loaded, "hinge_densenet40_cifar10") <= 1e-5
    body = loaded.module.features[1][5].body
    # rank-pruned 3x3 (84 -> r) then 1x1 r -> 12: the concat widths are unchanged
    assert body[2].in_channels == 24 + 5 * 12 and body[2].out_channels == body[3].in_channels < 12
    assert body[3].out_channels == 12
    trans = loaded.module.features[2]
    assert trans[2].in_channels == trans[3].out_channels == 168 and trans[2].out_channels < 168


def test_dense_densenet40_reproduces_official_output(unpack):
    loaded = load_model(unpack("densenet40_cifar100"), arch="densenet40")
    assert rel_err_to_reference(loaded, "densenet40_cifar100") <= 1e-5
    assert loaded.module.classifier.in_features == 456 and loaded.module.classifier.out_features == 100


@pytest.mark.parametrize("name,arch", [("hinge_densenet40_cifar10", "hinge_densenet40"),
                                       ("densenet40_cifar100", "densenet40")])
def test_densenet_is_detected(unpack, name, arch):
    assert load_model(unpack(name)).arch == arch


def test_cross_layout_names_tensors(unpack):
    with pytest.raises(ArchMismatchError, match=r"body\.3\.weight"):
        load_model(unpack("densenet40_cifar100"), arch="hinge_densenet40")
    with pytest.raises(ArchMismatchError, match=r"body\.3\.weight"):
        load_model(unpack("hinge_densenet40_cifar10"), arch="densenet40")
    with pytest.raises(ArchMismatchError, match=r"conv\.1\.weight"):
        load_model(unpack("hinge_densenet40_cifar10"), arch="fga_densenet40")
