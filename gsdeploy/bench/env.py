"""The environment a measurement was taken in, recorded with every result.

Latency numbers are meaningless without the machine and software that produced them, so
this is captured once per run and copied into each row. It must stay cheap (well under
0.5 s): nothing here imports an engine that is not already loaded or touches the network,
and the one process it may spawn is `nvpmodel -q`, on a Jetson only. The hostname is deliberately not recorded: results are published.
"""

from __future__ import annotations

import functools
import importlib.metadata as md
import os
import shutil
import subprocess
import platform
import sys
from pathlib import Path

import gsdeploy
from gsdeploy.target import usable_cpus


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict:
    """Model name, physical core count and SIMD level from /proc/cpuinfo (Linux)."""
    text = _read("/proc/cpuinfo") or ""
    model = None
    cores: set[tuple[str, str]] = set()
    flags: set[str] = set()
    phys = core = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("model name", "Model", "Hardware") and model is None and value:
            model = value  # "Model"/"Hardware" are what ARM boards (Jetson) print
        elif key == "physical id":
            phys = value
        elif key == "core id":
            core = value
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif not line.strip() and core is not None:
            cores.add((phys or "0", core))
            phys = core = None
    if core is not None:
        cores.add((phys or "0", core))
    # ORT's convolutions are blocked by the SIMD width (16 channels with AVX-512, 8 with
    # AVX2), which decides whether a pruned width pays off, so the level is worth a column.
    if "avx512f" in flags:
        isa = "avx512"
    elif "avx2" in flags:
        isa = "avx2"
    elif "asimd" in flags:
        isa = "neon"
    else:
        isa = None
    return {"model": model or platform.processor() or platform.machine() or "unknown CPU",
            "physical_cores": len(cores) or None, "isa": isa}


def cpu_name() -> str:
    return _cpuinfo()["model"]


def cpu_isa() -> str | None:
    """'avx512' | 'avx2' | 'neon' | None: the SIMD level, which sets ORT's conv block width."""
    return _cpuinfo()["isa"]


def dist_version(*names: str) -> tuple[str | None, str | None]:
    for name in names:
        try:
            return md.version(name), name
        except md.PackageNotFoundError:
            continue
    return None, None


def ort_version() -> tuple[str | None, str | None]:
    """(version, distribution). onnxruntime and onnxruntime-gpu install the same module; the
    distribution name says which build this is."""
    version, dist = dist_version("onnxruntime-gpu", "onnxruntime")
    mod = sys.modules.get("onnxruntime")
    if mod is not None and getattr(mod, "__version__", None):
        version = mod.__version__  # what is actually loaded wins over package metadata
    return version, dist


def _gpu() -> dict | None:
    """GPU facts from torch, only when torch already sees a CUDA device."""
    import torch  # heavy: torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    driver = None
    text = _read("/proc/driver/nvidia/version")  # desktop/server driver; absent on Jetson
    if text:
        for token in text.split():
            if token[:1].isdigit() and token.count(".") >= 1:
                driver = token
                break
    if driver is None:
        try:  # pynvml ships with many CUDA setups; optional
            import pynvml  # optional: NVML bindings, not a dependency

            pynvml.nvmlInit()
            driver = pynvml.nvmlSystemGetDriverVersion()
            driver = driver.decode() if isinstance(driver, bytes) else driver
        except Exception:
            driver = None
    l4t = _read("/etc/nv_tegra_release")
    return {
        "gpu": props.name,
        "gpu_count": torch.cuda.device_count(),
        "gpu_memory_gib": round(props.total_memory / 2**30, 1),
        "gpu_capability": f"{props.major}.{props.minor}",
        "gpu_driver": driver,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "l4t": l4t.splitlines()[0].strip("# ").strip() if l4t else None,
    }


def gpu_clocks() -> dict:
    """The current SM and memory clocks and the maximum SM clock (MHz) of the GPU torch uses,
    from NVML (pynvml) or else `nvidia-smi`; {} when neither can tell (no GPU, Jetson without
    NVML). Read once per timed GPU group: a clock below its maximum means throttling or unlocked
    clocks, the usual reason for a noisy GPU row."""
    import torch  # heavy: torch

    if not torch.cuda.is_available():
        return {}
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    bus = f"{getattr(props, 'pci_domain_id', 0):08X}:{getattr(props, 'pci_bus_id', 0):02X}:" \
          f"{getattr(props, 'pci_device_id', 0):02X}.0"
    try:
        import pynvml  # optional: NVML bindings, not a dependency

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByPciBusId(bus)
        return {"gpu_sm_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
                "gpu_mem_clock_mhz": pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_MEM),
                "gpu_max_sm_clock_mhz": pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM)}
    except Exception:  # noqa: BLE001 - no pynvml, or NVML cannot see this GPU: try the tool
        pass
    if shutil.which("nvidia-smi") is None:
        return {}
    try:
        out = subprocess.run(["nvidia-smi", "-i", bus, "--query-gpu=clocks.sm,clocks.mem,clocks.max.sm",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=10)
        sm, mem, max_sm = (int(v.strip()) for v in out.stdout.strip().splitlines()[0].split(","))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return {}
    return {"gpu_sm_clock_mhz": sm, "gpu_mem_clock_mhz": mem, "gpu_max_sm_clock_mhz": max_sm}


def _jetson() -> dict:
    """Module name and power mode on a Jetson (they change its latency as much as the model does)."""
    model = _read("/proc/device-tree/model")
    if not model or "jetson" not in model.lower():
        return {"jetson_module": None, "power_mode": None}
    mode = None
    if shutil.which("nvpmodel"):
        try:
            out = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=3).stdout
            # "NV Power Mode: MAXN\n0" -> "MAXN (0)"
            lines = [l.strip() for l in out.splitlines() if l.strip()]
            name = next((l.split(":", 1)[1].strip() for l in lines if "power mode" in l.lower()), None)
            mode = f"{name} ({lines[-1]})" if name and lines[-1].isdigit() else name
        except (OSError, subprocess.SubprocessError):
            mode = None
    return {"jetson_module": model.strip("\x00 \n"), "power_mode": mode}


def capture_env() -> dict:
    """A flat dict describing this machine and the software stack."""
    import torch  # heavy: torch

    cpu = _cpuinfo()
    onnx_version, _ = dist_version("onnx")
    ort, ort_dist = ort_version()
    governor = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    env = {
        "cpu": cpu["model"],
        "cpu_isa": cpu["isa"],
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cpus(),
        "physical_cores": cpu["physical_cores"],
        "cpu_governor": governor.strip() if governor else None,
        # platform.platform() is kernel + libc, never the node name.
        "os": platform.platform(),
        "python": platform.python_version(),
        "gsdeploy": gsdeploy.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "onnx": onnx_version,
        "onnxruntime": ort,
        "onnxruntime_dist": ort_dist,
        "gpu": None, "gpu_count": 0, "gpu_memory_gib": None, "gpu_capability": None,
        "gpu_driver": None, "cuda": None, "cudnn": None, "l4t": None,
    }
    gpu = _gpu()
    if gpu:
        env.update(gpu)
    env.update(_jetson())
    return env
