"""Builders of the zoo's dense models and their compressed variants.

Each builder returns an eval-mode module with deterministic weights. Compressed variants
follow the structures the seed methods leave at deploy time (see shared SEEDS):
Hinge pairs with DReLU, channel-pruned inner widths, a DWGL-style narrower residual trunk,
FGA grouped k x k + 1 x 1 pairs, and masked forms where pruned groups are still present as zeros.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from gsdeploy.zoo.cifar_resnet import blocks_per_stage, build_cifar_resnet
from gsdeploy.zoo.layers import conv, group_pair, hinge_pair
from gsdeploy.zoo.masking import embed_module, kept_indices
from gsdeploy.zoo.resnet50 import build_resnet50
from gsdeploy.zoo.resnext import ResNeXt
from gsdeploy.zoo.vgg import build_vgg16
from gsdeploy.zoo.weights import init_weights

TRUNK = (16, 32, 64)


def hinge_rank(width: int, flop_ratio: float) -> int:
    """Rank r of a Hinge pair C->r->C whose MACs are `flop_ratio` of the dense 3x3 conv.

    Pair MACs per pixel: 9*C*r + r*C = 10*C*r; dense: 9*C*C; so r = 0.9 * ratio * C.
    """
    return max(1, round(0.9 * flop_ratio * width))


def cifar_resnet(depth: int, seed: int = 0) -> nn.Module:
    return init_weights(build_cifar_resnet(depth), seed)


def cifar_resnext(depth: int, seed: int = 0) -> nn.Module:
    """Dense CIFAR ResNeXt (32 x 1d) in the official Hinge code's layout: the baseline of Hinge ResNeXt."""
    return init_weights(ResNeXt(depth, cardinality=32, bottleneck_width=1, num_classes=10), seed)


def cifar_resnet_hinge(depth: int, flop_ratio: float = 0.5, seed: int = 0) -> nn.Module:
    def pair(site: str, cin: int, cout: int, stride: int) -> nn.Module:
        return hinge_pair(cin, hinge_rank(cout, flop_ratio), cout, 3, stride)

    return init_weights(build_cifar_resnet(depth, conv_factory=pair, act="drelu"), seed)


def cifar_resnet_pruned(depth: int, keep: float = 0.5, seed: int = 0) -> nn.Module:
    inner = lambda s, b: max(1, round(keep * TRUNK[s]))  # noqa: E731
    return init_weights(build_cifar_resnet(depth, inner=inner), seed)


def dwgl_trunk(keep: float) -> tuple[int, int, int]:
    # Option-A shortcuts double the width per stage, so the narrow trunk must too.
    c0 = max(2, 2 * round(keep * TRUNK[0] / 2))
    return (c0, 2 * c0, 4 * c0)


def cifar_resnet_dwgl(depth: int, keep: float = 0.75, seed: int = 0) -> nn.Module:
    trunk = dwgl_trunk(keep)
    return init_weights(build_cifar_resnet(depth, trunk=trunk), seed)


def cifar_resnet_fga(depth: int, group_size: int = 4, seed: int = 0) -> nn.Module:
    def gpair(site: str, cin: int, cout: int, stride: int) -> nn.Module:
        return group_pair(cin, cout, group_size, 3, stride)

    return init_weights(build_cifar_resnet(depth, conv_factory=gpair), seed)


def vgg16(seed: int = 0) -> nn.Module:
    return init_weights(build_vgg16(), seed)


def vgg16_hinge(flop_ratio: float = 0.5, seed: int = 0) -> nn.Module:
    def pair(i: int, cin: int, cout: int) -> nn.Module:
        if i == 0:
            return conv(cin, cout, 3, bias=True)
        return hinge_pair(cin, hinge_rank(cout, flop_ratio), cout, 3, bias=True)

    return init_weights(build_vgg16(conv_factory=pair), seed)


def resnet50(seed: int = 0) -> nn.Module:
    return init_weights(build_resnet50(), seed)


def resnet50_pruned(keep: float = 0.5, seed: int = 0) -> nn.Module:
    return init_weights(build_resnet50(inner=lambda s, b, planes: max(1, round(keep * planes))), seed)


# ---- masked variants -------------------------------------------------------------------


def _embed_all(small: nn.Module, full: nn.Module, out_maps: dict, in_maps: dict, zero_out: set, zero_in: set) -> nn.Module:
    if any(p.is_meta for p in full.parameters()):
        return full.eval()  # architecture only: the masked model has the full model's shapes
    fulls = dict(full.named_modules())
    for name, m in small.named_modules():
        if next(m.parameters(recurse=False), None) is None and next(m.buffers(recurse=False), None) is None:
            continue
        embed_module(m, fulls[name], out_maps.get(name), in_maps.get(name), name in zero_out, name in zero_in)
    return full.eval()


def _block_prefixes(depth: int):
    n = blocks_per_stage(depth)
    for s in range(3):
        for b in range(n):
            yield s, b, f"features.{s + 1}.{b}"


def cifar_resnet_hinge_masked(depth: int, flop_ratio: float = 0.5, seed: int = 0) -> nn.Module:
    """Full-rank Hinge pairs (C->C->C) whose 1x1 input columns are zero outside the kept rank."""
    small = cifar_resnet_hinge(depth, flop_ratio, seed)

    def full_pair(site: str, cin: int, cout: int, stride: int) -> nn.Module:
        return hinge_pair(cin, cout, cout, 3, stride)

    full = init_weights(build_cifar_resnet(depth, conv_factory=full_pair, act="drelu"), seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    out_maps, in_maps, zero_in = {}, {}, set()
    for s, b, p in _block_prefixes(depth):
        for slot in ("0", "3"):
            kxk, one = f"{p}.body.{slot}.0", f"{p}.body.{slot}.1"
            idx = kept_indices(TRUNK[s], hinge_rank(TRUNK[s], flop_ratio), g)
            out_maps[kxk] = idx
            in_maps[one] = idx
            zero_in.add(one)
    return _embed_all(small, full, out_maps, in_maps, set(), zero_in)


def cifar_resnet_pruned_masked(depth: int, keep: float = 0.5, seed: int = 0) -> nn.Module:
    """Full inner widths whose pruned filters are zero (conv rows and BN affine)."""
    small = cifar_resnet_pruned(depth, keep, seed)
    full = init_weights(build_cifar_resnet(depth), seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    out_maps, in_maps, zero_out = {}, {}, set()
    for s, b, p in _block_prefixes(depth):
        idx = kept_indices(TRUNK[s], max(1, round(keep * TRUNK[s])), g)
        out_maps[f"{p}.body.0"] = out_maps[f"{p}.body.1"] = idx
        in_maps[f"{p}.body.3"] = idx
        zero_out |= {f"{p}.body.0", f"{p}.body.1"}
    return _embed_all(small, full, out_maps, in_maps, zero_out, set())


def cifar_resnet_dwgl_masked(depth: int, keep: float = 0.75, seed: int = 0) -> nn.Module:
    """Full-width ResNet whose trunk channels are zero in every producer of each stage's adds.

    Option-A shortcuts tie stage s channel j to stage s+1 channel j + pad, so the kept
    channels of stage s+1 are the shifted kept channels of stage s plus kept pad channels.
    """
    small = cifar_resnet_dwgl(depth, keep, seed)
    narrow = dwgl_trunk(keep)
    full = init_weights(build_cifar_resnet(depth), seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    trunk_idx = [kept_indices(TRUNK[0], narrow[0], g)]
    for s in (1, 2):
        pad_full, pad_small = (TRUNK[s] - TRUNK[s - 1]) // 2, (narrow[s] - narrow[s - 1]) // 2
        before = kept_indices(pad_full, pad_small, g)
        after = kept_indices(pad_full, pad_small, g) + pad_full + TRUNK[s - 1]
        trunk_idx.append(torch.cat([before, trunk_idx[-1] + pad_full, after]))
    out_maps = {"features.0.0": trunk_idx[0], "features.0.1": trunk_idx[0]}
    in_maps = {"classifier": trunk_idx[2]}
    zero_out = {"features.0.0", "features.0.1"}
    for s, b, p in _block_prefixes(depth):
        cin_idx = trunk_idx[s - 1] if (b == 0 and s > 0) else trunk_idx[s]
        mid = kept_indices(TRUNK[s], narrow[s], g)
        in_maps[f"{p}.body.0"] = cin_idx
        out_maps[f"{p}.body.0"] = out_maps[f"{p}.body.1"] = mid
        in_maps[f"{p}.body.3"] = mid
        out_maps[f"{p}.body.3"] = out_maps[f"{p}.body.4"] = trunk_idx[s]
        zero_out |= {f"{p}.body.0", f"{p}.body.1", f"{p}.body.3", f"{p}.body.4"}
    return _embed_all(small, full, out_maps, in_maps, zero_out, set())


def resnet50_pruned_masked(keep: float = 0.5, seed: int = 0) -> nn.Module:
    small = resnet50_pruned(keep, seed)
    full = init_weights(build_resnet50(), seed + 1)
    g = torch.Generator().manual_seed(seed + 2)
    out_maps, in_maps, zero_out = {}, {}, set()
    for s, (name, layer) in enumerate((n, m) for n, m in full.named_children() if n.startswith("layer")):
        for b, block in enumerate(layer):
            p = f"{name}.{b}"
            w = block.conv1.out_channels
            i1 = kept_indices(w, max(1, round(keep * w)), g)
            i2 = kept_indices(w, max(1, round(keep * w)), g)
            out_maps[f"{p}.conv1"] = out_maps[f"{p}.bn1"] = i1
            in_maps[f"{p}.conv2"] = i1
            out_maps[f"{p}.conv2"] = out_maps[f"{p}.bn2"] = i2
            in_maps[f"{p}.conv3"] = i2
            zero_out |= {f"{p}.conv1", f"{p}.bn1", f"{p}.conv2", f"{p}.bn2"}
    return _embed_all(small, full, out_maps, in_maps, zero_out, set())
