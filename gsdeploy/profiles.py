"""Target profiles: where and how to benchmark, as data (YAML files), never code.

A profile names the device kind, the engines (with precisions and engine options), batch
sizes and the timing budget of a benchmark; Jetson profiles also say how to sample power.
Profiles live in `profiles/*.yaml` at the top of the repository (the product card fixes that
place). Every file is schema-checked when loaded: an unknown key or a wrong type is a
`ProfileError` that names the file, the key (as a path such as `engines[1].options.dla_core`)
and the type expected, because a typo in a profile otherwise turns into a silently different
benchmark.

Where bare names are looked up, in order:
  1. directories in $GSDEPLOY_PROFILES (os.pathsep-separated), so users can add their own;
  2. `profiles/` next to the `gsdeploy/` package (source tree and editable installs);
  3. `<prefix>/share/gsdeploy/profiles/` of an installed wheel: pyproject's
     `[tool.setuptools.data-files]` ships `profiles/*.yaml` there. The prefix is found from
     sysconfig (default and user schemes) and by walking up from the installed package, which
     also covers venvs and `pip install --prefix`.
"""

from __future__ import annotations

import math
import os
import re
import sysconfig
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from gsdeploy.errors import GsdeployError
from gsdeploy.limits import MAX_BATCH, MAX_SAMPLE_ELEMENTS, brief
from gsdeploy.target import (DEVICE_KINDS, ENGINES, PRECISIONS, PowerSpec, Target, TargetError, engine_defaults,
                             validate)
from gsdeploy.target import unavailable_reason as target_unavailable_reason
from gsdeploy.yaml_file import read_yaml

POWER_MODULES = ("auto", "orin-agx", "orin-nx", "xavier-agx", "xavier-nx", "nano")
DEFAULT_PROFILE = "cpu-ort"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ProfileError(GsdeployError):
    """A profile file is missing, malformed, or does not follow the schema."""


# ---- the data -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """A parsed profile: its engine entries already resolved into one validated `Target` per
    entry × precision (see gsdeploy/target.py), plus the profile-wide settings they share."""

    name: str
    description: str
    device: str  # cpu | cuda | jetson
    targets: tuple[Target, ...]
    batches: tuple[int, ...]
    input_shape: tuple[int, ...] | None = None  # per sample, overrides the model's
    warmup_s: float = 0.5
    min_iterations: int = 50
    min_duration_s: float = 2.0
    threads: int | None = None  # intra-op threads; None = the engine's default (all cores)
    power: PowerSpec | None = None
    source: Path | None = None  # the YAML file it came from

    @property
    def needs_gpu(self) -> bool:
        return self.device in ("cuda", "jetson")


# ---- schema ---------------------------------------------------------------------------------
#
# A small declarative checker rather than a schema library: the project has no jsonschema
# dependency, and the messages must name the file, the key path and the expected type in
# words a user can act on.


@dataclass(frozen=True)
class KeyType:
    """Expected type of one key: a checker plus the words used in error messages."""

    words: str
    check: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    # bool is a subclass of int in Python; `threads: true` is a mistake, not 1.
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


STR = KeyType("a string", lambda v: isinstance(v, str) and v.strip() != "")
BOOL = KeyType("true or false", lambda v: isinstance(v, bool))
POS_INT = KeyType("a positive integer", lambda v: _is_int(v) and v > 0)
BATCH = KeyType(f"a positive integer up to {MAX_BATCH}", lambda v: _is_int(v) and 1 <= v <= MAX_BATCH)
NONNEG_INT = KeyType("an integer >= 0", lambda v: _is_int(v) and v >= 0)
NONNEG_NUM = KeyType("a finite number >= 0", lambda v: _is_num(v) and math.isfinite(v) and v >= 0)
STR_LIST = KeyType("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v))
POS_INT_LIST = KeyType("a non-empty list of positive integers",
                  lambda v: isinstance(v, list) and len(v) > 0 and all(_is_int(x) and x > 0 for x in v))
# a per-sample input shape: bounded as --input-shape is (a profile's [3, 100000, 100000] allocated 120 GB)
INPUT_SHAPE = KeyType(f"a non-empty list of positive integers with at most {MAX_SAMPLE_ELEMENTS} values per sample",
                      lambda v: POS_INT_LIST.check(v) and math.prod(v) <= MAX_SAMPLE_ELEMENTS)
MAPPING = KeyType("a mapping (key: value)", lambda v: isinstance(v, dict))
ANY = KeyType("", lambda v: True)  # a key whose value its reader checks (sweep files check theirs field by field)
SCALAR_MAP_LIST = KeyType("a list of mappings of option name to a string, number or boolean",
                     lambda v: isinstance(v, list) and all(
                         isinstance(m, dict) and all(isinstance(k, str) and isinstance(x, (str, int, float, bool))
                                                     for k, x in m.items()) for m in v))


def _enum(*values: str) -> KeyType:
    return KeyType("one of " + ", ".join(values), lambda v: isinstance(v, str) and v in values)


def _nullable(t: KeyType) -> KeyType:
    return KeyType(t.words + " or null", lambda v: v is None or t.check(v))


def _list_of_enum(*values: str) -> KeyType:
    return KeyType("a non-empty list of " + ", ".join(values),
              lambda v: isinstance(v, list) and len(v) > 0 and all(isinstance(x, str) and x in values for x in v))


TOP_KEYS: dict[str, KeyType] = {
    "name": STR,
    "description": STR,
    "device": _enum(*DEVICE_KINDS),
    "engines": KeyType("a non-empty list of engine entries", lambda v: isinstance(v, list) and len(v) > 0),
    "batches": POS_INT_LIST,
    "input_shape": _nullable(INPUT_SHAPE),
    "warmup_s": NONNEG_NUM,
    "min_iterations": POS_INT,
    "min_duration_s": NONNEG_NUM,
    "threads": _nullable(POS_INT),
    "max_cov": KeyType("a number > 0 (a CoV of 0.025 is 2.5%)", lambda v: _is_num(v) and v > 0),
    "power": _nullable(MAPPING),
}
TOP_REQUIRED = ("description", "device", "engines", "batches")

ENGINE_KEYS: dict[str, KeyType] = {
    "name": _enum(*ENGINES),
    "precisions": _list_of_enum(*PRECISIONS),
    "options": MAPPING,
    "label": STR,
}
ENGINE_REQUIRED = ("name", "precisions")

_TRT_BUILD = {
    "dla_core": _nullable(NONNEG_INT),
    "gpu_fallback": BOOL,
    "workspace_mb": POS_INT,
    "timing_cache": _nullable(STR),
    "builder_optimization_level": KeyType("an integer 0-5", lambda v: _is_int(v) and 0 <= v <= 5),
}
ENGINE_OPTIONS: dict[str, dict[str, KeyType]] = {
    "ort": {
        "providers": KeyType("a non-empty list of ONNX Runtime provider names (…ExecutionProvider)",
                        lambda v: isinstance(v, list) and len(v) > 0
                        and all(isinstance(x, str) and x.endswith("ExecutionProvider") for x in v)),
        "provider_options": SCALAR_MAP_LIST,
        "graph_optimization_level": _enum("disable", "basic", "extended", "all"),
        "allow_spinning": BOOL,
    },
    "torch": {
        "cuda_graph": BOOL,
        "channels_last": BOOL,
    },
    "trt": dict(_TRT_BUILD),
}
# Engine names profiles once accepted, and why they are gone.
RETIRED_ENGINES = {
    "trtexec": ("trtexec is not a bench engine: it times its own loop in a separate process, so it cannot be "
                "interleaved with the dense baseline in one measurement; use engine 'trt' (the same engine, "
                "timed with CUDA events) and benchmarks/trt_truth.py for a cross-check"),
    "torch-trt": ("torch-trt has no bench runner; `gsdeploy export --engine torch-trt` builds the artifact, and "
                  "engine 'trt' benchmarks TensorRT"),
}

POWER_KEYS: dict[str, KeyType] = {
    "tegrastats_interval_ms": POS_INT,
    "module": _enum(*POWER_MODULES),
}


def check_keys(where: str, data: Mapping[str, Any], schema: Mapping[str, KeyType], prefix: str,
                required: tuple[str, ...] = (), error: type[GsdeployError] = ProfileError) -> None:
    """Unknown keys, missing required keys and wrong types, each as one message naming the
    file (`where`), the key path and what was expected. Also used for claim files."""
    for key in data:
        if key not in schema:
            raise error(f"{where}: unknown key '{prefix}{key}' (allowed: {', '.join(schema)})")
    for key in required:
        if key not in data:
            words = schema[key].words
            raise error(f"{where}: missing key '{prefix}{key}'" + (f" ({words})" if words else ""))
    for key, value in data.items():
        t = schema[key]
        if not t.check(value):
            raise error(f"{where}: key '{prefix}{key}' must be {t.words}, got {type(value).__name__} {brief(value)}")


def _entry_targets(where: str, i: int, raw: Any, common: dict[str, Any]) -> list[Target]:
    """One validated Target per precision of engine entry `i`; `common` holds the profile-wide
    fields (device, batches, timing, threads, power)."""
    prefix = f"engines[{i}]."
    if not isinstance(raw, dict):
        raise ProfileError(f"{where}: key 'engines[{i}]' must be a mapping with name, precisions, options; "
                           f"got {type(raw).__name__} {brief(raw)}")
    if raw.get("name") in RETIRED_ENGINES:
        raise ProfileError(f"{where}: key '{prefix}name': {RETIRED_ENGINES[raw['name']]}")
    check_keys(where, raw, ENGINE_KEYS, prefix, ENGINE_REQUIRED)
    name = raw["name"]
    options = dict(raw.get("options") or {})
    check_keys(where, options, ENGINE_OPTIONS[name], f"{prefix}options.")
    device = common["device"]
    if name == "ort" and "providers" not in options and device != "cpu":
        raise ProfileError(f"{where}: key '{prefix}options.providers' is required for ORT on a {device} "
                           "device (ORT silently falls back to CPU, so the profile must say what it wants)")
    fields_ = {**engine_defaults(name, device), **common}
    for key, value in options.items():
        if key == "providers":
            value = tuple(value)
        elif key == "provider_options":
            value = tuple(dict(m) for m in value)
        fields_[key] = value
    out = []
    for precision in raw["precisions"]:
        try:
            out.append(validate(Target(engine=name, label=raw.get("label", name), precision=precision, **fields_)))
        except TargetError as e:  # name the file and the entry, as the schema errors do
            raise ProfileError(f"{where}: engines[{i}] ({raw.get('label', name)}, {precision}): "
                               f"{str(e).split(': ', 1)[-1]}") from None
    return out


def parse_profile(data: Any, where: str, default_name: str) -> Profile:
    """Check `data` (the parsed YAML) against the schema and build a Profile whose targets are
    validated (every rule in gsdeploy/target.validate)."""
    if not isinstance(data, dict):
        raise ProfileError(f"{where}: a profile must be a YAML mapping at the top level, got {type(data).__name__}")
    check_keys(where, data, TOP_KEYS, "", TOP_REQUIRED)
    device = data["device"]
    batches = tuple(data["batches"])
    if len(set(batches)) != len(batches):
        raise ProfileError(f"{where}: key 'batches' lists a batch size twice: {list(batches)}")
    power = None
    if data.get("power") is not None:
        if device != "jetson":
            raise ProfileError(f"{where}: key 'power' (tegrastats sampling) needs device: jetson")
        check_keys(where, data["power"], POWER_KEYS, "power.")
        power = PowerSpec(**data["power"])
    name = data.get("name", default_name)
    if not _NAME_RE.match(name):
        raise ProfileError(f"{where}: key 'name' must be letters, digits, '.', '_' or '-', got {brief(name)}")
    defaults = Profile.__dataclass_fields__
    timing = {k: data.get(k, defaults[k].default) for k in ("warmup_s", "min_iterations", "min_duration_s")}
    common: dict[str, Any] = {
        "device": device, "profile": name, "batches": batches, "threads": data.get("threads"),
        "input_shape": tuple(data["input_shape"]) if data.get("input_shape") else None,
        "max_cov": data.get("max_cov", Target.__dataclass_fields__["max_cov"].default), "power": power, **timing}
    targets = tuple(t for i, e in enumerate(data["engines"]) for t in _entry_targets(where, i, e, common))
    keys = [(t.label, t.precision) for t in targets]
    if len(set(keys)) != len(keys):
        raise ProfileError(f"{where}: two engine entries have the same label and precision; "
                           "give one a distinct 'label'")
    return Profile(
        name=name,
        description=data["description"].strip(),
        device=device,
        targets=targets,
        batches=batches,
        input_shape=common["input_shape"],
        warmup_s=float(timing["warmup_s"]),
        min_iterations=int(timing["min_iterations"]),
        min_duration_s=float(timing["min_duration_s"]),
        threads=data.get("threads"),
        power=power,
    )


# ---- lookup ---------------------------------------------------------------------------------


def profile_dirs() -> list[Path]:
    """Directories searched for bare profile names, highest priority first (existing only)."""
    dirs: list[Path] = []
    for part in os.environ.get("GSDEPLOY_PROFILES", "").split(os.pathsep):
        if part.strip():
            dirs.append(Path(part).expanduser())
    here = Path(__file__).resolve().parent
    dirs.append(here.parent / "profiles")  # source tree / editable install
    dirs.extend(_installed_data_dirs(here))
    seen: set[Path] = set()
    out = []
    for d in dirs:
        r = d.resolve()
        if r not in seen and r.is_dir():
            seen.add(r)
            out.append(d)
    return out


def _installed_data_dirs(package_dir: Path) -> list[Path]:
    """Where a wheel's data-files (`share/gsdeploy/profiles`) land for the usual install schemes."""
    rel = Path("share") / "gsdeploy" / "profiles"
    roots: list[Path] = []
    for scheme in (None, f"{os.name}_user"):
        try:
            data = sysconfig.get_path("data", scheme) if scheme else sysconfig.get_path("data")
        except KeyError:
            continue
        if data:
            roots.append(Path(data))
    # <prefix>/lib/pythonX.Y/site-packages/gsdeploy -> <prefix> is 4 levels up (3 on Windows).
    roots.extend(list(package_dir.parents)[:5])
    return [r / rel for r in roots]


def _files() -> dict[str, Path]:
    """name -> file, the first directory in `profile_dirs()` order winning."""
    found: dict[str, Path] = {}
    for d in profile_dirs():
        for p in sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")):
            found.setdefault(p.stem, p)
    return found


def list_profiles() -> list[str]:
    return sorted(_files())


def load_profile(name_or_path: str | os.PathLike) -> Profile:
    """A bare name ("cpu-ort") is looked up in `profile_dirs()`; anything that looks like a
    path (has a separator or a .yaml/.yml suffix, or exists) is read from that path."""
    text = str(name_or_path)
    looks_like_path = (os.sep in text or "/" in text or text.endswith((".yaml", ".yml")) or Path(text).is_file())
    if looks_like_path:
        path = Path(text).expanduser()
        if not os.path.lexists(path):  # FIFOs, devices and link loops get their own message from read_yaml
            raise ProfileError(f"profile file {path} does not exist")
    else:
        files = _files()
        if text not in files:
            known = ", ".join(sorted(files)) or "none found"
            raise ProfileError(f"unknown profile '{text}' (known: {known}); or give a path to a YAML file")
        path = files[text]
    profile = parse_profile(read_yaml(path, ProfileError, "profile"), str(path), default_name=path.stem)
    return replace(profile, source=path)


# ---- availability ---------------------------------------------------------------------------


def unavailable_reason(profile: Profile) -> str | None:
    """Why `profile` cannot run on this machine, or None when it can (as far as can be told
    without running: device kind present, every target's engine, module and provider present)."""
    for t in profile.targets:
        reason = target_unavailable_reason(t)
        if reason:
            return f"profile '{profile.name}': {reason}"
    return None
