"""Deploy the device runtime over SSH, run a measurement spec there, stream the records back.

One run on one host (:func:`run_remote`) is four SSH calls over one multiplexed connection:

1. **probe**   make the cache and run directories; say which content-addressed files are missing
2. **upload**  one tar stream on stdin: the runtime zipapp and the .onnx files the device lacks
               (both cached by sha256 under ``~/.cache/edgeattn``), plus ``spec.json``; models are
               hard-linked (or copied) into the run directory
3. **run**     ``PYTHON runtime-<sha>.pyz measure --spec spec.json`` in the run directory, under a
               small ``sh`` supervisor: when the SSH session's stdin closes (the host was
               interrupted, the local ssh killed, the network dropped) it TERMs then KILLs the
               runtime and removes the run directory; on normal exit it removes the directory too
               (unless ``keep_remote``). Records stream back on stdout (JSON Lines) and are tagged
               with ``host`` and appended to the local ``out`` file as each arrives; progress lines
               (stderr) go to ``on_progress``.
4. **cleanup** only when step 3 could not do it (a failure before or during the run)

The remote scripts are fixed one-line ``sh`` programs; every user-derived value reaches them as a
``shlex.quote``d positional argument (see :mod:`edgeattn.remote.ssh`).
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import io
import json
import os
import re
import secrets
import tarfile
import threading
import time
import zipapp
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from edgeattn.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    RemoteError,
)
from edgeattn.remote.ssh import (
    REMAPPED_255,
    DeviceCommandError,
    Host,
    SSHConnection,
    SSHError,
    SSHOptions,
    _last_line,
    classify_ssh_failure,
    parse_host,
    sh_words,
)
from edgeattn.runtime.records import sha256_file
from edgeattn.signals import sigterm_as_interrupt

__all__ = [
    "DEFAULT_CACHE",
    "HostOutcome",
    "Inventory",
    "ModelFile",
    "RemoteRunResult",
    "build_zipapp",
    "fix_commands",
    "load_inventory",
    "prepare_spec",
    "read_inventory",
    "remote_check",
    "remote_setup",
    "run_many",
    "run_remote",
    "zipapp_bytes",
]

DEFAULT_CACHE = ".cache/edgeattn"  # relative paths on the device are relative to $HOME
RUNS_SUBDIR = "runs"
VENV_SUBDIR = "venv"
MIN_PYTHON = (3, 8)
LOW_DISK_MB = 200.0

ProgressFn = Callable[[str, str], None]  # (host spec, line)
RecordFn = Callable[[str, dict], None]  # (host spec, record)

# --------------------------------------------------------------------------------------------------
# the remote scripts: fixed, one line each, user data only as positional arguments ($1, $2, ...)
# --------------------------------------------------------------------------------------------------
# the device python: <cache>/venv/bin/python3 when `remote setup` made it, else python3 (PATH);
# "~/x" and relative paths with a "/" are made absolute (the run happens in another directory)
_AUTO_PY = (
    'if [ -z "$py" ]; then if [ -x "$cache/venv/bin/python3" ]; then py=$cache/venv/bin/python3; '
    "else py=python3; fi; fi; "
    'case $py in "~/"*) py=$HOME/${py#??};; /*) ;; */*) py=$(pwd)/$py;; esac; '
)

# probe: cache root run_id python file... -> "cache DIR", "rundir DIR", "python PY", "missing F"
_PROBE = (
    "cache=$1; root=$2; run=$3; py=$4; shift 4; umask 022; "
    'mkdir -p -- "$cache/models" || exit 97; cache=$(cd -- "$cache" && pwd -P) || exit 97; '
    'if [ -n "$run" ]; then mkdir -p -- "$root/$run/models" || exit 97; '
    'rd=$(cd -- "$root/$run" && pwd -P) || exit 97; printf "rundir %s\\n" "$rd"; fi; '
    + _AUTO_PY
    + 'printf "cache %s\\n" "$cache"; printf "python %s\\n" "$py"; '
    'for f in "$@"; do [ -f "$cache/$f" ] || printf "missing %s\\n" "$f"; done'
)

# upload: cache rundir run_id [dir sha name]... ; a tar archive on stdin
_UPLOAD = (
    "cache=$1; rd=$2; run=$3; shift 3; umask 022; inc=$cache/.incoming-$run; "
    'rm -rf -- "$inc"; mkdir -p -- "$inc" || exit 97; '
    'if ! tar -x -f - -C "$inc"; then rm -rf -- "$inc"; exit 96; fi; '
    'for f in "$inc"/c/*; do if [ -f "$f" ]; then mv -f -- "$f" "$cache/" || exit 95; fi; done; '
    'for f in "$inc"/c/models/*; do if [ -f "$f" ]; then mv -f -- "$f" "$cache/models/" || exit 95; '
    "fi; done; "
    'if [ -f "$inc/spec.json" ]; then mv -f -- "$inc/spec.json" "$rd/spec.json" || exit 95; fi; '
    'rm -rf -- "$inc"; '
    'while [ "$#" -ge 3 ]; do mkdir -p -- "$rd/models/$1" || exit 94; '
    'ln -f -- "$cache/models/$2.onnx" "$rd/models/$1/$3" 2>/dev/null '
    '|| cp -- "$cache/models/$2.onnx" "$rd/models/$1/$3" || exit 94; shift 3; done'
)

# run: rundir keep(0|1) command... ; stdin kept open by the host and watched
_RUN = (
    'rd=$1; keep=$2; shift 2; cd -- "$rd" || exit 97; exec 3<&0; '
    '"$@" 0</dev/null 3<&- & child=$!; '
    '{ while read -r _l; do :; done; kill -TERM "$child" 2>/dev/null; n=0; '
    'while kill -0 "$child" 2>/dev/null && [ "$n" -lt 5 ]; do sleep 1; n=$((n+1)); done; '
    'kill -KILL "$child" 2>/dev/null; '
    'if [ "$keep" != 1 ]; then cd / && rm -rf -- "$rd"; fi; } 0<&3 1>/dev/null 2>&1 3<&- & '
    "watcher=$!; exec 3<&-; "
    'wait "$child"; rc=$?; kill "$watcher" 2>/dev/null; '
    'if [ "$keep" != 1 ]; then cd / && rm -rf -- "$rd"; fi; '
    f'if [ "$rc" -eq 255 ]; then rc={REMAPPED_255}; fi; exit "$rc"'
)

# put: dir name ; the file's bytes on stdin (written to a temp name, then renamed)
_PUT = 'c=$1; n=$2; umask 022; cat > "$c/.$n.part" && mv -f -- "$c/.$n.part" "$c/$n"'

# cleanup: rundir incoming_dir
_CLEANUP = 'cd / && rm -rf -- "$1" "$2"'

# check: cache python pyz probe_code ; prints @-prefixed lines
_CHECK = (
    'cache=$1; py=$2; pyz=$3; code=$4; mkdir -p -- "$cache" 2>/dev/null; '
    'cache=$(cd -- "$cache" 2>/dev/null && pwd -P) || cache=$1; '
    + _AUTO_PY
    + 'cd -- "$cache" 2>/dev/null || cd; printf "@python %s\\n" "$py"; printf "@machine %s\\n" "$(uname -m 2>/dev/null)"; '
    'printf "@os %s\\n" "$(. /etc/os-release 2>/dev/null; echo "$PRETTY_NAME")"; '
    'printf "@df %s\\n" "$(df -Pk . 2>/dev/null | tail -n 1)"; '
    'if ! command -v -- "$py" >/dev/null 2>&1; then printf "@nopython\\n"; exit 0; fi; '
    'p=$("$py" -c "$code" 2>&1); printf "@probe %s\\n" "$(printf "%s" "$p" | tail -n 1)"; '
    'if [ -n "$pyz" ]; then '
    'c=$("$py" "$pyz" check 2>/dev/null); rc=$?; '
    'if [ "$rc" -eq 0 ]; then printf "@check 0 %s\\n" "$(printf "%s" "$c" | tr "\\n" " ")"; '
    'printf "@env %s\\n" "$("$py" "$pyz" env 2>/dev/null | tr "\\n" " ")"; '
    'else printf "@check %s %s\\n" "$rc" "$("$py" "$pyz" check 2>&1 | tail -n 3 | tr "\\n" " ")"; fi; '
    "fi; exit 0"
)

# setup: python venv upgrade_pip(0|1) fixup_code pip_arg... ; progress on stderr, "@venv DIR" at the end.
# Atomic: the venv is built at a temporary sibling path and moved into place only after numpy and
# onnxruntime import in it; on any failure (or a dropped session) the temporary tree is removed and
# an earlier venv, or the system python3 that was used without one, keeps working.
_SETUP = (
    'py=$1; venv=$2; up=$3; fix=$4; shift 4; if [ -z "$py" ]; then py=python3; fi; '
    'case $py in "~/"*) py=$HOME/${py#??};; esac; '
    'if ! command -v -- "$py" >/dev/null 2>&1; then echo "edgeattn-setup: $py not found" >&2; '
    "exit 93; fi; "
    'printf "edgeattn-setup: device %s, python %s\\n" "$(uname -m)" '
    '"$("$py" -c "import platform; print(platform.python_version())" 2>&1)" >&2; '
    'if ! "$py" -c "import venv, ensurepip" >/dev/null 2>&1; then '
    'echo "edgeattn-setup: No module named venv/ensurepip for $py" >&2; exit 92; fi; '
    'mkdir -p -- "$(dirname -- "$venv")" || exit 97; '
    'abs=$(cd -- "$(dirname -- "$venv")" && pwd -P)/$(basename -- "$venv"); '
    "tmp=$abs.new-$$; old=$abs.old-$$; trap 'rm -rf -- \"$tmp\"' EXIT; "
    "trap 'exit 130' HUP INT TERM; "
    'rm -rf -- "$tmp"; echo "edgeattn-setup: creating venv $tmp (moved to $abs when it works)" >&2; '
    '"$py" -m venv "$tmp" 1>&2 || exit 92; vp=$tmp/bin/python3; '
    'upg=; if [ "$up" = 1 ]; then upg="--upgrade pip"; fi; '
    '"$vp" -m pip install $upg "$@" 1>&2 || exit 90; '
    '"$vp" -c "import numpy, onnxruntime; print(\'edgeattn-setup: imports ok: numpy\', '
    "numpy.__version__, 'onnxruntime', onnxruntime.__version__)\" 1>&2 || exit 89; "
    '"$vp" -c "$fix" "$tmp" "$abs" 1>&2 || exit 88; '
    'if [ -e "$abs" ] || [ -L "$abs" ]; then mv -- "$abs" "$old" || exit 95; fi; '
    'if ! mv -- "$tmp" "$abs"; then mv -- "$old" "$abs" 2>/dev/null; exit 95; fi; '
    'rm -rf -- "$old"; printf "@venv %s\\n" "$abs"'
)

# rewrites the temporary venv path to the final one in bin/ scripts and pyvenv.cfg (shebangs,
# activate): run by the new venv's python as `-c FIXUP TMP FINAL` (one line: exec of a literal)
_SETUP_FIXUP_CODE = (
    "import os, sys\n"
    "tmp, final = sys.argv[1].encode(), sys.argv[2].encode()\n"
    "paths = [os.path.join(sys.argv[1], 'pyvenv.cfg')]\n"
    "bindir = os.path.join(sys.argv[1], 'bin')\n"
    "paths += [os.path.join(bindir, n) for n in os.listdir(bindir)]\n"
    "for p in paths:\n"
    "    if os.path.islink(p) or not os.path.isfile(p):\n"
    "        continue\n"
    "    with open(p, 'rb') as f:\n"
    "        data = f.read()\n"
    "    if tmp in data and b'\\0' not in data[:4096]:\n"
    "        st = os.stat(p)\n"
    "        with open(p, 'wb') as f:\n"
    "            f.write(data.replace(tmp, final))\n"
    "        os.chmod(p, st.st_mode)\n"
)
_SETUP_FIXUP = "exec(" + repr(_SETUP_FIXUP_CODE) + ")"

# an inline probe that runs on any Python (2.7 too): used by remote_check besides the zipapp
_PY_PROBE = (
    'exec("import sys, platform, json, os\\nr = {}\\n'
    "r['version'] = platform.python_version()\\nr['executable'] = sys.executable\\n"
    "r['machine'] = platform.machine()\\nr['in_venv'] = sys.prefix != getattr(sys, 'base_prefix', sys.prefix)\\n"
    "for m in ('numpy', 'onnxruntime', 'venv', 'ensurepip'):\\n"
    "    try:\\n        mod = __import__(m)\\n        r[m] = getattr(mod, '__version__', True)\\n"
    "    except Exception as e:\\n        r[m] = None\\n"
    "try:\\n    import sysconfig\\n"
    "    r['externally_managed'] = os.path.exists(os.path.join(sysconfig.get_paths()['stdlib'], 'EXTERNALLY-MANAGED'))\\n"
    "except Exception:\\n    r['externally_managed'] = None\\n"
    'print(json.dumps(r))\\n")'
)

_SCRIPT_ERRORS = {
    97: "cannot create or enter the remote directory",
    96: "cannot unpack the upload on the device (is `tar` installed? is the disk full?)",
    95: "cannot move uploaded files into the device cache (disk full?)",
    94: "cannot place the model files in the run directory (disk full?)",
    93: "the remote python was not found",
    92: "`python3 -m venv` failed on the device",
    91: "`pip install --upgrade pip` failed on the device",
    90: "`pip install` failed on the device",
    89: "numpy/onnxruntime installed but do not import in the new venv",
    88: "cannot finish the new venv (path rewrite)",
}


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
# spec and model files
# --------------------------------------------------------------------------------------------------
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
    (docs/spec.schema.json). ``ValueError`` naming the bad field and what is valid."""
    from edgeattn.runtime.__main__ import UsageError, parse_paired, parse_spec

    try:
        runs = parse_spec(spec, str(base_dir) if base_dir is not None else os.getcwd())
        parse_paired(spec, runs)
    except UsageError as exc:
        raise ValueError(str(exc).splitlines()[0]) from None


# --------------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------------
@dataclass
class RemoteRunResult:
    """What one remote run produced. ``records`` are already tagged with ``host``."""

    host: str
    target: str
    python: str
    run_id: str
    remote_dir: str
    records: list[dict[str, Any]] = field(default_factory=list)
    exit_status: int | None = None
    bytes_sent: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    kept_remote: bool = False
    out: str | None = None

    @property
    def ok(self) -> int:
        return sum(1 for r in self.records if r.get("status") == "ok")

    @property
    def failed(self) -> int:
        return sum(1 for r in self.records if r.get("status") != "ok")


@dataclass
class HostOutcome:
    """One host of :func:`run_many`: a result, or the error that stopped it."""

    host: str
    result: RemoteRunResult | None = None
    error: BaseException | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.result is not None


_OUT_LOCKS: dict[str, threading.Lock] = {}
_OUT_LOCKS_GUARD = threading.Lock()


def _out_lock(path: str) -> threading.Lock:
    with _OUT_LOCKS_GUARD:
        return _OUT_LOCKS.setdefault(os.path.abspath(path), threading.Lock())


def _append_record(path: str, record: dict[str, Any]) -> None:
    from edgeattn.runtime.records import append_jsonl

    with _out_lock(path):  # append_jsonl rewrites the file: serialise threads writing one file
        append_jsonl(path, record)


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def remote_path(path: str | None, default: str) -> str:
    """Validate a device path; ``~`` and ``~/x`` become home-relative (the ssh session's cwd)."""
    p = default if path is None else str(path)
    if not p or any(ord(c) < 32 or c == "\x7f" for c in p):
        raise RemoteError(f"bad remote directory {p!r}: empty or contains control characters")
    if p == "~":
        return "."
    if p.startswith("~/"):
        p = p[2:] or "."
    elif p.startswith("~"):
        raise RemoteError(
            f"bad remote directory {p!r}: ~user is not supported; give an absolute path"
        )
    p = p.rstrip("/") or "/"
    if p.startswith("-"):
        p = "./" + p  # never an option to mkdir/cd/rm (they also get "--")
    return p


def new_run_id() -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{now}-{secrets.token_hex(4)}"


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


def _script_error(exc: DeviceCommandError, what: str) -> DeviceCommandError:
    msg = _SCRIPT_ERRORS.get(exc.returncode or 0)
    if msg is None:
        return exc
    detail = f": {exc.stderr_tail}" if exc.stderr_tail else ""
    return DeviceCommandError(
        f"{exc.host}: {what}: {msg}{detail}",
        returncode=exc.returncode,
        stderr_tail=exc.stderr_tail,
        host=exc.host,
        hint=exc.hint,
    )


def _parse_kv_lines(data: bytes) -> list[tuple[str, str]]:
    out = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        k, _, v = line.partition(" ")
        out.append((k, v))
    return out


def _say(on_progress: ProgressFn | None, host: str, line: str) -> None:
    if on_progress is not None:
        try:
            on_progress(host, line)
        except Exception:
            pass


# --------------------------------------------------------------------------------------------------
# run_remote
# --------------------------------------------------------------------------------------------------
def run_remote(
    host: str | Host,
    spec: Mapping[str, Any],
    model_files: Mapping[str, str | os.PathLike] | None = None,
    *,
    base_dir: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    ssh: SSHOptions | None = None,
    remote_python: str | None = None,
    remote_dir: str | None = None,
    remote_cache: str | None = None,
    keep_remote: bool = False,
    on_progress: ProgressFn | None = None,
    on_record: RecordFn | None = None,
    _conn: SSHConnection | None = None,
) -> RemoteRunResult:
    """Measure ``spec`` on ``host`` with the device runtime; return the tagged records.

    ``spec`` is the runtime's measure spec (``{"defaults": {...}, "runs": [...]}``); its model
    paths are found through ``model_files`` (reference -> local path) or relative to ``base_dir``.
    ``out``: a local JSON Lines file each record is appended to (atomically) as it arrives.
    ``remote_python``: the device's interpreter (default: ``<cache>/venv/bin/python3`` when
    :func:`remote_setup` made one, else ``python3``). ``remote_dir``: where per-run directories
    are made (default ``~/.cache/edgeattn/runs``); ``remote_cache``: where the zipapp and models
    are cached (default ``~/.cache/edgeattn``). Raises :class:`SSHError` (transport),
    :class:`DeviceCommandError` (the device failed the command; a spec the runtime rejects, a
    missing onnxruntime...); one raised after the connection carries ``.result``, the partial
    :class:`RemoteRunResult` (records that did arrive are also in ``out``). Runs that fail inside
    the runtime do not raise: they come back as ``status: "error"`` records (``result.failed``).
    """
    h = parse_host(host)
    opts = ssh or SSHOptions()
    cache = remote_path(remote_cache, DEFAULT_CACHE)
    runs_root = remote_path(remote_dir, f"{cache}/{RUNS_SUBDIR}")
    if remote_python is not None and (not remote_python or "\n" in remote_python):
        raise RemoteError(f"bad --remote-python {remote_python!r}")
    dev_spec, files = prepare_spec(spec, model_files, base_dir)
    from edgeattn.bench import integrity

    dev_spec = integrity.with_run_id(dev_spec)  # the host command's run id, if one is open
    spec_bytes = (json.dumps(dev_spec, indent=1) + "\n").encode()
    pyz, pyz_sha = zipapp_bytes()
    pyz_name = f"runtime-{pyz_sha}.pyz"
    run_id = new_run_id()
    timings: dict[str, float] = {}
    sent = {"runtime": 0, "models": 0, "spec": 0, "stream": 0}
    conn = _conn or SSHConnection(h, opts)
    t_all = time.monotonic()
    rd: str | None = None
    cleaned = False
    result: RemoteRunResult | None = None
    try:
        # 1. probe ------------------------------------------------------------------------------
        t0 = time.monotonic()
        target = conn.target()
        wanted = [pyz_name] + sorted({f.cache_name for f in files})
        try:
            res = conn.run(
                sh_words(_PROBE, cache, runs_root, run_id, remote_python or "", *wanted),
                what="probe",
            )
        except DeviceCommandError as exc:
            raise _script_error(exc, "probe") from None
        info: dict[str, str] = {}
        missing: set[str] = set()
        for k, v in _parse_kv_lines(res.stdout):
            if k == "missing":
                missing.add(v)
            elif k in ("cache", "rundir", "python"):
                info[k] = v
        if "rundir" not in info or "python" not in info:
            raise DeviceCommandError(
                f"{h.spec}: unexpected answer from the device probe: {res.stdout[:200]!r}",
                returncode=0,
                host=h.spec,
            )
        rd, py, abs_cache = info["rundir"], info["python"], info["cache"]
        timings["connect"] = time.monotonic() - t0
        result = RemoteRunResult(
            host=h.spec,
            target=target,
            python=py,
            run_id=run_id,
            remote_dir=rd,
            bytes_sent=sent,
            timings=timings,
            kept_remote=keep_remote,
            out=str(out) if out is not None else None,
        )
        _say(on_progress, h.spec, f"connected to {target} (python: {py}); run dir {rd}")

        # 2. upload -----------------------------------------------------------------------------
        t0 = time.monotonic()
        send_models = [
            f for f in {f.cache_name: f for f in files}.values() if f.cache_name in missing
        ]
        if pyz_name in missing or send_models:
            parts = (["runtime"] if pyz_name in missing else []) + (
                [f"{len(send_models)} model(s)"] if send_models else []
            )
            _say(on_progress, h.spec, f"sending {' and '.join(parts)}")

        def write_tar(pipe: IO[bytes]) -> None:
            counter = _Counter(pipe)
            with tarfile.open(fileobj=counter, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
                if pyz_name in missing:
                    _tar_add(tar, f"c/{pyz_name}", len(pyz), io.BytesIO(pyz), 0o644)
                    sent["runtime"] = len(pyz)
                for mf in send_models:
                    with open(mf.local, "rb") as fh:
                        _tar_add(tar, f"c/{mf.cache_name}", mf.size, fh, 0o644)
                    sent["models"] += mf.size
                _tar_add(tar, "spec.json", len(spec_bytes), io.BytesIO(spec_bytes), 0o644)
                sent["spec"] = len(spec_bytes)
            sent["stream"] = counter.n

        links: list[str] = []
        for mf in files:
            k = mf.remote_rel.split("/")[1]
            links += [k, mf.sha256, mf.local.name]
        try:
            conn.run(
                sh_words(_UPLOAD, abs_cache, rd, run_id, *links), stdin=write_tar, what="upload"
            )
        except DeviceCommandError as exc:
            raise _script_error(exc, "upload") from None
        timings["deploy"] = time.monotonic() - t0

        # 3. run --------------------------------------------------------------------------------
        t0 = time.monotonic()
        collect = [0.0]
        host_tag = {"spec": h.spec, "target": target, "python": py}

        def on_line(raw: bytes) -> None:
            tc = time.monotonic()
            text = raw.decode("utf-8", errors="replace").strip()
            if not text:
                return
            try:
                rec = json.loads(text)
            except ValueError:
                rec = None
            if not isinstance(rec, dict) or "schema" not in rec:
                # not a record: e.g. a chatty login script on the device
                _say(on_progress, h.spec, f"(device stdout) {text[:200]}")
                return
            rec["host"] = dict(host_tag)
            result.records.append(rec)
            if out is not None:
                _append_record(str(out), rec)
            if on_record is not None:
                on_record(h.spec, rec)
            collect[0] += time.monotonic() - tc

        words = [py, f"{abs_cache}/{pyz_name}", "measure", "--spec", "spec.json"]
        res = conn.run(
            sh_words(_RUN, rd, "1" if keep_remote else "0", *words),
            on_stdout_line=on_line,
            on_stderr_line=lambda line: _say(on_progress, h.spec, line),
            check=False,
            what="measure",
        )
        result.exit_status = res.returncode
        timings["run"] = time.monotonic() - t0 - collect[0]
        timings["collect"] = collect[0]
        if res.returncode == 255:
            raise classify_ssh_failure(res.stderr, h.spec)
        if res.returncode < 0:
            raise SSHError(
                f"{h.spec}: the local ssh was killed by signal {-res.returncode}",
                kind="killed",
                host=h.spec,
                hint="the device stops its runtime when the session drops",
            )
        cleaned = not keep_remote  # the run script removed the directory
        if res.returncode not in (EXIT_OK, EXIT_RUN_FAILED):
            raise _measure_error(h.spec, res.returncode, res.stderr, py)
        return result
    except BaseException as exc:
        timings.setdefault("connect", time.monotonic() - t_all)
        if result is not None and isinstance(exc, RemoteError):
            exc.result = result  # type: ignore[attr-defined]  # the records that did arrive
        raise
    finally:
        t0 = time.monotonic()
        if rd is not None and not keep_remote and not cleaned:
            try:
                incoming = f"{abs_cache}/.incoming-{run_id}"
                conn.run(sh_words(_CLEANUP, rd, incoming), timeout=20, what="cleanup", force=True)
            except (RemoteError, KeyboardInterrupt, OSError):
                pass  # best effort: the run script's watcher removes it too
        if _conn is None:
            conn.close()
        timings["cleanup"] = time.monotonic() - t0
        timings["total"] = time.monotonic() - t_all


def _measure_error(host: str, rc: int, stderr: str, py: str) -> DeviceCommandError:
    last = _last_line(stderr)
    hint = None
    if rc == EXIT_USAGE:
        what = "the device runtime rejected the spec"
    elif rc == 127:
        what = f"{py!r} was not found on the device"
        hint = "pass --remote-python PATH, or run `edgeattn remote check HOST`"
    elif rc in (EXIT_INTERRUPTED, EXIT_TERMINATED, 137):  # 137: SIGKILL
        what = "the device runtime was interrupted"
    elif rc in _SCRIPT_ERRORS:
        what = _SCRIPT_ERRORS[rc]
    else:
        what = f"the device runtime failed (exit status {rc})"
        hint = "run `edgeattn remote check HOST` to see what the device lacks"
    if "No module named" in last or "ModuleNotFoundError" in last:
        hint = "run `edgeattn remote check HOST` (it prints the command that installs it)"
    return DeviceCommandError(
        f"{host}: {what}" + (f": {last}" if last else ""),
        returncode=rc,
        stderr_tail=last,
        host=host,
        hint=hint,
    )


# --------------------------------------------------------------------------------------------------
# many hosts
# --------------------------------------------------------------------------------------------------
def read_inventory(path: str | os.PathLike) -> list[str]:
    """Hosts of a plain inventory file: one per line, ``#`` starts a comment, blank lines ignored."""
    hosts = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if len(text.split()) != 1:
            raise ValueError(f"{path}:{n}: one host per line, got {text!r}")
        parse_host(text)
        hosts.append(text)
    return hosts


@dataclass
class Inventory:
    """Hosts from an inventory file, ready for edgeattn.

    ``ssh_config``: for an Ansible inventory, a generated ssh_config (``ssh -F``) with one ``Host``
    block per inventory host (``ansible_host``/``ansible_port``/``ansible_user``/
    ``ansible_ssh_private_key_file``) that then includes the user's own configuration, so the
    inventory names work as aliases; None for a plain file. ``python``: host -> the device's
    interpreter (``ansible_python_interpreter``).
    """

    hosts: list[str]
    ssh_config: str | None = None
    python: dict[str, str] = field(default_factory=dict)
    source: str = "plain"


_INI_GROUP_RE = re.compile(r"^\[[A-Za-z0-9_.\-]+(:[a-z]+)?\]$")
_ANSIBLE_VARS = ("ansible_host", "ansible_port", "ansible_user", "ansible_ssh_private_key_file")


def is_ansible_inventory(path: str | os.PathLike) -> bool:
    """An Ansible inventory (INI groups, ``key=value`` host vars, or YAML) rather than a plain list."""
    p = Path(path)
    if p.suffix in (".yml", ".yaml"):
        return True
    for line in p.read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if not text or text.startswith(";"):
            continue
        if text == "---" or text.endswith(":") or _INI_GROUP_RE.match(text) or "=" in text:
            return True
    return False


def _ansible_list(path: str | os.PathLike) -> dict[str, Any]:
    import shutil
    import subprocess

    exe = shutil.which("ansible-inventory")
    if exe is None:
        raise RemoteError(
            f"{path} is an Ansible inventory, and ansible-inventory is not installed here",
            hint="pip install 'edgeattn[ansible]' (ansible-core) so Ansible itself parses it, or "
            "use the plain format: one USER@HOST[:PORT] or ssh-config alias per line",
        )
    res = subprocess.run(
        [exe, "-i", os.fspath(path), "--list"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if res.returncode != 0:
        raise RemoteError(f"ansible-inventory -i {path} failed: {_last_line(res.stderr)}")
    data = json.loads(res.stdout)
    warn = [ln for ln in res.stderr.splitlines() if "Unable to parse" in ln or "No inventory" in ln]
    if warn:
        raise RemoteError(f"ansible-inventory could not parse {path}: {warn[0].strip()[:200]}")
    return data


def _group_hosts(data: Mapping[str, Any], group: str, seen: set[str] | None = None) -> list[str]:
    seen = seen if seen is not None else set()
    if group in seen:
        return []
    seen.add(group)
    g = data.get(group)
    if not isinstance(g, dict):
        groups = sorted(k for k in data if k != "_meta")
        raise RemoteError(
            f"no group {group!r} in the inventory", hint=f"groups: {', '.join(groups)}"
        )
    out = list(g.get("hosts") or [])
    for child in g.get("children") or []:
        out += _group_hosts(data, child, seen)
    return out


def _ssh_value(v: Any, what: str) -> str:
    text = str(v)
    if not text or any(c in text for c in '\n\r\0"') or text.startswith("-"):
        raise RemoteError(f"inventory: bad {what} {text!r}")
    return f'"{text}"' if any(c.isspace() for c in text) else text


def load_inventory(
    path: str | os.PathLike, group: str | None = None, ssh_config: str | None = None
) -> Inventory:
    """Hosts of ``path``: the plain format, or an Ansible inventory (INI or YAML) parsed by
    ``ansible-inventory --list`` (ansible-core, an optional extra), optionally only ``group``.

    For Ansible, each host's connection variables become a ``Host`` block of a generated
    ssh_config that ends by including ``ssh_config`` (the user's ``--ssh-config``; by default
    ``~/.ssh/config`` and ``/etc/ssh/ssh_config``), so the rest of the user's settings apply.
    """
    if not is_ansible_inventory(path):
        if group is not None:
            raise RemoteError(
                f"--hosts {group}: {path} is a plain host list, it has no groups",
                hint="groups need an Ansible inventory (INI [group] sections or YAML)",
            )
        return Inventory(read_inventory(path))
    data = _ansible_list(path)
    if group is None:
        hosts = _group_hosts(data, "all")
        hosts += [h for h in (data.get("_meta") or {}).get("hostvars", {}) if h not in hosts]
    else:
        hosts = _group_hosts(data, group)
    uniq: list[str] = []
    for h in hosts:
        if h not in uniq:
            uniq.append(h)
    if not uniq:
        raise RemoteError(f"no hosts in {path}" + (f" group {group!r}" if group else ""))
    hostvars = (data.get("_meta") or {}).get("hostvars") or {}
    blocks: list[str] = ["# generated by edgeattn from an Ansible inventory: " + os.fspath(path)]
    pythons: dict[str, str] = {}
    for h in uniq:
        parse_host(h)  # the inventory name becomes an ssh alias: the same rules as a host spec
        v = hostvars.get(h) or {}
        lines = [f"Host {h}"]
        hn = v.get("ansible_host") or v.get("ansible_ssh_host")
        if hn:
            lines.append(f"  HostName {_ssh_value(hn, 'ansible_host')}")
        port = v.get("ansible_port") or v.get("ansible_ssh_port")
        if port:
            if not str(port).isdigit():
                raise RemoteError(f"inventory: {h}: bad ansible_port {port!r}")
            lines.append(f"  Port {int(port)}")
        user = v.get("ansible_user") or v.get("ansible_ssh_user")
        if user:
            lines.append(f"  User {_ssh_value(user, 'ansible_user')}")
        key = v.get("ansible_ssh_private_key_file")
        if key:
            key = os.path.expanduser(str(key))
            lines.append(f"  IdentityFile {_ssh_value(key, 'ansible_ssh_private_key_file')}")
        py = v.get("ansible_python_interpreter")
        if py and "{{" not in str(py) and str(py) != "auto" and not str(py).startswith("auto_"):
            pythons[h] = str(py)
        blocks.append("\n".join(lines))
    # the user's configuration after the inventory's blocks (ssh keeps the first value it sees)
    if ssh_config:
        includes = [os.path.abspath(os.path.expanduser(ssh_config))]
    else:
        includes = ["~/.ssh/config", "/etc/ssh/ssh_config"]
    blocks.append(
        "Match all\n" + "\n".join(f"  Include {_ssh_value(i, 'Include')}" for i in includes)
    )
    import atexit
    import tempfile

    fd, cfg = tempfile.mkstemp(prefix="edgeattn-inventory-", suffix=".ssh_config")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n\n".join(blocks) + "\n")
    atexit.register(lambda: os.path.exists(cfg) and os.unlink(cfg))
    return Inventory(uniq, cfg, pythons, source="ansible")


def run_many(
    hosts: Iterable[str | Host],
    spec: Mapping[str, Any],
    model_files: Mapping[str, str | os.PathLike] | None = None,
    *,
    max_parallel: int | None = None,
    **kwargs: Any,
) -> list[HostOutcome]:
    """:func:`run_remote` on several hosts at once (one thread per host), in the given order.

    Keyword arguments are those of :func:`run_remote` (``out`` may be shared: appends are
    serialised; ``remote_python`` may also be a mapping host -> interpreter). A host that fails does not stop the others; its ``HostOutcome.error`` says why.
    On KeyboardInterrupt every host's ssh is stopped (the devices stop their runtimes) and the
    interrupt is re-raised.
    """
    parsed = [parse_host(x) for x in hosts]
    if not parsed:
        raise ValueError("no hosts given")
    specs = [p.spec for p in parsed]
    if len(set(specs)) != len(specs):
        raise ValueError("a host is listed twice")
    opts: SSHOptions = kwargs.pop("ssh", None) or SSHOptions()
    prepare_spec(
        spec, model_files, kwargs.get("base_dir")
    )  # bad spec / missing file: fail once, here
    conns = [SSHConnection(p, opts) for p in parsed]
    outcomes = [HostOutcome(p.spec) for p in parsed]
    # SIGTERM -> KeyboardInterrupt while hosts run, so `kill PID` cleans up like Ctrl-C (the devices
    # stop their runtimes and remove their run directories); a caller's own handler is kept
    with sigterm_as_interrupt(only_if_default=True):
        return _run_many(parsed, conns, outcomes, spec, model_files, opts, max_parallel, kwargs)


def _run_many(
    parsed: list[Host],
    conns: list[SSHConnection],
    outcomes: list[HostOutcome],
    spec: Mapping[str, Any],
    model_files: Mapping[str, str | os.PathLike] | None,
    opts: SSHOptions,
    max_parallel: int | None,
    kwargs: dict[str, Any],
) -> list[HostOutcome]:

    def work(i: int) -> None:
        kw = dict(kwargs)
        if isinstance(kw.get("remote_python"), Mapping):  # per host (an inventory's python)
            kw["remote_python"] = kw["remote_python"].get(parsed[i].spec)
        try:
            outcomes[i].result = run_remote(
                parsed[i], spec, model_files, ssh=opts, _conn=conns[i], **kw
            )
        except BaseException as exc:  # noqa: BLE001 - reported per host
            outcomes[i].error = exc
            from edgeattn.bench import integrity

            integrity.mark_failed()  # a host failed: the run stays partial (no run_end)

    pool = ThreadPoolExecutor(
        max_workers=max_parallel or len(parsed), thread_name_prefix="edgeattn-ssh"
    )
    futures = [pool.submit(work, i) for i in range(len(parsed))]
    try:
        for f in futures:
            while not f.done():
                time.sleep(0.05)
    except BaseException:
        for c in conns:
            c.cancel()
        pool.shutdown(wait=True)
        raise
    finally:
        pool.shutdown(wait=True)
        for c in conns:
            c.close()
    return outcomes


# --------------------------------------------------------------------------------------------------
# preflight and setup
# --------------------------------------------------------------------------------------------------
def remote_check(
    host: str | Host,
    *,
    ssh: SSHOptions | None = None,
    remote_python: str | None = None,
    remote_cache: str | None = None,
    on_progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Preflight one device: reachable? python, numpy, onnxruntime, providers, CPU, disk.

    Sends the runtime zipapp (cached) and runs its ``check`` and ``env``; an inline probe that runs
    on any Python reports what it can when the zipapp cannot start. ``problems`` lists what blocks
    a measurement and ``fixes`` the commands that fix it on that device. Transport failures do not
    raise: ``reachable`` is False and ``error`` says why.
    """
    h = parse_host(host)
    opts = ssh or SSHOptions()
    cache = remote_path(remote_cache, DEFAULT_CACHE)
    report: dict[str, Any] = {
        "host": h.spec,
        "target": None,
        "reachable": False,
        "ok": False,
        "problems": [],
        "fixes": [],
        "notes": [],
    }
    try:
        with SSHConnection(h, opts) as conn:
            report["target"] = conn.target()
            t0 = time.monotonic()
            pyz, sha = zipapp_bytes()
            pyz_name = f"runtime-{sha}.pyz"
            res = conn.run(
                sh_words(_PROBE, cache, "", "", remote_python or "", pyz_name), what="probe"
            )
            report["reachable"] = True
            report["connect_s"] = round(time.monotonic() - t0, 3)
            kv = dict(_parse_kv_lines(res.stdout))
            abs_cache = kv.get("cache", cache)
            if "missing" in kv:
                _say(on_progress, h.spec, "sending the runtime")
                conn.run(sh_words(_PUT, abs_cache, pyz_name), stdin=pyz, what="upload")
            res = conn.run(
                sh_words(
                    _CHECK, abs_cache, remote_python or "", f"{abs_cache}/{pyz_name}", _PY_PROBE
                ),
                what="check",
            )
    except SSHError as exc:
        report["error"] = str(exc)
        report["error_kind"] = exc.kind
        report["problems"].append(str(exc))
        if exc.hint:
            report["fixes"].append(exc.hint)
        return report
    except DeviceCommandError as exc:
        report["error"] = str(exc)
        report["problems"].append(str(exc))
        return report
    _interpret_check(report, res.stdout.decode("utf-8", errors="replace"), h.spec)
    return report


def _interpret_check(report: dict[str, Any], text: str, host: str) -> None:
    lines: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("@"):
            k, _, v = line.partition(" ")
            lines[k[1:]] = v
    report["python"] = lines.get("python")
    report["machine"] = lines.get("machine") or None
    report["os"] = lines.get("os") or None
    df = lines.get("df", "").split()
    if len(df) >= 4 and df[3].isdigit():
        report["disk_free_mb"] = round(int(df[3]) / 1024, 1)
    if "nopython" in lines:
        report["python_version"] = None
        report["problems"].append(f"{report['python']!r} not found on the device")
        report["fixes"] += fix_commands(report, host, python_missing=True)
        return
    probe = _json_or_none(lines.get("probe", ""))
    report["probe"] = probe
    if probe:
        report["python_version"] = probe.get("version")
        report["numpy_version"] = probe.get("numpy") if probe.get("numpy") is not True else "?"
        report["onnxruntime_version"] = (
            probe.get("onnxruntime") if probe.get("onnxruntime") is not True else "?"
        )
        report["machine"] = report["machine"] or probe.get("machine")
    check_line = lines.get("check")
    check = env = None
    if check_line is not None:
        rc_text, _, body = check_line.partition(" ")
        check = _json_or_none(body) if rc_text == "0" else None
        if check is None:
            report["runtime_error"] = body.strip()[-300:] or f"exit status {rc_text}"
        env = _json_or_none(lines.get("env", ""))
    report["check"] = check
    report["env"] = env
    if check:
        report["python_version"] = (check.get("python") or {}).get(
            "version", report.get("python_version")
        )
        report["numpy_version"] = check.get("numpy_version")
        report["onnxruntime_version"] = check.get("onnxruntime_version")
        report["providers"] = check.get("providers")
        cpu = dict(check.get("cpu") or {})
        if check.get("disk_free_mb") is not None:
            report["disk_free_mb"] = check["disk_free_mb"]
    else:
        cpu = {"machine": report.get("machine")}
    if env:
        freq = env.get("cpufreq") or {}
        cpu.setdefault("model", env.get("cpu_model"))
        cpu["governor"] = freq.get("governor")
        cpu["max_mhz"] = freq.get("max_mhz")
        cpu["temperature_c"] = env.get("temperature_c")
        cpu["throttled"] = env.get("throttled")
        report["device_model"] = env.get("device_model")
        report["emulated"] = env.get("emulated")
        report["fp16_native"] = env.get("fp16_native")
        if env.get("fp16_native") is False:
            report["notes"].append(
                "fp16 runs emulated on this CPU (no native half-precision arithmetic: "
                f"{env.get('fp16_evidence')}); expect export --precision fp16 to be slower than "
                "fp32 here; int8 is the CPU precision"
            )
        elif env.get("fp16_native"):
            report["notes"].append(f"native fp16 arithmetic ({env.get('fp16_evidence')})")
        if env.get("emulated"):
            report["notes"].append(
                f"this device is emulated ({env['emulated']}: {env.get('emulated_hint') or '?'}): "
                "it proves the device path works; its timings are not device speed"
            )
    report["cpu"] = cpu
    # problems ------------------------------------------------------------------------------------
    pv = report.get("python_version")
    if pv is None:
        report["problems"].append(
            f"{report['python']!r} could not run a Python probe: {lines.get('probe', '')[-200:]}"
        )
    elif _version_tuple(pv) < MIN_PYTHON:
        report["problems"].append(f"python {pv} is older than {'.'.join(map(str, MIN_PYTHON))}")
    elif not check:
        report["problems"].append(
            f"the runtime zipapp did not start: {report.get('runtime_error', 'no output')}"
        )
    if pv is not None:
        if not report.get("numpy_version"):
            report["problems"].append("numpy is not installed for this python")
        if not report.get("onnxruntime_version"):
            report["problems"].append("onnxruntime is not installed for this python")
    if (
        check
        and report.get("providers") is not None
        and "CPUExecutionProvider" not in report["providers"]
    ):
        report["problems"].append("onnxruntime has no CPUExecutionProvider")
    free = report.get("disk_free_mb")
    if free is not None and free < LOW_DISK_MB:
        report["problems"].append(f"only {free:.0f} MB free on the device's cache disk")
    gov = cpu.get("governor")
    if gov and gov != "performance":
        report["notes"].append(
            f"CPU governor is {gov!r}: for steadier timings set 'performance' "
            "(echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor)"
        )
    report["fixes"] += fix_commands(report, host)
    report["ok"] = not report["problems"]


def _json_or_none(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text`` (stray output around it is ignored), or None."""
    text = text or ""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start >= 0:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if isinstance(obj, dict):
            return obj
        start = text.find("{", start + 1)
    return None


def _version_tuple(v: str) -> tuple[int, ...]:
    parts = []
    for x in str(v).split(".")[:3]:
        digits = "".join(ch for ch in x if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def fix_commands(report: Mapping[str, Any], host: str, python_missing: bool = False) -> list[str]:
    """Commands that fix what ``report`` says is missing, for that device's architecture."""
    venv = "~/.cache/edgeattn/venv"
    fixes: list[str] = []
    if python_missing:
        return [
            "on the device: sudo apt-get install -y python3 python3-venv python3-pip",
            "or point at another interpreter: --remote-python /path/to/python3",
        ]
    pv = report.get("python_version")
    if pv is not None and _version_tuple(pv) < MIN_PYTHON:
        fixes.append(
            f"the runtime needs Python >= 3.8 (found {pv}): install a newer python3 on the device "
            "and pass --remote-python /path/to/python3.8+"
        )
        return fixes
    if pv is None:
        return fixes
    need = [m for m in ("numpy", "onnxruntime") if not report.get(f"{m}_version")]
    if not need:
        return fixes
    machine = str(report.get("machine") or "").lower()
    probe = report.get("probe") or {}
    py = report.get("python") or "python3"
    if (
        machine.startswith(("armv7", "armv6", "arm"))
        and machine != "arm64"
        and "onnxruntime" in need
    ):
        fixes.append(
            f"onnxruntime has no wheels on PyPI for 32-bit ARM ({machine}): install the 64-bit "
            "(aarch64) Raspberry Pi OS, or build onnxruntime from source for armv7l"
        )
        if "numpy" in need:
            fixes.append("on the device: sudo apt-get install -y python3-numpy")
        return fixes
    pkgs = " ".join(need)
    fixes.append(f"edgeattn remote setup {host}   (makes {venv} and pip installs {pkgs} there)")
    if probe.get("venv") is None or probe.get("ensurepip") is None:
        fixes.append("on the device first: sudo apt-get install -y python3-venv")
    fixes.append(
        f"or by hand on the device: python3 -m venv {venv} && {venv}/bin/python -m pip install {pkgs}"
    )
    if not probe.get("externally_managed") and not probe.get("in_venv"):
        fixes.append(f"or: {py} -m pip install --user {pkgs}")
    elif probe.get("in_venv"):
        fixes.append(f"or: {py} -m pip install {pkgs}")
    return fixes


_SETUP_DEVICE_RE = re.compile(r"^edgeattn-setup: device (\S+), python (\S+)")
# (regex on pip's output, reason, hint); {pkg} {machine} {python} are filled in; first match wins
_SETUP_FAILURES: tuple[tuple[str, str, str], ...] = (
    (
        r"No space left on device|\[Errno 28\]|Disk quota exceeded",
        "the device's disk is full",
        "free space on the device (df -h ~/.cache), or put the venv on a bigger disk: "
        "--venv /path/with/space/venv",
    ),
    (
        r"CERTIFICATE_VERIFY_FAILED|certificate verify failed|SSLError|SSL: |TLSV1_ALERT|"
        r"SSLCertVerificationError",
        "the device's pip cannot verify TLS to the package index",
        "check the device clock (`date`; a Pi without RTC or network time starts in the past) and "
        "its CA certificates (sudo apt-get install --reinstall ca-certificates); behind a proxy: "
        "--pip-arg=--cert=/path/ca.pem; or install from local wheels: "
        "--pip-arg=--no-index --pip-arg=--find-links=/dir/with/wheels",
    ),
    (
        r"No matching distribution found for (?P<pkg>\S+)|"
        r"Could not find a version that satisfies the requirement (?P<pkg2>\S+)",
        "no {pkg} wheel for this device ({machine}, Python {python}) on the index pip used",
        "{wheel_hint}",
    ),
    (
        r"Failed to establish a new connection|Temporary failure in name resolution|"
        r"Network is unreachable|Read timed out|ConnectTimeoutError|Max retries exceeded",
        "the device cannot reach the package index",
        "check the device's network/proxy (pip's --proxy), or install from local wheels: "
        "--pip-arg=--no-index --pip-arg=--find-links=/dir/with/wheels",
    ),
    (
        r"\[Errno 13\] Permission denied",
        "pip was denied access to a path on the device",
        "check the permissions of the venv's parent directory and of any --find-links directory "
        "for the login user (or pass --venv DIR in a directory it owns)",
    ),
    (
        r"No module named venv|No module named ensurepip|ensurepip is not available|"
        r"No module named pip",
        "the device's python has no venv/pip module",
        "on the device: sudo apt-get install -y python3-venv python3-pip",
    ),
)


def setup_failure(returncode: int | None, output: Sequence[str]) -> tuple[str, str | None]:
    """(reason, hint) for a failed ``remote setup``, from what its pip/venv output says failed."""
    text = "\n".join(output)
    machine = python = "?"
    for line in output:
        m = _SETUP_DEVICE_RE.match(line)
        if m:
            machine, python = m.group(1), m.group(2)
    for pattern, reason, hint in _SETUP_FAILURES:
        m = re.search(pattern, text)
        if not m:
            continue
        pkg = next((g for g in m.groups() if g), "") if m.groups() else ""
        name = re.split(r"[<>=!~\[; ]", pkg, maxsplit=1)[0] if pkg else "package"
        arm32 = machine.startswith(("armv6", "armv7", "armv8l", "arm")) and machine != "arm64"
        if name.lower() == "onnxruntime" and arm32:
            wheel_hint = (
                f"onnxruntime publishes no wheels for 32-bit ARM ({machine}): install the 64-bit "
                "(aarch64) OS on the board, or build onnxruntime from source for armv7l"
            )
        else:
            wheel_hint = (
                f"pin a {name} version that has a wheel for Python {python} on {machine} "
                f"(--package '{name}==X.Y'), or point pip at a wheel directory "
                "(--pip-arg=--no-index --pip-arg=--find-links=/dir/with/wheels)"
            )
        detail = next((ln.strip() for ln in output if re.search(pattern, ln)), "")
        reason = reason.format(pkg=name, machine=machine, python=python)
        if detail and detail not in reason:
            reason += f": {detail[:200]}"
        return reason, hint.format(wheel_hint=wheel_hint)
    if returncode == 92:
        return _SCRIPT_ERRORS[92], "on the device: sudo apt-get install -y python3-venv"
    if returncode == 89:
        last = next((ln for ln in reversed(output) if "Error" in ln), "")
        return (
            _SCRIPT_ERRORS[89] + (f": {last.strip()[:200]}" if last else ""),
            "pin versions that go together (--match-host pins the host's numpy and onnxruntime)",
        )
    last = next((ln.strip() for ln in reversed(output) if ln.strip().startswith("ERROR")), "")
    msg = _SCRIPT_ERRORS.get(returncode or 0, f"setup failed with exit status {returncode}")
    return msg + (f": {last[:200]}" if last else ""), "see the pip output above"


def _setup_error(exc: DeviceCommandError, output: Sequence[str]) -> DeviceCommandError:
    if exc.returncode not in _SCRIPT_ERRORS:
        return exc
    reason, hint = setup_failure(exc.returncode, output)
    return DeviceCommandError(
        f"{exc.host}: setup: {reason} (nothing was changed on the device)",
        returncode=exc.returncode,
        stderr_tail=exc.stderr_tail,
        host=exc.host,
        hint=hint,
    )


def host_pins() -> list[str]:
    """``numpy==X`` and ``onnxruntime==Y`` at this host's versions (``remote setup --match-host``)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for dist in ("numpy", "onnxruntime"):
        try:
            pins.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            raise RemoteError(
                f"--match-host: {dist} is not installed on this host", hint="pip install " + dist
            ) from None
    return pins


def remote_setup(
    host: str | Host,
    *,
    ssh: SSHOptions | None = None,
    python: str | None = None,
    venv: str | None = None,
    packages: Sequence[str] = ("numpy", "onnxruntime"),
    pip_args: Sequence[str] = (),
    upgrade_pip: bool = False,
    remote_cache: str | None = None,
    on_progress: ProgressFn | None = None,
    match_host: bool = False,
) -> dict[str, Any]:
    """Make a venv on the device and pip install numpy and onnxruntime into it, atomically.

    The venv defaults to ``~/.cache/edgeattn/venv``, which :func:`run_remote` and
    :func:`remote_check` then use automatically when no ``remote_python`` is given. It is built at
    a temporary path and moved into place only once numpy and onnxruntime import in it: a failed
    setup changes nothing on the device (an earlier venv, or the system python3, keeps working)
    and raises :class:`DeviceCommandError` whose message and hint say what failed (TLS, no wheel
    for this platform/Python, disk full, no venv module, no network). ``packages`` are pip
    requirements (``onnxruntime==1.31.0``); ``match_host`` pins numpy and onnxruntime to this
    host's versions (a requirement in ``packages`` naming one of them wins); ``pip_args`` go to
    ``pip install`` (``--no-index``, ``--find-links=DIR``, ``--index-url=URL``...). Returns
    :func:`remote_check`'s report for the venv's python (with ``venv`` and ``python`` set).
    """
    h = parse_host(host)
    opts = ssh or SSHOptions()
    cache = remote_path(remote_cache, DEFAULT_CACHE)
    venv_dir = remote_path(venv, f"{cache}/{VENV_SUBDIR}")
    packages = list(packages)
    for p in packages:
        if not p or p.startswith("-") or any(c.isspace() for c in p):
            raise ValueError(f"bad package requirement {p!r}")
    if match_host:  # bare numpy/onnxruntime become the host's pins; a versioned one wins
        packages = [p for p in packages if p.lower() not in ("numpy", "onnxruntime")]
        named = {re.split(r"[<>=!~\[; ]", p, maxsplit=1)[0].lower() for p in packages}
        packages += [pin for pin in host_pins() if pin.split("==")[0] not in named]
    for a in pip_args:
        if not isinstance(a, str) or not a or "\n" in a or "\0" in a:
            raise ValueError(f"bad pip argument {a!r}")
    timeout = opts.timeout if opts.timeout is not None else 1800.0
    lines: list[str] = []
    header: list[str] = []

    def on_line(line: str) -> None:
        if _SETUP_DEVICE_RE.match(line):
            header.append(line)
        lines.append(line)
        del lines[:-400]
        _say(on_progress, h.spec, line)

    with SSHConnection(h, opts) as conn:
        try:
            res = conn.run(
                sh_words(
                    _SETUP,
                    python or "",
                    venv_dir,
                    "1" if upgrade_pip else "0",
                    _SETUP_FIXUP,
                    *pip_args,
                    *packages,
                ),
                timeout=timeout,
                on_stderr_line=on_line,
                what="setup",
            )
        except DeviceCommandError as exc:
            raise _setup_error(exc, header + lines) from None
    kv = dict(_parse_kv_lines(res.stdout))
    vdir = kv.get("@venv", venv_dir)
    report = remote_check(
        h,
        ssh=opts,
        remote_python=f"{vdir}/bin/python3",
        remote_cache=remote_cache,
        on_progress=on_progress,
    )
    report["venv"] = vdir
    return report
