"""trtexec command lines and --exportTimes parsing: pure, no trtexec needed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gsdeploy.bench.trtexec import (EXPORT_TIMES_KEYS, TrtexecError, TrtexecTiming, find_trtexec,
                                    parse_export_times, parse_trtexec_version, trtexec_command)
from gsdeploy.errors import MissingDependencyError

ENGINE = Path("/models/resnet56.engine")
SHAPES = {"input": (8, 3, 32, 32)}

# Every timing-related switch trtexec has, in either version.
BOOL_SWITCHES = {"--noDataTransfers", "--useSpinWait", "--useCudaGraph", "--includeDataTransfers", "--noSpinWait",
                 "--noCudaGraph", "--separateProfileRun"}


def flags(argv: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for a in argv[1:]:
        k, _, v = a.partition("=")
        out[k] = v if _ else None
    return out


def test_numeric_timing_flags_are_always_explicit():
    for version in ((10, 16, 0), (11, 1, 0)):
        f = flags(trtexec_command(ENGINE, SHAPES, version).argv)
        assert f["--loadEngine"] == str(ENGINE)
        assert f["--shapes"] == "input:8x3x32x32"
        assert f["--warmUp"] == "500" and f["--iterations"] == "100" and f["--duration"] == "10"
        assert f["--avgRuns"] == "10" and f["--percentile"] == "50,90,95,99"
        assert f["--infStreams"] == "1" and f["--sleepTime"] == "0" and f["--idleTime"] == "0"


def test_trt10_default_timing_turns_transfers_off_and_spin_wait_on():
    cmd = trtexec_command(ENGINE, SHAPES, (10, 16, 0))
    switches = set(cmd.argv) & BOOL_SWITCHES
    # 10.x defaults are transfers on, spin off, graph off: our choice needs two switches
    assert switches == {"--noDataTransfers", "--useSpinWait"}
    assert cmd.settings["data_transfers"] is False and cmd.settings["spin_wait"] is True
    assert cmd.settings["cuda_graph"] is False and cmd.settings["trtexec_version"] == "10.16.0"


def test_trt11_default_timing_turns_cuda_graph_off():
    cmd = trtexec_command(ENGINE, SHAPES, (11, 1, 0))
    # 11.x defaults are transfers off, spin on, graph on: our choice needs only --noCudaGraph,
    # and none of the 10.x switches (deprecated no-ops with warnings in 11.x)
    assert set(cmd.argv) & BOOL_SWITCHES == {"--noCudaGraph"}


@pytest.mark.parametrize("transfers, spin, graph", [(t, s, g) for t in (False, True) for s in (False, True)
                                                     for g in (False, True)])
def test_same_settings_mean_the_same_measurement_on_both_versions(transfers, spin, graph):
    timing = TrtexecTiming(data_transfers=transfers, spin_wait=spin, cuda_graph=graph)
    a10 = set(trtexec_command(ENGINE, SHAPES, (10, 8, 0), timing).argv)
    a11 = set(trtexec_command(ENGINE, SHAPES, (11, 0, 0), timing).argv)
    # effective state per version = its default, flipped by the switch present (trtexec's
    # boolean switches can only be present, never set to false)
    eff10 = ("--noDataTransfers" not in a10, "--useSpinWait" in a10, "--useCudaGraph" in a10)
    eff11 = ("--includeDataTransfers" in a11, "--noSpinWait" not in a11, "--noCudaGraph" not in a11)
    assert eff10 == eff11 == (transfers, spin, graph)
    assert not a10 & {"--includeDataTransfers", "--noSpinWait", "--noCudaGraph"}  # 11.x-only switches
    assert not a11 & {"--noDataTransfers", "--useSpinWait", "--useCudaGraph", "--separateProfileRun"}


def test_profile_export_runs_separately():
    c10 = trtexec_command(ENGINE, SHAPES, (10, 16, 0), export_profile=Path("p.json"))
    c11 = trtexec_command(ENGINE, SHAPES, (11, 1, 0), export_profile=Path("p.json"))
    assert "--separateProfileRun" in c10.argv and "--exportProfile=p.json" in c10.argv
    assert "--separateProfileRun" not in c11.argv and "--exportProfile=p.json" in c11.argv  # always separate in 11
    assert c10.settings["separate_profile_run"] is True


def test_export_times_and_custom_timing():
    timing = TrtexecTiming(warmup_ms=200, iterations=1000, duration_s=2.5, percentiles=(90, 99.9))
    f = flags(trtexec_command(ENGINE, {}, (10, 3, 0), timing, export_times=Path("/tmp/t.json"), exe="/x/trtexec").argv)
    assert f["--exportTimes"] == "/tmp/t.json" and f["--duration"] == "2.5" and f["--percentile"] == "90,99.9"
    assert "--shapes" not in f  # static engine: no shapes needed
    assert trtexec_command(ENGINE, {}, (10, 3, 0), exe="/x/trtexec").argv[0] == "/x/trtexec"


def test_extra_args_cannot_override_pinned_timing():
    cmd = trtexec_command(ENGINE, SHAPES, (10, 16, 0), extra_args=["--useManagedMemory"])
    assert cmd.argv[-1] == "--useManagedMemory" and cmd.settings["extra_args"] == ["--useManagedMemory"]
    for bad in ("--useCudaGraph", "--iterations=5", "--noSpinWait"):
        with pytest.raises(TrtexecError, match="pins"):
            trtexec_command(ENGINE, SHAPES, (11, 1, 0), extra_args=[bad])


def test_command_rejections():
    with pytest.raises(TrtexecError, match="TensorRT 10"):
        trtexec_command(ENGINE, SHAPES, (8, 6, 1))
    with pytest.raises(TrtexecError, match="cannot be passed"):
        trtexec_command(ENGINE, {"a:b": (1, 3)}, (10, 16, 0))
    with pytest.raises(TrtexecError):
        TrtexecTiming(iterations=0)
    with pytest.raises(TrtexecError):
        TrtexecTiming(percentiles=(101.0,))


def test_trtexec_version_from_either_line():
    assert parse_trtexec_version("[01/01/2026-00:00:00] [I] TensorRT version: 10.16.0\n") == (10, 16, 0)
    banner = "&&&& RUNNING TensorRT.trtexec [TensorRT v110100] [b106] # trtexec --help\n=== Model Options ==="
    assert parse_trtexec_version(banner) == (11, 1, 0)
    assert parse_trtexec_version("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] [b26]") == (10, 3, 0)
    with pytest.raises(TrtexecError):
        parse_trtexec_version("command not found")


def _iteration(start: float, h2d: float, compute: float, d2h: float, enq: float = 0.05) -> dict:
    # one record as exportJSONTrace writes it (samples/common/sampleReporting.cpp)
    return {"startEnqMs": start, "endEnqMs": start + enq,
            "startH2dMs": start, "endH2dMs": start + h2d,
            "startComputeMs": start + h2d, "endComputeMs": start + h2d + compute,
            "startD2hMs": start + h2d + compute, "endD2hMs": start + h2d + compute + d2h,
            "h2dMs": h2d, "computeMs": compute, "d2hMs": d2h, "latencyMs": h2d + compute + d2h}


def _sample_text() -> str:
    rows = [_iteration(1000.0 + i, 0.02, 0.5 + 0.01 * i, 0.01) for i in range(5)]
    # trtexec writes one object per line with " : " separators; json.loads reads it the same
    body = "\n, ".join("{ " + ", ".join(f'"{k}" : {v!r}' for k, v in r.items()) + " }" for r in rows)
    return "[\n  " + body + "\n]\n"


def test_parse_export_times_sample():
    times = parse_export_times(_sample_text())
    assert len(times) == 5
    np.testing.assert_allclose(times.compute_ms, [0.50, 0.51, 0.52, 0.53, 0.54])
    np.testing.assert_allclose(times.latency_ms, times.h2d_ms + times.compute_ms + times.d2h_ms)
    np.testing.assert_allclose(times.enqueue_ms, 0.05)
    assert times.latency_s[0] == pytest.approx(0.53e-3)
    assert times.compute_s[-1] == pytest.approx(0.54e-3)
    s = times.summary()
    assert s["iterations"] == 5 and s["compute_ms_p50"] == pytest.approx(0.52)


def test_parse_export_times_without_transfers():
    # --noDataTransfers (10.x) / default (11.x): h2d and d2h are zero, latency == compute
    rows = [_iteration(float(i), 0.0, 0.4, 0.0) for i in range(3)]
    times = parse_export_times(json.dumps(rows).encode())
    np.testing.assert_allclose(times.latency_ms, times.compute_ms)


def test_parse_export_times_accepts_decoded_json():
    rows = [_iteration(0.0, 0.0, 1.0, 0.0)]
    assert len(parse_export_times(rows)) == 1


@pytest.mark.parametrize("text, fragment", [
    ("not json", "not JSON"),
    ("{}", "JSON list"),
    ("[]", "no iterations"),
    ("[1]", "not an object"),
    (json.dumps([{k: 1.0 for k in EXPORT_TIMES_KEYS if k != "computeMs"}]), "lacks computeMs"),
    (json.dumps([{k: ("x" if k == "latencyMs" else 1.0) for k in EXPORT_TIMES_KEYS}]), "latencyMs is not"),
    (json.dumps([{k: (-1.0 if k == "computeMs" else 1.0) for k in EXPORT_TIMES_KEYS}]), "negative computeMs"),
])
def test_parse_export_times_rejects_malformed(text, fragment):
    with pytest.raises(TrtexecError, match=fragment):
        parse_export_times(text)


def test_missing_trtexec_is_a_missing_dependency(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no trtexec anywhere on it
    if Path("/usr/src/tensorrt/bin/trtexec").exists():
        pytest.skip("trtexec installed in JetPack's location")
    with pytest.raises(MissingDependencyError, match="trtexec was not found"):
        find_trtexec()
