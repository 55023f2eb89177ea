"""The export cache: where ``bench``, ``sweep`` and ``profile`` keep their exported .onnx files
(content-hash named, each with its .onnx.json sidecar), how big it is, and clearing it.

Location: ``$EDGEATTN_CACHE`` if set, else ``$XDG_CACHE_HOME/edgeattn/exports``, else
``~/.cache/edgeattn/exports``. ``edgeattn export`` writes there only with ``--cache-dir``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path


def cache_dir() -> Path:
    from edgeattn.bench.core import default_cache_dir

    return default_cache_dir()


@dataclass(frozen=True)
class CacheInfo:
    path: Path
    exists: bool
    files: int  # every file under path
    models: int  # .onnx files
    bytes: int

    def as_dict(self) -> dict:
        return {
            "path": str(self.path),
            "exists": self.exists,
            "files": self.files,
            "models": self.models,
            "bytes": self.bytes,
        }


def cache_info(path: str | os.PathLike | None = None) -> CacheInfo:
    """Size of the export cache (``path``, default :func:`cache_dir`)."""
    p = Path(path) if path is not None else cache_dir()
    if not p.is_dir():
        return CacheInfo(p, False, 0, 0, 0)
    files = models = size = 0
    for root, _dirs, names in os.walk(p):
        for n in names:
            try:
                size += os.lstat(os.path.join(root, n)).st_size
            except OSError:
                continue
            files += 1
            models += n.endswith(".onnx")
    return CacheInfo(p, True, files, models, size)


def clear_cache(path: str | os.PathLike | None = None) -> CacheInfo:
    """Remove everything in the export cache; returns what was there. The directory itself stays
    (empty), so a running bench that exports next recreates nothing by surprise."""
    from edgeattn.errors import EdgeAttnError

    before = cache_info(path)
    if not before.exists:
        return before
    for child in before.path.iterdir():
        try:
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        except OSError as exc:
            raise EdgeAttnError(
                f"cannot clear {child}: {exc.strerror or exc}", hint="check its permissions"
            ) from None
    return before


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
