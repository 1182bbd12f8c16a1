"""Official CIFAR VGG-16 (dense and Hinge) checkpoints written by github ofsoundof/group_sparsity."""

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


def test_hinge_vgg16_reproduces_official_output(unpack):
    loaded = load_model(unpack("hinge_vgg16_cifar10"), arch="hinge_vgg16")
    assert rel_err_to_reference(loaded, "hinge_vgg16_cifar10") <= 1e-5
    pair = loaded.module.features[1][0]
    # rank and output pruning from the shapes: 3x3 64->r, 1x1 r->c with c < 64, bias on the 1x1
    assert pair[0].out_channels == pair[1].in_channels < 64
    assert pair[1].out_channels < 64 and pair[1].bias is not None and pair[0].bias is None
    assert len(loaded.module.classifier) == 3  # the 3-Linear classifier


def test_dense_vgg16_reproduces_official_output(unpack):
    loaded = load_model(unpack("vgg16_cifar10"), arch="vgg16")
    assert rel_err_to_reference(loaded, "vgg16_cifar10") <= 1e-5


@pytest.mark.parametrize("name,arch", [("hinge_vgg16_cifar10", "hinge_vgg16"), ("vgg16_cifar10", "vgg16")])
def test_vgg_is_detected(unpack, name, arch):
    assert load_model(unpack(name)).arch == arch


def test_cross_layout_names_tensors(unpack):
    with pytest.raises(ArchMismatchError, match=r"features\.1\.0\.0\.weight|features\.1\.0\.1\.weight"):
        load_model(unpack("vgg16_cifar10"), arch="hinge_vgg16")
    with pytest.raises(ArchMismatchError, match=r"features\.1\.0\.0\.weight|features\.1\.0\.weight"):
        load_model(unpack("hinge_vgg16_cifar10"), arch="vgg16")
