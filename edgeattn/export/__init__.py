"""torch → ONNX export, op audit and verification. Lazy: importing this package does not import
torch, onnx or onnxruntime; the names below load their module on first use."""

from __future__ import annotations

from edgeattn import lazy_names

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


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
