"""Fail fast: every check of a bench, sweep or profile request that needs no export, run before the
first export (which can take minutes). Each problem is one :class:`BenchError` line naming the bad
value and what would be valid; soft problems (more threads than cores) come back as warnings.

The memory guard estimates each job's peak memory from its shape and refuses jobs that would not
fit in the memory available here (the export runs the model in PyTorch and ONNX Runtime on this
machine, whatever device measures it):

    peak ≈ BASE + LINEAR · (B·N·D·4 bytes) + MAP · (B·h·N²·4 bytes, only where an N×N map exists)

Calibrated with one measurement on the CPU provider (``edgeattn sweep --regime tokens --tokens-grid
1024,2048 --methods softmax,sima_kv,soft,xca --dim 384 --heads 6``, records' ``memory.peak_rss_mb``):
sima_kv/soft/xca 100 → 122 MB (base ≈ 78 MB, ≈ 15 B·N·D·4 of activations), softmax 150 → 221 MB
(the N×N map counted 2.0× at N=1024, 1.0× at N=2048). MAP = 2 is also what the export's PyTorch
reference run holds (the scores and the probabilities), so it is the figure used.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeattn.errors import BenchError

BASE_MB = 80.0
LINEAR_FACTOR = 16.0
MAP_FACTOR = 2.0
BYTES = 4  # float32
PLOT_SUFFIXES = (".png", ".svg", ".pdf")
MAX_RUNS = 1000  # Settings.max_runs: --min-runs may not exceed it


# ------------------------------------------------------------------------------------------ paths


def _why(exc: OSError) -> str:
    text = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    return text + (f" [{errno.errorcode.get(exc.errno, exc.errno)}]" if exc.errno else "")


def _make_parent(path: Path, what: str) -> Path:
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(
            f"{what} {str(path)!r}: cannot create its directory {str(parent)!r}: {_why(exc)}"
        ) from None
    if not parent.is_dir():
        raise BenchError(f"{what} {str(path)!r}: {str(parent)!r} is not a directory")
    return parent


def check_out(path: str | os.PathLike, what: str = "--out") -> None:
    """The records file can be created (or opened) for append: not a directory, its directory
    exists or can be made, the file system takes writes. A file made only to try is removed."""
    from edgeattn.runtime import records

    p = Path(path)
    if p.is_dir():
        raise BenchError(
            f"{what} {str(p)!r} is a directory; give a file name such as {str(p / 'results.jsonl')!r}"
        )
    _make_parent(p, what)
    existed = os.path.lexists(p)
    try:
        records.check_appendable(str(p))
    except OSError as exc:
        raise BenchError(f"{what} {str(p)!r}: cannot append records: {_why(exc)}") from None
    if not existed:
        try:
            if p.stat().st_size == 0:
                p.unlink()
        except OSError:
            pass
    # a full disk accepts an empty open: make sure one block can be written there
    _try_write_in(p.parent, p, what, "cannot write records")


def _try_write_in(directory: Path, path: Path, what: str, doing: str) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=".edgeattn-preflight-", dir=str(directory))
    except OSError as exc:
        raise BenchError(
            f"{what} {str(path)!r}: {doing} in {str(directory)!r}: {_why(exc)}"
        ) from None
    try:
        try:
            os.write(fd, b"\n" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise BenchError(f"{what} {str(path)!r}: {doing}: {_why(exc)}") from None
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def check_plot(path: str | os.PathLike, what: str = "--plot") -> None:
    """A plot path with a known suffix, in a writable directory, and matplotlib installed."""
    import importlib.util

    p = Path(path)
    if p.suffix.lower() not in PLOT_SUFFIXES:
        raise BenchError(f"{what} {str(p)!r}: use a {', '.join(PLOT_SUFFIXES)} file name")
    if p.is_dir():
        raise BenchError(f"{what} {str(p)!r} is a directory; give a file name")
    _try_write_in(_make_parent(p, what), p, what, "cannot write")
    if importlib.util.find_spec("matplotlib") is None:
        raise BenchError(
            f"{what} needs matplotlib, which is not installed",
            hint="pip install 'edgeattn[plot]'  (or: pip install matplotlib), or drop --plot",
        )


def check_writable_file(path: str | os.PathLike, what: str) -> None:
    p = Path(path)
    if p.is_dir():
        raise BenchError(f"{what} {str(p)!r} is a directory; give a file name")
    _try_write_in(_make_parent(p, what), p, what, "cannot write")


# ---------------------------------------------------------------------------------------- numbers


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_numbers(
    *,
    threads: int | None = None,
    warmup: int | None = None,
    min_runs: int | None = None,
    runs: int | None = None,
    min_time: float | None = None,
    max_time: float | None = None,
) -> list[str]:
    """Ranges of the timing options; returns warnings (threads above the usable cores)."""
    warnings = []
    cores = usable_cores()
    if threads is not None:
        if threads < 0:
            raise BenchError(
                f"--threads {threads}: must be >= 0 (0 = ONNX Runtime's default; "
                f"this machine has {cores} usable core(s))"
            )
        if threads > cores:
            warnings.append(
                f"--threads {threads} is above the {cores} usable core(s) here: "
                "threads will share cores and timings get noisier"
            )
    if warmup is not None and warmup < 0:
        raise BenchError(f"--warmup {warmup}: must be >= 0 (untimed runs before timing)")
    if min_runs is not None and not 1 <= min_runs <= MAX_RUNS:
        raise BenchError(f"--min-runs {min_runs}: must be between 1 and {MAX_RUNS}")
    if runs is not None and runs < 1:
        raise BenchError(f"--runs {runs}: must be >= 1")
    if min_time is not None and not min_time > 0:
        raise BenchError(f"--min-time {min_time:g}: must be > 0 seconds (e.g. 0.5)")
    if max_time is not None and not max_time > 0:
        raise BenchError(f"--max-time {max_time:g}: must be > 0 seconds (e.g. 10)")
    if min_time is not None and max_time is not None and max_time < min_time:
        raise BenchError(f"--max-time {max_time:g}: must be >= --min-time ({min_time:g})")
    return warnings


def check_hosts(hosts: Sequence[str] | None) -> None:
    """Host specs well formed (``edgeattn.remote.ssh.parse_host``): raises RemoteError."""
    if not hosts:
        return
    from edgeattn.remote.ssh import parse_host

    for h in hosts:
        parse_host(h)


# ------------------------------------------------------------------------------- methods × shapes


def _factorable(n: int) -> bool:
    from edgeattn.bench.core import grid_for

    return grid_for(n) is not None


def nearest_grid_tokens(n: int) -> tuple[int, ...]:
    """The nearest token counts SOFT can take: an H×W grid with both sides >= 2 (below/above)."""
    out = []
    below = next((m for m in range(n - 1, 3, -1) if _factorable(m)), None)
    above = next(m for m in range(max(n + 1, 4), 2 * n + 8) if _factorable(m))
    if below is not None:
        out.append(below)
    out.append(above)
    return tuple(out)


def check_grids(jobs: Sequence[Any], all_methods: Sequence[str] | None = None) -> None:
    """SOFT needs a token grid (H×W, both >= 2): name the nearest valid N and the methods without
    SOFT."""
    from edgeattn.bench.core import grid_for

    for j in jobs:
        if not j.method.model.startswith("block_soft"):
            continue
        n = j.shape.tokens
        if grid_for(n) is not None:
            continue
        near = " or ".join(
            f"{m} ({'×'.join(map(str, grid_for(m)))})" for m in nearest_grid_tokens(n)
        )
        side = round(n**0.5)
        sq = min(
            ((max(side, 2) + d) ** 2 for d in (-1, 0, 1) if max(side, 2) + d >= 2),
            key=lambda m: abs(m - n),
        )
        near += f"; nearest square: {sq} ({int(sq**0.5)}×{int(sq**0.5)})"
        names = list(all_methods) if all_methods else sorted({x.method.key for x in jobs})
        rest = [m for m in names if not m.startswith("soft") or m.startswith("softmax")]
        drop = f"; or drop it: --methods {','.join(rest)}" if rest else ""
        raise BenchError(
            f"--tokens {n}: {j.method.key} needs the tokens as an H×W grid (both sides >= 2) and "
            f"{n} has none; nearest valid: {near}{drop}"
        )


# ---------------------------------------------------------------------------------- memory guard


def has_nxn_map(job: Any) -> bool:
    """Does the exported graph hold the N×N attention map? (softmax, fused softmax, SimA at the
    (QKᵀ)V order; the dynamic SimA resolves at export to (QKᵀ)V only for N <= its crossover)."""
    m = job.method
    if m.model in ("block_msa", "block_msa_fused", "floor_qk", "op_softmax", "op_l1"):
        return True  # the (QKᵀ)V floor and the pure-op graphs take N×N tensors as inputs too
    if m.model == "block_sima":
        order = job.extra.get("order", m.overrides.get("order", "auto"))
        if order == "qk_first":
            return True
        if order == "auto":
            cross = job.extra.get("crossover") or job.shape.head_dim
            return job.shape.tokens <= cross
    return False


def estimate_mb(job: Any) -> float:
    """Peak memory (MB) of measuring (and exporting) ``job``; see the module doc."""
    s = job.shape
    linear = LINEAR_FACTOR * s.batch * s.tokens * s.dim * BYTES
    quad = MAP_FACTOR * s.batch * s.heads * s.tokens * s.tokens * BYTES if has_nxn_map(job) else 0
    return BASE_MB + (linear + quad) / 1e6


def available_mb() -> float | None:
    """Memory available here (``/proc/meminfo`` MemAvailable, or psutil), in MB; None if unknown."""
    from edgeattn.runtime.sysinfo import ram_mb

    v = ram_mb().get("ram_available_mb")
    return float(v) * 2**20 / 1e6 if v else None


def _gb(mb: float) -> str:
    return f"{mb / 1e3:.1f} GB" if mb < 1e7 else f"{mb / 1e9:.3g} PB"


def check_memory(
    jobs: Sequence[Any],
    available: float | None = None,
    all_methods: Sequence[str] | None = None,
    where: str = "",
) -> None:
    """Refuse the first job whose estimated peak exceeds the available memory (MB)."""
    if available is None:
        available = available_mb()
    if not available:
        return
    too_big = [j for j in jobs if estimate_mb(j) > available]
    if not too_big:
        return
    worst = max(too_big, key=estimate_mb)
    big_keys = list(dict.fromkeys(j.method.key for j in too_big))
    names = list(all_methods) if all_methods else list(dict.fromkeys(j.method.key for j in jobs))
    rest = [m for m in names if m not in big_keys]
    smallest_bad = min(j.shape.tokens for j in too_big)
    msg = (
        f"{worst.method.key} at N={worst.shape.tokens} needs ≈ {_gb(estimate_mb(worst))}, "
        f"{_gb(available)} available{where}"
    )
    others = [k for k in big_keys if k != worst.method.key]
    if others:
        msg += f" (too big as well: {', '.join(others)})"
    fixes = []
    if rest:
        fixes.append(
            f"drop {'it' if len(big_keys) == 1 else 'them'} with --methods {','.join(rest)}"
        )
    if any(j.shape.tokens < smallest_bad for j in jobs):
        fixes.append(f"keep N below {smallest_bad}")
    elif not rest:
        fixes.append("use fewer --tokens")
    raise BenchError(f"{msg}; {' or '.join(fixes)} or pass --no-memory-guard")


# ----------------------------------------------------------------------------------- per command


def check_bench(
    *,
    jobs: Sequence[Any],
    out: str | os.PathLike,
    plot: str | os.PathLike | None = None,
    threads: int | None = None,
    warmup: int | None = None,
    min_runs: int | None = None,
    min_time: float | None = None,
    max_time: float | None = None,
    hosts: Sequence[str] | None = None,
    memory_guard: bool = True,
    methods: Sequence[str] | None = None,
) -> list[str]:
    """Everything ``edgeattn bench`` can check before exporting; returns warnings."""
    warnings = check_numbers(
        threads=threads, warmup=warmup, min_runs=min_runs, min_time=min_time, max_time=max_time
    )
    check_hosts(hosts)
    check_grids(jobs, methods)
    if memory_guard:
        check_memory(
            jobs, all_methods=methods, where=" here (the export runs here)" if hosts else ""
        )
    check_out(out)
    if plot:
        check_plot(plot)
    return warnings


def check_sweep(
    *,
    jobs: Sequence[Any],
    out: str | os.PathLike,
    plot: str | os.PathLike | None = None,
    write_crossover: str | os.PathLike | None = None,
    threads: int | None = None,
    min_runs: int | None = None,
    min_time: float | None = None,
    max_time: float | None = None,
    memory_guard: bool = True,
) -> list[str]:
    """Everything ``edgeattn sweep`` can check before exporting; returns warnings."""
    warnings = check_numbers(
        threads=threads, min_runs=min_runs, min_time=min_time, max_time=max_time
    )
    check_grids(jobs)
    if memory_guard:
        check_memory(jobs)
    check_out(out)
    if plot:
        check_plot(plot)
    if write_crossover:
        check_writable_file(write_crossover, "--write-crossover")
    return warnings


def check_profile(
    *,
    out: str | os.PathLike,
    threads: int | None = None,
    runs: int | None = None,
    min_time: float | None = None,
) -> list[str]:
    """Everything ``edgeattn profile`` can check before exporting; returns warnings."""
    warnings = check_numbers(threads=threads, runs=runs, min_time=min_time)
    check_out(out)
    return warnings
