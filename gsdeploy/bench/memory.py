"""Memory of a deployed model: weights, artifact on disk, activations, peak RSS / GPU memory.

Four different questions, four different numbers:
  - `weight_bytes`       parameters + buffers of the torch module (from gsdeploy/metrics.py);
  - `artifact_bytes`     what the deployable file(s) weigh on disk;
  - `activation_estimate` intermediate tensors a forward pass needs at its peak, from the graph;
  - `ort_peak_rss`       what ONNX Runtime really allocates, measured in a child process (a torch
                         GPU engine's allocator peak is read by the sweep around its own timed runs).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from torch.fx import symbolic_trace
from torch.fx.passes.shape_prop import ShapeProp

from gsdeploy.metrics import weight_bytes  # re-exported: one implementation only
from gsdeploy.errors import GsdeployError, MissingDependencyError
from gsdeploy.loaders import cpu_target
from gsdeploy.target import Target

__all__ = ["weight_bytes", "artifact_bytes", "ort_peak_rss", "activation_estimate",
           "activation_profile", "ActivationProfile"]


# ---- on disk --------------------------------------------------------------------------------


def artifact_bytes(path: str | os.PathLike) -> int:
    """Bytes on disk of an artifact: a file, a directory (summed), and for ONNX also the
    external-data files its initializers point to (models over 2 GB keep weights beside the
    .onnx file, and the deployable size is both)."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    if not p.is_file():
        raise GsdeployError(f"artifact {p} does not exist")
    size = p.stat().st_size
    if p.suffix == ".onnx":
        size += sum(f.stat().st_size for f in _onnx_external_files(p))
    return size


def _onnx_external_files(path: Path) -> list[Path]:
    try:
        import onnx  # heavy: onnx
        from onnx.external_data_helper import ExternalDataInfo, uses_external_data  # heavy: onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return []
    files: set[Path] = set()
    for t in model.graph.initializer:
        if uses_external_data(t):
            f = path.parent / ExternalDataInfo(t).location
            if f.is_file():
                files.add(f.resolve())
    return sorted(files)


# ---- peak RSS of an ONNX Runtime session, in a child process --------------------------------
#
# Measured in a fresh child because a process's peak RSS never goes down: in the parent it
# would include torch, earlier sessions and whatever the test runner loaded. The child makes
# its session with gsdeploy.loaders (the one place sessions are made, so the target's
# threads, spinning and optimisation level apply) and imports nothing heavier; a second child
# that imports the same modules and stops there gives the baseline, so the difference is what
# the session (weights, arena, activations, threads) adds.

_CHILD = textwrap.dedent("""
    import json, resource, sys
    def peak():
        # VmHWM (peak resident set) from /proc is exact on Linux; ru_maxrss is the fallback
        # (kilobytes on Linux, bytes on macOS).
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return r if sys.platform == "darwin" else r * 1024
    args = json.loads(sys.argv[1])
    sys.path.insert(0, args["path"])
    import numpy as np
    import onnxruntime as ort
    from gsdeploy.inputs import seeded_input
    from gsdeploy.loaders import ort_session
    from gsdeploy.target import Target
    if args["onnx"] is None:
        print(json.dumps({"peak": peak()}))
        sys.exit(0)
    sess = ort_session(args["onnx"], Target.from_dict(args["target"]))
    inp = sess.get_inputs()[0]
    if args["shape"]:
        shape = [args["batch"], *args["shape"]]
    else:
        dims = list(inp.shape)[1:]
        if not all(isinstance(d, int) and d > 0 for d in dims):
            sys.exit("the model's input shape %s is not static; pass input_shape" % (inp.shape,))
        shape = [args["batch"], *dims]
    x = seeded_input(tuple(shape))
    for _ in range(args["runs"]):
        sess.run(None, {inp.name: x})
    print(json.dumps({"peak": peak()}))
""")
# Where the child finds this gsdeploy (a source tree that is not installed works too).
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


def _child_peak(payload: dict, timeout_s: float) -> int:
    try:
        proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(payload)], capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise GsdeployError(f"measuring peak RSS timed out after {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        if "No module named 'onnxruntime'" in proc.stderr:
            raise MissingDependencyError("onnxruntime is not installed; peak RSS cannot be measured")
        raise GsdeployError(f"peak-RSS child process failed: {tail}")
    try:
        return int(json.loads(proc.stdout.strip().splitlines()[-1])["peak"])
    except (ValueError, KeyError, IndexError):
        raise GsdeployError(f"peak-RSS child process printed no result: {proc.stdout[-200:]!r}") from None


def ort_peak_rss(onnx_path: str | os.PathLike, batch: int, input_shape: tuple[int, ...] | None = None,
                 target: Target | None = None, runs: int = 5, timeout_s: float = 300.0) -> int:
    """Peak resident memory (bytes) an ONNX Runtime CPU session adds: session creation plus
    `runs` inferences at `batch` with `target`'s settings (default: ORT CPU on every core),
    minus a child that only imports the same modules.

    `input_shape` is one sample without the batch axis; None takes it from the model (its
    non-batch dimensions must then be static). The number includes ORT's memory arena, which
    keeps what the largest run needed, so it is the footprint a deployment must provision.
    """
    path = Path(onnx_path)
    if not path.is_file():
        raise GsdeployError(f"ONNX file {path} does not exist")
    if batch <= 0:
        raise ValueError("batch must be positive")
    payload = {"onnx": str(path), "batch": int(batch), "shape": list(input_shape) if input_shape else None,
               "target": (target or cpu_target()).to_dict(), "runs": max(1, int(runs)), "path": _PACKAGE_ROOT}
    peak = _child_peak(payload, timeout_s)
    return max(0, peak - _baseline_peak(timeout_s))


@functools.lru_cache(maxsize=1)
def _baseline_peak(timeout_s: float) -> int:
    # The import-only child is the same for every measurement in one process: measure it once.
    return _child_peak({"onnx": None, "path": _PACKAGE_ROOT}, timeout_s)


# ---- activations from the graph -------------------------------------------------------------


@dataclass(frozen=True)
class ActivationProfile:
    """Sizes of the intermediate tensors of one forward pass (bytes).

    peak_bytes  the most bytes alive at once when nodes run in graph order and each tensor is
                freed after its last use: what an engine with perfect buffer reuse needs
                (input included, weights excluded).
    sum_bytes   every intermediate summed: what it needs with no reuse at all.
    largest_bytes the biggest single tensor.
    method      "fx" (torch.fx graph with liveness) or "hooks" (fallback, see below).
    """

    peak_bytes: int
    sum_bytes: int
    largest_bytes: int
    nodes: int
    method: str


def _nbytes(meta: object) -> int:
    """Bytes of a ShapeProp tensor_meta (or a tuple/list of them, for multi-output nodes)."""
    if meta is None:
        return 0
    shape = getattr(meta, "shape", None)
    dtype = getattr(meta, "dtype", None)
    if shape is None or dtype is None:
        # TensorMetadata is itself a NamedTuple, so test for it before treating a tuple as
        # the metadata of several outputs.
        if isinstance(meta, (list, tuple, dict)):
            items = meta.values() if isinstance(meta, dict) else meta
            return sum(_nbytes(m) for m in items)
        return 0
    n = 1
    for d in shape:
        n *= int(d)
    return n * torch.empty((), dtype=dtype).element_size()


def _fx_profile(module: nn.Module, x: torch.Tensor) -> ActivationProfile:
    gm = symbolic_trace(module)
    with torch.no_grad():
        ShapeProp(gm).propagate(x)
    nodes = list(gm.graph.nodes)
    order = {n: i for i, n in enumerate(nodes)}
    size: dict[object, int] = {}
    last_use: dict[object, int] = {}
    for n in nodes:
        # get_attr nodes are weights/buffers, not activations.
        size[n] = 0 if n.op in ("get_attr", "output") else _nbytes(n.meta.get("tensor_meta"))
        last_use[n] = max((order[u] for u in n.users), default=order[n])
    frees: dict[int, list[object]] = {}
    for n in nodes:
        frees.setdefault(last_use[n], []).append(n)
    alive = peak = 0
    for i, n in enumerate(nodes):
        alive += size[n]
        peak = max(peak, alive)  # a node's output coexists with its inputs while it runs
        alive -= sum(size[m] for m in frees.get(i, ()))
    sizes = list(size.values())
    return ActivationProfile(peak_bytes=peak, sum_bytes=sum(sizes), largest_bytes=max(sizes, default=0),
                             nodes=len(nodes), method="fx")


def _hooks_profile(module: nn.Module, x: torch.Tensor) -> ActivationProfile:
    """Fallback for models torch.fx cannot trace (data-dependent control flow): forward hooks
    on leaf modules see each module's input and output, so the peak is estimated as the
    largest input + output of one leaf (functional ops between modules are invisible)."""
    records: list[tuple[int, int]] = []

    def tensor_bytes(obj: object) -> int:
        if isinstance(obj, torch.Tensor):
            return obj.numel() * obj.element_size()
        if isinstance(obj, (list, tuple)):
            return sum(tensor_bytes(o) for o in obj)
        return 0

    def hook(_m: nn.Module, inp: tuple, out: object) -> None:
        records.append((tensor_bytes(inp), tensor_bytes(out)))

    handles = [m.register_forward_hook(hook) for m in module.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
    xb = tensor_bytes(x)
    outs = [o for _, o in records]
    return ActivationProfile(peak_bytes=max([i + o for i, o in records], default=xb),
                             sum_bytes=xb + sum(outs), largest_bytes=max([xb, *outs]),
                             nodes=len(records), method="hooks")


def activation_profile(module: nn.Module, input_shape: tuple[int, ...], batch: int = 1) -> ActivationProfile:
    """Activation sizes of one forward pass at `batch` (fp32 CPU tensors, weights excluded).

    torch.fx ShapeProp rather than forward hooks, because hooks only see nn.Modules: the adds
    of residual blocks, DReLU written as functions, the zero-padding of option-A shortcuts and
    concats are invisible to them, and those are exactly the tensors that stay alive across a
    block. The fx graph also gives the execution order, so each tensor's lifetime (producer to
    last consumer) is known and the peak, not just the sum, can be computed. Hooks remain the
    fallback for modules fx cannot trace.
    """
    if batch <= 0:
        raise ValueError("batch must be positive")
    was_training = module.training
    module.eval()
    x = torch.zeros((batch, *input_shape))
    try:
        try:
            return _fx_profile(module, x)
        except Exception:  # torch.fx raises many types for untraceable code
            return _hooks_profile(module, x)
    finally:
        module.train(was_training)


def activation_estimate(module: nn.Module, input_shape: tuple[int, ...], batch: int = 1) -> int:
    """Peak bytes of live activations in one forward pass (see `activation_profile`)."""
    return activation_profile(module, input_shape, batch).peak_bytes
