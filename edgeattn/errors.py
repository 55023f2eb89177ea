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


class SpecError(EdgeAttnError, ValueError):
    """A measurement spec the device runtime would reject, found on the host before connecting."""


class RemoteError(EdgeAttnError):
    """SSH transport failure (unreachable, auth, host key) or a failure on the device."""


# -- exit codes: one table for the CLI, the bench (its runtime subprocess) and the remote helper.
# The device runtime (edgeattn.runtime.__main__, Python 3.8, imports nothing of the host package)
# keeps its own copy of the first five; tests/test_cli_help.py checks they agree.
EXIT_OK = 0
EXIT_ERROR = 1  #: a typed error, shown as one line (and a hint)
EXIT_USAGE = 2  #: bad arguments (click's usage error; the runtime's bad spec)
EXIT_RUN_FAILED = 3  #: it ran, and some measurement failed (its record says why)
EXIT_INTERRUPTED = 130  #: Ctrl-C (128 + SIGINT)
EXIT_TERMINATED = 143  #: SIGTERM (128 + SIGTERM)
