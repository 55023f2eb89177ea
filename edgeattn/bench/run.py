"""What ``edgeattn bench``, ``profile`` and ``report`` do, as library calls: check the request,
export, measure (here or on SSH hosts), and hand back the records for the caller to print.

Progress goes to ``on_progress(message)`` (one call per step: each export, each measurement,
each host's lines), warnings to ``on_warning(message)``. The interrupt bookkeeping (how many
records a Ctrl-C kept, and the ``--resume`` command that continues) is :class:`Kept`.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeattn import integrity
from edgeattn.bench import core
from edgeattn.errors import BenchError

Say = Callable[[str], None]


def silent(message: str) -> None:
    """The default progress and warning callback: says nothing."""
    return None


#: where every command's records go unless ``--out`` says otherwise
RESULTS_DIR = Path("results")


def default_out(kind: str) -> Path:
    """``results/<kind>-<time>.jsonl``: the one default records location (bench, sweep,
    profile, remote run)."""
    return RESULTS_DIR / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"


# ------------------------------------------------------------------------- checks before export


def check_opt_level(opt_level: str) -> None:
    from edgeattn.runtime.session import OPT_LEVELS

    if opt_level not in OPT_LEVELS:
        raise BenchError(f"--opt-level {opt_level!r} is not one of: {', '.join(OPT_LEVELS)}")


def check_device(device: str, hosts: Sequence[str] | None = None) -> None:
    """Fail before exporting anything if the provider name is unknown or (locally) unavailable."""
    from edgeattn.runtime import session

    try:
        if hosts:
            session.provider_for(device)  # availability is checked on the device itself
        else:
            session.check_provider(device)
    except (session.RuntimeSpecError, session.ProviderUnavailableError) as exc:
        raise BenchError(str(exc).splitlines()[0], hint=getattr(exc, "hint", None)) from None


def settings(**kw: Any) -> core.Settings:
    """``core.Settings`` from keyword values, ``None`` meaning "the default"."""
    return core.Settings(**{k: v for k, v in kw.items() if v is not None})


def preflight(check: str, kept: Kept | None, on_warning: Say, **kw: Any) -> None:
    """``edgeattn.bench.preflight.<check>(**kw)``: raises on a bad request, warns, and starts
    ``kept`` on ``kw["out"]``."""
    from edgeattn.bench import preflight as pf

    for w in getattr(pf, check)(**kw):
        on_warning(w)
    if kept is not None:
        kept.start(kw["out"])


# ------------------------------------------------------------------------ interrupt bookkeeping


def count_records(path: str | Path | None) -> int:
    if path is None or not Path(path).is_file():
        return 0
    from edgeattn.runtime.records import iter_jsonl

    try:
        return sum(1 for _ in iter_jsonl(str(path), warn=lambda m: None))
    except (OSError, ValueError):
        return 0


def rerun_command(argv: Sequence[str], out: str | Path) -> str:
    """``edgeattn ARGV`` with any ``--out``/``--resume`` replaced by ``--resume --out OUT``."""
    words: list[str] = []
    skip = False
    for w in argv:
        if skip:
            skip = False
        elif w in ("--out", "-o", "--output"):
            skip = True
        elif not (w.startswith(("--out=", "--output=")) or w == "--resume"):
            words.append(w)
    words += ["--resume", "--out", str(out)]
    return "edgeattn " + " ".join(shlex.quote(w) for w in words)


@dataclass
class Kept:
    """Where a command's records go and how many were there before it started."""

    out: Path | None = None
    before: int = 0

    def start(self, out: str | Path) -> None:
        self.out, self.before = Path(out), count_records(out)

    def message(self, what: str, argv: Sequence[str]) -> str:
        """The line an interrupted command ends with: what was kept and how to go on."""
        if self.out is None:
            return f"{what}: nothing was measured yet"
        kept = max(0, count_records(self.out) - self.before)
        return (
            f"{what}: {kept} record(s) kept in {self.out}; rerun with: "
            f"{rerun_command(argv, self.out)}"
        )


# ----------------------------------------------------------------------------------- measuring


def export_jobs(jobs: Sequence[core.Job], st: core.Settings, on_progress: Say) -> list[core.Job]:
    """Export each job (content-hash cached), one progress step per job."""
    done: list[core.Job] = []
    for i, j in enumerate(jobs, 1):
        on_progress(f"export {i}/{len(jobs)}: {j.id}")
        done += core.prepare([j], st)
    return done


class _HostLines:
    """``core.run_on_hosts`` prints through a console; this one turns its lines into steps."""

    def __init__(self, on_progress: Say, on_warning: Say) -> None:
        self.on_progress, self.on_warning = on_progress, on_warning

    def print(self, text: str, *args: Any, **kw: Any) -> None:
        plain = re.sub(r"\[/?[a-z ]*\]", "", str(text))
        if plain.startswith("error: "):
            self.on_warning(plain[len("error: ") :])
        else:
            self.on_progress(plain)


@dataclass
class Remote:
    """How to reach the hosts of ``bench --host`` (the options ``remote run`` takes too)."""

    hosts: list[str]
    ssh: Any = None  # edgeattn.remote.SSHOptions
    remote_python: Any = None  # str, or host -> str
    remote_dir: str | None = None
    remote_cache: str | None = None
    keep_remote: bool = False
    quiet: bool = False


def measure(
    jobs: Sequence[core.Job],
    st: core.Settings,
    out: Path,
    resume: bool = False,
    remote: Remote | None = None,
    on_progress: Say = silent,
    on_warning: Say = silent,
    resume_paired: bool = False,
    timing: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Export and measure ``jobs`` here or on ``remote.hosts``; records stream into ``out``.
    With ``resume``, the records are those of ``out`` for these jobs (and, ``resume_paired``,
    their shapes' paired groups)."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    jobs = export_jobs(jobs, st, on_progress)
    if timing is not None:
        timing["export_s"] = time.monotonic() - t0
    with integrity.run(out, "bench", resume=resume):  # the records' run id and run_end
        if remote is not None and remote.hosts:
            lines = _HostLines(silent if remote.quiet else on_progress, on_warning)
            records = core.run_on_hosts(
                remote.hosts,
                jobs,
                st,
                out=out,
                resume=resume,
                console=lines,
                ssh=remote.ssh,
                remote_python=remote.remote_python,
                remote_dir=remote.remote_dir,
                remote_cache=remote.remote_cache,
                keep_remote=remote.keep_remote,
            )
        else:
            records = core.measure_local(
                jobs, st, out, resume, on_progress=on_progress, timing=timing
            )
    if resume:
        from edgeattn.runtime.records import read_jsonl

        wanted = {j.id for j in jobs}
        if resume_paired:
            wanted |= {g["id"] for g in core.paired_specs(jobs, st)}
        records = [r for r in read_jsonl(out) if r.get("id") in wanted] or records
    return records


def failures(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if "status" in r and r["status"] != "ok"]  # not run_end records


def group_by_device(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    from edgeattn.bench.report import device_label

    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(device_label(r), []).append(r)
    return groups


# ----------------------------------------------------------------------------------------- bench


@dataclass
class BenchResult:
    records: list[dict[str, Any]]
    out: Path
    shape: str  # "N=…, D=…, h=…, batch=…"
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)  # device -> summary
    plot: Path | None = None
    timing: str = ""  # where the time went and what it bought (one line)
    sustained_plot: Path | None = None  # --sustained: latency and temperature against time


def reach_hosts(remote: Remote, on_progress: Say = silent) -> None:
    """One ``ssh HOST true`` per host (the same options as the run): an unreachable host, a
    refused key or an unknown host key is one error line before anything is exported."""
    from edgeattn.remote.ssh import SSHConnection

    for h in remote.hosts:
        on_progress(f"{h}: reaching it over ssh")
        with SSHConnection(h, remote.ssh) as conn:
            conn.run(["true"], timeout=60, what="connection check")


def timing_line(total_s: float, phases: dict[str, float], records: Sequence[dict[str, Any]]) -> str:
    """'time: 38 s (export 2 s; alone 14 s: 6 methods; paired 19 s: 30 rounds in 2 tries, …)'."""
    from edgeattn.bench.report import latest_paired

    bits = []
    if "export_s" in phases:
        bits.append(f"export {phases['export_s']:.0f} s")
    n_iso = sum(1 for r in records if r.get("kind") != "paired")
    if "isolated_s" in phases:
        bits.append(f"alone {phases['isolated_s']:.0f} s: {n_iso} method(s), one try each")
    prec = latest_paired(records)
    if "paired_s" in phases and prec is not None:
        p = prec.get("paired") or {}
        stab = p.get("stability") or {}
        widths = [
            (r["ci_high"] - r["ci_low"]) / 2 / r["median"]
            for r in p.get("ratios") or []
            if r.get("median")
        ]
        prof = sum(1 for _ in (p.get("profiles") or {}))
        ext = sum(1 for t in p.get("tries") or [] if t.get("extension"))
        bits.append(
            f"paired {phases['paired_s']:.0f} s: {len(p.get('rounds_ms') or [])} rounds in "
            f"{stab.get('tries', '?')} tries ({stab.get('verdict', '?')})"
            + (f" + {ext} extension(s) to tighten the intervals" if ext else "")
            + (f", widest ratio interval ±{max(widths):.1%}" if widths else "")
            + (f", {prof} profiled member(s)" if prof else "")
        )
    return f"time: {total_s:.0f} s ({'; '.join(bits)})" if bits else f"time: {total_s:.0f} s"


def bench_methods(methods: str | None, ops: bool = False) -> list[str]:
    """``--methods`` (default: ``core.DEFAULT_METHODS``), plus the pure-op pair with ``ops``."""
    names = core.parse_methods(methods)
    if ops:
        names += [m for m in core.parse_methods("ops") if m not in names]
    return names


#: graphs built at their own precision: with ``--precision int8-static`` a float32 floor brings
#: its int8 twin (``floor_qk`` -> ``floor_qk_int8``, edgeattn.bench.floor)
INT8_GRAPH_SUFFIX = {"int8-static": "_int8"}


def bench_jobs(shape: core.Shape, names: Sequence[str], precision: str = "fp32") -> list[core.Job]:
    """Each block at each precision; each graph (pure op, floor) once, as built: a graph has
    its precision in its name (``floor_kv_int8``), and a float32 floor brings its int8 twin
    when an int8 precision it has one for is asked."""
    from edgeattn.errors import ExportError
    from edgeattn.export.precision import parse_precisions

    try:
        precisions = parse_precisions(precision)
    except ExportError as exc:
        raise BenchError(str(exc).replace("precision=", "--precision ")) from None
    jobs = [  # in --methods order, the graphs with the first precision's blocks
        core.Job(core.METHODS[m], shape, precision="fp32" if core.METHODS[m].is_graph else p)
        for i, p in enumerate(precisions)
        for m in names
        if i == 0 or not core.METHODS[m].is_graph
    ]
    for p in precisions:
        suffix = INT8_GRAPH_SUFFIX.get(p.partition(":")[0])  # int8-static:<recipe> too
        for m in [m for m in names if core.METHODS[m].is_graph and suffix]:
            twin = f"{m}{suffix}"
            if twin in core.METHODS and twin not in [j.method.key for j in jobs]:
                jobs.append(core.Job(core.METHODS[twin], shape))
    return jobs


def _fp16_warning(jobs: Sequence[core.Job], st: core.Settings, remote: Remote | None) -> str | None:
    if remote is not None and remote.hosts or st.device != "cpu":
        return None
    if not any(j.precision == "fp16" for j in jobs):
        return None
    from edgeattn.runtime.sysinfo import fp16_arithmetic

    f16 = fp16_arithmetic()
    if f16["native"] is True:
        return None
    return (
        f"fp16 on this CPU is emulated on most CPUs ({f16['evidence']}): expect it slower "
        "than fp32; int8 is the CPU precision"
    )


def run_bench(
    shape: core.Shape,
    st: core.Settings,
    *,
    methods: str | None = None,
    precision: str = "fp32",
    ops: bool = False,
    out: Path | None = None,
    resume: bool = False,
    plot: Path | None = None,
    remote: Remote | None = None,
    memory_guard: bool = True,
    on_progress: Say = silent,
    on_warning: Say = silent,
    kept: Kept | None = None,
) -> BenchResult:
    """``edgeattn bench``: the request checked, every job exported and measured (alone, then
    paired per shape), summaries per device, the plot if asked."""
    from edgeattn.bench import report

    check_opt_level(st.opt_level)
    hosts = remote.hosts if remote is not None else []
    names = bench_methods(methods, ops)
    check_device(st.device, hosts)
    jobs = bench_jobs(shape, names, precision)
    out = Path(out or default_out("bench"))
    w = _fp16_warning(jobs, st, remote)
    if w:
        on_warning(w)
    preflight(
        "check_bench", kept, on_warning, jobs=jobs, out=out, plot=plot, threads=st.intra_op_threads,
        warmup=st.warmup, min_runs=st.min_runs, min_time=st.min_time_s, max_time=st.max_time_s,
        hosts=hosts, memory_guard=memory_guard, methods=names,
    )  # fmt: skip
    if not hosts:
        check_local_cpus(st.cpus)
    if hosts:
        reach_hosts(remote, on_progress)  # an unreachable host fails before any export
    started = time.monotonic()
    phases: dict[str, float] = {}
    records = measure(jobs, st, out, resume, remote, on_progress, on_warning, timing=phases)
    res = BenchResult(
        records, out, f"N={shape.tokens}, D={shape.dim}, h={shape.heads}, batch={shape.batch}"
    )
    res.timing = timing_line(time.monotonic() - started, phases, records)
    res.summaries = {d: report.bench_summary(r) for d, r in group_by_device(records).items()}
    if st.sustained_s is not None:  # the over-time plot, next to the records unless --plot
        res.sustained_plot, plot = sustained_plot(records, plot or out, res.shape), None
    if plot:
        from edgeattn.bench.plot import plot_records

        res.plot = plot_records(records, plot, title=res.shape)
    return res


def check_local_cpus(cpus: str | None) -> None:
    """``--cpus`` as a list, on a local run: every core must be one this process may use."""
    if cpus is None or not hasattr(os, "sched_getaffinity"):
        return
    want = core.cpus_request(cpus)
    if isinstance(want, str):  # a cluster name: this machine's clusters (the runtime's reading)
        from edgeattn.runtime.conditions import parse_cpus

        try:
            want = parse_cpus(want)
        except ValueError as exc:
            msg = str(exc).splitlines()[0]
            raise BenchError(msg.replace("cpus ", "--cpus ", 1)) from None
    usable = sorted(os.sched_getaffinity(0))
    gone = [c for c in want if c not in usable]
    if gone:
        raise BenchError(
            f"--cpus {cpus!r}: core {gone[0]} is not usable here; usable cores: "
            f"{','.join(map(str, usable))}"
        )


def sustained_plot(records: Sequence[dict[str, Any]], where: Path, title: str) -> Path | None:
    """The sustained PNG of the latest paired record: ``where`` when it is an image file name,
    else ``<records stem>-sustained.png``."""
    from edgeattn.bench import conditions as cond
    from edgeattn.bench.report import latest_paired

    prec = latest_paired(records)
    if prec is None or not cond.has_conditions(prec):
        return None
    path = Path(where)
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        path = cond.sustained_plot_path(path)
    return cond.plot_sustained(prec, path, title=f"{title}: sustained")


# --------------------------------------------------------------------------------------- profile


def run_profile(
    target: str,
    st: core.Settings,
    *,
    img_size: int | None = None,
    overrides: dict[str, Any] | None = None,
    out: Path | None = None,
    on_progress: Say = silent,
    on_warning: Say = silent,
    kept: Kept | None = None,
    depth: str | None = None,
    memory_guard: bool = True,
    force: bool = False,
) -> tuple[dict[str, Any], Path]:
    """``edgeattn profile``: export ``target`` (or take an .onnx path), measure it unprofiled
    then profiled; returns (the record, the records file). ``depth`` (the table's) is checked
    with the rest before the export; ``force`` appends to an ``out`` that is not a records file."""
    from edgeattn.bench import profile as prof

    check_opt_level(st.opt_level)
    check_device(st.device)
    out = Path(out or default_out("profile"))
    preflight(
        "check_profile", kept, on_warning, out=out, threads=st.intra_op_threads, runs=st.profile_runs,
        min_time=st.min_time_s, target=target, img_size=img_size, overrides=overrides,
        depth=depth, memory_guard=memory_guard, force=force,
    )  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    on_progress(f"export {target}")
    run = prof.prepare_profile_run(target, img_size, st, overrides=overrides)
    on_progress(
        f"measuring {target} (unprofiled pass, then {st.profile_runs} profiled runs, "
        f"opt level {st.opt_level})"
    )
    with integrity.run(out, "profile"):
        rec = core.run_local([run], out=out)[0]
    if rec.get("status") != "ok":
        raise BenchError(f"measurement failed: {rec.get('error')}")
    return rec, out


# ---------------------------------------------------------------------------------------- report


def read_record_files(files: Sequence[Path], on_warning: Say = silent) -> list[dict[str, Any]]:
    """Every record of ``files`` (bench, sweep, profile, remote); one-line errors."""
    from edgeattn.runtime.records import read_records

    records: list[dict[str, Any]] = []
    for f in files:
        if not Path(f).is_file():
            if Path(f).is_dir():
                why = "is a directory, not a records file"
            elif os.path.lexists(f):
                why = "is not a regular file (a records file is a JSON Lines file)"
            else:
                why = "no such file"
            raise BenchError(f"records file {str(f)!r}: {why}")
        try:
            # each record remembers its file: a report never merges two runs into one
            records += [dict(r, _source=str(f)) for r in read_records(str(f), warn=on_warning)]
        except (ValueError, OSError) as exc:
            raise BenchError(str(exc).splitlines()[0]) from None
    if not records:
        raise BenchError(f"no records in {', '.join(map(str, files))}")
    return records


def write_csv(records: Sequence[dict[str, Any]], path: Path) -> Path:
    from edgeattn.bench import report
    from edgeattn.runtime.records import write_atomic

    p = Path(path)
    if p.is_dir():
        raise BenchError(f"--csv {str(p)!r} is a directory; give a file name such as all.csv")
    data = report.to_csv(list(records)).encode()
    try:
        write_atomic(str(p), data)
    except OSError as exc:
        from edgeattn.bench.preflight import why

        raise BenchError(f"--csv {str(p)!r}: cannot write it: {why(exc)}") from None
    return path
