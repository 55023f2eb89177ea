"""torch → ONNX export, op audit and verification. Lazy: importing this package does not import
torch, onnx or onnxruntime; the names below load their module on first use."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "export_onnx": ("edgeattn.export.onnx", "export_onnx"),
    "ExportResult": ("edgeattn.export.onnx", "ExportResult"),
    "SUPPORTED_OPSETS": ("edgeattn.export.onnx", "SUPPORTED_OPSETS"),
    "audit_model": ("edgeattn.export.audit", "audit_model"),
    "block_of": ("edgeattn.export.naming", "block_of"),
    "simplify_model": ("edgeattn.export.simplify", "simplify_model"),
    "verify_runtime": ("edgeattn.export.verify", "verify_runtime"),
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'edgeattn.export' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
