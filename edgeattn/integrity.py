"""Run integrity: tell a complete, unedited run of records from a partial or an edited one.

A host command that measures (``bench``, ``sweep``, ``profile``, ``remote run``) wraps its
measuring in :func:`run`: it makes a run id (uuid4 hex) that every record of the run carries
(``run_id``: the runtime takes it from its spec, or from ``$EDGEATTN_RUN_ID``, which this sets
for the local runtime processes; the remote path puts it in the spec it sends), and when the
measuring returns normally it appends one closing record through the same append-only writer::

    {"schema": "edgeattn.record/1", "kind": "run_end", "run_id": ..., "records": N,
     "sha256": ..., "command": "bench", "started_utc": ..., "created_utc": ...}

``records`` counts the run's lines before it and ``sha256`` is :func:`digest` over them, in file
order. ``edgeattn report --check`` (``check.py``) then calls a run *complete* (end record, count
and digest match), *partial* (no end record: interrupted, a host failed, or the file was cut) or
*edited* (count or digest differ, or a record after the end). A records file is never rewritten.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from edgeattn.runtime.__main__ import RUN_ID_ENV

RUN_END = "run_end"
DIGEST_RULE = (
    "sha256 over the run's record lines in file order, each line's bytes without its line "
    "ending followed by one newline"
)

_lock = threading.Lock()
_active: list[str] = []  # the run ids of the runs open in this process (outermost first)
_failed: set[str] = set()


def new_run_id() -> str:
    return uuid.uuid4().hex


def current() -> str | None:
    """The run id of the run open in this process, if any."""
    return _active[-1] if _active else None


def mark_failed(run_id: str | None = None) -> None:
    """Keep the run (default: the open one) from closing: a part of it failed (e.g. one host of
    several), so its records are not the whole run and it stays partial."""
    rid = run_id or current()
    if rid:
        with _lock:
            _failed.add(rid)


def with_run_id(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` (a runtime spec) with the open run's id, for a runtime that does not inherit this
    process's environment (a device over SSH). Unchanged when no run is open."""
    rid = current()
    return dict(spec, run_id=rid) if rid else spec


def digest(lines: Iterable[bytes]) -> str:
    h = hashlib.sha256()
    for raw in lines:
        h.update(raw.rstrip(b"\r\n") + b"\n")
    return h.hexdigest()


def scan(path: str | Path) -> Iterator[tuple[int, bytes, Any]]:
    """(line number, raw line, parsed JSON or None) of each non-empty line of ``path``."""
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except ValueError:  # UnicodeDecodeError too
                obj = None
            yield i, raw, obj


def end_record(path: str | Path, run_id: str, **extra: Any) -> dict[str, Any] | None:
    """The ``run_end`` record of ``run_id`` from the lines of ``path``; None without the file."""
    from edgeattn.runtime.records import SCHEMA, utc_now

    if not Path(path).is_file():
        return None
    tag = json.dumps(run_id).encode()  # parse only the lines that can be the run's
    lines = []
    with open(path, "rb") as f:
        for raw in f:
            if tag not in raw:
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except ValueError:
                continue
            if isinstance(obj, dict) and obj.get("run_id") == run_id and obj.get("kind") != RUN_END:
                lines.append(raw)
    rec: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": RUN_END,
        "run_id": run_id,
        "created_utc": utc_now(),
        "records": len(lines),
        "sha256": digest(lines),
        "digest": DIGEST_RULE,
    }
    rec.update({k: v for k, v in extra.items() if v is not None})
    return rec


def open_runs(path: str | Path, but: str | None = None) -> list[str]:
    """Run ids in ``path`` without their ``run_end`` (in order of first record), except ``but``."""
    seen: dict[str, bool] = {}
    if not Path(path).is_file():
        return []
    for _, _, obj in scan(path):
        if isinstance(obj, dict) and isinstance(obj.get("run_id"), str):
            rid = obj["run_id"]
            seen[rid] = seen.get(rid, False) or obj.get("kind") == RUN_END
    return [rid for rid, ended in seen.items() if not ended and rid != but]


@contextlib.contextmanager
def run(out: str | Path, command: str, resume: bool = False) -> Iterator[str]:
    """Open a run for the records going to ``out``; yield its id; on a normal exit append its
    ``run_end`` to ``out``. On an exception (Ctrl-C, a failure) or after :func:`mark_failed`
    nothing is appended: the run stays partial. Nested inside an open run: the outer one."""
    import edgeattn
    from edgeattn.runtime.records import append_jsonl, utc_now

    if _active:
        yield _active[-1]
        return
    rid = new_run_id()
    started = utc_now()
    saved = os.environ.get(RUN_ID_ENV)
    os.environ[RUN_ID_ENV] = rid
    _active.append(rid)
    try:
        yield rid
    finally:
        _active.pop()
        if saved is None:
            os.environ.pop(RUN_ID_ENV, None)
        else:
            os.environ[RUN_ID_ENV] = saved
    with _lock:
        failed = rid in _failed
        _failed.discard(rid)
    if failed:
        return
    rec = end_record(
        out,
        rid,
        command=command,
        started_utc=started,
        resumes=(open_runs(out, but=rid) or None) if resume else None,
        edgeattn_version=edgeattn.__version__,
    )
    if rec is not None:
        append_jsonl(str(out), rec)
