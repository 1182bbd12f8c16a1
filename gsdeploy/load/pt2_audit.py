"""Is a `.pt2` plain data? The zip is read here, before torch.export.load sees it.

torch.export.load runs code from the file in several ways (torch 2.5-2.13): weights and
constants whose config says `use_pickle` are unpickled with weights_only=False; custom
(torchbind) and opaque objects are unpickled; legacy layouts (`data/weights/<model>.pt`, the
pre-archive `serialized_*.pt` zip) and the sample inputs fall back to weights_only=False
unpickling; `data/aotinductor/` holds native libraries that get loaded; `guards_code` strings
are exec'd by `program.module()`; symbolic-shape strings go through sympy's eval; and node
targets are resolved by getattr on the torch module (`torch.os.system` resolves). So without
--trust a `.pt2` is opened only when every member is one gsdeploy recognises, every weight
and constant is raw tensor data that fits its record, the graph calls only allow-listed aten
operators, and every symbolic expression is plain arithmetic on shape symbols.

Structure (a zip at all, a torch.export archive rather than a torch.save checkpoint, not cut
short) is checked even with --trust, so a corrupt file gets one line, not torch's logged
traceback.
"""

from __future__ import annotations

import ast
import io
import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from gsdeploy.errors import LoadError
from gsdeploy.limits import MAX_JSON_BYTES, short

# ScalarType codes of torch/_export/serde/schema.py -> (name, bytes per element, floating)
_DTYPES = {1: ("uint8", 1, False), 2: ("int8", 1, False), 3: ("int16", 2, False), 4: ("int32", 4, False),
           5: ("int64", 8, False), 6: ("float16", 2, True), 7: ("float32", 4, True), 8: ("float64", 8, True),
           12: ("bool", 1, False), 13: ("bfloat16", 2, True)}
_STRIDED = 7

# Functional aten operators a CNN inference program uses. Anything else (file I/O such as
# aten.from_file, in-place copies, allocation by size, higher-order ops, custom namespaces)
# needs --trust.
SAFE_ATEN = frozenset("""
conv1d conv2d conv3d convolution _convolution conv_transpose1d conv_transpose2d linear addmm mm matmul bmm t
batch_norm _native_batch_norm_legit_no_training native_batch_norm layer_norm native_layer_norm group_norm
native_group_norm instance_norm relu relu_ leaky_relu hardtanh relu6 elu gelu silu sigmoid tanh hardswish
hardsigmoid mish softmax _softmax log_softmax _log_softmax add sub rsub mul div neg abs pow sqrt rsqrt exp log
clamp clamp_min clamp_max maximum minimum where mean sum amax max_pool2d max_pool2d_with_indices avg_pool2d
adaptive_avg_pool2d adaptive_max_pool2d _adaptive_avg_pool2d max_pool1d avg_pool1d pad constant_pad_nd cat stack
view reshape _unsafe_view flatten permute transpose unsqueeze squeeze expand slice select split split_with_sizes
chunk narrow clone contiguous alias detach dropout upsample_nearest2d upsample_bilinear2d channel_shuffle
pixel_shuffle sym_size sym_numel sym_stride _assert_scalar _assert_tensor_metadata sym_constrain_range_for_size
add_ sub_ mul_ div_ hardtanh_ leaky_relu_ elu_ silu_ hardswish_ hardsigmoid_ sigmoid_ tanh_ neg_ clamp_ clamp_min_
clamp_max_
""".split())  # the in-place twins above are what torch.export writes for ReLU6(inplace=True), `x += y`, ...
_OPERATORS = frozenset({"_operator.getitem", "_operator.add", "_operator.sub", "_operator.mul",
                        "_operator.floordiv", "_operator.truediv", "_operator.mod", "_operator.neg"})
_ATEN_TARGET = re.compile(r"^torch\.ops\.aten\.([A-Za-z0-9_]+)\.([A-Za-z0-9_]+)$")

# Names a symbolic-shape expression may call (what torch's deserializer itself defines).
_SYMPY_CALLS = frozenset({"Symbol", "Integer", "Rational", "Float", "Max", "Min", "Abs", "Mul", "Add", "Pow",
                          "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt",
                          "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv",
                          "IntTrueDiv", "TruncToFloat", "TruncToInt", "RoundToInt", "Identity", "Eq", "Ne", "Lt",
                          "Le", "Gt", "Ge", "And", "Or", "Not", "oo", "zoo", "nan", "true", "false"})
_SYMBOL = re.compile(r"^[a-z]{1,3}[0-9]+$")  # s0, u12, ...
_SYMPY_KWARGS = frozenset({"positive", "integer", "real", "nonnegative", "evaluate"})


class UntrustedFileError(LoadError):
    """A file would run code when opened, and the user did not pass --trust."""


def _refuse(path: Path, why: str) -> UntrustedFileError:
    return UntrustedFileError(
        f"{path} {why}; opening it would run code or load native libraries from the file, so it is refused. "
        "Re-run with --trust only if you trust where it came from")


def open_archive(path: Path) -> tuple[zipfile.ZipFile, str]:
    """The zip and its root folder, or one line saying why this is not a torch.export archive."""
    try:
        zf = zipfile.ZipFile(path)
        infos = zf.infolist()
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            head = f.read(4)
        if head == b"PK\x03\x04":
            raise LoadError(f"{path} is a truncated or corrupt .pt2 (its zip directory is missing)") from None
        raise LoadError(f"{path} is not a torch.export program (.pt2 is a zip archive written by "
                        "torch.export.save; this file is not a zip)") from None
    except (OSError, ValueError, NotImplementedError) as e:
        raise LoadError(f"{path} is a truncated or corrupt .pt2 ({short(str(e))})") from None
    names = [i.filename for i in infos]
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or not names or any("/" not in n for n in names):
        zf.close()
        raise LoadError(f"{path} is not a torch.export program (its members are not under one root folder)")
    root = roots.pop() + "/"
    rel = {n[len(root):] for n in names}
    if "archive_format" not in rel:
        zf.close()
        if "data.pkl" in rel:
            raise LoadError(f"{path} is a torch.save checkpoint, not a torch.export program; give it a .pt "
                            "suffix (with --arch if it is a state_dict)")
        raise LoadError(f"{path} is not a torch.export program (no archive_format member; written by an older "
                        "torch or another tool)")
    size = path.stat().st_size
    for info in infos:
        if info.header_offset + info.compress_size > size:
            zf.close()
            raise LoadError(f"{path} is a truncated or corrupt .pt2 (member {short(info.filename)} runs past the "
                            "end of the file)")
    return zf, root


def _read_json(zf: zipfile.ZipFile, name: str, path: Path) -> Any:
    info = zf.getinfo(name)
    if info.file_size > MAX_JSON_BYTES:
        raise LoadError(f"{path}: member {short(name)} is {info.file_size} bytes; the limit is {MAX_JSON_BYTES}")
    try:
        with zf.open(info) as f:
            data = f.read(MAX_JSON_BYTES + 1)
        return json.loads(data)
    except (zipfile.BadZipFile, OSError, ValueError, RecursionError) as e:
        raise LoadError(f"{path}: member {short(name)} is corrupt ({short(str(e))})") from None


def _ints(values: Any, what: str) -> list[int]:
    if not isinstance(values, list):
        raise ValueError(f"{what} is not a list")
    out = []
    for v in values:
        n = v.get("as_int") if isinstance(v, dict) and len(v) == 1 else None
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"{what} holds {short(repr(v))}, not a non-negative integer")
        out.append(n)
    return out


def _check_payload(path: Path, zf: zipfile.ZipFile, root: str, folder: str, config_name: str, prefix: str,
                   kind: str) -> None:
    config = _read_json(zf, root + config_name, path)
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise LoadError(f"{path}: {config_name} is not a payload config")
    for fqn, meta in entries.items():
        where = f"{kind} {short(fqn)}"
        if not isinstance(meta, dict):
            raise LoadError(f"{path}: {where} has no description in {config_name}")
        if meta.get("use_pickle") is not False:
            raise _refuse(path, f"stores {where} as a pickle (use_pickle), not as raw tensor data")
        name = meta.get("path_name")
        if not isinstance(name, str) or not re.fullmatch(re.escape(prefix) + r"[0-9]+", name):
            raise _refuse(path, f"stores {where} as {short(repr(name))}, not as a plain tensor record")
        member = root + folder + name
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise LoadError(f"{path}: {where} names {short(name)}, which the archive lacks") from None
        tm = meta.get("tensor_meta")
        try:
            if not isinstance(tm, dict):
                raise ValueError("no tensor_meta")
            dtype = _DTYPES.get(tm.get("dtype"))
            if dtype is None:
                raise ValueError(f"dtype code {short(repr(tm.get('dtype')))} is not a plain number type")
            if tm.get("layout") != _STRIDED:
                raise ValueError("it is not a dense (strided) tensor")
            sizes, strides = _ints(tm.get("sizes"), "sizes"), _ints(tm.get("strides"), "strides")
            offset = _ints([tm.get("storage_offset")], "storage_offset")[0]
        except ValueError as e:
            raise LoadError(f"{path}: {where} has unusable tensor metadata ({e})") from None
        dname, itemsize, floating = dtype
        if meta.get("is_param") and not floating:
            raise LoadError(f"{path}: parameter {short(fqn)} is {dname}; gsdeploy accepts floating-point weights only")
        if len(sizes) != len(strides):
            raise LoadError(f"{path}: {where} has {len(sizes)} sizes but {len(strides)} strides")
        numel = 1
        for s in sizes:
            numel *= s
        # A view may not reach past its record, nor declare more elements than the record holds
        # (zero or overlapping strides would make a tiny file expand into a huge tensor).
        span = 0 if numel == 0 else offset + 1 + sum((s - 1) * st for s, st in zip(sizes, strides))
        if span * itemsize > info.file_size or numel * itemsize > info.file_size:
            raise LoadError(f"{path}: {where} declares {'x'.join(map(str, sizes)) or 'a scalar'} {dname} "
                            f"({numel * itemsize} bytes) but its record holds {info.file_size} bytes")


def _check_pickle(path: Path, zf: zipfile.ZipFile, member: str, what: str) -> None:
    """torch reads the sample inputs with weights_only=True and, when that fails, again with
    weights_only=False: the file passes only if the first reading succeeds."""
    with zf.open(member) as f:
        data = f.read()
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise _refuse(path, f"holds {what} that are pickled Python objects, not plain tensors") from None
    except Exception as e:  # noqa: BLE001 - a cut or foreign pickle fails in many ways
        raise LoadError(f"{path}: {what} are corrupt ({short(str(e))})") from None


def _check_expr(path: Path, text: Any) -> None:
    """A symbolic-shape string is eval'd by sympy: only calls of known sympy names on shape
    symbols, numbers and string literals pass."""
    bad = _refuse(path, f"holds the symbolic expression {short(repr(text))}, which is not plain shape arithmetic")
    if not isinstance(text, str) or len(text) > 2000:
        raise bad
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError):
        raise bad from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id in _SYMPY_CALLS):
                raise bad
            if any(k.arg not in _SYMPY_KWARGS for k in node.keywords):
                raise bad
        elif isinstance(node, ast.Name):
            if not (node.id in _SYMPY_CALLS or _SYMBOL.match(node.id)):
                raise bad
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, str) and not (_SYMBOL.match(node.value) or node.value.isidentifier()
                                                    and not node.value.startswith("_")):
                raise bad
        elif not isinstance(node, (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.keyword,
                                   ast.Load, ast.operator, ast.unaryop, ast.cmpop, ast.boolop)):
            raise bad


def _walk(obj: Any, path: Path, depth: int = 0) -> None:
    """Refuse operator/graph/custom-object arguments and check every symbolic expression."""
    if depth > 200:
        raise LoadError(f"{path}: the program description is nested too deeply")
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("as_operator", "as_graph", "as_custom_obj", "as_opaque_obj"):
                raise _refuse(path, f"passes a {k[3:].replace('_', ' ')} as an argument")
            if k == "expr_str":
                _check_expr(path, v)
            _walk(v, path, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            _walk(v, path, depth + 1)


def _check_program(path: Path, program: Any) -> None:
    if not isinstance(program, dict) or not isinstance(program.get("graph_module"), dict):
        raise LoadError(f"{path}: models/model.json is not a torch.export program")
    if program.get("guards_code"):
        raise _refuse(path, "carries guard code (Python that torch.export runs when the program is loaded)")
    for name in (program.get("range_constraints") or {}):
        _check_expr(path, name)
    graphs = [program["graph_module"].get("graph")]
    for graph in graphs:
        nodes = graph.get("nodes") if isinstance(graph, dict) else None
        if not isinstance(nodes, list):
            raise LoadError(f"{path}: models/model.json has no graph")
        for node in nodes:
            target = node.get("target") if isinstance(node, dict) else None
            m = _ATEN_TARGET.match(target) if isinstance(target, str) else None
            if not (m and m.group(1) in SAFE_ATEN) and target not in _OPERATORS:
                raise _refuse(path, f"calls {short(repr(target))}, which is not one of the aten operators a CNN "
                                    "uses")
    _walk(program, path)


def audit_pt2(path: Path, trust: bool) -> None:
    """Raise LoadError unless `path` is a well-formed torch.export archive and, without
    `trust`, holds only plain tensor data and an allow-listed graph."""
    zf, root = open_archive(path)
    with zf:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                # torch.export.save stores members uncompressed; a compressed one could be a zip bomb.
                raise LoadError(f"{path}: member {short(info.filename)} is compressed; torch.export.save does not "
                                "write compressed members")
        if trust:
            return
        rel = sorted(i.filename[len(root):] for i in zf.infolist())
        allowed = re.compile(r"^(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|"
                             r"models/model\.json|data/weights/model_weights_config\.json|data/weights/weight_[0-9]+|"
                             r"data/constants/model_constants_config\.json|data/constants/tensor_[0-9]+|"
                             r"data/sample_inputs/model\.pt|extra/[^/]+)$")
        for name in rel:
            if not allowed.match(name):
                what = ("native AOTInductor code" if name.startswith("data/aotinductor/") else
                        "a pickled legacy payload" if name.endswith(".pt") or name.endswith(".pkl") else
                        "a member gsdeploy does not recognise")
                raise _refuse(path, f"holds {short(name)} ({what})")
        for need in ("models/model.json", "data/weights/model_weights_config.json",
                     "data/constants/model_constants_config.json"):
            if need not in rel:
                raise LoadError(f"{path} is not a complete torch.export program (no {need})")
        _check_payload(path, zf, root, "data/weights/", "data/weights/model_weights_config.json", "weight_",
                       "weight")
        _check_payload(path, zf, root, "data/constants/", "data/constants/model_constants_config.json", "tensor_",
                       "constant")
        _check_program(path, _read_json(zf, root + "models/model.json", path))
        if "data/sample_inputs/model.pt" in rel:
            _check_pickle(path, zf, root + "data/sample_inputs/model.pt", "its sample inputs")
