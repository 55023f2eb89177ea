"""edgeattn: softmax-free ViT attention (SOFT, SimA) on edge devices.

The public API is lazy: ``import edgeattn`` does not import torch, onnx or onnxruntime, so the
CLI starts fast and the device-side runtime (``edgeattn.runtime``) stays torch-free.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
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


def lazy_names(
    package: str, table: dict[str, tuple[str, str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` (PEP 562) for a package whose public names load their
    module on first use: ``table`` maps each name to (module, attribute); a loaded name is kept
    in the package so the next access is a plain lookup."""

    def __getattr__(name: str) -> Any:
        try:
            module, attr = table[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module), attr)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(sys.modules[package].__all__)

    return __getattr__, __dir__


__getattr__, __dir__ = lazy_names(__name__, _LAZY)
