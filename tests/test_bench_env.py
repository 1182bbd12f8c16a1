"""Environment capture: complete, fast, and without the hostname."""

from __future__ import annotations

import json
import socket
import time

import torch

import gsdeploy
from gsdeploy.bench.env import capture_env


def test_capture_env_fields_and_speed():
    capture_env()  # first call may read package metadata from disk
    t0 = time.perf_counter()
    env = capture_env()
    assert time.perf_counter() - t0 < 0.5
    for key in ("cpu", "logical_cores", "os", "python", "torch", "onnx", "onnxruntime", "gsdeploy",
                "gpu", "gpu_driver", "cuda", "cudnn"):
        assert key in env, key
    assert env["gsdeploy"] == gsdeploy.__version__
    assert env["torch"] == torch.__version__
    assert isinstance(env["cpu"], str) and env["cpu"]
    assert env["logical_cores"] >= 1
    if not torch.cuda.is_available():
        assert env["gpu"] is None and env["cuda"] is None and env["cudnn"] is None
    json.dumps(env)  # plain data only


def test_no_hostname_recorded():
    host = socket.gethostname()
    env = capture_env()
    assert "hostname" not in env and "node" not in env
    if len(host) >= 4 and host != "localhost":
        assert host not in json.dumps(env)


def test_jetson_fields_are_empty_off_a_jetson(monkeypatch):
    from gsdeploy.bench import env as env_mod

    monkeypatch.setattr(env_mod, "_read", lambda path: "AMD EPYC server board" if "model" in path else None)
    assert env_mod._jetson() == {"jetson_module": None, "power_mode": None}


def test_jetson_module_and_power_mode_are_read(monkeypatch, tmp_path):
    """On a Jetson the device-tree model names the module and `nvpmodel -q` the power mode."""
    from gsdeploy.bench import env as env_mod

    fake = tmp_path / "nvpmodel"
    fake.write_text("#!/bin/sh\necho 'NV Power Mode: MAXN'\necho 0\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setattr(env_mod, "_read", lambda path: "NVIDIA Jetson AGX Orin Developer Kit\x00" if "model" in path else None)
    assert env_mod._jetson() == {"jetson_module": "NVIDIA Jetson AGX Orin Developer Kit", "power_mode": "MAXN (0)"}
