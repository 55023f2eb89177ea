"""The result record: one JSON object per measurement, stored as JSON Lines.

Records are the contract between runtime, bench, remote and report. A record always has ``schema``,
``kind`` ("isolated": one model timed alone in its process, the default; "paired": several models
timed in interleaved rounds in one process, see ``paired.py``), ``id``, ``key``, ``created_utc``,
``status`` ("ok" | "error") and ``error`` (one line or null); the measurement fields are null in an
error record. ``key`` is the sha256 of the canonical JSON of the
knobs that define the measurement (see :func:`measurement_key`) and is what ``--resume`` matches on.
``run_id`` (null in records of a spec without one, absent in older records) names the host
command that asked for the record; that command closes its run with one ``kind: "run_end"`` line
(record count and digest, see ``edgeattn/integrity.py``), which is not a measurement.

Standard library only.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import os
import stat
import sys
import tempfile
import time
from typing import Any, Dict, Iterable, List, Optional, Set

SCHEMA = "edgeattn.record/1"

# record fields, in the order they are written (JSON objects keep insertion order)
RECORD_FIELDS = (
    "schema",
    "kind",
    "id",
    "key",
    "run_id",
    "created_utc",
    "status",
    "error",
    "error_type",
    "model",
    "meta",
    "session",
    "inputs",
    "seed",
    "protocol",
    "latency_ms",
    "throughput_per_s",
    "samples_per_s",
    "memory",
    "profile",
    "paired",
    "conditions",
    "device",
    "runtime_version",
    "notes",
)

# the knobs that define a measurement (RunSpec field names); everything else (run counts, time
# bounds, cv threshold, profile run count) is protocol: it changes precision, not what is measured
KEY_FIELDS = (
    "inputs",
    "device",
    "provider_options",
    "intra_op_threads",
    "inter_op_threads",
    "execution_mode",
    "opt_level",
    "fallback",
    "seed",
    "int_range",
    "profile",
    "meta",
)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def measurement_key(model_sha256: Optional[str], knobs: Dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the model hash and the defining knobs."""
    payload = {"model_sha256": model_sha256}
    payload.update({k: knobs.get(k) for k in KEY_FIELDS})
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_record(**fields: Any) -> Dict[str, Any]:
    """A record with every field present (None where not given), in the canonical order."""
    unknown = set(fields) - set(RECORD_FIELDS)
    if unknown:
        raise KeyError(f"unknown record field(s): {', '.join(sorted(unknown))}")
    rec: Dict[str, Any] = {name: None for name in RECORD_FIELDS}
    rec["schema"] = SCHEMA
    rec["kind"] = "isolated"
    rec["created_utc"] = utc_now()
    rec["status"] = "ok"
    rec.update(fields)
    return rec


def one_line(exc: BaseException) -> str:
    """An exception as a single line: ``Type: message`` with newlines folded."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def dumps(record: Dict[str, Any]) -> str:
    """One JSON line (no newline). NaN/inf are written as null so every line is strict JSON."""
    return json.dumps(_finite(record), separators=(",", ":"), allow_nan=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _umask() -> int:
    """The process umask, read without changing it where /proc tells it (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read-and-restore
    os.umask(mask)
    return mask


def write_atomic(path: str, data: bytes, mode: Optional[int] = None) -> None:
    """Write ``data`` to ``path`` atomically: a temp file in the same directory, fsynced and
    ``os.replace``d over ``path``, so a crash leaves either the old file or the new one. The new
    file keeps the old one's permissions, or gets ``mode``, or (a new file) 0o666 less the umask,
    as ``open()`` would give it."""
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory
    )
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if mode is None:
            if os.path.exists(path):
                mode = os.stat(path).st_mode & 0o7777
            else:
                mode = 0o666 & ~_umask()  # mkstemp made it 0600
        try:
            os.chmod(tmp, mode)
        except OSError:
            pass
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


# ------------------------------------------------------------------------------ appending records

_APPEND_FLAGS = os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_LOCK_STALE_S = 120.0  # the lock-file fallback: a lock older than this was left by a crash


def open_append(path: str) -> int:
    """Open (create: 0o666 less the umask) ``path`` for appending and return the descriptor.

    Symlinks are followed: the target gets the records. Read access is asked for too (the tail
    check needs it) and dropped if refused. ``OSError`` if the path cannot take records (a
    directory, a read-only or full file system, no permission)."""
    try:
        return os.open(path, os.O_RDWR | _APPEND_FLAGS, 0o666)
    except PermissionError:
        return os.open(path, os.O_WRONLY | _APPEND_FLAGS, 0o666)


def check_appendable(path: str) -> None:
    """Raise ``OSError`` unless records can be appended to ``path`` (it is created if missing)."""
    fd = open_append(path)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
    finally:
        os.close(fd)


class _Lock(object):
    """An exclusive advisory lock on an open file: ``fcntl.flock``, else ``msvcrt.locking``, else a
    ``FILE.lock`` created with O_EXCL (removed on release; taken over when stale)."""

    def __init__(self, fd: int, path: str) -> None:
        self.fd, self.path, self.lockfile = fd, path, None  # type: Any, str, Optional[str]

    def __enter__(self) -> "_Lock":
        try:
            import fcntl
        except ImportError:
            fcntl = None  # type: ignore[assignment]
        if fcntl is not None:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            return self
        self.lockfile = os.path.realpath(self.path) + ".lock"
        while True:
            try:
                os.close(os.open(self.lockfile, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
                return self
            except FileExistsError:
                try:
                    if time.time() - os.stat(self.lockfile).st_mtime > _LOCK_STALE_S:
                        os.unlink(self.lockfile)
                        continue
                except OSError:
                    continue
                time.sleep(0.005)

    def __exit__(self, *exc: Any) -> None:
        if self.lockfile is None:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_UN)
            return
        try:
            os.unlink(self.lockfile)
        except OSError:
            pass


def _utc_stamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def _set_aside_tail(fd: int, path: str, size: int) -> Optional[int]:
    """Under the lock: if the file does not end with a newline, copy the bytes after its last
    newline to ``FILE.partial-<utc time>`` (fsynced) and truncate the file back to that newline.
    The good records before it are never rewritten. Returns the new size, or None when the file
    cannot be read (opened write-only) and so cannot be checked."""
    if size == 0:
        return 0
    try:
        if os.pread(fd, 1, size - 1) == b"\n":
            return size
    except OSError:
        return None
    # find the last newline, reading backwards in blocks
    end = size
    cut = 0
    block = 1 << 16
    while end > 0:
        start = max(0, end - block)
        chunk = os.pread(fd, end - start, start)
        i = chunk.rfind(b"\n")
        if i >= 0:
            cut = start + i + 1
            break
        end = start
    tail = os.pread(fd, size - cut, cut)
    try:  # a whole record that only lacks its newline (e.g. hand-edited): terminate it
        if isinstance(json.loads(tail.decode("utf-8")), dict):
            _write_all(fd, b"\n")
            return size + 1
    except ValueError:
        pass
    try:
        aside = _save_partial(os.path.realpath(path), tail)
    except OSError as exc:  # e.g. a read-only directory: terminate it so readers skip it
        _write_all(fd, b"\n")
        _warn(
            "%s: its last line was cut (%d bytes, no newline) and could not be set aside (%s); "
            "ended it with a newline, readers skip it" % (path, len(tail), exc.strerror or exc)
        )
        return size + 1
    os.ftruncate(fd, cut)
    _warn(
        "%s: its last line was cut (%d bytes, no newline); moved it to %s"
        % (path, len(tail), os.path.basename(aside))
    )
    return cut


def _save_partial(real: str, tail: bytes) -> str:
    """``tail`` into a new ``REAL.partial-<utc time>`` file, fsynced; returns its path."""
    for n in range(1000):
        aside = "%s.partial-%s%s" % (real, _utc_stamp(), "" if n == 0 else "-%d" % n)
        try:
            afd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise OSError(errno.EEXIST, "cannot name a .partial file", real)
    try:
        try:
            _write_all(afd, tail)
            os.fsync(afd)
        finally:
            os.close(afd)
    except BaseException:
        try:
            os.unlink(aside)
        except OSError:
            pass
        raise
    _fsync_dir(os.path.dirname(real))
    return aside


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def append_jsonl(path: str, record: Dict[str, Any]) -> None:
    """Append one record as one line: a single ``write()`` to ``path`` opened with ``O_APPEND``,
    under an exclusive advisory lock, then fsync. No read-modify-write: the cost does not grow
    with the file.

    Before writing, under the lock, a last line without its newline (a writer that crashed, a
    full disk, a cut copy) is moved to ``FILE.partial-<time>``: the good records are never
    rewritten and the new record never glues onto the fragment. If the write fails or is short
    (e.g. the disk is full) the file is truncated back to where it was, so it never holds half a
    record. Symlinks are followed; a new file gets 0o666 less the umask. Any failure raises
    ``OSError``: a record that could not be written is the caller's error to report.
    """
    line = (dumps(record) + "\n").encode("utf-8")
    fd = open_append(path)
    try:
        with _Lock(fd, path):
            size = os.fstat(fd).st_size
            checked = _set_aside_tail(fd, path, size)
            if checked is not None:
                size = checked
            try:
                n = os.write(fd, line)
                if n != len(line):
                    raise OSError(
                        errno.ENOSPC,
                        "short write (%d of %d bytes): %s"
                        % (n, len(line), os.strerror(errno.ENOSPC)),
                        path,
                    )
                os.fsync(fd)
            except BaseException:
                try:
                    os.ftruncate(fd, size)  # no half record left behind
                except OSError:
                    pass
                raise
    finally:
        os.close(fd)
    if size == 0:
        _fsync_dir(os.path.dirname(os.path.realpath(path)))  # a new file: make its name durable


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except (OSError, AttributeError):
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -------------------------------------------------------------------------------- reading records

NOT_RECORDS = "not an edgeattn records file (expected JSON Lines with schema %s)" % SCHEMA
_MAX_WARNINGS = 20


def _warn(msg: str) -> None:
    sys.stderr.write("[edgeattn-runtime] warning: %s\n" % msg)


def iter_jsonl(path: str, warn=None) -> Iterable[Dict[str, Any]]:
    """Records (JSON objects) of a JSON Lines file, read line by line.

    A bad line (cut last line, not JSON, not an object, not UTF-8) is reported through ``warn``
    as ``FILE:LINE: ...`` and skipped; the good lines around it are still read. A file with no
    good line but bad ones (binary, another format) raises ``ValueError`` naming the file."""
    if warn is None:
        warn = _warn
    good = bad = 0
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            partial = not raw.endswith(b"\n")
            text = raw.strip()
            if not text:
                continue
            why = None
            obj = None
            if b"\0" in text and good == 0:
                raise ValueError("%s: %s; it holds binary data" % (path, NOT_RECORDS))
            try:
                obj = json.loads(text.decode("utf-8"))
            except UnicodeDecodeError:
                why = "not UTF-8 text"
            except ValueError:
                why = (
                    "partial last line (no newline: an interrupted write)"
                    if partial
                    else ("not a JSON record")
                )
            if why is None and not isinstance(obj, dict):
                why = "not a JSON object"
            if why is not None:
                bad += 1
                if bad <= _MAX_WARNINGS:
                    warn("%s:%d: %s; skipped" % (path, i, why))
                elif bad == _MAX_WARNINGS + 1:
                    warn("%s: more bad lines; not reporting each" % path)
                continue
            good += 1
            yield obj
    if bad and not good:
        raise ValueError(
            "%s: %s; none of its %d non-empty line(s) is one" % (path, NOT_RECORDS, bad)
        )
    if bad > _MAX_WARNINGS:
        warn("%s: %d bad line(s) skipped in all" % (path, bad))


def read_jsonl(path: str, warn=None) -> List[Dict[str, Any]]:
    return list(iter_jsonl(path, warn=warn))


def read_records(path: str, warn=None) -> List[Dict[str, Any]]:
    """The edgeattn records of ``path`` (``schema`` == SCHEMA), for report and resume.

    Objects of another schema are skipped with a warning; a file with none of ours (another
    schema, binary, not JSON Lines) raises ``ValueError`` naming the file and what was expected.
    """
    if warn is None:
        warn = _warn
    out: List[Dict[str, Any]] = []
    foreign = 0
    try:
        for rec in iter_jsonl(path, warn=warn):
            if rec.get("schema") == SCHEMA:
                out.append(rec)
            else:
                foreign += 1
    except UnicodeDecodeError:  # pragma: no cover - iter_jsonl decodes per line
        raise ValueError("%s: %s" % (path, NOT_RECORDS)) from None
    if foreign and not out:
        raise ValueError(
            "%s: %s; its %d JSON object(s) have no such schema" % (path, NOT_RECORDS, foreign)
        )
    if foreign:
        warn("%s: skipped %d object(s) without schema %s" % (path, foreign, SCHEMA))
    return out


def done_keys(path: str, include_errors: bool = False) -> Set[str]:
    """Keys already measured in ``path`` (status ok; error records too with include_errors).

    A missing file has no keys. Failed runs are retried by ``--resume`` unless include_errors.
    Bad lines (e.g. a cut last line) are skipped with a warning.
    """
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return set()
    keys = set()
    for rec in iter_jsonl(path):
        if rec.get("key") and (include_errors or rec.get("status") == "ok"):
            keys.add(rec["key"])
    return keys


def _varint(f) -> Optional[int]:
    shift = result = 0
    while True:
        b = f.read(1)
        if not b:
            return None
        result |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return result
        shift += 7
        if shift > 63:
            raise ValueError("bad varint")


def _opset_entry(buf: bytes) -> Dict[str, Any]:
    import io

    f = io.BytesIO(buf)
    domain, version = "", None
    while True:
        tag = _varint(f)
        if tag is None:
            break
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            value = _varint(f)
            if field == 2:
                version = value
        elif wire == 2:
            n = _varint(f) or 0
            data = f.read(n)
            if field == 1:
                domain = data.decode("utf-8", "replace")
        else:
            break
    return {"domain": domain, "version": version}


def onnx_header(path: str) -> Dict[str, Any]:
    """ir_version, producer and opset imports of an .onnx file, read without the onnx package.

    Walks only the top-level fields of ModelProto and seeks over the graph. Unreadable -> Nones.
    """
    out: Dict[str, Any] = {"ir_version": None, "producer": None, "opset": None, "opsets": None}
    opsets: Dict[str, int] = {}
    try:
        with open(path, "rb") as f:
            while True:
                tag = _varint(f)
                if tag is None:
                    break
                field, wire = tag >> 3, tag & 7
                if wire == 0:
                    value = _varint(f)
                    if field == 1:
                        out["ir_version"] = value
                elif wire == 2:
                    n = _varint(f)
                    if n is None:
                        break
                    if field in (2, 3, 8):
                        data = f.read(n)
                        if field == 2:
                            out["producer"] = data.decode("utf-8", "replace")
                        elif field == 3 and out["producer"]:
                            out["producer"] += " " + data.decode("utf-8", "replace")
                        else:
                            entry = _opset_entry(data)
                            if entry["version"] is not None:
                                opsets[entry["domain"] or "ai.onnx"] = entry["version"]
                    else:
                        f.seek(n, 1)
                elif wire == 1:
                    f.seek(8, 1)
                elif wire == 5:
                    f.seek(4, 1)
                else:
                    break
    except Exception:
        return out
    if opsets:
        out["opsets"] = opsets
        out["opset"] = opsets.get("ai.onnx")
    return out


def model_record(path: str) -> Dict[str, Any]:
    """The record's ``model`` block: basename, sha256, bytes, opset, ir_version, producer."""
    info: Dict[str, Any] = {
        "path": os.path.basename(path),
        "sha256": sha256_file(path),
        "bytes": os.path.getsize(path),
    }
    info.update(onnx_header(path))
    return info
