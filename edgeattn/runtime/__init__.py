"""edgeattn.runtime: the device side. Times ONNX models with ONNX Runtime and writes records.

Shipped alone to devices (a zipapp of this package), so it imports only the standard library,
numpy and onnxruntime (psutil if present), and those lazily: ``python -m edgeattn.runtime check``
works where numpy or onnxruntime are missing. Python >= 3.8 syntax (Jetson JetPack 5).

    from edgeattn.runtime import measure
    record = measure({"model": "block.onnx", "inputs": {"x": [1, 197, 192]}, "device": "cpu"})

``edgeattn.runtime.measure`` is the *function* (it shadows the submodule of the same name, which
stays reachable as ``importlib.import_module("edgeattn.runtime.measure")`` or through
``from edgeattn.runtime.measure import RunSpec``).
"""

import importlib
from typing import Any, List

__version__ = "0.1.0"

# measure.py, session.py and records.py import only the standard library at module level (numpy and
# onnxruntime are imported inside functions), so binding these eagerly keeps `check` working.
from .measure import RunSpec, make_inputs, measure, stats  # noqa: E402

_LAZY = {
    "create_session": ("session", "create_session"),
    "DEVICES": ("session", "DEVICES"),
    "RuntimeSpecError": ("session", "RuntimeSpecError"),
    "ProviderUnavailableError": ("session", "ProviderUnavailableError"),
    "ProviderFallbackError": ("session", "ProviderFallbackError"),
    "fingerprint": ("sysinfo", "fingerprint"),
    "SCHEMA": ("records", "SCHEMA"),
    "append_jsonl": ("records", "append_jsonl"),
    "read_jsonl": ("records", "read_jsonl"),
    "done_keys": ("records", "done_keys"),
    "summarize_profile": ("profile", "summarize"),
    "classify": ("profile", "classify"),
}

__all__ = ["__version__", "RunSpec", "make_inputs", "measure", "stats"] + list(_LAZY)


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'edgeattn.runtime' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(__all__)
