"""Regime grids (the SimA paper's timing design) and the measured (QKᵀ)V / Q(KᵀV) crossover.

- tokens regime (N > D): D and h fixed, N grows; softmax MSA is the quadratic baseline.
- channels regime (N < D): N fixed, D grows; XCA (softmax over the d×d map) is the baseline.
- crossover: for every crossover pair the method table declares (SimA's ``sima_qk`` /
  ``sima_kv``, LiteMLA's ``litemla_quadratic`` / ``litemla_linear``, ...), both fixed orders over
  N around head_dim; the first N from which Q(KᵀV) stays faster than (QKᵀ)V, interpolated in
  log N between the bracketing points. A pair whose blocks need a token grid gets each N moved
  up to the next count with an H×W grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgeattn.bench import methods as _mt
from edgeattn.bench.core import METHODS, Job, Shape
from edgeattn.bench.report import ok, p50
from edgeattn.errors import BenchError

TOKENS_GRID = (64, 256, 1024, 4096)
CHANNELS_GRID = (384, 768, 1536, 3072)


def __getattr__(name: str) -> Any:
    """TOKENS_METHODS / CHANNELS_METHODS: the methods each regime times, from the method table."""
    if name == "TOKENS_METHODS":
        return _mt.in_regime("tokens")
    if name == "CHANNELS_METHODS":
        return _mt.in_regime("channels")
    if name == "REGIME_RATIOS":
        from edgeattn.bench import ratios

        return ratios.REGIME_RATIOS
    raise AttributeError(name)


def parse_int_list(text: str | Sequence[int] | None, what: str) -> list[int]:
    if text is None:
        return []
    if not isinstance(text, str):
        return [int(v) for v in text]
    if not text.replace(",", "").strip():
        raise BenchError(f"{what} {text!r} is empty: give a comma list like 64,256,1024")
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            v = int(part)
        except ValueError:
            raise BenchError(
                f"{what}: {part!r} is not an integer (give a comma list like 64,256,1024)"
            ) from None
        if v <= 0:
            raise BenchError(f"{what}: {v} must be positive")
        out.append(v)
    return out


def tokens_jobs(dim: int, heads: int, tokens: Sequence[int], methods: Sequence[str]) -> list[Job]:
    return [Job(METHODS[m], Shape(n, dim, heads)) for n in tokens for m in methods]


def channels_jobs(
    tokens: int, heads: int, dims: Sequence[int], methods: Sequence[str]
) -> list[Job]:
    jobs = []
    for d in dims:
        if d % heads:
            raise BenchError(f"channels grid: dim {d} is not divisible by heads {heads}")
        jobs += [Job(METHODS[m], Shape(tokens, d, heads)) for m in methods]
    return jobs


def crossover_grid(head_dim: int, points: int = 9) -> list[int]:
    """Geometric N grid from head_dim/8 to head_dim*8 (at least 4 tokens), head_dim included."""
    lo, hi = max(4, head_dim // 8), head_dim * 8
    vals = {
        round(math.exp(math.log(lo) + i * (math.log(hi) - math.log(lo)) / (points - 1)))
        for i in range(points)
    }
    vals.add(head_dim)
    return sorted(vals)


def _with_grid(tokens: Sequence[int]) -> list[int]:
    """Each N moved up to the next token count with an H×W grid (both sides >= 2), once each."""
    from edgeattn.bench.grid import grid_for

    out: list[int] = []
    for n in tokens:
        n = max(int(n), 4)
        while grid_for(n) is None:
            n += 1
        if n not in out:
            out.append(n)
    return out


def crossover_jobs(
    dim: int, heads: int, tokens: Sequence[int] | None = None, pairs: Sequence[str] | None = None
) -> list[Job]:
    """Both sides of each crossover pair (``pairs``; default: every pair the table declares) at
    each N of ``tokens`` (default: :func:`crossover_grid` around head_dim)."""
    grid = list(tokens) if tokens else crossover_grid(dim // heads)
    jobs = []
    for pair in pairs if pairs is not None else _mt.crossover_pairs():
        ns = _with_grid(grid) if _mt.crossover_needs_grid(pair) else grid
        jobs += [
            Job(METHODS[m], Shape(n, dim, heads)) for n in ns for m in _mt.crossover_pair(pair)
        ]
    return jobs


@dataclass(frozen=True)
class Crossover:
    dim: int
    heads: int
    head_dim: int
    crossover: int | None  # measured: Q(KᵀV) faster from this N on; None if never/always
    rule: int  # official rule: qk_first iff N < rule (SimA: head_dim; LiteMLA: head_dim + 1)
    points: list[dict[str, Any]]
    note: str
    pair: str = ""  # the method table's crossover pair (``sima``, ``litemla``)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pair": self.pair,
            "methods": list(_mt.crossover_pair(self.pair or None)),
            "dim": self.dim,
            "heads": self.heads,
            "head_dim": self.head_dim,
            "crossover": self.crossover,
            "rule_threshold": self.rule,
            "points": self.points,
            "note": self.note,
        }


def find_crossover(
    records: Sequence[dict[str, Any]], dim: int, heads: int, pair: str | None = None
) -> Crossover:
    """From the records of crossover pair ``pair`` (default: the table's first, SimA's sima_qk /
    sima_kv) at one (D, h), the measured crossover N.

    Where a paired record holds both orders, its median per-round ratio (QKᵀ)V / Q(KᵀV) decides
    (drift cancels); otherwise the isolated medians do. A point whose paired interval holds 1.0
    is listed with ``uncertain: true``.
    """
    from edgeattn.bench import pairs

    qk_key, kv_key = _mt.crossover_pair(pair)
    ratio_name = _mt.crossover_ratio(pair)
    name = _mt.crossover_pair_name(pair)
    qk: dict[int, float] = {}
    kv: dict[int, float] = {}
    paired_at: dict[int, dict[str, Any]] = {}
    for rec in pairs.paired(records):
        m = rec.get("meta") or {}
        if m.get("dim") != dim or m.get("heads") != heads:
            continue
        r = pairs.ratio_results(rec).get(ratio_name or "")
        if r:
            paired_at[m["tokens"]] = r
    for r in ok(records):
        m = r.get("meta") or {}
        if m.get("dim") != dim or m.get("heads") != heads:
            continue
        if m.get("method") == qk_key:
            qk[m["tokens"]] = p50(r)
        elif m.get("method") == kv_key:
            kv[m["tokens"]] = p50(r)
    for n, r in paired_at.items():  # the paired ratio replaces the isolated medians
        qk[n], kv[n] = r["median"], 1.0
    ns = sorted(set(qk) & set(kv))
    hd = dim // heads
    rule = _mt.crossover_rule(pair, hd)
    if len(ns) < 2:
        raise BenchError(
            f"{name} crossover for D={dim} h={heads}: need both orders at >= 2 token counts, "
            f"got {ns}"
        )
    points = []
    for n in ns:
        pt: dict[str, Any] = {"tokens": n, "kv_faster": kv[n] < qk[n]}
        if n in paired_at:
            r = paired_at[n]
            pt.update(
                source="paired",
                qk_over_kv=r["median"],
                ci=[r["ci_low"], r["ci_high"]],
                uncertain=bool(r["contains_one"]),
            )
        else:
            pt.update(source="isolated", qk_first_ms=qk[n], kv_first_ms=kv[n])
        points.append(pt)
    # First index from which kv_first is faster at every larger N.
    idx = None
    for i in range(len(ns)):
        if all(p["kv_faster"] for p in points[i:]):
            idx = i
            break
    if idx is None:
        note = f"{name}: (QKᵀ)V stayed faster up to N={ns[-1]}"
        return Crossover(dim, heads, hd, None, rule, points, note, name)
    if idx == 0:
        note = f"{name}: Q(KᵀV) already faster at the smallest N={ns[0]}"
        return Crossover(dim, heads, hd, ns[0], rule, points, note, name)
    # Interpolate the sign change of log(kv/qk) in log N between ns[idx-1] and ns[idx].
    a, b = ns[idx - 1], ns[idx]
    fa = math.log(kv[a] / qk[a])
    fb = math.log(kv[b] / qk[b])
    t = fa / (fa - fb) if fa != fb else 0.5
    n_star = math.exp(math.log(a) + t * (math.log(b) - math.log(a)))
    return Crossover(
        dim,
        heads,
        hd,
        max(a + 1, min(b, math.ceil(n_star))),
        rule,
        points,
        f"{name}: between N={a} and N={b}",
        name,
    )


# ------------------------------------------------------------------- ratios along a regime
# (edgeattn.bench.ratios; re-exported here, where callers have always found them)
from edgeattn.bench.ratios import ratio_points, regime_of  # noqa: E402,F401


def verdict_counts(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Stability verdicts over a sweep: isolated measurements and paired groups."""
    counts: dict[str, int] = {}
    for r in records:
        if "status" not in r:  # a run's closing record (kind run_end), not a measurement
            continue
        if r.get("status") != "ok":
            counts["error"] = counts.get("error", 0) + 1
            continue
        if r.get("kind") == "paired":
            v = ((r.get("paired") or {}).get("stability") or {}).get("verdict")
            key = f"paired {v}"
        else:
            v = ((r.get("latency_ms") or {}).get("stability") or {}).get("verdict")
            key = f"isolated {v}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def ratio_table(records: Sequence[dict[str, Any]]) -> Any:
    """The sweep's ratios with intervals: one row per point and ratio."""
    from rich.table import Table

    from edgeattn.bench.pairs import NO_DIFFERENCE

    t = Table(title="sweep: paired ratios, median [95 % interval]", title_justify="left")
    for c in ("regime", "N", "D", "h", "ratio", "×", "rounds", "verdict"):
        t.add_column(c, justify="right" if c in ("N", "D", "h", "×", "rounds") else "left")
    for p in sorted(
        ratio_points(records), key=lambda p: (p["regime"], p["ratio"], p["dim"], p["tokens"])
    ):
        verdict = p["stability"] or "-"
        if verdict == "unstable":
            verdict = "[yellow]UNSTABLE[/]"
        if p["no_difference"]:
            verdict += f"; {NO_DIFFERENCE}"
        t.add_row(
            p["regime"],
            str(p["tokens"]),
            str(p["dim"]),
            str(p["heads"]),
            p["label"],
            f"{p['median']:.2f} [{p['ci_low']:.2f}–{p['ci_high']:.2f}]",
            str(p["rounds"]),
            verdict,
        )
    return t


def ratio_compare_table(records: Sequence[dict[str, Any]]) -> Any:
    """Paired ratios side by side: one row per (shape, ratio), one column per run (device, and
    the run's file when a device has several); never merged, the same whatever the file order."""
    from rich.table import Table

    from edgeattn.bench.pairs import RATIOS
    from edgeattn.bench.report import run_columns, run_label

    order = {r.name: i for i, r in enumerate(RATIOS)}
    points = ratio_points(records, all_ratios=True)
    cols = run_columns(pairs_records(records))
    cells: dict[tuple, dict[tuple[str, str], dict[str, Any]]] = {}
    labels: dict[tuple, str] = {}
    for p in points:  # in record time order: the latest record of a run wins
        key = (p["tokens"], p["dim"], p["heads"], p["ratio"])
        cells.setdefault(key, {})[(p["device"], p["run"])] = p
        labels[key] = p["label"]
    t = Table(title="paired ratios by run: median [95 % interval]", title_justify="left")
    for c in ("N", "D", "h", "ratio"):
        t.add_column(c, justify="right" if c != "ratio" else "left")
    for c in cols:
        t.add_column(run_label(c, cols), justify="right")
    for key in sorted(cells, key=lambda k: (order.get(k[3], 99), k[3], k[1], k[0], k[2])):
        row = [str(key[0]), str(key[1]), str(key[2]), labels[key]]
        for c in cols:
            p = cells[key].get(c)
            if p is None:
                row.append("-")
                continue
            s = f"{p['median']:.2f} [{p['ci_low']:.2f}–{p['ci_high']:.2f}]"
            if p["stability"] == "unstable":
                s += " [yellow]unstable[/]"
            if p["no_difference"]:
                s += " ≈1"
            row.append(s)
        t.add_row(*row)
    return t


def pairs_records(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    from edgeattn.bench import pairs

    return pairs.paired(records)


def ns_per_element_line(records: Sequence[dict[str, Any]]) -> str | None:
    """'pure op, ns per element: N=256 Softmax 0.59 / l1 0.86; ...' over the sweep's points."""
    from edgeattn.bench import pairs

    parts = []
    for rec in sorted(pairs.paired(records), key=lambda r: (r.get("meta") or {}).get("tokens", 0)):
        npe = pairs.ns_per_element(rec)
        if len(npe) >= 2:
            n = (rec.get("meta") or {}).get("tokens")
            parts.append(f"N={n} " + " / ".join(f"{k} {v:.3f}" for k, v in npe.items()))
    return "pure op over (B,h,N,N), ns per element: " + "; ".join(parts) if parts else None


# ------------------------------------------------------------------ the sweep, end to end

REGIMES = ("tokens", "channels", "crossover", "both")


@dataclass
class SweepPlan:
    """What a sweep measures: its jobs (each once) and the (D, h) of each crossover it reads."""

    regime: str
    dim: int
    jobs: list[Job]
    crossover_heads: list[int]
    #: the crossover pairs it reads; None: every declared pair with records
    crossover_pairs: list[str] | None = None

    @property
    def has_crossover(self) -> bool:
        return self.regime in ("crossover", "both")


def plan_sweep(
    regime: str = "both",
    dim: int = 384,
    heads: int = 6,
    tokens_grid: str | Sequence[int] | None = TOKENS_GRID,
    channels_grid: str | Sequence[int] | None = CHANNELS_GRID,
    channels_tokens: int = 64,
    crossover_heads: str | Sequence[int] | None = None,
    crossover_grid: str | Sequence[int] | None = None,
    methods: str | Sequence[str] | None = None,
    crossover_pairs: str | Sequence[str] | None = None,
) -> SweepPlan:
    """The jobs of ``regime`` (tokens, channels, crossover or both = all three), de-duplicated
    (a crossover point can coincide with a grid point). ``methods`` overrides the tokens and
    channels regimes' methods; ``crossover_heads`` defaults to ``heads`` and 1;
    ``crossover_pairs`` (comma list) to every pair the method table declares."""
    from edgeattn.bench.core import parse_methods

    if regime not in REGIMES:
        raise BenchError(f"--regime {regime!r}; valid: {', '.join(REGIMES)}")
    declared = list(_mt.crossover_pairs())
    if isinstance(crossover_pairs, str):
        crossover_pairs = [p.strip() for p in crossover_pairs.split(",") if p.strip()]
    xpairs = list(crossover_pairs) if crossover_pairs else declared
    bad = [p for p in xpairs if p not in declared]
    if bad:
        raise BenchError(f"crossover pair {bad[0]!r}; valid: {', '.join(declared)}")
    jobs: list[Job] = []
    if regime in ("tokens", "both"):
        ms = parse_methods(methods) if methods else list(_mt.in_regime("tokens"))
        jobs += tokens_jobs(dim, heads, parse_int_list(tokens_grid, "--tokens-grid"), ms)
    if regime in ("channels", "both"):
        ms = parse_methods(methods) if methods else list(_mt.in_regime("channels"))
        grid = parse_int_list(channels_grid, "--channels-grid")
        jobs += channels_jobs(channels_tokens, heads, grid, ms)
    xheads = parse_int_list(crossover_heads, "--crossover-heads") or [heads, 1]
    if regime in ("crossover", "both"):
        for h in xheads:
            if dim % h:
                raise BenchError(f"--crossover-heads {h}: --dim {dim} is not divisible by it")
            grid = parse_int_list(crossover_grid, "--crossover-grid")
            jobs += crossover_jobs(dim, h, grid, xpairs)
    seen: set[str] = set()
    uniq = [j for j in jobs if not (j.id in seen or seen.add(j.id))]  # first of each id
    if not uniq:
        raise BenchError(f"--regime {regime}: the grids give nothing to measure")
    return SweepPlan(regime, dim, uniq, xheads, xpairs)


def measure_plan(
    plan: SweepPlan,
    settings: Any,
    out: Any,
    resume: bool = False,
    on_progress: Any = None,
) -> list[dict[str, Any]]:
    """Export every job, then measure shape by shape (each method alone, then paired); one
    progress step per export and per measurement. With ``resume``: the records of ``out`` for
    this plan (what was there and what was added)."""
    from edgeattn.bench import core
    from edgeattn.bench.run import export_jobs, silent

    say = on_progress or silent
    prepared = export_jobs(plan.jobs, settings, say)
    groups = core.shape_groups(prepared)
    records: list[dict[str, Any]] = []
    for g, grp in enumerate(groups, 1):
        s = grp[0].shape
        where = f"point {g}/{len(groups)} N={s.tokens} D={s.dim} h={s.heads}"
        records += core.measure_local(
            grp, settings, out, resume, on_progress=lambda m, w=where: say(f"{w}: {m}")
        )
    if resume:
        from edgeattn.runtime.records import read_jsonl

        ids = {j.id for j in plan.jobs} | {g["id"] for g in core.paired_specs(prepared, settings)}
        records = [r for r in read_jsonl(out) if r.get("id") in ids]
    return records


def crossovers(plan: SweepPlan, records: Sequence[dict[str, Any]]) -> list[Crossover]:
    """The measured crossover of each of the plan's pairs at each of its (D, h); [] when it
    reads none. Without declared pairs: every pair with a record of both its methods."""
    if not plan.has_crossover:
        return []
    pairs = plan.crossover_pairs
    if pairs is None:
        seen = {(r.get("meta") or {}).get("method") for r in ok(records)}
        pairs = [p for p, ms in _mt.crossover_pairs().items() if set(ms) <= seen]
    return [find_crossover(records, plan.dim, h, p) for p in pairs for h in plan.crossover_heads]


def write_crossover(
    path: Any, records: Sequence[dict[str, Any]], found: Sequence[Crossover]
) -> dict[str, Any]:
    """The JSON that ``edgeattn export --crossover`` reads its threshold from (atomically)."""
    import json

    from edgeattn.runtime.records import write_atomic

    payload = {
        "device": (records[0].get("device") if records else None),
        "crossovers": [x.as_dict() for x in found],
    }
    write_atomic(str(path), (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())
    return payload


@dataclass
class SweepResult:
    plan: SweepPlan
    records: list[dict[str, Any]]
    out: Any
    crossovers: list[Crossover]
    crossover_file: Any = None
    plot: Any = None


def run_sweep(
    plan: SweepPlan,
    settings: Any,
    *,
    out: Any = None,
    resume: bool = False,
    plot: Any = None,
    write_crossover_to: Any = None,
    memory_guard: bool = True,
    on_progress: Any = None,
    on_warning: Any = None,
    kept: Any = None,
) -> SweepResult:
    """``edgeattn sweep``: check the plan (preflight), measure it, read the crossovers, write
    the crossover file and the plot if asked. ``kept``: ``bench.run.Kept`` for an interrupt."""
    from pathlib import Path

    from edgeattn.bench import run

    run.check_device(settings.device)
    out = Path(out or run.default_out("sweep"))
    run.preflight(
        "check_sweep", kept, on_warning or run.silent, jobs=plan.jobs, out=out, plot=plot,
        write_crossover=write_crossover_to, threads=settings.intra_op_threads, min_runs=settings.min_runs,
        min_time=settings.min_time_s, max_time=settings.max_time_s, memory_guard=memory_guard,
    )  # fmt: skip
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    from edgeattn import integrity

    with integrity.run(out, "sweep", resume=resume):  # the records' run id and run_end
        records = measure_plan(plan, settings, out, resume, on_progress)
    res = SweepResult(plan, records, out, crossovers(plan, records))
    if write_crossover_to and res.crossovers:
        write_crossover(write_crossover_to, records, res.crossovers)
        res.crossover_file = write_crossover_to
    if plot:
        from edgeattn.bench.plot import plot_records

        res.plot = plot_records(records, plot)
    return res
