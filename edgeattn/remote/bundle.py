"""What travels to a device: the runtime zipapp (built in memory, byte-for-byte reproducible) and
the upload step's tar stream (the zipapp and models the device lacks, plus ``spec.json``)."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import zipapp
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from edgeattn.errors import RemoteError

if TYPE_CHECKING:
    from edgeattn.remote.spec import ModelFile

# --------------------------------------------------------------------------------------------------
# the zipapp
# --------------------------------------------------------------------------------------------------
_ZIP_MAIN = (
    '"""edgeattn device runtime (zipapp): python edgeattn-runtime.pyz {measure,env,check} ..."""\n'
    "import sys\n\n"
    "from edgeattn.runtime.__main__ import main\n\n"
    "sys.exit(main())\n"
)
_ZIP_PKG_INIT = '"""edgeattn (device-side subset: edgeattn.runtime only)."""\n'
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)


def _runtime_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "runtime"


def zipapp_bytes(runtime_dir: str | os.PathLike | None = None) -> tuple[bytes, str]:
    """The runtime zipapp in memory and its sha256; deterministic (fixed times, sorted entries)."""
    src = Path(runtime_dir) if runtime_dir is not None else _runtime_dir()
    if not (src / "__main__.py").is_file():
        raise RemoteError(
            f"the device runtime is missing: {src / '__main__.py'} not found",
            hint="edgeattn.runtime must be installed alongside edgeattn.remote",
        )
    files = {"__main__.py": _ZIP_MAIN.encode(), "edgeattn/__init__.py": _ZIP_PKG_INIT.encode()}
    for p in sorted(src.rglob("*.py")):
        rel = p.relative_to(src)
        if "__pycache__" in rel.parts:
            continue
        files["edgeattn/runtime/" + rel.as_posix()] = p.read_bytes()
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = 0o644 << 16
            zf.writestr(info, files[name], compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    raw.seek(0)
    out = io.BytesIO()
    zipapp.create_archive(raw, out, interpreter="/usr/bin/env python3")
    data = out.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def build_zipapp(
    dest_dir: str | os.PathLike, runtime_dir: str | os.PathLike | None = None
) -> tuple[Path, str]:
    """Write ``edgeattn-runtime-<sha16>.pyz`` into ``dest_dir``; return (path, sha256).

    Built with the standard library's ``zipapp`` from ``edgeattn/runtime/**/*.py`` plus a minimal
    ``edgeattn/__init__.py`` and a top-level ``__main__.py``; the bytes only change when the code
    does (fixed timestamps and permissions, sorted entries).
    """
    data, sha = zipapp_bytes(runtime_dir)
    from edgeattn.runtime.records import write_atomic

    path = Path(dest_dir) / f"edgeattn-runtime-{sha[:16]}.pyz"
    write_atomic(str(path), data, mode=0o755)
    return path, sha


# --------------------------------------------------------------------------------------------------
# the upload stream
# --------------------------------------------------------------------------------------------------
class _Counter:
    """A write-through wrapper that counts bytes (what went into ssh's stdin)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.n = 0

    def write(self, data: bytes) -> int:
        self.raw.write(data)
        self.n += len(data)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()


def _tar_add(tar: tarfile.TarFile, name: str, size: int, fileobj: IO[bytes], mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, fileobj)


def write_upload(
    pipe: IO[bytes],
    spec_bytes: bytes,
    sent: dict[str, int],
    runtime: tuple[str, bytes] | None = None,
    models: Iterable[ModelFile] = (),
) -> None:
    """The upload step's tar stream into ``pipe`` (ssh's stdin): ``runtime`` (name, bytes) as
    ``c/<name>`` when the device lacks it, each model as ``c/models/<sha256>.onnx``, and
    ``spec.json``. ``sent`` gets the bytes of each part and of the whole stream."""
    counter = _Counter(pipe)
    with tarfile.open(fileobj=counter, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        if runtime is not None:
            name, data = runtime
            _tar_add(tar, f"c/{name}", len(data), io.BytesIO(data), 0o644)
            sent["runtime"] = len(data)
        for mf in models:
            with open(mf.local, "rb") as fh:
                _tar_add(tar, f"c/{mf.cache_name}", mf.size, fh, 0o644)
            sent["models"] += mf.size
        _tar_add(tar, "spec.json", len(spec_bytes), io.BytesIO(spec_bytes), 0o644)
        sent["spec"] = len(spec_bytes)
    sent["stream"] = counter.n
