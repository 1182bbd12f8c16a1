"""Profiles: the shipped YAML files load, and every schema violation is one clear error."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gsdeploy import profiles as P
from gsdeploy.errors import GsdeployError
from gsdeploy.profiles import ProfileError, list_profiles, load_profile, parse_profile

REQUIRED = {"cpu-ort", "cpu-torch", "server-gpu-torch", "server-gpu-trt", "server-gpu-ort-trt",
            "jetson-orin-trt", "jetson-nano-trt"}

MINIMAL = {"description": "d", "device": "cpu", "engines": [{"name": "ort", "precisions": ["fp32"]}],
           "batches": [1]}


def write(tmp_path: Path, data: object, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def with_(**changes: object) -> dict:
    d = yaml.safe_load(yaml.safe_dump(MINIMAL))
    d.update(changes)
    return d


# ---- shipped profiles ------------------------------------------------------------------------


def test_all_required_profiles_ship_and_load():
    names = set(list_profiles())
    assert REQUIRED <= names
    for name in names:
        p = load_profile(name)
        assert p.name == name and p.description and p.targets and p.batches
        assert p.source is not None and p.source.suffix == ".yaml"


def test_default_profile_is_cpu_ort():
    p = load_profile(P.DEFAULT_PROFILE)
    assert p.name == "cpu-ort" and p.device == "cpu"
    assert p.targets[0].engine == "ort" and p.targets[0].providers == ("CPUExecutionProvider",)


def test_gpu_profiles_say_what_the_brief_asks():
    trt = load_profile("server-gpu-trt")
    assert trt.device == "cuda" and trt.batches == (1, 8, 32, 128)
    assert all(t.precision == "fp16" and t.engine == "trt" for t in trt.targets)
    torch_p = load_profile("server-gpu-torch")
    assert [(t.label, t.precision, t.cuda_graph, t.channels_last, t.torch_device) for t in torch_p.targets] == [
        ("torch-eager", "fp32", False, True, "cuda"), ("torch-eager", "fp16", False, True, "cuda"),
        ("torch-cuda-graph", "fp32", True, True, "cuda"), ("torch-cuda-graph", "fp16", True, True, "cuda")]
    ort_trt = load_profile("server-gpu-ort-trt")
    assert ort_trt.targets[0].providers[:2] == ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    assert [t.label for t in ort_trt.targets] == ["ort-trt", "ort-cuda"]
    orin = load_profile("jetson-orin-trt")
    assert orin.device == "jetson" and orin.batches == (1, 8) and orin.power is not None
    # two trt entries stay two targets: the GPU one and DLA core 0
    assert [(t.label, t.dla_core, t.gpu_fallback) for t in orin.targets] == [
        ("trt-gpu", None, False), ("trt-dla0", 0, True)]
    nano = load_profile("jetson-nano-trt")
    assert nano.power is not None and nano.power.module == "nano"


def test_bare_name_and_path_both_work(tmp_path):
    src = load_profile("cpu-torch").source
    by_path = load_profile(str(src))
    assert by_path == load_profile("cpu-torch")
    custom = write(tmp_path, MINIMAL, "mine.yaml")
    assert load_profile(custom).name == "mine"


def test_user_profile_dir_takes_priority(tmp_path, monkeypatch):
    write(tmp_path, with_(description="my own cpu-ort"), "cpu-ort.yaml")
    monkeypatch.setenv("GSDEPLOY_PROFILES", str(tmp_path))
    assert load_profile("cpu-ort").description == "my own cpu-ort"


def test_installed_wheel_location_is_searched(tmp_path):
    # A wheel's data-files land in <prefix>/share/gsdeploy/profiles; the package itself in
    # <prefix>/lib/pythonX.Y/site-packages/gsdeploy.
    pkg = tmp_path / "lib" / "python3.11" / "site-packages" / "gsdeploy"
    assert tmp_path / "share" / "gsdeploy" / "profiles" in P._installed_data_dirs(pkg)


def test_unknown_name_lists_known_profiles():
    with pytest.raises(ProfileError, match=r"unknown profile 'gpu-fast'.*cpu-ort"):
        load_profile("gpu-fast")


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile(str(tmp_path / "nope.yaml"))


# ---- schema errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("data, pattern", [
    (with_(batchez=[1]), r"unknown key 'batchez'"),
    (with_(batches="1,8"), r"key 'batches' must be a non-empty list of positive integers, got str '1,8'"),
    (with_(batches=[1, 0]), r"key 'batches' must be a non-empty list of positive integers"),
    (with_(threads=True), r"key 'threads' must be a positive integer or null, got bool True"),
    (with_(warmup_s="1s"), r"key 'warmup_s' must be a finite number >= 0"),
    (with_(warmup_s=float("inf")), r"key 'warmup_s' must be a finite number >= 0, got float inf"),
    (with_(min_duration_s=float("nan")), r"key 'min_duration_s' must be a finite number >= 0"),
    (with_(min_iterations=2.5), r"key 'min_iterations' must be a positive integer, got float"),
    (with_(device="tpu"), r"key 'device' must be one of cpu, cuda, jetson"),
    (with_(engines=[]), r"key 'engines' must be a non-empty list"),
    (with_(engines=["ort"]), r"key 'engines\[0\]' must be a mapping"),
    (with_(engines=[{"name": "onnx", "precisions": ["fp32"]}]), r"key 'engines\[0\].name' must be one of ort"),
    (with_(engines=[{"name": "ort", "precisions": "fp32"}]), r"key 'engines\[0\].precisions' must be a non-empty list"),
    (with_(engines=[{"name": "ort"}]), r"missing key 'engines\[0\].precisions'"),
    (with_(engines=[{"name": "torch", "precisions": ["fp32"], "options": {"cuda_grph": True}}]),
     r"unknown key 'engines\[0\].options.cuda_grph' \(allowed: cuda_graph, channels_last\)"),
    (with_(engines=[{"name": "ort", "precisions": ["fp32"], "options": {"providers": "CPU"}}]),
     r"key 'engines\[0\].options.providers' must be a non-empty list of ONNX Runtime provider names"),
    (with_(power={"tegrastats_interval_ms": 100}), r"key 'power' \(tegrastats sampling\) needs device: jetson"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_schema_errors_name_file_key_and_type(tmp_path, data, pattern):
    path = write(tmp_path, data)
    with pytest.raises(ProfileError, match=pattern) as info:
        load_profile(str(path))
    assert str(path) in str(info.value)
    assert isinstance(info.value, GsdeployError)  # the CLI prints it as one line


def test_missing_required_key(tmp_path):
    data = with_()
    del data["device"]
    with pytest.raises(ProfileError, match=r"missing key 'device' \(one of cpu, cuda, jetson\)"):
        load_profile(str(write(tmp_path, data)))


@pytest.mark.parametrize("device, engine, pattern", [
    ("cpu", {"name": "trt", "precisions": ["fp32"]}, r"engines\[0\] \(trt, fp32\): engine 'trt' needs a GPU; device is cpu"),
    ("cpu", {"name": "torch", "precisions": ["fp16"]}, r"must be fp32 on a cpu device"),
    ("cpu", {"name": "torch", "precisions": ["fp32"], "options": {"cuda_graph": True}}, r"cuda_graph needs engine torch on a cuda"),
    ("cuda", {"name": "trt", "precisions": ["fp16"], "options": {"dla_core": 0}}, r"dla_core needs a jetson"),
    ("jetson", {"name": "trt", "precisions": ["fp32"], "options": {"dla_core": 0, "gpu_fallback": True}},
     r"DLA runs fp16 or int8 only, got fp32"),
    ("jetson", {"name": "trt", "precisions": ["fp16"], "options": {"gpu_fallback": True}},
     r"gpu_fallback only applies with a dla_core"),
    ("cuda", {"name": "ort", "precisions": ["fp16"], "options": {"providers": ["CUDAExecutionProvider"]}},
     r"fp16 in ORT needs TensorrtExecutionProvider"),
    ("cpu", {"name": "trtexec", "precisions": ["fp32"]}, r"trtexec is not a bench engine"),
    ("cuda", {"name": "ort", "precisions": ["fp32"]}, r"options.providers' is required for ORT on a cuda device"),
    ("cpu", {"name": "ort", "precisions": ["fp32"], "options": {"providers": ["CUDAExecutionProvider"]}},
     r"GPU providers on a cpu device"),
    ("cuda", {"name": "ort", "precisions": ["fp32"],
              "options": {"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"], "provider_options": [{}]}},
     r"one mapping per provider \(2\), got 1"),
    ("jetson", {"name": "trt", "precisions": ["fp16"], "options": {"dla_core": "0"}},
     r"dla_core' must be an integer >= 0 or null, got str '0'"),
])
def test_contradictory_settings_are_rejected(tmp_path, device, engine, pattern):
    with pytest.raises(ProfileError, match=pattern):
        load_profile(str(write(tmp_path, with_(device=device, engines=[engine]))))


def test_duplicate_engine_entries_need_a_label(tmp_path):
    eng = {"name": "torch", "precisions": ["fp32"]}
    with pytest.raises(ProfileError, match="give one a distinct 'label'"):
        load_profile(str(write(tmp_path, with_(engines=[eng, eng]))))
    labelled = [eng, {**eng, "label": "torch-2"}]
    assert len(load_profile(str(write(tmp_path, with_(engines=labelled)))).targets) == 2


def test_invalid_yaml_reports_line(tmp_path):
    path = write(tmp_path, textwrap.dedent("""\
        description: x
        device: cpu
        engines: [ {name: ort
        """))
    with pytest.raises(ProfileError, match=r"not valid YAML \(line \d+"):
        load_profile(str(path))


def test_empty_and_non_mapping_files(tmp_path):
    with pytest.raises(ProfileError, match="empty"):
        load_profile(str(write(tmp_path, "", "e.yaml")))
    with pytest.raises(ProfileError, match="mapping at the top level"):
        load_profile(str(write(tmp_path, "- a\n- b\n", "l.yaml")))


_KNOWN = set(P.TOP_KEYS)


@settings(max_examples=40, deadline=None)
@given(key=st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).filter(lambda k: k not in _KNOWN),
       value=st.one_of(st.integers(), st.text(max_size=5), st.booleans(), st.none()))
def test_any_unknown_top_level_key_is_named(key, value):
    with pytest.raises(ProfileError, match=f"unknown key '{key}'"):
        parse_profile(with_(**{key: value}), "x.yaml", "x")


# ---- availability ----------------------------------------------------------------------------


def test_unavailable_reasons(monkeypatch):
    from gsdeploy import target as T

    monkeypatch.setattr(T, "_cuda_available", lambda: False)
    monkeypatch.setattr(T, "_is_jetson", lambda: False)
    assert P.unavailable_reason(load_profile("cpu-ort")) is None  # onnxruntime is installed here
    assert "needs a CUDA GPU" in P.unavailable_reason(load_profile("server-gpu-torch"))
    assert "needs a Jetson device" in P.unavailable_reason(load_profile("jetson-orin-trt"))
    monkeypatch.setattr(T, "_cuda_available", lambda: True)
    reason = P.unavailable_reason(load_profile("server-gpu-trt"))
    if reason is not None:  # the TensorRT engine is looked up as a real module
        assert "TensorRT" in reason
    import onnxruntime

    if "TensorrtExecutionProvider" not in onnxruntime.get_available_providers():
        # the provider the profile asks for is checked against this onnxruntime, before any work
        assert "has no TensorrtExecutionProvider" in P.unavailable_reason(load_profile("server-gpu-ort-trt"))
