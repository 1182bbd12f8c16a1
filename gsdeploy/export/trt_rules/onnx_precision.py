"""What an ONNX file says about its own precision (Q/DQ nodes, fp16 tensors) and inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable


@dataclass(frozen=True)
class OnnxPrecision:
    has_qdq: bool  # QuantizeLinear/DequantizeLinear: explicitly quantized (int8 decided by the model)
    has_fp16: bool  # fp16 initialisers, casts or tensors: already mixed precision
    input_names: tuple[str, ...]
    input_shapes: tuple[tuple[int | None, ...], ...]  # None for symbolic dims (e.g. a dynamic batch)


_QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def onnx_precision_info(onnx_path: Path) -> OnnxPrecision:
    """Read the precision-relevant facts from an ONNX file (structure only, no weights needed)."""
    import onnx  # optional here: only TensorRT exports read ONNX precision, and the report path never does
    from onnx import TensorProto  # optional here, as above

    model = onnx.load(str(onnx_path), load_external_data=False)
    g = model.graph
    fp16 = TensorProto.FLOAT16

    def nodes(graph) -> Iterable:
        for n in graph.node:
            yield n
            for a in n.attribute:  # If/Loop bodies
                if a.type == onnx.AttributeProto.GRAPH:
                    yield from nodes(a.g)
                for sub in a.graphs:
                    yield from nodes(sub)

    has_qdq = False
    has_fp16 = any(t.data_type == fp16 for t in g.initializer)
    for n in nodes(g):
        if n.op_type in _QDQ_OPS:
            has_qdq = True
        if n.op_type == "Cast" and any(a.name == "to" and a.i == fp16 for a in n.attribute):
            has_fp16 = True
        if n.op_type == "Constant" and any(a.t.data_type == fp16 for a in n.attribute if a.HasField("t")):
            has_fp16 = True
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.tensor_type.elem_type == fp16:
            has_fp16 = True
    init_names = {t.name for t in g.initializer}
    inputs = [vi for vi in g.input if vi.name not in init_names]
    shapes = tuple(tuple(d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim)
                   for vi in inputs)
    return OnnxPrecision(has_qdq, has_fp16, tuple(vi.name for vi in inputs), shapes)
