"""The result record: one JSON object per measurement, stored as JSON Lines.

Records are the contract between runtime, bench, remote and report. A record always has ``schema``,
``id``, ``key``, ``created_utc``, ``status`` ("ok" | "error") and ``error`` (one line or null); the
measurement fields are null in an error record. ``key`` is the sha256 of the canonical JSON of the
knobs that define the measurement (see :func:`measurement_key`) and is what ``--resume`` matches on.

Standard library only.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import sys
import tempfile
from typing import Any, Dict, Iterable, List, Optional, Set

SCHEMA = "edgeattn.record/1"

# record fields, in the order they are written (JSON objects keep insertion order)
RECORD_FIELDS = (
    "schema",
    "id",
    "key",
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


def write_atomic(path: str, data: bytes, mode: Optional[int] = None) -> None:
    """Write ``data`` to ``path`` atomically: a temp file in the same directory, fsynced and
    ``os.replace``d over ``path``, so a crash leaves either the old file or the new one. The new
    file keeps the old one's permissions (or gets ``mode``)."""
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
        if mode is None and os.path.exists(path):
            mode = os.stat(path).st_mode & 0o777
        if mode is not None:
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


def append_jsonl(path: str, record: Dict[str, Any]) -> None:
    """Append one record atomically (:func:`write_atomic` of the old content plus the new line),
    so an interrupted sweep never leaves a half line. (Cost: the file is rewritten per append.)
    """
    line = (dumps(record) + "\n").encode("utf-8")
    data = b""
    if os.path.exists(path):
        with open(path, "rb") as src:
            data = src.read()
        if data and not data.endswith(b"\n"):
            data += b"\n"  # never glue a record onto a foreign partial line
    write_atomic(path, data + line)


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


def iter_jsonl(path: str, warn=None) -> Iterable[Dict[str, Any]]:
    """Records of a JSON Lines file. A partial last line (interrupted write) is skipped with a
    warning; a bad line elsewhere raises ``ValueError`` naming the line."""
    if warn is None:

        def warn(msg: str) -> None:
            sys.stderr.write(f"[edgeattn-runtime] warning: {msg}\n")

    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    last = len(lines) - 1
    for i, raw in enumerate(lines):
        text = raw.strip()
        if not text:
            continue
        try:
            obj = json.loads(text)
        except ValueError:
            if i == last:  # no newline after it: an interrupted write
                warn(f"{path}:{i + 1}: skipping a partial last line")
                continue
            raise ValueError(f"{path}:{i + 1}: not a JSON record") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{i + 1}: a record must be a JSON object")
        yield obj


def read_jsonl(path: str, warn=None) -> List[Dict[str, Any]]:
    return list(iter_jsonl(path, warn=warn))


def done_keys(path: str, include_errors: bool = False) -> Set[str]:
    """Keys already measured in ``path`` (status ok; error records too with include_errors).

    A missing file has no keys. Failed runs are retried by ``--resume`` unless include_errors.
    """
    if not os.path.exists(path):
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


def model_info(path: str) -> Dict[str, Any]:
    """The record's ``model`` block: basename, sha256, bytes, opset, ir_version, producer."""
    info: Dict[str, Any] = {
        "path": os.path.basename(path),
        "sha256": sha256_file(path),
        "bytes": os.path.getsize(path),
    }
    info.update(onnx_header(path))
    return info
