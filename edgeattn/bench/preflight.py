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

import contextlib
import contextvars
import errno
import json
import math
import os
import stat
import tempfile
from collections.abc import Iterator, Sequence
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


def why(exc: OSError) -> str:
    text = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    return text + (f" [{errno.errorcode.get(exc.errno, exc.errno)}]" if exc.errno else "")


def _make_parent(path: Path, what: str) -> Path:
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(
            f"{what} {str(path)!r}: cannot create its directory {str(parent)!r}: {why(exc)}"
        ) from None
    if not parent.is_dir():
        raise BenchError(f"{what} {str(path)!r}: {str(parent)!r} is not a directory")
    return parent


#: ``--force`` of bench/sweep: set around the library call by the CLI (``appending_anyway``), so
#: ``check_out`` accepts a file that is not an edgeattn records file
_FORCE_OUT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "edgeattn_force_out", default=False
)


@contextlib.contextmanager
def appending_anyway(force: bool) -> Iterator[None]:
    """Within the block, :func:`check_out` lets records be appended to a file that is not an
    edgeattn records file when ``force`` (the commands' ``--force``)."""
    token = _FORCE_OUT.set(bool(force))
    try:
        yield
    finally:
        _FORCE_OUT.reset(token)


def records_file_problem(path: str | os.PathLike) -> str | None:
    """Why records must not be appended to the existing ``path`` (None: it is empty, missing,
    or an edgeattn records file, i.e. its first line is a record of edgeattn's schema). Reads
    at most the first line (1 MiB); never opens anything but a regular file."""
    from edgeattn.runtime.records import SCHEMA

    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return None
    except OSError:
        return None  # check_appendable names the error
    if not stat.S_ISREG(st.st_mode):
        return None if p.is_dir() else "is not a regular file"
    if st.st_size == 0:
        return None
    try:
        with open(p, "rb") as f:
            head = f.read(1 << 20)
    except OSError:
        return None
    first = head.lstrip(b" \t\r\n").split(b"\n", 1)
    line = first[0].strip()
    family = SCHEMA.split("/", 1)[0] + "/"  # edgeattn.record/ (any version)
    try:
        obj = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        obj = None
        # a cut first line (an interrupted first write) of one of our records
        if len(first) == 1 and line.startswith(b"{") and f'"{family}'.encode() in line:
            return None
    if isinstance(obj, dict) and str(obj.get("schema", "")).startswith(family):
        return None
    return f"is not an edgeattn records file (its first line is no {SCHEMA} record)"


def check_out(path: str | os.PathLike, what: str = "--out", force: bool | None = None) -> None:
    """The records file can be created (or opened) for append: not a directory, not a file of
    someone else's (an existing non-empty file whose first line is not an edgeattn record: refused
    unless ``force``, default: inside :func:`appending_anyway`), its directory exists or can be
    made, the file system takes writes. A file made only to try is removed."""
    from edgeattn.runtime import records

    p = Path(path)
    if p.is_dir():
        raise BenchError(
            f"{what} {str(p)!r} is a directory; give a file name such as {str(p / 'results.jsonl')!r}"
        )
    if force is None:
        force = _FORCE_OUT.get()
    problem = records_file_problem(p)
    if problem == "is not a regular file":
        raise BenchError(f"{what} {str(p)!r} {problem}; give a records file name")
    if problem and not force:
        raise BenchError(
            f"{what} {str(p)!r} {problem}; refusing to append to it (--force appends anyway)",
            hint="choose another --out file",
        )
    _make_parent(p, what)
    existed = os.path.lexists(p)
    try:
        records.check_appendable(str(p))
    except OSError as exc:
        raise BenchError(f"{what} {str(p)!r}: cannot append records: {why(exc)}") from None
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
            f"{what} {str(path)!r}: {doing} in {str(directory)!r}: {why(exc)}"
        ) from None
    try:
        try:
            os.write(fd, b"\n" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise BenchError(f"{what} {str(path)!r}: {doing}: {why(exc)}") from None
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


#: --threads above this many times the usable cores here is refused (ORT's thread pool at
#: --threads 100000 kills the runtime with signal 11); between the cores and this: a warning
THREADS_PER_CORE_LIMIT = 4
#: with --host the cores are the device's, unknown here: only this absolute bound applies
MAX_THREADS = 1024


def _seconds(name: str, value: float | None, example: str) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value <= 0:
        raise BenchError(
            f"{name} {value:g}: must be a finite number of seconds > 0 (e.g. {example})"
        )


def check_numbers(
    *,
    threads: int | None = None,
    warmup: int | None = None,
    min_runs: int | None = None,
    runs: int | None = None,
    min_time: float | None = None,
    max_time: float | None = None,
    remote: bool = False,
) -> list[str]:
    """Ranges of the timing options; returns warnings (threads above the usable cores).

    ``--threads`` above ``THREADS_PER_CORE_LIMIT`` × the usable cores (or ``MAX_THREADS`` when the
    runs are on SSH hosts, ``remote``) is refused; above the cores it is a warning."""
    warnings = []
    cores = usable_cores()
    if threads is not None:
        if threads < 0:
            raise BenchError(
                f"--threads {threads}: must be >= 0 (0 = ONNX Runtime's default; "
                f"this machine has {cores} usable core(s))"
            )
        limit = MAX_THREADS if remote else min(MAX_THREADS, THREADS_PER_CORE_LIMIT * cores)
        if threads > limit:
            why = "" if remote else f" ({THREADS_PER_CORE_LIMIT}× the {cores} usable core(s) here)"
            raise BenchError(
                f"--threads {threads}: more than {limit}{why}; use 1..{limit}, or 0 for "
                "ONNX Runtime's default"
            )
        if threads > cores and not remote:
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
    _seconds("--min-time", min_time, "0.5")
    _seconds("--max-time", max_time, "10")
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
    from edgeattn.bench.grid import grid_for

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
    from edgeattn.bench.grid import grid_for

    for j in jobs:
        if not j.method.needs_grid:
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
        from edgeattn.bench import methods

        rest = [m for m in names if not (methods.get(m) and methods.method(m).needs_grid)]
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
    if m.nxn_map is True:
        return True  # the (QKᵀ)V floor and the pure-op graphs take N×N tensors as inputs too
    if m.nxn_map == "auto":  # a dynamic order: (QKᵀ)V, the N×N map, only up to its crossover
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


# ------------------------------------------------------------ memory guard of export and profile

#: an image net's activations per input pixel, float32: the image (3) and the finest stage's
#: tensors (SOFT's stride-4 stage: 64 channels = 4 per pixel, ×4 in its MLP) ≈ 16 values
NET_PIXEL_BYTES = 16 * BYTES
#: copies of the weights held at once while exporting: the module, the traced graph, the ONNX
#: proto, the ONNX Runtime session that verifies it
WEIGHT_COPIES = 4
#: attention methods whose exported net holds N×N maps over its tokens (``ExportFacts.method``):
#: softmax (DeiT) over every token; SOFT's released stage 4 (softmax over the stride-32 grid)
_NET_MAPS = ("softmax", "fused", "soft")  # ExportFacts.method names (registry), not bench methods


def _entry_defaults(entry: Any) -> dict[str, Any]:
    import inspect

    return {
        k: p.default
        for k, p in inspect.signature(entry.fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def _side(v: Any) -> tuple[int, int] | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int) and v > 0:
        return v, v
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) for x in v):
        return int(v[0]), int(v[1])
    return None


def estimate_model_mb(
    name: str,
    *,
    img_size: Any = None,
    tokens: int | None = None,
    dim: int | None = None,
    heads: int | None = None,
    batch: int = 1,
    overrides: dict[str, Any] | None = None,
    order: str | None = None,
    crossover: int | None = None,
) -> tuple[float, str] | None:
    """(peak MB, what) of exporting (and verifying, or profiling) the registered ``name``, from
    its registry facts alone (no model is built): an attention block as bench's jobs
    (:func:`estimate_mb`); an image net as ``BASE + WEIGHT_COPIES · params · 4 B +
    NET_PIXEL_BYTES · B·H·W + MAP_FACTOR · B · N² · 4 B`` where N is the tokens of the stage that
    holds an N×N softmax map (one head counted: a lower bound). None when the size is not one
    this guard reads (the export names the problem)."""
    from edgeattn.models.registry import get_entry

    entry = get_entry(name)  # ModelError with close matches
    facts = entry.export
    ov = dict(_entry_defaults(entry), **(overrides or {}))
    if facts.is_tokens:
        from edgeattn.bench.core import METHODS, Job, Shape

        n = tokens if tokens is not None else ov.get("tokens")
        d = dim if dim is not None else ov.get("dim")
        h = heads if heads is not None else ov.get("heads")
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (n, d, h)):
            return None
        if d % h:
            return None
        from edgeattn.bench.methods import BenchMethod

        want = order or ov.get("order") or "auto"
        # the bench method that times this block (the one at the asked order when it has one);
        # a block the table does not list is taken as linear in N (no N×N map)
        mine = [m for m in METHODS.values() if m.model == name]
        spec = next((m for m in mine if m.overrides.get("order") == want), None) or (
            mine[0] if mine else BenchMethod(name, name, name, "none")
        )
        extra = {"order": want}
        if crossover is not None or ov.get("crossover") is not None:
            extra["crossover"] = crossover if crossover is not None else ov.get("crossover")
        job = Job(spec, Shape(n, d, h, max(1, batch)), extra=extra)
        return estimate_mb(job), f"{name} at N={n}"
    hw = _side(img_size) or _side(ov.get("img_size")) or (224, 224)
    h_px, w_px = hw
    b = max(1, batch)
    params = entry.cost.params if entry.cost is not None else 0
    mb = BASE_MB + (WEIGHT_COPIES * params * BYTES + NET_PIXEL_BYTES * b * h_px * w_px) / 1e6
    soft_free = facts.method == "soft" and ov.get("softmax_free_stage4")  # ExportFacts.method
    if facts.method in _NET_MAPS and not soft_free:
        stride = facts.patch or facts.size_multiple or 32
        n = (h_px // stride) * (w_px // stride) + facts.extra_tokens
        mb += MAP_FACTOR * b * n * n * BYTES / 1e6
    return mb, f"{name} at {h_px}×{w_px} px"


def check_model_memory(
    name: str, *, available: float | None = None, fix: str = "a smaller size", **kw: Any
) -> None:
    """Refuse exporting/profiling ``name`` when :func:`estimate_model_mb` exceeds the memory
    available here; one line with both figures and the flag that overrides."""
    est = estimate_model_mb(name, **kw)
    if est is None:
        return
    if available is None:
        available = available_mb()
    if not available or est[0] <= available:
        return
    raise BenchError(
        f"{est[1]} needs ≈ {_gb(est[0])} or more (export, verification and ONNX Runtime), "
        f"{_gb(available)} available here; use {fix} or pass --no-memory-guard"
    )


PROFILE_DEPTHS = ("stage", "block", "sub", "all")  # edgeattn.bench.profile.profile_tables


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
        threads=threads, warmup=warmup, min_runs=min_runs, min_time=min_time, max_time=max_time,
        remote=bool(hosts),
    )  # fmt: skip
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
    target: str | None = None,
    img_size: int | None = None,
    overrides: dict[str, Any] | None = None,
    depth: str | None = None,
    memory_guard: bool = True,
    force: bool | None = None,
) -> list[str]:
    """Everything ``edgeattn profile`` can check before exporting; returns warnings."""
    if depth is not None and depth not in PROFILE_DEPTHS:
        raise BenchError(f"--depth {depth!r}; valid: {', '.join(PROFILE_DEPTHS)}")
    warnings = check_numbers(threads=threads, runs=runs, min_time=min_time)
    if target is not None and not (target.endswith(".onnx") or Path(target).is_file()):
        if img_size is not None and img_size <= 0:
            raise BenchError(f"--img-size {img_size}: must be a positive number of pixels")
        if memory_guard:
            check_model_memory(
                target, img_size=img_size, overrides=overrides, fix="a smaller --img-size"
            )
    check_out(out, force=force)
    return warnings
