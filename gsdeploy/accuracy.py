"""Top-1 accuracy on real data: the original module, the deployed fp32 artifact and a
reduced-precision artifact, each against the labels (when given) and against the original.

Without labels, accuracy cannot be measured; agreement with the original's top-1 can, and
100 - agreement bounds the accuracy any artifact can have lost, so that is the drop used then.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from gsdeploy.errors import GsdeployError
from gsdeploy.loaders import ort_session
from gsdeploy.sample_data import SampleDataError, Samples

EVAL_BATCH = 64


class AccuracyDropError(GsdeployError):
    """A reduced-precision artifact loses more accuracy than allowed; nothing is written."""

    exit_code = 3


@dataclass(frozen=True)
class ModelAccuracy:
    name: str
    top1: float | None  # percent of samples whose top-1 class is the label; None without labels
    agreement: float  # percent of samples whose top-1 class equals the original's


@dataclass
class AccuracyReport:
    source: str
    samples: int
    labelled: bool
    original: ModelAccuracy
    artifacts: list[ModelAccuracy] = field(default_factory=list)

    def drop(self, name: str) -> float:
        """Points lost by artifact `name`: original top-1 - its top-1, or 100 - agreement without labels."""
        a = next(m for m in self.artifacts if m.name == name)
        if self.labelled:
            return float(self.original.top1 - a.top1)
        return float(100.0 - a.agreement)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "samples": self.samples, "labelled": self.labelled,
                "metric": "top-1 vs labels" if self.labelled else "top-1 agreement with the original (no labels)",
                "original": asdict(self.original), "artifacts": [asdict(a) | {"drop_pts": self.drop(a.name)}
                                                                   for a in self.artifacts]}


def torch_logits(module: nn.Module, x: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    outs = []  # loaded modules are in eval mode already (an ExportedProgram's module refuses .eval())
    with torch.no_grad():
        for i in range(0, len(x), batch):
            outs.append(module(torch.from_numpy(x[i:i + batch])).float().numpy())
    return np.concatenate(outs)


def onnx_logits(path: Path, x: np.ndarray, batch: int = EVAL_BATCH) -> np.ndarray:
    session = ort_session(Path(path))
    inp = session.get_inputs()[0]
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    outs = [session.run(None, {inp.name: x[i:i + batch].astype(dtype)})[0].astype(np.float32)
            for i in range(0, len(x), batch)]
    return np.concatenate(outs)


def top1_predictions(logits: np.ndarray, what: str) -> np.ndarray:
    """The top-1 class of each row of class scores (N, classes)."""
    if logits.ndim != 2:
        raise GsdeployError(f"accuracy needs class scores of shape (N, classes); {what} gives {logits.shape}")
    return logits.argmax(axis=1)


def _percent(mask: np.ndarray) -> float:
    return float(100.0 * mask.mean()) if mask.size else 0.0


def evaluate(original: nn.Module, artifacts: dict[str, Path], samples: Samples) -> AccuracyReport:
    """Top-1 of the original module and of each ONNX artifact on `samples`."""
    ref_logits = torch_logits(original, samples.x)
    ref = top1_predictions(ref_logits, "the original model")
    y = samples.y
    if y is not None and len(y) and int(y.max()) >= ref_logits.shape[1]:
        raise SampleDataError(f"{samples.source}: labels go up to {int(y.max())} but the model has "
                              f"{ref_logits.shape[1]} classes; the labels do not match this model")

    def top1(pred: np.ndarray) -> float | None:
        return _percent(pred == y) if y is not None else None

    report = AccuracyReport(samples.source, len(samples), y is not None,
                            ModelAccuracy("original", top1(ref), 100.0))
    for name, path in artifacts.items():
        pred = top1_predictions(onnx_logits(path, samples.x), name)
        report.artifacts.append(ModelAccuracy(name, top1(pred), _percent(pred == ref)))
    return report


def check_drop(report: AccuracyReport, name: str, max_drop: float) -> None:
    """Refuse artifact `name` when it loses more than `max_drop` points (both numbers in the error)."""
    drop = report.drop(name)
    if drop > max_drop:
        a = next(m for m in report.artifacts if m.name == name)
        what = (f"top-1 {a.top1:.2f}% vs the original's {report.original.top1:.2f}%" if report.labelled
                else f"top-1 agreement with the original {a.agreement:.2f}% (no labels)")
        raise AccuracyDropError(f"the {name} artifact drops {drop:.2f} points on {report.samples} samples of "
                                f"{report.source} ({what}), more than --max-accuracy-drop {max_drop:g}; nothing written")
