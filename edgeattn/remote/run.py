"""Measure a spec on one device over SSH and stream the records back (:func:`run_remote`).

One run is four SSH calls over one multiplexed connection, each a function below:

1. **probe**   (:func:`_probe`) make the cache and run directories; say which content-addressed
               files are missing
2. **upload**  (:func:`_upload`) one tar stream on stdin: the runtime zipapp and the .onnx files
               the device lacks (both cached by sha256 under ``~/.cache/edgeattn``), plus
               ``spec.json``; models are hard-linked (or copied) into the run directory
3. **run**     (:func:`_measure`) ``PYTHON runtime-<sha>.pyz measure --spec spec.json`` in the run
               directory, under a small ``sh`` supervisor: when the SSH session's stdin closes (the
               host was interrupted, the local ssh killed, the network dropped) it TERMs then KILLs
               the runtime and removes the run directory; on normal exit it removes the directory
               too (unless ``keep_remote``). Records stream back on stdout (JSON Lines) and are
               tagged with ``host`` and appended to the local ``out`` file as each arrives; progress
               lines (stderr) go to ``on_progress``.
4. **cleanup** (:func:`_cleanup`) only when step 3 could not do it (a failure before or during the
               run). An interrupted or failed run first closes its SSH session, so the device's
               watcher stops a runtime that is still running at once; the cleanup comes after.

The scripts themselves are in :mod:`edgeattn.remote.device_scripts`.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from edgeattn.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUN_FAILED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    RemoteError,
)
from edgeattn.remote.bundle import write_upload, zipapp_bytes
from edgeattn.remote.device_scripts import (
    CLEANUP_SH,
    DEFAULT_CACHE,
    PROBE_SH,
    RUN_SH,
    RUNS_SUBDIR,
    SCRIPT_ERRORS,
    UPLOAD_SH,
    parse_kv_lines,
    remote_path,
    script_error,
)
from edgeattn.remote.spec import ModelFile, prepare_spec
from edgeattn.remote.ssh import (
    DeviceCommandError,
    Host,
    SSHConnection,
    SSHError,
    SSHOptions,
    classify_ssh_failure,
    parse_host,
    sh_words,
)
from edgeattn.remote.ssh_errors import last_line

ProgressFn = Callable[[str, str], None]  # (host spec, line)
RecordFn = Callable[[str, dict], None]  # (host spec, record)


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


def say(on_progress: ProgressFn | None, host: str, line: str) -> None:
    """One progress line to ``on_progress``; a failing callback never stops the run."""
    if on_progress is not None:
        try:
            on_progress(host, line)
        except Exception:
            pass


_OUT_LOCKS: dict[str, threading.Lock] = {}
_OUT_LOCKS_GUARD = threading.Lock()


def _out_lock(path: str) -> threading.Lock:
    with _OUT_LOCKS_GUARD:
        return _OUT_LOCKS.setdefault(os.path.abspath(path), threading.Lock())


def _append_record(path: str, record: dict[str, Any]) -> None:
    from edgeattn.runtime.records import append_jsonl

    with _out_lock(path):  # append_jsonl rewrites the file: serialise threads writing one file
        append_jsonl(path, record)


def new_run_id() -> str:
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{now}-{secrets.token_hex(4)}"


@dataclass
class _Run:
    """One run between its steps: what it sends, where on the device, what it measured."""

    host: Host
    conn: SSHConnection
    run_id: str
    files: list[ModelFile]
    spec_bytes: bytes
    pyz: bytes
    pyz_name: str
    keep_remote: bool
    on_progress: ProgressFn | None
    timings: dict[str, float] = field(default_factory=dict)
    sent: dict[str, int] = field(
        default_factory=lambda: {"runtime": 0, "models": 0, "spec": 0, "stream": 0}
    )
    rd: str | None = None  # the run directory, once the probe made it
    abs_cache: str = ""
    python: str = ""
    missing: set[str] = field(default_factory=set)
    result: RemoteRunResult | None = None
    cleaned: bool = False  # the run script removed the run directory itself

    def say(self, line: str) -> None:
        say(self.on_progress, self.host.spec, line)


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
    cache = remote_path(remote_cache, DEFAULT_CACHE)
    runs_root = remote_path(remote_dir, f"{cache}/{RUNS_SUBDIR}")
    if remote_python is not None and (not remote_python or "\n" in remote_python):
        raise RemoteError(f"bad --remote-python {remote_python!r}")
    dev_spec, files = prepare_spec(spec, model_files, base_dir)
    from edgeattn import integrity

    dev_spec = integrity.with_run_id(dev_spec)  # the host command's run id, if one is open
    pyz, pyz_sha = zipapp_bytes()
    run = _Run(
        host=h,
        conn=_conn or SSHConnection(h, ssh or SSHOptions()),
        run_id=new_run_id(),
        files=files,
        spec_bytes=(json.dumps(dev_spec, indent=1) + "\n").encode(),
        pyz=pyz,
        pyz_name=f"runtime-{pyz_sha}.pyz",
        keep_remote=keep_remote,
        on_progress=on_progress,
    )
    t_all = time.monotonic()
    try:
        _probe(run, cache, runs_root, remote_python or "", out)
        _upload(run)
        _measure(run, out, on_record)
        assert run.result is not None
        return run.result
    except BaseException as exc:
        run.timings.setdefault("connect", time.monotonic() - t_all)
        if run.result is not None and isinstance(exc, RemoteError):
            exc.result = run.result  # type: ignore[attr-defined]  # the records that did arrive
        # the session closes FIRST: a runtime still running on the device stops at once (its
        # watcher sees stdin close) instead of after the cleanup below; that reconnects
        run.conn.close()
        raise
    finally:
        _cleanup(run, close=_conn is None)
        run.timings["total"] = time.monotonic() - t_all


def _probe(run: _Run, cache: str, runs_root: str, python: str, out: Any) -> None:
    """1. probe: make the cache and run directories; note the files the device lacks."""
    t0 = time.monotonic()
    h = run.host
    target = run.conn.target()
    wanted = [run.pyz_name] + sorted({f.cache_name for f in run.files})
    try:
        res = run.conn.run(
            sh_words(PROBE_SH, cache, runs_root, run.run_id, python, *wanted), what="probe"
        )
    except DeviceCommandError as exc:
        raise script_error(exc, "probe") from None
    info: dict[str, str] = {}
    for k, v in parse_kv_lines(res.stdout):
        if k == "missing":
            run.missing.add(v)
        elif k in ("cache", "rundir", "python"):
            info[k] = v
    if "rundir" not in info or "python" not in info:
        raise DeviceCommandError(
            f"{h.spec}: unexpected answer from the device probe: {res.stdout[:200]!r}",
            returncode=0,
            host=h.spec,
        )
    run.rd, run.python, run.abs_cache = info["rundir"], info["python"], info["cache"]
    run.timings["connect"] = time.monotonic() - t0
    run.result = RemoteRunResult(
        host=h.spec,
        target=target,
        python=run.python,
        run_id=run.run_id,
        remote_dir=run.rd,
        bytes_sent=run.sent,
        timings=run.timings,
        kept_remote=run.keep_remote,
        out=str(out) if out is not None else None,
    )
    run.say(f"connected to {target} (python: {run.python}); run dir {run.rd}")


def _upload(run: _Run) -> None:
    """2. upload: the runtime and models the device lacks, and the spec, as one tar stream."""
    t0 = time.monotonic()
    assert run.rd is not None
    send_runtime = run.pyz_name in run.missing
    send_models = [
        f for f in {f.cache_name: f for f in run.files}.values() if f.cache_name in run.missing
    ]
    if send_runtime or send_models:
        parts = (["runtime"] if send_runtime else []) + (
            [f"{len(send_models)} model(s)"] if send_models else []
        )
        run.say(f"sending {' and '.join(parts)}")

    def write_tar(pipe: IO[bytes]) -> None:
        runtime = (run.pyz_name, run.pyz) if send_runtime else None
        write_upload(pipe, run.spec_bytes, run.sent, runtime, send_models)

    links: list[str] = []
    for mf in run.files:
        k = mf.remote_rel.split("/")[1]
        links += [k, mf.sha256, mf.local.name]
    try:
        run.conn.run(
            sh_words(UPLOAD_SH, run.abs_cache, run.rd, run.run_id, *links),
            stdin=write_tar,
            what="upload",
        )
    except DeviceCommandError as exc:
        raise script_error(exc, "upload") from None
    run.timings["deploy"] = time.monotonic() - t0


def _measure(run: _Run, out: str | os.PathLike | None, on_record: RecordFn | None) -> None:
    """3. run: the runtime under the sh supervisor; each record tagged, kept and appended."""
    t0 = time.monotonic()
    h, result = run.host, run.result
    assert run.rd is not None and result is not None
    collect = [0.0]
    host_tag = {"spec": h.spec, "target": result.target, "python": run.python}

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
            run.say(f"(device stdout) {text[:200]}")
            return
        rec["host"] = dict(host_tag)
        result.records.append(rec)
        if out is not None:
            _append_record(str(out), rec)
        if on_record is not None:
            on_record(h.spec, rec)
        collect[0] += time.monotonic() - tc

    words = [run.python, f"{run.abs_cache}/{run.pyz_name}", "measure", "--spec", "spec.json"]
    res = run.conn.run(
        sh_words(RUN_SH, run.rd, "1" if run.keep_remote else "0", *words),
        on_stdout_line=on_line,
        on_stderr_line=run.say,
        check=False,
        what="measure",
    )
    result.exit_status = res.returncode
    run.timings["run"] = time.monotonic() - t0 - collect[0]
    run.timings["collect"] = collect[0]
    if res.returncode == 255:
        raise classify_ssh_failure(res.stderr, h.spec)
    if res.returncode < 0:
        raise SSHError(
            f"{h.spec}: the local ssh was killed by signal {-res.returncode}",
            kind="killed",
            host=h.spec,
            hint="the device stops its runtime when the session drops",
        )
    run.cleaned = not run.keep_remote  # the run script removed the directory
    if res.returncode not in (EXIT_OK, EXIT_RUN_FAILED):
        raise _measure_error(h.spec, res.returncode, res.stderr, run.python)


def _cleanup(run: _Run, close: bool) -> None:
    """4. cleanup: remove the run directory when the run script could not (best effort: the
    script's watcher removes it too); ``close``: this call made the connection, so it ends it."""
    t0 = time.monotonic()
    if run.rd is not None and not run.keep_remote and not run.cleaned:
        try:
            incoming = f"{run.abs_cache}/.incoming-{run.run_id}"
            run.conn.run(
                sh_words(CLEANUP_SH, run.rd, incoming), timeout=20, what="cleanup", force=True
            )
        except (RemoteError, KeyboardInterrupt, OSError):
            pass  # best effort: the run script's watcher removes it too
    if close:
        run.conn.close()
    run.timings["cleanup"] = time.monotonic() - t0


def _measure_error(host: str, rc: int, stderr: str, py: str) -> DeviceCommandError:
    last = last_line(stderr)
    hint = None
    if rc == EXIT_USAGE:
        what = "the device runtime rejected the spec"
    elif rc == 127:
        what = f"{py!r} was not found on the device"
        hint = "pass --remote-python PATH, or run `edgeattn remote check HOST`"
    elif rc in (EXIT_INTERRUPTED, EXIT_TERMINATED, 137):  # 137: SIGKILL
        what = "the device runtime was interrupted"
    elif rc in SCRIPT_ERRORS:
        what = SCRIPT_ERRORS[rc]
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
