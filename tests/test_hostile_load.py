"""Hostile files that gsdeploy reads: a .pt2 must never run code without --trust.

Each crafted archive carries a payload that creates a marker file when unpickled or eval'd.
The `live` checks open the same file with plain torch.export.load and see the marker appear,
so the tests prove the attack is real; gsdeploy must refuse the file with the marker absent.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from gsdeploy.cli import app
from gsdeploy.errors import LoadError
from gsdeploy.load import load_model
from gsdeploy.load.pt2_audit import UntrustedFileError

runner = CliRunner()


class _Payload:
    """Unpickling this opens (creates) the marker file: code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2)).eval()


@pytest.fixture(scope="module")
def good_pt2(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pt2") / "good.pt2"
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(_tiny(), (torch.randn(2, 3, 8, 8),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path


def _members(path: Path) -> tuple[str, dict[str, bytes]]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        root = names[0].split("/", 1)[0] + "/"
        return root, {n[len(root):]: zf.read(n) for n in names}


def _write(dst: Path, root: str, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(dst, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(root + name, data)
    return dst


def _saved(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _craft(good: Path, dst: Path, site: str, marker: Path) -> Path:
    """A copy of `good` with a code payload at `site`."""
    root, m = _members(good)
    payload = _Payload(marker)
    if site == "weight-use_pickle":
        cfg = json.loads(m["data/weights/model_weights_config.json"])
        entry = cfg["config"]["0.weight"]
        entry["use_pickle"] = True
        m["data/weights/model_weights_config.json"] = json.dumps(cfg).encode()
        m["data/weights/" + entry["path_name"]] = _saved(payload)
    elif site == "constant-use_pickle":
        m["data/constants/model_constants_config.json"] = json.dumps(
            {"config": {"c0": {"path_name": "tensor_0", "is_param": False, "use_pickle": True,
                               "tensor_meta": None}}}).encode()
        m["data/constants/tensor_0"] = _saved(payload)
    elif site == "opaque-object":
        m["data/constants/model_constants_config.json"] = json.dumps(
            {"config": {"c0": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True,
                               "tensor_meta": None}}}).encode()
        m["data/constants/opaque_obj_0"] = pickle.dumps(payload)
    elif site == "custom-object":
        m["data/constants/model_constants_config.json"] = json.dumps(
            {"config": {"c0": {"path_name": "custom_obj_0", "is_param": False, "use_pickle": True,
                               "tensor_meta": None}}}).encode()
        m["data/constants/custom_obj_0"] = pickle.dumps(payload)
    elif site == "sample-inputs":
        m["data/sample_inputs/model.pt"] = _saved(((payload,), {}))
    elif site == "legacy-weights":
        del m["data/weights/model_weights_config.json"]
        m["data/weights/model.pt"] = _saved(payload)
    elif site == "guards-code":
        program = json.loads(m["models/model.json"])
        program["guards_code"] = [f"open({str(marker)!r}, 'w') is not None"]
        m["models/model.json"] = json.dumps(program).encode()
    elif site == "sympy-expr":
        text = m["models/model.json"].decode()
        assert "Symbol(" in text
        program = json.loads(text)

        def poison(o):
            if isinstance(o, dict):
                for k, v in o.items():
                    if k == "expr_str":
                        o[k] = f"(open({str(marker)!r}, 'w') and 0) + " + v
                    else:
                        poison(v)
            elif isinstance(o, list):
                for v in o:
                    poison(v)

        poison(program)
        m["models/model.json"] = json.dumps(program).encode()
    elif site == "operator-target":
        program = json.loads(m["models/model.json"])
        node = next(n for n in program["graph_module"]["graph"]["nodes"] if "relu" in n["target"])
        node["target"] = "torch.ops.aten.from_file.default"
        m["models/model.json"] = json.dumps(program).encode()
    elif site == "aotinductor":
        m["data/aotinductor/model/model.so"] = b"\x7fELF not really"
    elif site == "old-format":
        # the layout before the pt2 archive: torch falls back to it when the archive reader fails
        m = {"version": b"8.20", "serialized_exported_program.json": m["models/model.json"],
             "serialized_state_dict.pt": _saved({}), "serialized_constants.pt": _saved(payload),
             "serialized_example_inputs.pt": b""}
        with zipfile.ZipFile(dst, "w") as zf:
            for name, data in m.items():
                zf.writestr(name, data)
        return dst
    else:
        raise AssertionError(site)
    return _write(dst, root, m)


# Sites where plain torch.export.load (or the .module() it returns) runs the payload.
LIVE = ("weight-use_pickle", "constant-use_pickle", "opaque-object", "sample-inputs", "legacy-weights",
        "guards-code", "sympy-expr", "old-format")
SITES = LIVE + ("custom-object", "operator-target", "aotinductor")


@pytest.mark.parametrize("site", LIVE)
def test_payload_is_live_in_plain_torch(tmp_path, good_pt2, site):
    """Guards the tests below: the crafted file really runs code when torch loads it."""
    marker = tmp_path / "pwned"
    path = _craft(good_pt2, tmp_path / "evil.pt2", site, marker)
    try:
        torch.export.load(str(path)).module()(torch.randn(2, 3, 8, 8))
    except Exception:  # noqa: BLE001 - the payload breaks the program after running
        pass
    assert marker.exists(), f"payload at {site} did not run in torch.export.load"


@pytest.mark.parametrize("site", SITES)
def test_untrusted_pt2_is_refused_before_any_code_runs(tmp_path, good_pt2, site):
    marker = tmp_path / "pwned"
    path = _craft(good_pt2, tmp_path / "evil.pt2", site, marker)
    with pytest.raises(LoadError) as e:
        load_model(str(path))
    assert not marker.exists()
    assert "--trust" in str(e.value) or "not a torch.export program" in str(e.value)
    if site != "old-format":
        assert isinstance(e.value, UntrustedFileError)


def test_good_pt2_loads_without_trust(good_pt2):
    loaded = load_model(str(good_pt2))
    assert loaded.input_shape == (3, 8, 8)
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(loaded.module(x), _tiny()(x), atol=1e-6)


def test_trust_opens_a_pickled_weight(tmp_path, good_pt2):
    """--trust means what it says: the user vouches for the file, torch loads it as it is."""
    marker = tmp_path / "pwned"
    path = _craft(good_pt2, tmp_path / "evil.pt2", "weight-use_pickle", marker)
    with pytest.raises(LoadError):  # the payload is not a tensor, so the program breaks after it ran
        load_model(str(path), trust=True)
    assert marker.exists()


@pytest.mark.parametrize("command", ["inspect", "export", "bench", "bench-baseline", "validate"])
def test_every_command_refuses_a_pickled_pt2(tmp_path, good_pt2, command):
    marker = tmp_path / "pwned"
    evil = _craft(good_pt2, tmp_path / "evil.pt2", "weight-use_pickle", marker)
    out = tmp_path / "out"
    fast = ["--batch", "1", "--warmup-s", "0", "--min-iterations", "1", "--min-duration-s", "0", "-o", str(out)]
    args = {
        "inspect": ["inspect", str(evil)],
        "export": ["export", str(evil), "-o", str(tmp_path / "m.onnx")],
        "bench": ["bench", str(evil), "--baseline", str(good_pt2), *fast],
        "bench-baseline": ["bench", str(good_pt2), "--baseline", str(evil), *fast],
    }.get(command)
    if command == "validate":
        claims = tmp_path / "claims.yaml"
        claims.write_text(f"paper: x\nclaims:\n  - id: c\n    model: {evil}\n    baseline: {good_pt2}\n"
                          "    metric: flop_ratio\n    claimed: 1.0\n    tolerance: {abs: 0.5}\n    source: Table 1\n")
        args = ["validate", str(claims)]
    r = runner.invoke(app, args)
    assert r.exit_code != 0, r.output
    assert not marker.exists()
    assert "Traceback" not in r.output
    assert "refused" in r.output
    assert not (tmp_path / "m.onnx").exists()


# ---- corrupt and mis-shaped .pt2 files: one line, no torch traceback -------------------------


def _corrupt(good: Path, dst: Path, kind: str) -> Path:
    data = good.read_bytes()
    if kind == "truncated":
        dst.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        dst.write_bytes(bytes(range(256)) * 40)
    elif kind == "state_dict":
        torch.save(_tiny().state_dict(), dst)
    elif kind == "cut-directory":  # the end of central directory survives, a member's data does not
        dst.write_bytes(data[:200] + data[-2000:])
    elif kind == "empty-member-list":
        with zipfile.ZipFile(dst, "w"):
            pass
    return dst


@pytest.mark.parametrize("kind,phrase", [("truncated", "truncated or corrupt"), ("random", "not a zip"),
                                         ("state_dict", "torch.save checkpoint"),
                                         ("cut-directory", "corrupt"), ("empty-member-list", "not a torch.export")])
@pytest.mark.parametrize("trust", [False, True])
def test_corrupt_pt2_is_one_line(tmp_path, good_pt2, caplog, kind, phrase, trust):
    path = _corrupt(good_pt2, tmp_path / "bad.pt2", kind)
    r = runner.invoke(app, ["inspect", str(path)] + (["--trust"] if trust else []))
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and "\x1b[" not in r.stderr
    assert phrase in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not [rec for rec in caplog.records if rec.name.startswith("torch")]


def test_fixed_batch_program_says_a_dynamic_batch_is_needed(tmp_path):
    path = tmp_path / "static.pt2"
    torch.export.save(torch.export.export(_tiny(), (torch.randn(4, 3, 8, 8),)), str(path))
    r = runner.invoke(app, ["export", str(path), "-o", str(tmp_path / "m.onnx")])
    assert r.exit_code == 2, r.output
    assert "fixed batch size of 4" in r.stderr and "dynamic_shapes" in r.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_pt2_weight_that_outgrows_its_record_is_refused(tmp_path, good_pt2):
    """A tiny record declaring a huge tensor (zero strides, or an empty record that torch would
    fill with zeros) must not be materialised."""
    root, m = _members(good_pt2)
    cfg = json.loads(m["data/weights/model_weights_config.json"])
    meta = cfg["config"]["0.weight"]["tensor_meta"]
    meta["sizes"] = [{"as_int": 100000}, {"as_int": 1000}, {"as_int": 3}, {"as_int": 3}]
    meta["strides"] = [{"as_int": 0}] * 4
    m["data/weights/model_weights_config.json"] = json.dumps(cfg).encode()
    with pytest.raises(LoadError, match="declares 100000x1000x3x3 float32"):
        load_model(str(_write(tmp_path / "zero_stride.pt2", root, m)))
    m["data/weights/" + cfg["config"]["0.weight"]["path_name"]] = b""
    with pytest.raises(LoadError, match="record holds 0 bytes"):
        load_model(str(_write(tmp_path / "empty_record.pt2", root, m)))


@pytest.mark.parametrize("dtype", [torch.int64, torch.complex64, torch.bool])
def test_pt2_with_non_float_parameters_is_refused(tmp_path, dtype):
    class Int(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(4, 3, 1, 1).to(dtype), requires_grad=False)

        def forward(self, x):
            return x * 2 if dtype != torch.int64 else x + self.w.sum()

    path = tmp_path / "int.pt2"
    try:
        torch.export.save(torch.export.export(Int(), (torch.randn(2, 3, 8, 8),),
                                              dynamic_shapes=({0: torch.export.Dim("b", min=1, max=8)},)), str(path))
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"torch cannot export a {dtype} parameter: {e}")
    with pytest.raises(LoadError, match="floating-point weights only|not a plain number type"):
        load_model(str(path))


# ---- files that are not regular files, or cannot be read ----------------------------------


@pytest.mark.parametrize("suffix", [".pt", ".pt2", ""])
def test_symlink_loop_is_named(tmp_path, suffix):
    loop = tmp_path / f"loop{suffix}"
    loop.symlink_to(loop)
    r = runner.invoke(app, ["inspect", str(loop)])
    assert r.exit_code == 2 and "symbolic link loop" in r.stderr, r.output


@pytest.mark.parametrize("suffix", [".pt", ".pt2"])
def test_fifo_and_device_are_refused_without_reading(tmp_path, suffix):
    import os

    fifo = tmp_path / f"pipe{suffix}"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes: the test would hang
    r = runner.invoke(app, ["inspect", str(fifo)])
    assert r.exit_code == 2 and "FIFO" in r.stderr, r.output
    link = tmp_path / f"zero{suffix}"
    link.symlink_to("/dev/zero")  # reading it never ends
    r = runner.invoke(app, ["inspect", str(link)])
    assert r.exit_code == 2 and "is a device" in r.stderr, r.output


def test_unreadable_checkpoint_is_a_user_error(tmp_path, monkeypatch):
    """A PermissionError (here raised by torch.load, as for a file root cannot read on NFS)
    is one `error:` line with exit 2, not an internal error."""
    path = tmp_path / "m.pt"
    torch.save(_tiny().state_dict(), path)

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(torch, "load", denied)
    r = runner.invoke(app, ["inspect", str(path), "--arch", "hinge_resnet20"])
    assert r.exit_code == 2 and "cannot read" in r.stderr and "Permission denied" in r.stderr, r.output


@pytest.mark.skipif(__import__("os").geteuid() == 0, reason="root reads files whatever their mode")
def test_chmod_000_checkpoint(tmp_path):
    path = tmp_path / "m.pt"
    torch.save(_tiny().state_dict(), path)
    path.chmod(0)
    r = runner.invoke(app, ["inspect", str(path)])
    assert r.exit_code == 2 and "permission denied" in r.stderr, r.output


# ---- checkpoints whose tensors lie about their size or type --------------------------------


def _hinge20_state(hinge_fixtures) -> dict:
    obj = torch.load(hinge_fixtures / "hinge_resnet20_cifar10.pt", weights_only=True)
    return dict(obj.get("state_dict", obj))


@pytest.mark.parametrize("shape", [(100000, 1000, 3, 3), (6, 16, 3, 3)])
def test_zero_stride_tensor_is_refused_before_it_is_expanded(tmp_path, hinge_fixtures, shape):
    """A 538 KB file declaring a 100000x1000x3x3 tensor made gsdeploy allocate 3.7 GB before the
    shape error; an expanded tensor of the right shape is refused as well (it is not real data)."""
    import resource

    state = _hinge20_state(hinge_fixtures)
    key = "features.1.0.body.0.0.weight"
    state[key] = torch.zeros(1).expand(*shape)
    path = tmp_path / "bomb.pt"
    torch.save(state, path)
    assert path.stat().st_size < 1 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(LoadError, match=f"tensor {key} declares shape .* stores only 4 bytes"):
        load_model(str(path), arch="hinge_resnet20")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KB: far below 3.7 GB


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_legacy_pickle_protocols_are_one_line_and_never_run(tmp_path, hinge_fixtures, protocol):
    """A legacy (non-zip) torch.save file in pickle protocol 3+ made torch print a two-line
    UserWarning on stderr before the error; in protocol 4 and 5 (whose FRAME opcode torch's safe
    loader cannot read) a plain state_dict was called 'pickled Python objects (such as a whole
    nn.Module)'. A payload in the same protocols must still never run."""
    import warnings

    plain = tmp_path / "legacy.pt"
    torch.save(_hinge20_state(hinge_fixtures), plain, _use_new_zipfile_serialization=False, pickle_protocol=protocol)
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}, protocol=protocol))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        if protocol == 3:  # the safe loader reads protocol 3
            assert load_model(str(plain), arch="hinge_resnet20").module is not None
        else:
            with pytest.raises(LoadError, match=f"legacy .non-zip. PyTorch checkpoint in pickle protocol {protocol}"):
                load_model(str(plain), arch="hinge_resnet20")
        with pytest.raises(LoadError, match="--trust"):
            load_model(str(evil))
    assert not [w for w in seen if "pickle protocol" in str(w.message)], [str(w.message) for w in seen]
    assert not marker.exists()


@pytest.mark.parametrize("dtype", [torch.int64, torch.complex64, torch.bool, torch.int8])
def test_non_float_checkpoint_weights_are_refused(tmp_path, hinge_fixtures, dtype):
    state = _hinge20_state(hinge_fixtures)
    key = "features.1.0.body.0.0.weight"
    state[key] = (state[key] * 100).to(dtype)
    path = tmp_path / "int.pt"
    torch.save(state, path)
    for arch in ("hinge_resnet20", None):  # named at load time, with or without --arch
        with pytest.raises(LoadError, match=f"weights must be floating point; found {key}"):
            load_model(str(path), arch=arch)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_inf_weights_are_named_at_load(tmp_path, hinge_fixtures, bad):
    state = _hinge20_state(hinge_fixtures)
    key = "features.1.0.body.0.0.weight"
    state[key] = state[key].clone()
    state[key][0, 0, 0, 0] = bad
    path = tmp_path / "nan.pt"
    torch.save(state, path)
    r = runner.invoke(app, ["inspect", str(path), "--arch", "hinge_resnet20"])
    assert r.exit_code == 2 and "NaN or Inf" in r.stderr and key in r.stderr, r.output


def test_nan_weight_in_a_pt2_is_named(tmp_path):
    m = _tiny()
    with torch.no_grad():
        m[0].bias[1] = float("nan")
    path = tmp_path / "nan.pt2"
    torch.export.save(torch.export.export(m, (torch.randn(2, 3, 8, 8),),
                                          dynamic_shapes=({0: torch.export.Dim("b", min=1, max=8)},)), str(path))
    with pytest.raises(LoadError, match="NaN or Inf.*bias"):
        load_model(str(path))


def test_huge_input_shape_is_refused_before_allocating():
    r = runner.invoke(app, ["inspect", "resnet20", "--input-shape", "3x100000x100000"])
    assert r.exit_code == 2 and "values per sample; the limit is" in r.stderr, r.output


def test_out_of_memory_at_an_input_shape_is_not_called_a_shape_error(monkeypatch):
    from gsdeploy.load import probe_input_shape
    from gsdeploy.errors import InputShapeError

    class Hungry(nn.Module):
        def forward(self, x):
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: not enough memory: "
                               "you tried to allocate 123456789012 bytes.")

    with pytest.raises(InputShapeError, match="needs more memory than this machine has") as e:
        probe_input_shape(Hungry(), (3, 4096, 4096))
    assert "cannot take" not in str(e.value)
