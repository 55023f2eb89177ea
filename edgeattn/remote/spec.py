"""A measure spec made ready for a device, checked here first: the device runtime's own checks
(:func:`validate_spec`), every model file found and hashed (:class:`ModelFile`), and the device's
copy of the spec with model paths into the run directory (:func:`prepare_spec`)."""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeattn.runtime.records import sha256_file


@dataclass(frozen=True)
class ModelFile:
    local: Path
    sha256: str
    size: int
    remote_rel: str  # path inside the run directory, as written into the device spec

    @property
    def cache_name(self) -> str:
        return f"models/{self.sha256}.onnx"


_SHA_CACHE: dict[tuple[str, int, int], str] = {}
_SHA_LOCK = threading.Lock()


def _sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    with _SHA_LOCK:
        if key in _SHA_CACHE:
            return _SHA_CACHE[key]
    digest = sha256_file(str(path))  # the one file hash; this cache only skips re-reading
    with _SHA_LOCK:
        _SHA_CACHE[key] = digest
    return digest


def prepare_spec(
    spec: Mapping[str, Any],
    model_files: Mapping[str, str | os.PathLike] | None = None,
    base_dir: str | os.PathLike | None = None,
) -> tuple[dict[str, Any], list[ModelFile]]:
    """The device's copy of ``spec`` (model paths point into the run directory) and the files.

    The spec is first checked here as the device's runtime will check it (:func:`validate_spec`).
    A run's model reference (its ``model``, else ``defaults.model``) is looked up in
    ``model_files`` first, else resolved against ``base_dir`` (default: the current directory);
    with a ``base_dir`` given (``remote run --spec``: the spec's folder) a relative reference must
    stay inside it (``../`` out of it is refused; an absolute path is taken as given).
    On the device each file keeps its base name (``models/<k>/<name>``), so records' ``model.path``
    and default run ids are the same as a local run of the same spec.
    """
    if not isinstance(spec, Mapping) or not isinstance(spec.get("runs"), list) or not spec["runs"]:
        raise ValueError(
            'bad spec: expected {"defaults": {...}, "runs": [...]} with at least one run'
        )
    validate_spec(spec, base_dir)
    out = copy.deepcopy(dict(spec))
    defaults = out.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ValueError("bad spec: 'defaults' must be an object")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    mapping = {str(k): Path(v) for k, v in (model_files or {}).items()}
    by_key: dict[tuple[str, str], ModelFile] = {}
    files: list[ModelFile] = []

    def locate(ref: Any, where: str) -> ModelFile:
        if not isinstance(ref, str) or not ref:
            raise ValueError(f"bad spec: {where}: 'model' must be a path to an .onnx file")
        local = mapping.get(ref)
        if local is None:
            p = Path(os.path.expanduser(ref))
            local = p if p.is_absolute() else base / p
            if not p.is_absolute() and base_dir is not None and not _inside(local, base):
                raise ValueError(
                    f"bad spec: {where}: model path {ref!r} leads out of the spec's folder "
                    f"{str(base)!r}; give a path inside that folder, or an absolute path"
                )
        if not local.is_file():
            raise FileNotFoundError(f"{where}: model file not found: {local}")
        name = local.name
        if any(ord(c) < 32 or c == "\x7f" for c in name):
            raise ValueError(f"{where}: model file name {name!r} has control characters")
        sha = _sha256(local.resolve())
        key = (sha, name)
        if key not in by_key:
            mf = ModelFile(
                local.resolve(), sha, local.stat().st_size, f"models/{len(by_key)}/{name}"
            )
            by_key[key] = mf
            files.append(mf)
        return by_key[key]

    default_ref = defaults.get("model")
    for i, run in enumerate(out["runs"]):
        if not isinstance(run, dict):
            raise ValueError(f"bad spec: runs[{i}] must be an object")
        ref = run.get("model", default_ref)
        if ref is None:
            raise ValueError(f"bad spec: runs[{i}]: no 'model' (and none in defaults)")
        run["model"] = locate(ref, f"runs[{i}]").remote_rel
    defaults.pop("model", None)
    if "defaults" in out:
        out["defaults"] = defaults
    return out, files


def _inside(path: Path, folder: Path) -> bool:
    """Is ``path`` inside ``folder``, by its words (``..`` resolved lexically, links kept)?"""
    p = os.path.normpath(os.path.abspath(path))
    f = os.path.normpath(os.path.abspath(folder))
    return p == f or p.startswith(f.rstrip(os.sep) + os.sep)


def validate_spec(spec: Any, base_dir: str | os.PathLike | None = None) -> None:
    """The device runtime's own checks of a spec, run here before anything connects: fields and
    their types and ranges (``RunSpec``), unique run ids, the ``paired`` groups and ``isolated``
    (docs/spec.schema.json). ``SpecError`` (a ``ValueError``) naming the bad field and what is
    valid."""
    from edgeattn.runtime.__main__ import UsageError, parse_paired, parse_spec

    try:
        runs = parse_spec(spec, str(base_dir) if base_dir is not None else os.getcwd())
        parse_paired(spec, runs)
    except UsageError as exc:
        from edgeattn.errors import SpecError

        raise SpecError(str(exc).splitlines()[0]) from None
    _check_cpus(spec.get("cpus"))


def _check_cpus(cpus: Any) -> None:
    """``cpus``: a core list is checked here; a cluster word (big, little, all) is the device's
    to resolve (this machine's clusters say nothing about it)."""
    from edgeattn.runtime.conditions import CPU_WORDS, parse_cpus

    if cpus is None or (isinstance(cpus, str) and cpus.strip().lower() in CPU_WORDS):
        return
    try:
        parse_cpus(cpus)
    except ValueError as exc:
        from edgeattn.errors import SpecError

        raise SpecError(f"bad spec: {str(exc).splitlines()[0]}") from None
