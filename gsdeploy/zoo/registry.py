"""Zoo models by name, a timm-style registry: `is_model(name)`, `list_models()`, `create(name)`.

The table itself stays private to this module; other packages ask through these functions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from gsdeploy.errors import LoadError
from gsdeploy.model import LoadedModel
from gsdeploy.zoo import variants as v

CIFAR = (3, 32, 32)
IMAGENET = (3, 224, 224)


@dataclass(frozen=True)
class ZooEntry:
    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    baseline: str | None  # the dense model this one is compared against; None for dense models
    method: str  # dense | hinge | pruned | dwgl | fga
    description: str


_REGISTRY: dict[str, ZooEntry] = {}
DEFAULT_MODEL = "resnet56_hinge50"


def register(name: str, build: Callable[[], nn.Module], input_shape: tuple[int, ...], baseline: str | None,
             method: str, description: str) -> None:
    _REGISTRY[name] = ZooEntry(name, build, input_shape, baseline, method, description)


for _d in (20, 56, 110):
    base = f"resnet{_d}"
    register(base, lambda d=_d: v.cifar_resnet(d), CIFAR, None, "dense", f"CIFAR ResNet-{_d}, option-A shortcuts")
    register(f"{base}_hinge50", lambda d=_d: v.cifar_resnet_hinge(d, 0.5), CIFAR, base, "hinge",
             "Hinge SVD pairs (3x3 C->r, 1x1 r->C, r=0.45C) with DReLU, ~50% FLOPs")
    register(f"{base}_hinge50_masked", lambda d=_d: v.cifar_resnet_hinge_masked(d, 0.5), CIFAR, base, "hinge",
             "Hinge pairs at full rank with zero 1x1 input columns (saved before compress())")
    register(f"{base}_pruned50", lambda d=_d: v.cifar_resnet_pruned(d, 0.5), CIFAR, base, "pruned",
             "inner block widths pruned to 50%")
    register(f"{base}_pruned50_masked", lambda d=_d: v.cifar_resnet_pruned_masked(d, 0.5), CIFAR, base, "pruned",
             "inner widths at full size with 50% zero filters (conv + BN)")
    register(f"{base}_dwgl", lambda d=_d: v.cifar_resnet_dwgl(d, 0.75), CIFAR, base, "dwgl",
             "DWGL-style narrower ResNet: trunk and inner widths 12/24/48")
    register(f"{base}_dwgl_masked", lambda d=_d: v.cifar_resnet_dwgl_masked(d, 0.75), CIFAR, base, "dwgl",
             "full-width ResNet with trunk channels zero in every producer of each add")
    register(f"{base}_fga", lambda d=_d: v.cifar_resnet_fga(d, 4), CIFAR, base, "fga",
             "FGA: grouped 3x3 (group size 4) + 1x1 per conv")

for _d in (20, 164):
    register(f"resnext{_d}", lambda d=_d: v.cifar_resnext(d), CIFAR, None, "dense",
             f"CIFAR ResNeXt-{_d} (32 x 1d), official Hinge code layout")
register("vgg16", lambda: v.vgg16(), CIFAR, None, "dense", "CIFAR VGG-16 with BN, 3-Linear classifier")
register("vgg16_hinge50", lambda: v.vgg16_hinge(0.5), CIFAR, "vgg16", "hinge",
         "Hinge pairs on every conv but the first (r=0.45C), 3-Linear classifier")
register("resnet50", lambda: v.resnet50(), IMAGENET, None, "dense", "ImageNet ResNet-50 (torchvision key layout)")
register("resnet50_pruned50", lambda: v.resnet50_pruned(0.5), IMAGENET, "resnet50", "pruned",
         "50% of the inner bottleneck channels pruned")
register("resnet50_pruned50_masked", lambda: v.resnet50_pruned_masked(0.5), IMAGENET, "resnet50", "pruned",
         "inner bottleneck channels at full size, 50% zero filters")
register("resnet50_pruned75", lambda: v.resnet50_pruned(0.25), IMAGENET, "resnet50", "pruned",
         "75% of the inner bottleneck channels pruned")


def is_model(name: str) -> bool:
    """Whether `name` is a zoo model (a file of that name is the caller's business)."""
    return name in _REGISTRY


def list_models() -> list[str]:
    """Zoo model names in registration order (dense model before its compressed variants)."""
    return list(_REGISTRY)


def list_entries() -> list[ZooEntry]:
    return list(_REGISTRY.values())


def get_entry(name: str) -> ZooEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise LoadError(f"unknown zoo model '{name}'; `gsdeploy zoo` lists them") from None


def create(name: str) -> LoadedModel:
    """A fresh eval-mode model with random weights, its input shape and its dense baseline."""
    entry = get_entry(name)
    return LoadedModel(module=entry.build().eval(), input_shape=entry.input_shape, name=name, arch=name,
                       baseline=entry.baseline, notes={"method": entry.method})


create_model = create  # timm's name for the same entry point; tests and scripts use it
