"""Loading a state_dict whose pruned widths live only in tensor shapes.

This is how the official Hinge code loads compressed checkpoints: build the dense template,
replace every tensor whose shape differs, then fix the width attributes of each layer.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from gsdeploy.load.archs.keys import mismatch, name_list


def load_by_shapes(template: nn.Module, state: dict[str, torch.Tensor], arch: str,
                   ignore: set[str] = frozenset()) -> nn.Module:
    own = dict(template.named_parameters())
    own.update(dict(template.named_buffers()))
    given = {k: v for k, v in state.items() if k not in ignore}
    # A conv/linear bias may be present in the file and absent in the template, or the reverse.
    for key in [k for k in given if k not in own and k.endswith(".bias")]:
        try:
            mod = template.get_submodule(key[: -len(".bias")]) if "." in key else template
        except AttributeError:  # no such layer in the template: reported below as a tensor it has no place for
            continue
        if isinstance(mod, (nn.Conv2d, nn.Linear)) and mod.bias is None:
            mod.bias = nn.Parameter(torch.zeros(given[key].shape))
            own[key] = mod.bias
    for key in [k for k in own if k.endswith(".bias") and k not in given]:
        mod = template.get_submodule(key[: -len(".bias")])
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            mod.bias = None
            del own[key]
    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors ({name_list(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} tensors it has no place for ({name_list(unexpected)})")
        raise mismatch(arch, "; ".join(parts))
    bad_rank = [k for k in own if own[k].dim() != given[k].dim()]
    if bad_rank:
        raise mismatch(arch, "tensors of another rank "
                             f"({name_list([f'{k} {tuple(given[k].shape)} vs {tuple(own[k].shape)}' for k in bad_rank])})")
    with torch.no_grad():
        for key, tensor in own.items():
            new = given[key].detach().to(torch.float32 if tensor.is_floating_point() else tensor.dtype)
            owner_name, _, attr = key.rpartition(".")
            owner = template.get_submodule(owner_name) if owner_name else template
            if isinstance(getattr(owner, attr), nn.Parameter):
                setattr(owner, attr, nn.Parameter(new.clone(), requires_grad=False))
            else:
                setattr(owner, attr, new.clone())
    fix_widths(template)
    return template.eval()


def fix_widths(model: nn.Module) -> None:
    """Make in/out_channels, groups, num_features, in/out_features agree with the tensors."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            per_group_out = m.out_channels // m.groups
            m.out_channels = m.weight.shape[0]
            if m.groups > 1 and m.out_channels != per_group_out * m.groups:
                # whole groups were removed (ResNeXt): groups = out / out-per-group
                m.groups = max(1, m.out_channels // per_group_out)
            m.in_channels = m.weight.shape[1] * m.groups
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.num_features = m.weight.shape[0] if m.weight is not None else m.running_mean.shape[0]
        elif isinstance(m, nn.Linear):
            m.out_features, m.in_features = m.weight.shape
