"""Architectures of official checkpoints (`--arch NAME`): how to build the dense template whose
module names match the file's keys. Widths and class counts then come from tensor shapes."""

from gsdeploy.load.archs.registry import ARCHS, OfficialArch, get_arch, register_arch

# Importing a family module registers its archs.
from gsdeploy.load.archs import hinge_resnet  # noqa: F401,E402
from gsdeploy.load.archs import resnet164, resnext, vgg, wrn, densenet, fga, torchvision_resnet  # noqa: F401,E402

__all__ = ["ARCHS", "OfficialArch", "get_arch", "register_arch"]
