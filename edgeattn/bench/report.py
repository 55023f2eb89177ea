"""Tables (rich), summaries and CSV from runtime records. Pure functions over record dicts."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

#: record kinds that are not one method's measurement (paired groups, a run's closing record)
NOT_ISOLATED = ("paired", "run_end")


def ok(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ok *isolated* records (one method alone); paired records are read by ``pairs``."""
    return [r for r in isolated(records) if r.get("status") == "ok"]


def isolated(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Isolated records, ok or not (tables list failures too)."""
    return [r for r in records if r.get("kind") not in NOT_ISOLATED and "status" in r]


def p50(rec: dict[str, Any]) -> float | None:
    return (rec.get("latency_ms") or {}).get("median")


def device_label(rec: dict[str, Any]) -> str:
    dev = rec.get("device") or {}
    host = rec.get("host") or {}
    name = host.get("spec") or dev.get("hostname") or "?"
    cpu = dev.get("cpu_model") or dev.get("machine") or ""
    prov = (rec.get("session") or {}).get("device") or ""
    emu = " (emulated — not device speed)" if dev.get("emulated") else ""
    return f"{name} [{prov}] {cpu}{emu}".strip()


def by_method(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The latest ok isolated record per method key (by ``created_utc``, never by file order)."""
    out: dict[str, dict[str, Any]] = {}
    for r in sorted(ok(records), key=lambda r: r.get("created_utc") or ""):
        meta = r.get("meta") or {}
        key = meta.get("method", "?")
        if (meta.get("precision") or "fp32") != "fp32":
            key = f"{key}@{meta['precision']}"
        out[key] = r
    return out


def run_key(rec: dict[str, Any]) -> str:
    """What one run's records share: the file they came from and, when recorded, the run id
    (``FILE#RUNID``; a file may hold several runs, a run never spans files)."""
    src = str(rec.get("_source") or "")
    rid = rec.get("run_id")
    return f"{src}#{rid}" if rid else src


def latest_paired(records: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The latest ok paired record (by ``created_utc``: the same whatever the file order)."""
    from edgeattn.bench import pairs

    prs = sorted(pairs.paired(records), key=lambda r: r.get("created_utc") or "")
    return prs[-1] if prs else None


def __getattr__(name: str) -> Any:
    """SUMMARY_RATIOS: the named lines a bench prints, in order (each needs both of its methods
    in the paired pass), from the method table."""
    if name == "SUMMARY_RATIOS":
        from edgeattn.bench import methods

        return methods.summary_ratios()
    raise AttributeError(name)


#: when the passes disagree: an isolated ratio outside the paired interval by more than this
DISAGREE_MARGIN = 0.03


def bench_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ratios of one run on one device at one shape, all from its paired pass.

    ``vs_reference``: each method's ratio to the reference (softmax if measured, else the first
    method), reference time / method time, median of per-round ratios with its 95 % interval;
    the named ratios (``exp_vs_l1_fixed_order``, ...) likewise, when both their methods were
    measured, and ``missing`` says which methods each absent named line needs. The isolated pass
    gives only what it alone can: each method's latency as deployed (ORT's defaults, alone) and
    its peak memory (``isolated``); ``disagreements`` names where its ratio of medians falls
    outside the paired interval. Without a paired record there are no ratios at all.
    """
    from edgeattn.bench import pairs

    m = by_method(records)
    prec = latest_paired(records)
    got = pairs.ratio_results(prec) if prec else {}
    members = list(pairs.member_keys(prec).values()) if prec else list(m)
    out: dict[str, Any] = {
        "direction": pairs.DIRECTION,
        "source": "paired" if prec else None,
        "methods": members,
    }
    ref, vs = pairs.vs_reference(prec) if prec else (pairs.reference_method(members), {})
    out["reference"] = ref
    out["vs_reference"] = vs
    for spec in pairs.RATIOS:
        if spec.name in got:
            out[spec.name] = dict(got[spec.name], source="paired")
    missing = {}
    summary_names = __getattr__("SUMMARY_RATIOS")
    for name in summary_names:
        spec = pairs.RATIO_BY_NAME[name]
        if name not in out and (spec.num in members or spec.den in members):
            missing[name] = [x for x in (spec.num, spec.den) if x not in members]
    out["missing"] = missing
    out["dynamic_order_taken"] = pairs.taken_order(prec) if prec else None
    out["op_level"] = pairs.op_breakdowns(prec) if prec else {}
    out["ns_per_element"] = pairs.ns_per_element(prec) if prec else {}
    stab = ((prec or {}).get("paired") or {}).get("stability")
    out["stability"] = stab
    out["stability_note"] = pairs.stability_note(stab)
    out["isolated"] = {
        k: {
            "median_ms": p50(r),
            "peak_rss_mb": (r.get("memory") or {}).get("peak_rss_mb"),
            "verdict": ((r.get("latency_ms") or {}).get("stability") or {}).get("verdict"),
        }
        for k, r in m.items()
    }
    out["disagreements"] = _disagreements(ref, vs, m)
    out["fastest"], out["vs_fastest"] = pairs.vs_fastest(prec) if prec else (None, {})
    return out


def _disagreements(
    ref: str | None, vs: dict[str, dict[str, Any]], iso: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Methods whose isolated ratio of medians (reference / method) falls outside the paired
    interval by more than ``DISAGREE_MARGIN``."""
    out = []
    base = p50(iso[ref]) if ref in iso else None
    for meth, r in vs.items():
        own = p50(iso[meth]) if meth in iso else None
        if not base or not own:
            continue
        alone = base / own
        if alone < r["ci_low"] * (1 - DISAGREE_MARGIN) or alone > r["ci_high"] * (
            1 + DISAGREE_MARGIN
        ):
            out.append({"method": meth, "isolated": round(alone, 4), "paired": r})
    return out


def _fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _fmt_x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}×"


def _census(meta: dict[str, Any]) -> str:
    ops = meta.get("ops") or {}
    census = f"{ops.get('Softmax', 0)}/{ops.get('Exp', 0)}"
    fused = meta.get("fused_attention") or 0
    return census + (f"+{fused}F" if fused else "")


def shows_fused(records: Iterable[dict[str, Any]]) -> bool:
    """Whether a census cell of these records carries an ``F`` (fused attention ops)."""
    return any((r.get("meta") or {}).get("fused_attention") for r in isolated(records))


def _p90(values: Sequence[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * 0.9
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def bench_table(records: Sequence[dict[str, Any]], title: str = "") -> Any:
    """One table, one pass: the paired pass's median and p90 per method and its ratio to the
    reference with the 95 % interval; then, labelled, what only the isolated pass gives (the
    latency as deployed and the peak memory, each method alone). Without a paired record, the
    isolated latencies alone, and no ratio column."""
    from rich import box
    from rich.table import Table

    from edgeattn.bench import pairs

    prec = latest_paired(records)
    iso = by_method(records)
    errors = [r for r in isolated(records) if r.get("status") != "ok"]
    if prec is None:
        t = Table(
            title=(title or "attention block latency")
            + " — each method alone (no paired pass, so no ratios)",
            title_justify="left",
        )
        for col in ("method", "order", "p50 ms", "p90 ms", "runs", "GFLOP/s", "Smax/Exp", "MB"):
            t.add_column(col, no_wrap=True, justify=_just(col))
        for key, rec in iso.items():
            meta = rec.get("meta") or {}
            lat = rec.get("latency_ms") or {}
            mem = (rec.get("memory") or {}).get("peak_rss_mb")
            t.add_row(
                key, _order_str(meta), _fmt_ms(lat.get("median")), _fmt_ms(lat.get("p90")),
                str(lat.get("runs", "-")), _gflops_per_s(meta.get("gflops"), lat.get("median")),
                _census(meta), "-" if mem is None else f"{mem:.0f}",
            )  # fmt: skip
        _error_rows(t, errors, 8)
        return t
    p = prec.get("paired") or {}
    keys = pairs.member_keys(prec)
    ref, vs = pairs.vs_reference(prec)
    col = {m["id"]: i for i, m in enumerate(p.get("members", []))}
    rounds = p.get("rounds_ms") or []
    t = Table(
        title=title or "attention block latency (ONNX Runtime)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    # "fastest ÷ method" (paired, with its interval) when the reference is not the table's
    # first default (softmax not measured), or when the blocks measured make up a named set
    # (``--methods zoo``): a comparison of attentions reads against the fastest of them
    from edgeattn.bench import methods as _methods

    fastest, vs_fast = pairs.vs_fastest(prec)
    blocks = {k for k in keys.values() if not pairs.is_graph_method(k)}
    in_set = any(len(ks) >= 3 and set(ks) <= blocks for ks in _methods.sets().values())
    default_ref = next(iter(_methods.default_methods()), None)
    show_fast = fastest is not None and (ref != default_ref or in_set)
    heads = ("method", "order", "p50 ms", "p90 ms", f"{ref} ÷ method", "GFLOP/s")
    if show_fast:
        heads = heads[:5] + ("fastest ÷ method",) + heads[5:]
    for c in heads:
        # with both ratio columns, a narrow terminal wraps their intervals, never a name
        wrap = show_fast and "÷" in c
        t.add_column(c, no_wrap=not wrap, justify=_just(c), min_width=13 if wrap else None)
    lat = p.get("latency_ms") or {}
    for m in p.get("members", []):
        key = keys[m["id"]]
        meta = m.get("meta") or {}
        values = [row[col[m["id"]]] for row in rounds]
        med = (lat.get(m["id"]) or {}).get("median")
        if key == ref:
            rcell = "1 (reference)"
        elif key in vs:
            rcell = pairs.fmt_ratio(vs[key]) + (" ≈1" if vs[key].get("no_difference") else "")
        else:
            rcell = "-"  # a graph (pure op, matmul floor): see its named ratio
        cells = [rcell]
        if show_fast:
            r = vs_fast.get(key)
            fcell = "1 (fastest)" if key == fastest else pairs.fmt_ratio(r)
            cells.append(fcell + (" ≈1" if r and r.get("no_difference") else ""))
        t.add_row(
            key, _order_str(meta), _fmt_ms(med), _fmt_ms(_p90(values)), *cells,
            _gflops_per_s(meta.get("gflops"), med),
        )  # fmt: skip
    _error_rows(t, errors, len(heads))
    return t


def deployed_table(records: Sequence[dict[str, Any]]) -> Any:
    """What only the isolated pass gives, labelled as such: each method alone in its own process
    with ORT's defaults (latency as deployed, its own peak memory), and its op census. No ratio:
    runs taken apart are not paired. None when there is no paired table to go with it (the
    isolated-only table already shows all of this)."""
    from rich import box
    from rich.table import Table

    if latest_paired(records) is None:
        return None
    t = Table(
        title="each method alone (latency as deployed, peak memory; never a ratio)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for c in ("method", "alone p50 ms", "alone p90 ms", "runs", "peak MB", "Smax/Exp"):
        t.add_column(c, no_wrap=True, justify=_just(c))
    for key, rec in by_method(records).items():
        meta = rec.get("meta") or {}
        lat = rec.get("latency_ms") or {}
        mem = (rec.get("memory") or {}).get("peak_rss_mb")
        t.add_row(
            key, _fmt_ms(lat.get("median")), _fmt_ms(lat.get("p90")), str(lat.get("runs", "-")),
            "-" if mem is None else f"{mem:.0f}", _census(meta),
        )  # fmt: skip
    return t


def _just(col: str) -> str:
    return "left" if col in ("method", "order", "Smax/Exp", "workload") else "right"


def _error_rows(t: Any, errors: Sequence[dict[str, Any]], ncols: int) -> None:
    for rec in errors:
        meta = rec.get("meta") or {}
        row = [meta.get("method", "?"), "[red]error[/]", (rec.get("error") or "")[:60]]
        t.add_row(*(row + [""] * (ncols - len(row))))


def table_note(records: Sequence[dict[str, Any]]) -> str:
    """The header line under the bench table: which pass gives what, and the ratio direction."""
    from edgeattn.bench import pairs

    prec = latest_paired(records)
    if prec is None:
        return (
            "each method alone in its own process; ratios need the paired pass "
            "(run without --no-paired, with at least two methods)"
        )
    p = prec.get("paired") or {}
    rounds = len(p.get("rounds_ms") or [])
    stab = pairs.verdict_text(p.get("stability")) or "-"
    return (
        f"p50/p90 and ratios: all methods interleaved in one process ({rounds} paired rounds, "
        f"{stab}); {pairs.DIRECTION}; ratio = median of per-round ratios [95 % interval], "
        "≈1 = no measurable difference"
    )


def _gflops_per_s(gflops: float | None, median_ms: float | None) -> str:
    """Achieved GFLOP/s (the block's multiply-adds at this shape / its median latency)."""
    if not gflops or not median_ms:
        return "-"
    return f"{gflops / (median_ms / 1e3):.1f}"


def legend(records: Sequence[dict[str, Any]]) -> list[str]:
    """'method: label' for every method of the records: from each record's meta, and for a paired
    record (a sustained run has no other) from its members' meta."""
    seen: dict[str, str] = {}
    for r in records:
        metas = [r.get("meta") or {}]
        metas += [mb.get("meta") or {} for mb in (r.get("paired") or {}).get("members") or []]
        for m in metas:
            if m.get("method") and m.get("label"):
                seen.setdefault(m["method"], m["label"])
    return [f"{k}: {v}" for k, v in seen.items()]


def _order_str(meta: dict[str, Any]) -> str:
    """The evaluation order a table prints for a record's method (from the method table)."""
    from edgeattn.bench import methods

    m = methods.get(meta.get("method"))
    if m is None:
        return methods.ORDER_TEXT.get(meta.get("order") or "", meta.get("order") or "?")
    return m.order_text(meta.get("order"))


def summary_lines(summary: dict[str, Any], shape: str = "") -> list[str]:
    """The named ratio lines (paired, with intervals), what each absent one needs, where the
    isolated pass disagrees with the paired one, and what an unstable verdict means."""
    from edgeattn.bench import pairs

    out: list[str] = []
    if summary.get("source") != "paired":
        return out
    needs = []
    headline = __getattr__("SUMMARY_RATIOS")
    for name in headline:
        r = summary.get(name)
        if r:
            out.append(pairs.ratio_line(name, r, summary.get("dynamic_order_taken")))
        elif name in (summary.get("missing") or {}):
            spec = pairs.RATIO_BY_NAME[name]
            needs.append(f"{spec.label} (add {','.join(summary['missing'][name])})")
    # the other named ratios this run measured (a block against its matmul floor, ...)
    for spec in pairs.RATIOS:
        r = summary.get(spec.name)
        if r and spec.name not in headline:
            out.append(pairs.ratio_line(spec.name, r, summary.get("dynamic_order_taken")))
    if needs:
        out.append("not measured, for want of a method: " + "; ".join(needs))
    npe = summary.get("ns_per_element") or {}
    if len(npe) >= 2:  # the pure-op graphs, each alone over the same (B,h,N,N) tensor
        out.append("per element: " + ", ".join(f"{k} {v:.3f} ns" for k, v in npe.items()))
    fast = summary.get("vs_fastest") or {}
    if fast:
        each = ", ".join(
            f"{k} {pairs.fmt_ratio(r)}"
            for k, r in sorted(fast.items(), key=lambda kv: -kv[1]["median"])
        )
        out.append(f"fastest here: {summary['fastest']}; {summary['fastest']} ÷ each: {each}")
    dis = summary.get("disagreements") or []
    if dis:
        each = ", ".join(
            f"{d['method']} {d['isolated']:.2f}× (paired {pairs.fmt_ratio(d['paired'])})"
            for d in dis
        )
        out.append(
            f"note: alone, against {summary.get('reference')}: {each}, outside the paired "
            "intervals: the isolated runs were taken at different moments (the machine's drift "
            "between them) and with ORT's thread spinning on; the paired figures are the comparison"
        )
    if summary.get("stability_note"):
        out.append(summary["stability_note"])
    return out


CSV_FIELDS = (
    "device",
    "method",
    "name",
    "order",
    "tokens",
    "dim",
    "heads",
    "batch",
    "threads",
    "provider",
    "status",
    "median_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "min_ms",
    "cv",
    "runs",
    "peak_rss_mb",
    "softmax_ops",
    "exp_ops",
    "key",
)


def to_csv(records: Iterable[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    w.writeheader()
    for r in isolated(records):
        meta = r.get("meta") or {}
        lat = r.get("latency_ms") or {}
        ses = r.get("session") or {}
        ops = meta.get("ops") or {}
        w.writerow(
            {
                "device": device_label(r),
                "method": meta.get("method"),
                "name": meta.get("name") or (r.get("model") or {}).get("path"),
                "order": meta.get("order"),
                "tokens": meta.get("tokens"),
                "dim": meta.get("dim"),
                "heads": meta.get("heads"),
                "batch": meta.get("batch"),
                "threads": ses.get("intra_op_threads"),
                "provider": ses.get("device"),
                "status": r.get("status"),
                "median_ms": lat.get("median"),
                "p90_ms": lat.get("p90"),
                "p99_ms": lat.get("p99"),
                "mean_ms": lat.get("mean"),
                "min_ms": lat.get("min"),
                "cv": lat.get("cv"),
                "runs": lat.get("runs"),
                "peak_rss_mb": (r.get("memory") or {}).get("peak_rss_mb"),
                "softmax_ops": ops.get("Softmax"),
                "exp_ops": ops.get("Exp"),
                "key": r.get("key"),
            }
        )
    return buf.getvalue()


def run_columns(records: Iterable[dict[str, Any]]) -> list[tuple[str, str]]:
    """The (device, run) columns of a report, ordered by device, then by each run's first record
    time: the same order whatever the order of the files on the command line."""
    first: dict[tuple[str, str], str] = {}
    for r in records:
        if r.get("kind") == "run_end":
            continue  # a run's closing record: no device, no measurement
        k = (device_label(r), run_key(r))
        t = r.get("created_utc") or ""
        if k not in first or t < first[k]:
            first[k] = t
    return sorted(first, key=lambda k: (k[0], first[k], k[1]))


def run_label(col: tuple[str, str], cols: Sequence[tuple[str, str]]) -> str:
    """A column header: the device, plus the run (its file name) when a device has several."""
    dev, run = col
    if sum(1 for d, _ in cols if d == dev) <= 1:
        return dev
    src, _, rid = run.partition("#")
    name = Path(src).name if src else "?"
    if rid and sum(1 for d, r in cols if d == dev and r.partition("#")[0] == src) > 1:
        name += f" #{rid[:8]}"
    return f"{dev} · {name}"


def compare_table(records: Sequence[dict[str, Any]]) -> Any:
    """Latency as deployed (each method alone) side by side: one row per workload, one column per
    run. Runs are never merged: two runs on one device are two columns. No ratio between columns:
    runs taken at different times are not paired."""
    from rich.table import Table

    cols = run_columns(ok(records))
    cells: dict[tuple, dict[tuple[str, str], dict[str, Any]]] = {}
    for r in sorted(ok(records), key=lambda r: r.get("created_utc") or ""):
        meta = r.get("meta") or {}
        prec = meta.get("precision") or "fp32"
        wk = (
            meta.get("method") or meta.get("name") or (r.get("model") or {}).get("path"),
            prec,
            meta.get("tokens"),
            meta.get("dim"),
            meta.get("heads"),
            (r.get("session") or {}).get("intra_op_threads"),
        )
        cells.setdefault(wk, {})[(device_label(r), run_key(r))] = r  # latest per run
    t = Table(title="latency as deployed (each method alone, ms) by run", title_justify="left")
    for c in ("workload", "precision", "N", "D", "h", "threads"):
        t.add_column(c, no_wrap=c == "workload")
    for c in cols:
        t.add_column(run_label(c, cols), justify="right")
    for wk in sorted(cells, key=lambda k: tuple("" if x is None else str(x) for x in k)):
        row = ["-" if x is None else str(x) for x in wk]
        for c in cols:
            rec = cells[wk].get(c)
            if rec is None:
                row.append("-")
                continue
            v = _fmt_ms(p50(rec))
            if ((rec.get("latency_ms") or {}).get("stability") or {}).get("verdict") == "unstable":
                v += " [yellow]unstable[/]"
            row.append(v)
        t.add_row(*row)
    return t


def compare_sweep_table(records: Sequence[dict[str, Any]]) -> Any:
    """Sweep results: one row per shape, one column per method: the paired median (ms) where the
    shape was measured paired, else (no paired pass) each method's median alone, said in the
    title."""
    from rich.table import Table

    from edgeattn.bench import pairs

    methods: list[str] = []
    rows: dict[tuple[int, int, int], dict[str, float | None]] = {}
    paired_shapes = set()
    for rec in sorted(pairs.paired(records), key=lambda r: r.get("created_utc") or ""):
        m = rec.get("meta") or {}
        shape = (m.get("tokens"), m.get("dim"), m.get("heads"))
        paired_shapes.add(shape)
        lat = (rec.get("paired") or {}).get("latency_ms") or {}
        for rid, key in pairs.member_keys(rec).items():
            if key not in methods:
                methods.append(key)
            rows.setdefault(shape, {})[key] = (lat.get(rid) or {}).get("median")
    alone = False
    for r in sorted(ok(records), key=lambda r: r.get("created_utc") or ""):  # latest wins
        m = r.get("meta") or {}
        shape = (m.get("tokens"), m.get("dim"), m.get("heads"))
        if shape in paired_shapes:
            continue
        alone = True
        meth = m.get("method", "?")
        if meth not in methods:
            methods.append(meth)
        rows.setdefault(shape, {})[meth] = p50(r)
    what = "paired median latency (ms)" + (
        "; shapes without a paired pass: each method alone" if alone else ""
    )
    t = Table(title=f"sweep: {what}", title_justify="left")
    for c in ("N", "D", "h"):
        t.add_column(c, justify="right")
    for meth in methods:
        t.add_column(meth, justify="right")
    for (n, d, h), per in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        t.add_row(str(n), str(d), str(h), *[_fmt_ms(per.get(x)) for x in methods])
    return t


def run_summaries(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One bench summary per (device, run, shape) that has a paired record, in the report's
    column order: ``{"label", "shape", "summary"}``. Runs are never merged."""
    from edgeattn.bench import pairs

    cols = run_columns(records)
    out = []
    for col in cols:
        mine = [r for r in records if (device_label(r), run_key(r)) == col]
        shapes = sorted(
            {
                ((r.get("meta") or {}).get("tokens"), (r.get("meta") or {}).get("dim"))
                for r in pairs.paired(mine)
            },
            key=lambda s: tuple(-1 if x is None else x for x in s),
        )
        for n, d in shapes:
            at = [
                r
                for r in mine
                if (r.get("meta") or {}).get("tokens") == n
                and (r.get("meta") or {}).get("dim") == d
            ]
            out.append(
                {
                    "label": run_label(col, cols),
                    "shape": f"N={n}, D={d}",
                    "summary": bench_summary(at),
                }
            )
    return out
