"""Bench subjects at reduced precision: the int8 (Q/DQ) or fp16 ONNX of each fp32 subject, timed in
the same interleaved run as the fp32 ones, so one table shows what pruning alone, int8 alone and
both together buy against the dense fp32 baseline. Also the top-1 of every subject on
`--eval-data`, for the rows.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from gsdeploy.accuracy import evaluate
from gsdeploy.bench.sweep import Subject
from gsdeploy.errors import GsdeployError
from gsdeploy.export.quantize import Int8Scheme, convert_fp16, quantize_int8, scheme_for
from gsdeploy.limits import comma_list
from gsdeploy.sample_data import Samples

REDUCED = ("fp16", "int8")


def reduced_name(name: str, precision: str) -> str:
    return f"{name}[{precision}]"


def reduced_subjects(subjects: list[Subject], precisions: list[str], scheme: Int8Scheme,
                     calibration: Samples | None, workdir: Path) -> list[Subject]:
    """One more subject per fp32 subject and reduced precision, made from its ONNX file. They
    are never the baseline: the dense fp32 model stays the one reference of the run."""
    extra = []
    for p in precisions:
        if p not in REDUCED:
            raise GsdeployError(f"reduced precision must be one of {', '.join(REDUCED)}, not '{p}'")
        for s in subjects:
            if s.onnx_path is None:
                raise GsdeployError(f"--precision {p} needs the ONNX file of '{s.name}' (ORT engines)")
            path = Path(workdir) / f"{s.role}_{p}.onnx"
            if p == "int8":
                if calibration is None:
                    raise GsdeployError("int8 needs calibration data: --calib-data DIR|FILE.npz "
                                        "(or --random-calibration for latency-only work)")
                quantize_int8(s.onnx_path, path, calibration.x, scheme)
            else:
                convert_fp16(s.onnx_path, path, keep_io_types=True)
            extra.append(replace(s, name=reduced_name(s.name, p), role="compressed", onnx_path=path,
                                 artifact_bytes=path.stat().st_size, max_rel_err=None, precision=p,
                                 weights_bytes=None, trt_engines={}, origin=s.name, module=None))
    return extra


def add_accuracy(subjects: list[Subject], originals: dict[str, object], samples: Samples) -> list[Subject]:
    """Each subject with its top-1 on `samples` (None without labels) and its top-1 agreement
    with the original module it was made from (`originals`: fp32 subject name -> module)."""
    out = []
    for s in subjects:
        module = originals.get(s.origin or s.name)
        if module is None or s.onnx_path is None:
            out.append(s)
            continue
        a = evaluate(module, {s.name: s.onnx_path}, samples).artifacts[0]
        out.append(replace(s, top1=a.top1, top1_agreement=a.agreement))
    return out


def bench_scheme(targets) -> Int8Scheme:
    """The int8 scheme of the bench's targets (one Q/DQ file serves them all, so they must agree);
    reduced-precision ONNX subjects run on ONNX Runtime targets only."""
    bad = [t.label for t in targets if t.engine != "ort"]
    if bad:
        raise GsdeployError(f"fp16/int8 ONNX subjects run on ONNX Runtime engines only, not {', '.join(bad)}")
    schemes = {scheme_for("ort", tuple(t.providers)) for t in targets}
    if len(schemes) > 1:
        raise GsdeployError(f"targets {', '.join(t.label for t in targets)} want different int8 schemes "
                            f"({', '.join(sorted(s.name for s in schemes))}); bench them in separate runs")
    return schemes.pop()


def parse_precisions(text: str | None) -> list[str]:
    """`--precision fp32,int8` -> ["fp32", "int8"] (checked names, order kept, no repeats)."""
    if text is None:
        return []
    names = list(dict.fromkeys(comma_list(text, "--precision", "fp32, fp16 or int8")))
    for p in names:
        if p not in ("fp32",) + REDUCED:
            raise GsdeployError(f"--precision takes fp32, fp16 and int8 (comma-separated), not '{p}'")
    return names


def reduced_precisions(names: list[str], targets) -> tuple[str, ...] | None:
    """On ONNX Runtime CPU targets, which run fp32 graphs, `--precision` names the reduced ONNX
    subjects to time beside the fp32 ones (fp32 is always there): returns them. On any other
    target it is the engine's own precision: returns None and the caller passes it to the target."""
    if targets and all(t.engine == "ort" and not t.on_gpu for t in targets):
        extra = tuple(p for p in names if p != "fp32")
        if extra and "fp32" not in names:
            raise GsdeployError(f"--precision {','.join(names)}: an ONNX Runtime CPU target runs the fp32 graph (precision "
                                f"must be fp32 on a cpu device); to time the {extra[0]} ONNX beside it, pass "
                                f"--precision fp32,{','.join(extra)}")
        return extra
    if len(names) > 1:
        raise GsdeployError(f"--precision {','.join(names)}: several precisions in one run are for ONNX Runtime CPU "
                            "targets (the int8/fp16 ONNX beside fp32); give one precision for "
                            + ", ".join(t.label for t in targets))
    return None
