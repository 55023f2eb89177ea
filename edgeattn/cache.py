"""The export cache: where ``bench``, ``sweep`` and ``profile`` keep their exported .onnx files
(content-hash named, each with its .onnx.json sidecar), how big it is, and clearing it.

Location: ``$EDGEATTN_CACHE`` if set, else ``$XDG_CACHE_HOME/edgeattn/exports``, else
``~/.cache/edgeattn/exports``. ``edgeattn export`` writes there only with ``--cache-dir``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path


def cache_dir() -> Path:
    from edgeattn.bench.core import default_cache_dir

    return default_cache_dir()


#: an export-cache entry: ``<stem>-<16 hex of its cache key>.onnx`` (edgeattn.export.plan),
#: edgeattn's only when its ``.onnx.json`` sidecar carries the export schema
_ENTRY = re.compile(r"^.+-[0-9a-f]{16}\.onnx$")
#: a graph built by edgeattn.bench (ops, floor): ``<kind>_<shape>_<16 hex of its bytes>.onnx``,
#: edgeattn's only when its bytes hash to that name
_GRAPH = re.compile(r"^(?P<kind>[a-z]+_[a-z0-9]+)_.*_(?P<hash>[0-9a-f]{16})\.onnx$")
#: what an interrupted write of ours can leave: ``.<entry name>.<random>.tmp`` (mkstemp) and
#: the writability probes
_TMP = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{6,}\.tmp$")
_PROBE = re.compile(r"^\.edgeattn-(?:probe|preflight)-[A-Za-z0-9_]{6,}$")
#: a temporary file younger than this may belong to an export still running: left alone
TMP_GRACE_S = 600.0


@dataclass(frozen=True)
class CacheInfo:
    path: Path
    exists: bool
    files: int  # every file under path
    models: int  # .onnx files
    bytes: int
    foreign: int = 0  # files under path that edgeattn did not write (clear leaves them)

    def as_dict(self) -> dict:
        return {
            "path": str(self.path),
            "exists": self.exists,
            "files": self.files,
            "models": self.models,
            "bytes": self.bytes,
            "foreign_files": self.foreign,
        }


@dataclass(frozen=True)
class Cleared:
    """What ``clear_cache`` removed (edgeattn's files only) and how many files it left."""

    path: Path
    exists: bool
    files: int
    models: int
    bytes: int
    left: int  # files edgeattn did not write, left untouched

    def as_dict(self) -> dict:
        return {
            "path": str(self.path),
            "exists": self.exists,
            "removed_files": self.files,
            "removed_models": self.models,
            "removed_bytes": self.bytes,
            "left_files": self.left,
        }


def _checked_dir(path: str | os.PathLike | None) -> Path:
    """The cache path; ``EdgeAttnError`` (one line) if it exists and is not a directory."""
    from edgeattn.errors import EdgeAttnError

    p = Path(path) if path is not None else cache_dir()
    if os.path.lexists(p) and not p.is_dir():
        raise EdgeAttnError(
            f"export cache {str(p)!r} is not a directory",
            hint="point EDGEATTN_CACHE at a directory (it is created when first needed)",
        )
    return p


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _export_sidecar_ok(sidecar: Path) -> bool:
    """An ``.onnx.json`` sidecar written by edgeattn's export (its schema)."""
    if not _is_regular(sidecar):
        return False
    try:
        with open(sidecar, "rb") as f:
            data = json.loads(f.read(64 << 20).decode("utf-8"))
    except (OSError, ValueError):
        return False
    schema = data.get("schema") if isinstance(data, dict) else None
    return isinstance(schema, str) and schema.startswith("edgeattn.export/")


def _graph_ok(path: Path, digest: str) -> bool:
    """A bench-built graph (``edgeattn.bench.ops.write_cached``): its bytes hash to its name."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return False
    return h.hexdigest()[:16] == digest


def _named_ours(name: str) -> bool:
    """Could ``name`` be one of the files edgeattn writes here (by its naming alone)?"""
    if name.endswith(".onnx.json"):
        name = name[: -len(".json")]
    return bool(_ENTRY.match(name) or _GRAPH.match(name))


def _classify(root: Path) -> tuple[list[Path], list[Path], list[Path]]:
    """(edgeattn's files, files it did not write, temporary files of a write that may still be
    running) directly in ``root``. Only regular files count as ours; subfolders, links and
    anything else are never ours (their files are counted as not ours)."""
    from edgeattn.bench.core import GRAPH_METHODS

    ours: list[Path] = []
    foreign: list[Path] = []
    busy: list[Path] = []
    now = time.time()
    for child in sorted(root.iterdir()):
        name = child.name
        if child.is_dir() and not child.is_symlink():
            foreign += [Path(r) / n for r, _d, ns in os.walk(child) for n in ns]
            continue
        if not _is_regular(child):
            foreign.append(child)
            continue
        mine = False
        if name.endswith(".onnx.json"):
            mine = _ENTRY.match(name[:-5]) is not None and _export_sidecar_ok(child)
        elif name.endswith(".onnx"):
            g = _GRAPH.match(name)
            if g and g.group("kind") in GRAPH_METHODS:
                mine = _graph_ok(child, g.group("hash"))
            if not mine and _ENTRY.match(name):
                mine = _export_sidecar_ok(root / (name + ".json"))
        else:
            t = _TMP.match(name)
            if (t and _named_ours(t.group("name"))) or _PROBE.match(name):
                try:
                    young = now - os.lstat(child).st_mtime < TMP_GRACE_S
                except OSError:
                    young = False
                (busy if young else ours).append(child)
                continue
        (ours if mine else foreign).append(child)
    return ours, foreign, busy


def cache_info(path: str | os.PathLike | None = None) -> CacheInfo:
    """Size of the export cache (``path``, default :func:`cache_dir`); ``EdgeAttnError`` if the
    path is not a directory."""
    p = _checked_dir(path)
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
    try:
        foreign = len(_classify(p)[1])
    except OSError:
        foreign = 0
    return CacheInfo(p, True, files, models, size, foreign)


def clear_cache(path: str | os.PathLike | None = None) -> Cleared:
    """Remove what edgeattn wrote in the export cache: its entries (``<stem>-<hash>.onnx`` with
    an export sidecar, and the sidecars), the bench's graphs (named by the hash of their bytes)
    and the temporary files of interrupted writes. Every other file and folder is left byte for
    byte; ``Cleared.left`` counts them. The directory itself stays."""
    from edgeattn.errors import EdgeAttnError

    p = _checked_dir(path)
    if not p.is_dir():
        return Cleared(p, False, 0, 0, 0, 0)
    try:
        ours, foreign, _busy = _classify(p)
    except OSError as exc:
        raise EdgeAttnError(
            f"cannot read the export cache {str(p)!r}: {exc.strerror or exc}"
        ) from None
    files = models = size = 0
    for child in ours:
        try:
            n = os.lstat(child).st_size
            child.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise EdgeAttnError(
                f"cannot remove {str(child)!r}: {exc.strerror or exc}", hint="check its permissions"
            ) from None
        files, size = files + 1, size + n
        models += child.name.endswith(".onnx")
    return Cleared(p, True, files, models, size, len(foreign))


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
