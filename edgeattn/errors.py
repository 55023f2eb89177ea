"""Typed errors raised at the library boundary; the CLI catches them once and prints one line."""

from __future__ import annotations


class EdgeAttnError(Exception):
    """Base class. ``hint`` is shown under the one-line message by the CLI."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class ModelError(EdgeAttnError, ValueError):
    """Unknown model, bad override, bad input size for a model."""


class CheckpointError(EdgeAttnError):
    """A checkpoint that cannot be read or does not match the model."""


class ExportError(EdgeAttnError):
    """Export to ONNX failed or cannot honour the request (e.g. the opset)."""


class ToleranceError(EdgeAttnError):
    """ONNX Runtime output differs from PyTorch beyond the stated tolerance."""


class AuditError(EdgeAttnError):
    """The op audit found what the user forbade (e.g. Softmax with --strict-softmax-free)."""


class BenchError(EdgeAttnError):
    """Bad bench/sweep request."""


class RemoteError(EdgeAttnError):
    """SSH transport failure (unreachable, auth, host key) or a failure on the device."""
