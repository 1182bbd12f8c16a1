"""Errors the CLI turns into one line on stderr and a non-zero exit."""

from __future__ import annotations


class GsdeployError(Exception):
    """A problem with the user's input or environment, reported without a traceback."""

    exit_code = 2


class LoadError(GsdeployError):
    """The model file is missing, unreadable, untrusted, or does not fit the architecture."""


class ArchMismatchError(LoadError):
    """The tensors of a checkpoint do not fit the requested architecture."""


class InputShapeError(GsdeployError):
    """The model cannot take the requested input shape."""


class NumericMismatchError(GsdeployError):
    """A transform or export changed the outputs by more than the tolerance."""

    exit_code = 3


class MissingDependencyError(GsdeployError):
    """An optional engine (TensorRT, torch-tensorrt, a GPU) is not available here."""


class OutputPathError(GsdeployError):
    """The output path cannot be written."""


class UnremovedZerosError(GsdeployError):
    """--strict: the checkpoint has zero channels that the passes could not remove."""


class TrtConfigError(GsdeployError, ValueError):
    """Invalid TensorRT build settings. A ValueError too, so plain callers can catch it as one."""


class EngineCompatError(GsdeployError):
    """An engine built by another TensorRT version or for another GPU."""
