"""ONNX export with a dynamic batch axis, checked in ONNX Runtime against the original module."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from gsdeploy.errors import GsdeployError
from gsdeploy.inputs import sample_inputs
from gsdeploy.loaders import ort_session
from gsdeploy.numerics import Verification, compare_outputs, output_arrays
from gsdeploy.target import Target

OPSET = 18
INPUT_NAME, OUTPUT_NAME = "input", "output"
ORT_LOG_FATAL_ONLY = 4


EXPORTERS = ("torchscript", "torch.export")


@dataclass(frozen=True)
class OnnxExport:
    """What export_onnx wrote: which exporter, and the node count before and after folding."""

    exporter: str
    nodes_exported: int
    nodes: int  # in the file as written
    folding: str  # "onnxslim X.Y" or why the graph was left as exported


def export_onnx(module: nn.Module, input_shape: tuple[int, ...], path: Path, opset: int = OPSET,
                exporters: tuple[str, ...] = EXPORTERS, fold: bool = True) -> OnnxExport:
    """Write `module` to `path` with a dynamic batch axis, constant-folded (see fold_onnx).

    The TorchScript exporter goes first: on these CNNs it is exact and takes well under a second,
    while the torch.export-based one took 7-12 s per CIFAR ResNet here (torch 2.13). torch has
    deprecated the TorchScript exporter, so the torch.export one takes over wherever it fails or
    is gone; the manifest records which one wrote the file.
    """
    example = (torch.zeros((2, *input_shape)),)
    module = module.eval()
    with torch.no_grad():
        outputs = output_names(len(output_arrays(module(*example))))  # a model may return several
    for name in ("torch.onnx", "torch.onnx._internal.exporter._registration", "torch.export"):
        logging.getLogger(name).setLevel(logging.ERROR)
    errors = []
    for exporter in exporters:
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
                warnings.simplefilter("ignore")
                if exporter == "torchscript":
                    torch.onnx.export(module, example, str(path), dynamo=False, opset_version=min(opset, 17),
                                      input_names=[INPUT_NAME], output_names=outputs,
                                      dynamic_axes={n: {0: "batch"} for n in (INPUT_NAME, *outputs)})
                    # The tracer bakes a batch size it reads through an op it does not trace
                    # (torch.export's aten.sym_size feeding aten.view: a ShuffleNet's channel
                    # shuffle) into the graph; such a file fails at any other batch.
                    _run_at_batch(path, input_shape, 1)
                else:
                    batch = torch.export.Dim("batch", min=1, max=65536)
                    torch.onnx.export(module, example, str(path), dynamo=True, opset_version=opset,
                                      input_names=[INPUT_NAME], output_names=outputs,
                                      dynamic_shapes=({0: batch},), external_data=False, verbose=False)
            break
        except Exception as e:  # noqa: BLE001 - any failure of one exporter falls through to the next
            errors.append(f"{exporter}: {str(e).splitlines()[0][:160] if str(e) else type(e).__name__}")
    else:
        raise GsdeployError("ONNX export failed (" + "; ".join(errors) + ")")
    if not fold:
        n = len(_load_graph(path).node)
        return OnnxExport(exporter, n, n, "not folded (fold=False)")
    return OnnxExport(exporter, *fold_onnx(path))


def output_names(count: int) -> list[str]:
    """"output", then "output_1", "output_2", ... for a model with several outputs."""
    return [OUTPUT_NAME] + [f"{OUTPUT_NAME}_{i}" for i in range(1, count)]


def _run_at_batch(path: Path, input_shape: tuple[int, ...], batch: int) -> None:
    """Run the file once in ORT at `batch`; raises if it cannot (a batch baked in)."""
    # quiet: ORT would log the failing node on stderr before the exception says it
    session = ort_session(path, tune=lambda so: setattr(so, "log_severity_level", ORT_LOG_FATAL_ONLY))
    for out in session.run(None, {session.get_inputs()[0].name: np.zeros((batch, *input_shape), np.float32)}):
        if out.ndim and out.shape[0] != batch:
            raise GsdeployError(f"the exported graph returns batch {out.shape[0]} for an input of batch {batch}")


def _load_graph(path: Path):
    import onnx  # heavy: onnx

    return onnx.load(str(path), load_external_data=False).graph


def fold_onnx(path: Path) -> tuple[int, int, str]:
    """Constant-fold `path` in place with onnxslim: the exporters leave subgraphs that compute
    constants at run time (the option-A shortcut's Pad amounts: Shape/Slice/Concat/Cast chains,
    ~30 nodes in a CIFAR ResNet-56). Returns (nodes before, nodes after, what folded it). The
    caller's ORT check runs on the folded file, so folding is verified like the export itself.
    A folding failure leaves the exported file as it was and says why."""
    import onnx  # heavy: onnx

    before = len(_load_graph(path).node)
    try:
        import onnxslim  # heavy: onnxslim

        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            folded = onnxslim.slim(str(path))
        if folded is None:
            raise GsdeployError("onnxslim returned no model")
        onnx.save(folded, str(path))
    except Exception as e:  # noqa: BLE001 - an unfolded but verified model is still correct
        return before, before, f"not folded (onnxslim: {str(e).splitlines()[0][:160] if str(e) else type(e).__name__})"
    return before, len(folded.graph.node), f"onnxslim {onnxslim.__version__}"


@dataclass
class OnnxCheck:
    """ORT output vs the original computed in float64, judged against the original's own float32 error."""

    verification: Verification  # ORT vs original (float64), with the tolerance applied
    original_fp32_rel_err: float  # the original module run in float32 vs float64
    tolerance_rule: str


def check_onnx(path: Path, reference: nn.Module, input_shape: tuple[int, ...], batches: tuple[int, ...] = (1, 3),
               seed: int = 0, tolerance: float = 1e-4, target: Target | None = None) -> OnnxCheck:
    """Max abs / rel error of the ONNX model in ORT vs the reference, at several batch sizes
    so that the dynamic batch axis is exercised too. The session comes from the loader with
    `target`'s settings (default: ORT CPU); a GPU target's own precision is checked by its engine.

    The reference output is computed in float64: ill-conditioned nets (deep, random weights) show
    float32 rounding differences above 1e-4 between two correct float32 implementations, so the
    tolerance is max(tolerance, 4 x the original's own float32 error): ORT's float32 kernels
    (blocked layouts, other summation orders) land within a few times torch's own float32 error,
    while an export bug shows up orders of magnitude above it. On well-conditioned models (all
    the official Hinge fixtures, the zoo) that floor is below `tolerance`, so `tolerance` rules.
    """
    import onnx  # heavy: onnx

    onnx.checker.check_model(str(path))
    session = ort_session(path, target)
    ref64 = copy.deepcopy(reference).double().eval()
    exact, fp32, outs = [], [], []  # per run: one array per output of the model, (batch, -1)
    for b in batches:
        for x in sample_inputs(input_shape, b, seed + b):
            with torch.no_grad():
                exact.append([a.reshape(b, -1) for a in output_arrays(ref64(x.double()))])
                fp32.append([a.reshape(b, -1) for a in output_arrays(reference(x))])
            got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
            if len(got) != len(exact[-1]):
                raise GsdeployError(f"the ONNX model has {len(got)} outputs, the original {len(exact[-1])}")
            outs.append([o.reshape(b, -1).astype(np.float64) for o in got])

    def by_output(runs: list[list[np.ndarray]]) -> list[np.ndarray]:
        return [np.concatenate(per_output) for per_output in zip(*runs)]

    exact_all = by_output(exact)
    own = compare_outputs(exact_all, by_output(fp32), tolerance=tolerance).max_rel_err
    allowed = max(tolerance, 4 * own)
    rule = f"max({tolerance:g}, 4 x original's own float32 error {own:.2e})"
    return OnnxCheck(compare_outputs(exact_all, by_output(outs), tolerance=allowed), own, rule)
