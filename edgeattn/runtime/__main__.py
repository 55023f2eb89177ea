"""``python -m edgeattn.runtime`` (and the device zipapp): measure, env, check.

Contract (the remote helper and the bench build on it):

* ``measure --spec FILE|- [--out FILE.jsonl] [--resume] [--quiet]``: records as JSON Lines on
  STDOUT, one per run, flushed as each finishes; with ``--out`` also appended atomically to that
  file; ``--resume`` skips runs whose key has an ok record in ``--out``. Progress on STDERR, lines
  prefixed ``[edgeattn-runtime]``. A spec may add ``"paired": [groups]`` (members timed in
  interleaved rounds in one process, one ``kind: "paired"`` record per group, after the runs; see
  ``paired.py``) and ``"isolated": false`` (measure only the groups), and ``"run_id"`` (else
  ``$EDGEATTN_RUN_ID``): copied into every record, naming the host command's run; ``"cpus"``
  (``[0, 1]``, ``"0,2-3"``, ``"big"``, ``"little"``, ``"all"``) pins the process to those cores
  before anything runs, gives runs with ``intra_op_threads`` 0 one thread per core, and is
  recorded in every record as ``placement`` (absent without it). Exit 0: all runs ok; 3: some run failed (its error record is
  still printed); 2: bad spec or bad usage (one line naming the field and the valid values).
* ``env``: the device fingerprint as one JSON object.
* ``check``: preflight as one JSON object with ``ok``; works (nulls) without numpy/onnxruntime.
  Exit 0 whenever the JSON was printed: ``ok`` is the answer.
* ``--version``.

Any other failure (a bug, an unwritable ``--out``) prints one line and exits 1; set
``EDGEATTN_DEBUG=1`` for the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import Any, Callable, Dict, Iterator, List, Optional, TextIO, Tuple

PROG = "edgeattn-runtime"
PREFIX = "[edgeattn-runtime]"

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_RUN_FAILED = 3
EXIT_INTERRUPTED = 130

SPEC_KEYS = ("defaults", "runs", "paired", "isolated", "run_id", "cpus")
RUN_ID_ENV = "EDGEATTN_RUN_ID"  # the run id when the spec has none (the host's local runs)
_RUN_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-")
_DEEP_MERGE = ("meta", "inputs", "provider_options")


class UsageError(Exception):
    """Bad command line or bad spec: one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


def _build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = _Parser(prog=PROG, description="edgeattn device-side runtime: time ONNX models.")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", metavar="{measure,env,check}")
    m = sub.add_parser("measure", help="run a JSON spec, print JSON Lines records")
    m.add_argument("--spec", required=True, help="spec file, or - for stdin")
    m.add_argument("--out", help="also append records to this .jsonl file (atomically)")
    m.add_argument("--resume", action="store_true", help="skip runs already ok in --out")
    m.add_argument("--quiet", action="store_true", help="no progress on stderr")
    sub.add_parser("env", help="print the device fingerprint as JSON")
    sub.add_parser("check", help="preflight: python, numpy, onnxruntime, providers, disk")
    return p


def _progress(quiet: bool):
    def say(msg: str) -> None:
        if not quiet:
            sys.stderr.write(f"{PREFIX} {msg}\n")
            sys.stderr.flush()

    return say


# ------------------------------------------------------------------------------------------ spec


def load_spec(source: str, stdin: Optional[TextIO] = None) -> Tuple[Dict[str, Any], str]:
    """Read the spec JSON; return it and the directory that relative model paths resolve from."""
    if source == "-":
        text = (stdin or sys.stdin).read()
        base = os.getcwd()
        where = "stdin"
    else:
        try:
            with open(source, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise UsageError(f"cannot read spec {source!r}: {exc.strerror or exc}") from None
        base = os.path.dirname(os.path.abspath(source))
        where = source
    try:
        spec = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"bad spec: {where} is not JSON ({exc})") from None
    return spec, base


def _merge(defaults: Dict[str, Any], run: Dict[str, Any]) -> Dict[str, Any]:
    merged = dict(defaults)
    for k, v in run.items():
        if k in _DEEP_MERGE and isinstance(v, dict) and isinstance(merged.get(k), dict):
            merged[k] = dict(merged[k], **v)
        else:
            merged[k] = v
    return merged


def parse_spec(spec: Any, base_dir: str) -> List[Any]:
    """Validate the whole spec up front; return RunSpecs. ``UsageError`` names the bad field."""
    from .measure import RunSpec
    from .session import RuntimeSpecError

    if not isinstance(spec, dict):
        raise UsageError('bad spec: expected a JSON object {"defaults": {...}, "runs": [...]}')
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise UsageError(
            f"bad spec: unknown top-level field {unknown[0]!r}; valid fields: {', '.join(SPEC_KEYS)}"
        )
    spec_run_id(spec)
    defaults = spec.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise UsageError("bad spec: 'defaults' must be an object of run fields")
    runs = spec.get("runs")
    if not isinstance(runs, list) or not runs:
        raise UsageError("bad spec: 'runs' must be a non-empty list of run objects")
    out = []
    for i, run in enumerate(runs):
        if not isinstance(run, dict):
            raise UsageError(f"bad spec: runs[{i}] must be an object, got {type(run).__name__}")
        try:
            out.append(RunSpec.from_dict(_merge(defaults, run), base_dir=base_dir))
        except RuntimeSpecError as exc:
            raise UsageError(f"bad spec: runs[{i}]: {exc}") from None
    _assign_ids(out)
    return out


def parse_paired(spec: Dict[str, Any], specs: List[Any]) -> Tuple[List[Any], bool]:
    """The spec's paired groups (see ``paired.py``) and whether runs are also measured alone."""
    from .paired import parse_groups
    from .session import RuntimeSpecError

    isolated = spec.get("isolated", True)
    if not isinstance(isolated, bool):
        raise UsageError(f"bad spec: isolated {isolated!r} is invalid; expected true or false")
    try:
        groups = parse_groups(spec.get("paired"), [s.id for s in specs])
    except RuntimeSpecError as exc:
        raise UsageError(f"bad spec: {exc}") from None
    if not isolated and not groups:
        raise UsageError("bad spec: isolated is false but there are no paired groups to measure")
    return groups, isolated


def parse_placement(spec: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The spec's ``cpus`` resolved on this device (see ``measure.placement``), or None."""
    from .measure import placement
    from .session import RuntimeSpecError

    try:
        return placement(spec.get("cpus"))
    except RuntimeSpecError as exc:
        raise UsageError(f"bad spec: {exc}") from None


def spec_run_id(spec: Dict[str, Any]) -> Optional[str]:
    """The spec's ``run_id`` (else ``$EDGEATTN_RUN_ID``, else None): 1-128 of [A-Za-z0-9._:-]."""
    value = spec.get("run_id")
    if value is None:
        value = os.environ.get(RUN_ID_ENV) or None
        where = RUN_ID_ENV
    else:
        where = "bad spec: run_id"
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 128 or set(value) - _RUN_ID_CHARS:
        raise UsageError(f"{where} {value!r} is invalid; expected 1-128 of [A-Za-z0-9._:-]")
    return value


def _assign_ids(specs: List[Any]) -> None:
    explicit = [s.id for s in specs if s.id is not None]
    dup = sorted({x for x in explicit if explicit.count(x) > 1})
    if dup:
        raise UsageError(f"bad spec: run id {dup[0]!r} is used more than once; ids must be unique")
    bases = [os.path.splitext(os.path.basename(s.model))[0] for s in specs]
    for i, (s, base) in enumerate(zip(specs, bases)):  # noqa: B905 (3.8)
        if s.id is None:
            s.id = base if bases.count(base) == 1 and base not in explicit else f"{base}#{i}"


# --------------------------------------------------------------------------------------- measure


@contextlib.contextmanager
def _records_channel() -> Iterator[Callable[[str], None]]:
    """Yield ``emit(line)``, which writes one record line to stdout and flushes it.

    Meanwhile everything else that would print to stdout goes to stderr: Python-level prints
    (``sys.stdout`` is swapped) and, when stdout is a real file descriptor, native prints from ORT or
    an execution provider's libraries (fd 1 is pointed at stderr; records go to a duplicate of the
    original fd 1). So stdout carries only records.
    """
    py_out = sys.stdout
    saved: Optional[int] = None
    try:
        py_out.flush()
        fd = py_out.fileno()
        saved = os.dup(fd)
        os.dup2(sys.stderr.fileno(), fd)
    except (AttributeError, OSError, ValueError):  # captured or unusual stdout: Python level only
        if saved is not None:
            os.close(saved)
        saved, fd = None, -1

    def emit(line: str) -> None:
        data = (line + "\n").encode("utf-8")
        if saved is None:
            py_out.write(line + "\n")
            py_out.flush()
            return
        view = memoryview(data)
        while view:
            view = view[os.write(saved, view) :]

    sys.stdout = sys.stderr
    try:
        yield emit
    finally:
        sys.stdout = py_out
        if saved is not None:
            sys.stderr.flush()
            os.dup2(saved, fd)
            os.close(saved)


def cmd_measure(args: argparse.Namespace) -> int:
    from . import records
    from .measure import measure, placement_record, spec_key
    from .paired import measure_group

    if args.resume and not args.out:
        raise UsageError("--resume needs --out (the file whose records are skipped)")
    say = _progress(args.quiet)
    spec, base = load_spec(args.spec)
    specs = parse_spec(spec, base)
    groups, isolated = parse_paired(spec, specs)
    run_id = spec_run_id(spec)
    place = parse_placement(spec)
    done = set()
    if args.resume:
        try:
            done = records.done_keys(args.out)
        except ValueError as exc:
            raise UsageError(f"--resume: {exc}") from None
    if args.out:  # before the first measurement: an unwritable --out fails now, not after it
        try:
            records.check_appendable(args.out)
        except OSError as exc:
            return _out_failed(args.out, exc, "cannot write records to")

    if place is not None:
        from .measure import apply_placement

        apply_placement(place, specs)
        say(f"pinned to cores {','.join(map(str, place['cpus']))} (cpus {place['request']!r})")
    failed = 0
    n = len(specs)
    with _records_channel() as emit:
        for i, rs in enumerate(specs if isolated else [], 1):
            tag = f"[{i}/{n}] {rs.id}"
            if done:
                key = spec_key(rs)
                if key is not None and key in done:
                    say(f"{tag}: skipped (already in {args.out})")
                    continue
            say(f"{tag}: {os.path.basename(rs.model)} on {rs.device}")
            rec = measure(rs, log=lambda msg, tag=tag: say(f"{tag}: {msg}"))
            rec["run_id"] = run_id
            if place is not None:
                rec["placement"] = placement_record(place, rec)
            if rec["status"] != "ok":
                failed += 1
            emit(records.dumps(rec))
            if args.out:
                try:
                    records.append_jsonl(args.out, rec)
                except OSError as exc:  # nothing more is measured into a file that cannot take it
                    return _out_failed(args.out, exc, f"{tag}: the record could not be appended to")
        by_id = {rs.id: rs for rs in specs}
        for j, grp in enumerate(groups, 1):
            tag = f"[paired {j}/{len(groups)}] {grp.id}"
            if done:
                from .paired import group_key

                keys = [spec_key(by_id[r]) for r in grp.runs]
                if None not in keys and group_key(grp, keys) in done:
                    say(f"{tag}: skipped (already in {args.out})")
                    continue
            say(f"{tag}: {len(grp.runs)} members in interleaved rounds")
            rec = measure_group(grp, by_id, log=lambda msg, tag=tag: say(f"{tag}: {msg}"))
            rec["run_id"] = run_id
            if place is not None:
                rec["placement"] = placement_record(place, rec)
            n += 1
            if rec["status"] != "ok":
                failed += 1
            emit(records.dumps(rec))
            if args.out:
                try:
                    records.append_jsonl(args.out, rec)
                except OSError as exc:
                    return _out_failed(args.out, exc, f"{tag}: the record could not be appended to")
        if not isolated:
            n -= len(specs)
    say(f"done: {n - failed} ok, {failed} failed" if failed else f"done: {n} ok")
    return EXIT_RUN_FAILED if failed else EXIT_OK


def _out_failed(path: str, exc: OSError, what: str) -> int:
    """One line naming the file and the OS error; exit 1 (EXIT_ERROR)."""
    why = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    code = f" [{errno_name(exc.errno)}]" if exc.errno else ""
    sys.stderr.write(f"{PROG}: error: {what} {path}: {why}{code}\n")
    sys.stderr.flush()
    return EXIT_ERROR


def errno_name(code: int) -> str:
    import errno

    return errno.errorcode.get(code, str(code))


# ------------------------------------------------------------------------------------ env, check


def cmd_env(args: argparse.Namespace) -> int:
    from . import sysinfo

    print(json.dumps(sysinfo.fingerprint(), sort_keys=False))
    return EXIT_OK


def _try_import(name: str) -> Tuple[Optional[Any], Optional[str]]:
    try:
        return __import__(name), None
    except Exception as exc:
        return (
            None,
            f"{name} cannot be imported: {type(exc).__name__}: {' '.join(str(exc).split())}",
        )


def preflight() -> Dict[str, Any]:
    import platform
    import shutil

    from . import __version__, sysinfo

    problems: List[str] = []
    py_ok = sys.version_info >= (3, 8)
    if not py_ok:
        problems.append(f"python {platform.python_version()} is older than 3.8")
    np, err = _try_import("numpy")
    if err:
        problems.append(err)
    ort, err = _try_import("onnxruntime")
    if err:
        problems.append(err)
    providers = None
    if ort is not None:
        try:
            providers = list(ort.get_available_providers())
        except Exception as exc:
            problems.append(f"onnxruntime.get_available_providers failed: {exc}")
    if providers is not None and "CPUExecutionProvider" not in providers:
        problems.append("CPUExecutionProvider missing")
    psutil, _ = _try_import("psutil")
    try:
        free_mb: Optional[float] = round(shutil.disk_usage(os.getcwd()).free / 2**20, 1)
    except Exception:
        free_mb = None
    return {
        "ok": not problems,
        "problems": problems,
        "runtime_version": __version__,
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
            "ok": py_ok,
        },
        "numpy_version": getattr(np, "__version__", None),
        "onnxruntime_version": getattr(ort, "__version__", None),
        "psutil_version": getattr(psutil, "__version__", None),
        "providers": providers,
        "cpu": {
            "model": sysinfo._safe(sysinfo.cpu_model),
            "machine": sysinfo._safe(platform.machine),
            "cores_logical": sysinfo._safe(sysinfo.cores_logical),
            "cores_physical": sysinfo._safe(sysinfo.cores_physical),
        },
        "disk_free_mb": free_mb,
        "cwd": os.getcwd(),
    }


def cmd_check(args: argparse.Namespace) -> int:
    print(json.dumps(preflight()))
    return EXIT_OK


# ------------------------------------------------------------------------------------------ main


def main(argv: Optional[List[str]] = None) -> int:
    try:
        parser = _build_parser()
        args = parser.parse_args(argv)
        if not args.command:
            raise UsageError(f"a command is needed: measure, env or check (see {PROG} --help)")
        handler = {"measure": cmd_measure, "env": cmd_env, "check": cmd_check}[args.command]
        return handler(args)
    except UsageError as exc:
        sys.stderr.write(f"{PROG}: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write(f"{PREFIX} interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug or the environment (e.g. --out unwritable): one line
        if os.environ.get("EDGEATTN_DEBUG"):
            raise
        text = " ".join(str(exc).split())
        sys.stderr.write(
            f"{PROG}: error: {type(exc).__name__}: {text} (EDGEATTN_DEBUG=1 for the traceback)\n"
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
