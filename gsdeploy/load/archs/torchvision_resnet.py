"""The torchvision ResNet family by inference (`--arch torchvision-resnet`): ResNet-18/34/50/101/152,
resnext*_NxWd and wide_resnet*_2 state_dicts, and pruned ones whose widths live in the tensor shapes
(DWGL: no public code; its networks keep this layout).

Read from the keys and shapes: block type (a `conv3` means bottleneck), blocks per stage, every
conv's width, the groups of each bottleneck's 3x3 conv (its input width / weight.shape[1]), which
blocks have a downsample shortcut, the stem width, input channels and classes. What no tensor
records follows torchvision: 7x7/2 stem, 3x3/2 max pool, stride 2 in the first block of stages 2+.
`resnet50` is the same reader with ResNet-50's depth required.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from gsdeploy.load.archs.keys import indices, mismatch, need, shape
from gsdeploy.load.archs.registry import OfficialArch, register_arch
from gsdeploy.zoo.torchvision_resnet import BlockSpec, TorchvisionResNet

SOURCE = "torchvision.models.resnet key layout (ResNet, ResNeXt, Wide ResNet; DWGL arXiv 1910.09318: no public code)"


def read_layout(state: dict[str, torch.Tensor], arch: str) -> tuple[list[list[BlockSpec]], int, int, int]:
    """(stages, stem width, input channels, classes) of a torchvision-layout ResNet state_dict."""
    need(state, arch, "conv1.weight", "bn1.weight", "fc.weight")
    stem, in_channels = shape(state, "conv1.weight", arch, 4)[:2]
    classes = shape(state, "fc.weight", arch, 2)[0]
    n_stages = len(indices(state, r"layer(\d+)\.0\.conv1\.weight$"))
    if n_stages == 0:
        raise mismatch(arch, "missing its residual stages (no tensors like layer1.0.conv1.weight)")
    bottleneck = "layer1.0.conv3.weight" in state
    stages, cin = [], stem
    for s in range(n_stages):
        blocks = indices(state, rf"layer{s + 1}\.(\d+)\.conv1\.weight$")
        if blocks != list(range(len(blocks))):
            raise mismatch(arch, f"layer{s + 1} has blocks {blocks}, not 0..{len(blocks) - 1}")
        stage = []
        for b in blocks:
            p = f"layer{s + 1}.{b}."
            if (p + "conv3.weight" in state) != bottleneck:
                raise mismatch(arch, f"{p}conv3.weight: blocks mix basic and bottleneck types")
            convs = [p + f"conv{i}.weight" for i in ((1, 2, 3) if bottleneck else (1, 2))]
            outs, ins = [], []
            for key in convs:
                o, i = shape(state, key, arch, 4)[:2]
                outs.append(o)
                ins.append(i)
            if ins[0] != cin:
                raise mismatch(arch, f"{convs[0]} reads {ins[0]} channels but the block's input has {cin}")
            groups = 1
            if bottleneck:
                if ins[1] == 0 or outs[0] % ins[1] or outs[1] % (outs[0] // ins[1]):
                    raise mismatch(arch, f"{convs[1]} {tuple(state[convs[1]].shape)} does not split "
                                         f"{outs[0]} channels into groups")
                groups = outs[0] // ins[1]
                if ins[2] != outs[1]:
                    raise mismatch(arch, f"{convs[2]} reads {ins[2]} channels, {convs[1]} writes {outs[1]}")
            elif ins[1] != outs[0]:
                raise mismatch(arch, f"{convs[1]} reads {ins[1]} channels, {convs[0]} writes {outs[0]}")
            downsample = p + "downsample.0.weight" in state
            if downsample:
                ds = shape(state, p + "downsample.0.weight", arch, 4)
                if ds[1] != cin or ds[0] != outs[-1]:
                    raise mismatch(arch, f"{p}downsample.0.weight {ds} does not map {cin} to {outs[-1]} channels")
            elif cin != outs[-1]:
                raise mismatch(arch, f"{p[:-1]} changes width {cin} -> {outs[-1]} without a downsample shortcut")
            stage.append(BlockSpec(bottleneck, cin, tuple(outs), groups, stride=2 if s > 0 and b == 0 else 1,
                                   downsample=downsample))
            cin = outs[-1]
        stages.append(stage)
    return stages, stem, in_channels, classes


def _template(state: dict[str, torch.Tensor]) -> nn.Module:
    stages, stem, in_channels, classes = read_layout(state, "torchvision-resnet")
    return TorchvisionResNet(stages, stem=stem, in_channels=in_channels, num_classes=classes)


def _resnet50(state: dict[str, torch.Tensor]) -> nn.Module:
    arch = "resnet50"
    stages, stem, in_channels, classes = read_layout(state, arch)
    counts = [len(s) for s in stages]
    kind = "bottleneck" if stages[0][0].bottleneck else "basic"
    if counts != [3, 4, 6, 3] or kind != "bottleneck":
        raise mismatch(arch, f"it has {kind} blocks {counts} per stage, ResNet-50 has bottleneck blocks [3, 4, 6, 3]; "
                             "--arch torchvision-resnet reads any depth")
    return TorchvisionResNet(stages, stem=stem, in_channels=in_channels, num_classes=classes)


register_arch(OfficialArch(
    name="torchvision-resnet", template=_template, input_shape=(3, 224, 224),
    description="any torchvision ResNet/ResNeXt/Wide ResNet (block type, depth, widths, groups read from the file; "
                "pruned ones with zero filters or narrower tensors)",
    source=SOURCE, generic=True))
register_arch(OfficialArch(
    name="resnet50", template=_resnet50, input_shape=(3, 224, 224),
    description="ImageNet ResNet-50, torchvision key layout (conv1, layer1.0.conv1, downsample.0/1, fc); "
                "DWGL-pruned ones with zero filters or narrower tensors",
    source=SOURCE))
