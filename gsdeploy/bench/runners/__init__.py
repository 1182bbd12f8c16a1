"""Backends behind one interface (`Runner`): ONNX Runtime and PyTorch today, TensorRT later.

Runner modules import their engine lazily, so importing this package never needs
onnxruntime or a GPU.
"""

from gsdeploy.bench.runners.base import INPUT_SEED, Runner, RunnerLike, seeded_input

__all__ = ["INPUT_SEED", "Runner", "RunnerLike", "seeded_input"]
