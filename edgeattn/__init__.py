"""edgeattn: softmax-free ViT attention (SOFT, SimA) on edge devices.

The public API is lazy: ``import edgeattn`` does not import torch, onnx or onnxruntime, so the
CLI starts fast and the device-side runtime (``edgeattn.runtime``) stays torch-free.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "create_model": ("edgeattn.models.registry", "create_model"),
    "list_models": ("edgeattn.models.registry", "list_models"),
    "register_model": ("edgeattn.models.registry", "register_model"),
    "model_info": ("edgeattn.models.registry", "model_info"),
    "export_onnx": ("edgeattn.export.onnx", "export_onnx"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'edgeattn' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
