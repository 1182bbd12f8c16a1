"""Backends behind one interface (`Runner`): ONNX Runtime, PyTorch and TensorRT.

Runner modules import their engine lazily, so importing this package never needs
onnxruntime or a GPU.
"""

from gsdeploy.bench.runners.base import Runner, RunnerLike

__all__ = ["Runner", "RunnerLike"]
