"""The load stage: zoo names, official state_dicts, .pt2 programs, trusted pickles -> LoadedModel."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import torch
import torch.nn as nn

from gsdeploy.errors import InputShapeError, LoadError
from gsdeploy.limits import MAX_SAMPLE_ELEMENTS, check_readable, is_out_of_memory, short
from gsdeploy.load.archs import ARCHS, get_arch
from gsdeploy.load.checkpoint import check_tensors, check_weights, extract_state_dict, read_checkpoint, sha256_file
from gsdeploy.load.exported import load_exported
from gsdeploy.load.shapes import load_by_shapes
from gsdeploy.model import LoadedModel
from gsdeploy import zoo

__all__ = ["load_model", "parse_input_shape", "probe_input_shape", "ARCHS"]


def parse_input_shape(text: str) -> tuple[int, ...]:
    """'3x32x32' -> (3, 32, 32); at most MAX_SAMPLE_ELEMENTS values per sample."""
    parts = text.lower().replace(",", "x").split("x")
    # plain decimal sizes: int() would also take '3_2' and non-ASCII digits
    if not all(re.fullmatch(r"\s*[+-]?[0-9]{1,12}\s*", p) for p in parts):
        raise InputShapeError(f"input shape '{short(text)}' is not of the form CxHxW, e.g. 3x32x32")
    dims = tuple(int(p) for p in parts)
    if not dims or any(d <= 0 for d in dims):
        raise InputShapeError(f"input shape '{short(text)}' must have positive sizes, e.g. 3x32x32")
    if math.prod(dims) > MAX_SAMPLE_ELEMENTS:
        raise InputShapeError(f"input shape '{short(text)}' has {math.prod(dims):.3g} values per sample; the limit is "
                              f"{MAX_SAMPLE_ELEMENTS:.3g}")
    return dims


def probe_input_shape(module: nn.Module, shape: tuple[int, ...]) -> None:
    """Run one sample through the model; a shape it cannot take becomes one clear line."""
    text = "x".join(map(str, shape))
    try:
        with torch.no_grad():
            module(torch.zeros((1, *shape)))
    except MemoryError:
        raise InputShapeError(f"running the model at input shape {text} needs more memory than this machine has") from None
    except Exception as e:
        if is_out_of_memory(e):
            raise InputShapeError(f"running the model at input shape {text} needs more memory than this machine "
                                  f"has ({short(str(e).splitlines()[0] if str(e) else type(e).__name__)})") from None
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise InputShapeError(f"the model cannot take input shape {'x'.join(map(str, shape))}: {msg}") from None


def load_model(source: str, arch: str | None = None, trust: bool = False,
               input_shape: tuple[int, ...] | None = None) -> LoadedModel:
    path = Path(source)
    exists = os.path.lexists(path)  # a dangling link or a link loop is a file the user named, not a zoo name
    if not exists and zoo.is_model(source) and arch is None:
        loaded = zoo.create(source)
    elif not exists and zoo.is_model(source):  # else "neither a file nor a zoo model", which it is
        raise LoadError(f"'{source}' is a zoo model, built with its own layout; --arch {arch} applies to "
                        "checkpoint files only")
    elif not exists and not any(sep in source for sep in "/\\") and "." not in source:
        raise LoadError(f"'{source}' is neither a file nor a zoo model; `gsdeploy zoo` lists the built-in models")
    elif path.suffix == ".pt2":
        check_readable(path)
        module, shape = load_exported(path, trust=trust)
        # a program exported in float16/bfloat16/float64 runs here in float32, as every model does
        module = module.float()
        loaded = LoadedModel(module=module, input_shape=shape or (), name=path.stem, arch="exported-program",
                             source=str(path), sha256=sha256_file(path))
    else:
        loaded = _load_checkpoint(path, arch, trust)
    if input_shape is not None:
        loaded.input_shape = tuple(input_shape)
    if not loaded.input_shape:
        raise InputShapeError(f"{source}: the input shape is not recorded in the file; pass --input-shape CxHxW")
    check_weights(loaded.module, source)
    probe_input_shape(loaded.module, loaded.input_shape)
    return loaded


def _load_checkpoint(path: Path, arch: str | None, trust: bool) -> LoadedModel:
    obj = read_checkpoint(path, trust=trust)
    sha = sha256_file(path)
    if isinstance(obj, nn.Module):  # only reachable with --trust
        if arch is not None:
            raise LoadError(f"{path} holds a whole module; --arch applies to state_dicts only")
        shape = _guess_input_shape(obj)
        return LoadedModel(module=obj.float().eval(), input_shape=shape, name=path.stem, arch=type(obj).__name__,
                           source=str(path), sha256=sha, notes={"trusted_pickle": True})
    state = extract_state_dict(obj, path)
    check_tensors(state, path)
    if arch is None:
        arch = _detect_arch(state, path)
    spec = get_arch(arch)
    template = spec.template(state)
    module = load_by_shapes(template, state, arch, ignore=set(spec.ignore))
    return LoadedModel(module=module, input_shape=spec.input_shape, name=path.stem, arch=arch, source=str(path),
                       sha256=sha, baseline=None, notes={"official_source": spec.source,
                                                          "baseline_arch": spec.baseline_arch})


def _detect_arch(state: dict[str, torch.Tensor], path: Path) -> str:
    """Pick the one official layout whose keys match exactly; otherwise ask for --arch. Layouts
    that read their depth from the file (generic) are tried only when no named one fits."""
    fits: dict[str, nn.Module] = {}
    for generic in (False, True):
        for name, spec in ARCHS.items():
            if spec.generic != generic:
                continue
            try:
                fits[name] = load_by_shapes(spec.template(state), state, name, ignore=set(spec.ignore))
            except Exception:
                continue
        if fits:
            break
    if len(fits) == 1:
        return next(iter(fits))
    pair = _dense_or_hinge(fits, state)
    if pair is not None:
        return pair
    hint = f" (it fits {', '.join(fits)})" if fits else ""
    raise LoadError(f"{path} is a state_dict; pass --arch to say which architecture it is{hint}. "
                    f"Known: {', '.join(sorted(ARCHS))}")


def _dense_or_hinge(fits: dict[str, nn.Module], state: dict[str, torch.Tensor]) -> str | None:
    """Hinge ResNet-164/ResNeXt keep the dense key layout (the bottleneck 1x1 convs are the sparse
    matrices), so both archs fit. A file thinner than the dense template is the compressed one."""
    names = set(fits)
    if len(names) != 2:
        return None
    hinge = next((n for n in names if ARCHS[n].baseline_arch in names), None)
    if hinge is None:
        return None
    dense = ARCHS[hinge].baseline_arch
    template = ARCHS[dense].template(state)
    thinner = sum(p.numel() for p in fits[dense].parameters()) < sum(p.numel() for p in template.parameters())
    # ResNeXt templates take their groups from the file; whole groups removed show up as grouped
    # convs with fewer groups than the cardinality the others keep.
    groups = [m.groups for m in fits[dense].modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    return hinge if thinner or len(set(groups)) > 1 else dense


def _guess_input_shape(module: nn.Module) -> tuple[int, ...]:
    first = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    return (first.in_channels, 224, 224) if first is not None else ()
