"""Import timm for the cross-checks against it, when it is installed (it is not a dependency).

timm imports torchvision at module load (``timm.data``); the checks use only timm's models, so
where torchvision is missing it is stubbed for the duration of the import (as the official-code
runs in shared/reference did) and the stubs are removed again afterwards.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from typing import Any
from unittest import mock


class _StubFinder:
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name == "torchvision" or name.startswith("torchvision."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: Any) -> types.ModuleType:
        mod = types.ModuleType(spec.name)
        mod.__path__ = []

        def getattr_(attr: str) -> Any:
            if attr.startswith("__"):
                raise AttributeError(attr)
            return mock.MagicMock(name=f"{spec.name}.{attr}")

        mod.__getattr__ = getattr_  # type: ignore[method-assign]
        return mod

    def exec_module(self, module: types.ModuleType) -> None:
        pass


def import_timm() -> Any:
    """timm, or None where it is not installed (or cannot be imported)."""
    if importlib.util.find_spec("timm") is None:
        return None
    if "timm" in sys.modules:
        return sys.modules["timm"]
    stub = importlib.util.find_spec("torchvision") is None
    finder = _StubFinder()
    if stub:
        sys.meta_path.insert(0, finder)
    try:
        import timm
    except Exception:  # noqa: BLE001 - a broken timm install only skips the comparisons
        return None
    finally:
        if stub:
            sys.meta_path.remove(finder)
            for name in [
                n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")
            ]:
                del sys.modules[name]
    return timm
