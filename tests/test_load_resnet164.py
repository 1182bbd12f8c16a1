"""Official CIFAR ResNet-164 (dense and Hinge) checkpoints written by github ofsoundof/group_sparsity."""

from __future__ import annotations

import lzma
from pathlib import Path

import pytest
import torch

from gsdeploy.errors import ArchMismatchError, LoadError
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


def test_hinge_resnet164_reproduces_official_output(unpack):
    loaded = load_model(unpack("hinge_resnet164_cifar10"), arch="hinge_resnet164")
    assert rel_err_to_reference(loaded, "hinge_resnet164_cifar10") <= 1e-5
    # the two inner widths of a bottleneck come from the shapes and may differ
    inner = [(b.body[0].out_channels, b.body[3].out_channels) for s in (1, 2, 3) for b in loaded.module.features[s]]
    assert any(a != b for a, b in inner)
    assert all(a < 4 * 64 and b < 4 * 64 for a, b in inner)
    assert loaded.module.classifier.out_features == 10


def test_hinge_resnet164_is_detected(unpack):
    # running_grad_ratio is a key only the Hinge layout ignores
    assert load_model(unpack("hinge_resnet164_cifar10")).arch == "hinge_resnet164"


def test_dense_resnet164_reproduces_official_output(unpack):
    loaded = load_model(unpack("resnet164_cifar100"), arch="resnet164")
    assert rel_err_to_reference(loaded, "resnet164_cifar100") <= 1e-5
    assert loaded.module.classifier.out_features == 100


def test_dense_resnet164_is_detected_as_dense(unpack):
    # the dense and the Hinge ResNet-164 share one key layout: a full-width file is the dense one
    assert load_model(unpack("resnet164_cifar100")).arch == "resnet164"


def test_other_family_arch_names_tensors(unpack):
    with pytest.raises(ArchMismatchError, match=r"layer1\.0\.conv2\.weight"):
        load_model(unpack("hinge_resnet164_cifar10"), arch="hinge_resnext164")
    with pytest.raises(ArchMismatchError, match="residual blocks"):
        load_model(unpack("resnet164_cifar100"), arch="resnet56")
    with pytest.raises(ArchMismatchError, match=r"features\.1\.0\.body\.0\.conv\.0\.weight"):
        load_model(unpack("resnet164_cifar100"), arch="fga_resnet56")
