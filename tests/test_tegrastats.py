"""tegrastats parsing on real lines from Orin, Xavier and Nano, and the sampler's plumbing.

Line formats: NVIDIA L4T 32.5 Development Guide, "tegrastats Utility" (rails as `NAME cur/avg`
in mW, JetPack 4):
  https://docs.nvidia.com/jetson/archives/l4t-archived/l4t-325/Tegra%20Linux%20Driver%20Package%20Development%20Guide/AppendixTegraStats.html
and the Jetson Linux r35/r36 Orin power page (rail names; JetPack 5+ prints `NAME XmW/YmW`):
  https://docs.nvidia.com/jetson/archives/r36.3/DeveloperGuide/SD/PlatformPowerAndPerformance/JetsonOrinNanoSeriesJetsonOrinNxSeriesAndJetsonAgxOrinSeries.html
The lines themselves are device output published in public repositories (noted per line).
"""

from __future__ import annotations

import stat
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gsdeploy.bench.tegrastats import (TegrastatsSampler, detect_module, parse_line, tegrastats_unavailable_reason,
                                       total_power_mw)
from gsdeploy.errors import GsdeployError, MissingDependencyError

# Jetson Nano, JetPack 4.6.1 (fixture of a Prometheus tegrastats exporter's tests).
NANO = ("RAM 1923/3964MB (lfb 2x2MB) SWAP 191/1982MB (cached 6MB) IRAM 0/252kB(lfb 252kB) "
        "CPU [5%@1224,4%@1224,3%@1224,6%@1224] EMC_FREQ 0%@1600 GR3D_FREQ 0%@76 APE 25 PLL@37C CPU@40C "
        "PMIC@50C GPU@40C AO@45C thermal@40C POM_5V_IN 1750/1628 POM_5V_GPU 0/0 POM_5V_CPU 366/406")

# Jetson AGX Xavier, JetPack 4 (fixture of a monitoring agent's tegrastats check). Note
# "GPU@32C" (a temperature) next to "GPU 0/0" (a rail).
XAVIER = ("RAM 1903/15692MB (lfb 3251x4MB) CPU [1%@1190,1%@1190,2%@1190,0%@1190,0%@1190,0%@1190,0%@1190,0%@1190] "
          "EMC_FREQ 0% GR3D_FREQ 0% AO@32.5C GPU@32C Tboard@32C Tdiode@34.75C AUX@31.5C CPU@33.5C thermal@32.9C "
          "PMIC@100C GPU 0/0 CPU 216/216 SOC 864/864 CV 0/0 VDDRQ 144/144 SYS5V 1889/1889")

# Jetson AGX Orin, JetPack 5/6: the rail part as logged on a device (a user's benchmark script);
# the fields before it in the common JetPack 5 layout.
ORIN_AGX = ("RAM 2448/30536MB (lfb 6384x4MB) SWAP 0/15268MB (cached 0MB) CPU [0%@729,0%@729,0%@729,0%@729,"
            "off,off,off,off,off,off,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 0%@[0,0] VIC_FREQ 729 APE 174 "
            "CPU@45.968C Tboard@34C SOC2@42.75C Tdiode@35.5C SOC0@43.218C GPU@-256C tj@45.968C SOC1@42.562C "
            "VDD_GPU_SOC 3212mW/3212mW VDD_CPU_CV 401mW/401mW VIN_SYS_5V0 4543mW/4543mW VDDQ_VDD2_1V8AO 504mW/504mW")

# Jetson Orin Nano, JetPack 6 (a user's notes; tegrastats prefixes a timestamp since r35).
ORIN_NANO = ("04-27-2026 14:59:41 RAM 775/7620MB (lfb 3x4MB) SWAP 0/3810MB (cached 0MB) "
             "CPU [1%@729,0%@729,0%@729,0%@729,0%@729,0%@729] GR3D_FREQ 0% cpu@48.468C soc2@47.531C soc0@48.062C "
             "gpu@48.562C tj@49.156C soc1@49.156C VDD_IN 4761mW/4778mW VDD_CPU_GPU_CV 515mW/501mW VDD_SOC 1428mW/1428mW")

# Jetson TX2 (same monitoring-agent fixtures): VDD_IN is the module input.
TX2 = ("RAM 1345/7829MB (lfb 1290x4MB) SWAP 0/512MB (cached 0MB) CPU [2%@345,off,off,off,off,off] EMC_FREQ 13%@40 "
       "GR3D_FREQ 0%@114 APE 150 BCPU@35C MCPU@35C GPU@41C PLL@35C AO@35.5C Tboard@35C Tdiode@36C PMIC@100C "
       "thermal@35.5C VDD_IN 2003/2658 VDD_CPU 320/518 VDD_GPU 400/735 VDD_SOC 400/415 VDD_WIFI 0/0 VDD_DDR 240/348")


def test_nano_rails_and_total():
    rails = parse_line(NANO)
    assert rails == {"POM_5V_IN": 1750, "POM_5V_GPU": 0, "POM_5V_CPU": 366}  # current, not average
    assert detect_module(rails) == "nano"
    # POM_5V_IN is the module input; GPU and CPU are parts of it, never added on top.
    assert total_power_mw(rails, "nano") == 1750 == total_power_mw(rails)


def test_xavier_rails_and_total():
    rails = parse_line(XAVIER)
    assert rails == {"GPU": 0, "CPU": 216, "SOC": 864, "CV": 0, "VDDRQ": 144, "SYS5V": 1889}
    assert detect_module(rails) == "xavier-agx"
    assert total_power_mw(rails) == 0 + 216 + 864 + 0 + 144 + 1889


def test_orin_agx_rails_and_total():
    rails = parse_line(ORIN_AGX)
    assert rails == {"VDD_GPU_SOC": 3212, "VDD_CPU_CV": 401, "VIN_SYS_5V0": 4543, "VDDQ_VDD2_1V8AO": 504}
    assert detect_module(rails) == "orin-agx"
    # VDDQ_VDD2_1V8AO is part of VIN_SYS_5V0: not added twice.
    assert total_power_mw(rails, "orin-agx") == 3212 + 401 + 4543


def test_orin_nano_rails_and_total():
    rails = parse_line(ORIN_NANO)
    assert rails == {"VDD_IN": 4761, "VDD_CPU_GPU_CV": 515, "VDD_SOC": 1428}
    assert total_power_mw(rails) == 4761


def test_tx2_uses_vdd_in():
    assert total_power_mw(parse_line(TX2)) == 2003


def test_three_field_form_and_no_rails():
    # Some newer releases print cur/avg/max.
    assert parse_line("VDD_GPU_SOC 5139mW/5000mW/6000mW VDD_CPU_CV 3268mW/3000mW/4000mW") == {
        "VDD_GPU_SOC": 5139, "VDD_CPU_CV": 3268}
    # A Nano 2GB has no power monitor: RAM/SWAP/IRAM look alike but are not rails.
    assert parse_line("RAM 1923/3964MB (lfb 2x2MB) SWAP 191/1982MB (cached 6MB) IRAM 0/252kB(lfb 252kB)") == {}


def test_total_errors_are_clear():
    with pytest.raises(GsdeployError, match="no POM_5V_IN rail"):
        total_power_mw({"VDD_IN": 1000}, "nano")
    with pytest.raises(GsdeployError, match="cannot tell the Jetson module"):
        total_power_mw({"FOO": 1})
    with pytest.raises(GsdeployError, match="unknown Jetson module kind"):
        total_power_mw({"VDD_IN": 1}, "orin-xl")


@given(rails=st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{1,12}", fullmatch=True).filter(
    lambda n: n not in ("RAM", "SWAP", "IRAM", "LFB")), st.integers(0, 60000), min_size=1, max_size=8),
       unit=st.sampled_from(["", "mW"]))
def test_parse_round_trips_both_unit_styles(rails, unit):
    line = "RAM 100/200MB CPU [1%@100] " + " ".join(f"{n} {v}{unit}/{v + 1}{unit}" for n, v in rails.items())
    assert parse_line(line) == rails


# ---- the sampler -----------------------------------------------------------------------------


def test_sampler_skips_with_reason_without_tegrastats():
    exe = "tegrastats-not-installed-here"
    assert "not on PATH" in tegrastats_unavailable_reason(exe)
    with TegrastatsSampler(50, executable=exe) as s:
        time.sleep(0.01)
    r = s.result(inferences=10)
    assert r.avg_power_w is None and r.energy_per_inference_mj is None
    assert "not on PATH" in r.skipped
    with pytest.raises(MissingDependencyError, match="not on PATH"):
        with TegrastatsSampler(50, executable=exe, strict=True):
            pass


@pytest.mark.skipif(sys.platform == "win32", reason="uses a POSIX script as a stand-in executable")
def test_sampler_averages_lines_and_gives_energy(tmp_path):
    # A stand-in that prints real Nano lines the way tegrastats does (one per --interval):
    # this tests the subprocess plumbing and arithmetic, not a device.
    script = tmp_path / "tegrastats"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys, time\n"
        "interval = int(sys.argv[sys.argv.index('--interval') + 1]) / 1000\n"
        f"line = {NANO!r}\n"
        "while True:\n"
        "    print(line, flush=True)\n"
        "    time.sleep(interval)\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    with TegrastatsSampler(20, executable=str(script)) as s:
        time.sleep(0.5)
    r = s.result(inferences=100)
    assert r.skipped is None, r.skipped
    assert r.module == "nano" and r.samples >= 3
    assert r.avg_power_w == pytest.approx(1.750)
    assert r.energy_j == pytest.approx(1.750 * r.duration_s)
    assert r.energy_per_inference_mj == pytest.approx(r.energy_j / 100 * 1000)
    assert r.duration_s >= 0.5


def test_sampler_with_too_few_samples_says_so(tmp_path):
    script = tmp_path / "tegrastats"
    script.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(5)\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    with TegrastatsSampler(1000, executable=str(script)) as s:
        pass
    r = s.result(inferences=1)
    assert r.avg_power_w is None and "only 0 tegrastats sample" in r.skipped


def test_profile_power_modules_match_the_parser():
    from gsdeploy.bench.tegrastats import MODULE_KINDS
    from gsdeploy.profiles import POWER_MODULES

    assert set(POWER_MODULES) == set(MODULE_KINDS)


def test_sampler_explains_lines_without_rails(tmp_path):
    script = tmp_path / "tegrastats"
    script.write_text(f"#!{sys.executable}\nimport time\nwhile True:\n"
                      "    print('RAM 1923/3964MB (lfb 2x2MB) CPU [5%@1224]', flush=True)\n    time.sleep(0.02)\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    with TegrastatsSampler(20, executable=str(script)) as s:
        time.sleep(0.3)
    r = s.result(inferences=1)
    assert r.avg_power_w is None and "no power rails" in r.skipped and "root" in r.skipped
