"""prune_zero: dead channels go physically, coupled across adds, concats, pads, groups, flatten."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given

from gsdeploy.transforms import DeployOptions, deploy, verify_modules
from gsdeploy.zoo import create_model
from test_transforms_nets import SETTINGS, channels_of, check_deploy, random_net


@SETTINGS
@given(random_net())
def test_random_nets_prune_exactly(case):
    net, shape = case
    check_deploy(net, shape, fuse="never")


@SETTINGS
@given(random_net())
def test_random_nets_flops_mode_never_raises_macs(case):
    net, shape = case
    check_deploy(net, shape, fuse="flops")
