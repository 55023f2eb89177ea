"""Tables (rich), summaries and CSV from runtime records. Pure functions over record dicts."""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Iterable, Sequence
from typing import Any


def ok(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ok *isolated* records (one method alone); paired records are read by ``pairs``."""
    return [r for r in records if r.get("status") == "ok" and r.get("kind") != "paired"]


def isolated(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Isolated records, ok or not (tables list failures too)."""
    return [r for r in records if r.get("kind") != "paired"]


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
    """Last ok record per method key (a bench run measures each method once per shape)."""
    out: dict[str, dict[str, Any]] = {}
    for r in ok(records):
        out[(r.get("meta") or {}).get("method", "?")] = r
    return out


def ratio(num: dict[str, Any] | None, den: dict[str, Any] | None) -> float | None:
    if not num or not den:
        return None
    a, b = p50(num), p50(den)
    if not a or not b:
        return None
    return a / b


def bench_summary(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The headline ratios of one device's records at one shape.

    Each ratio is a dict: from the last ok paired record, the median of per-round ratios with its
    95 % interval (``source: "paired"``); without one (``--no-paired``, old records), the ratio of
    the isolated medians, with no interval (``source: "unpaired"``). None when a method is absent.
    """
    from edgeattn.bench import pairs

    m = by_method(records)
    sima = m.get("sima")
    prs = pairs.paired(records)
    prec = prs[-1] if prs else None
    got = pairs.ratio_results(prec) if prec else {}
    out: dict[str, Any] = {}
    for spec in pairs.RATIOS:
        if spec.name in got:
            r = dict(got[spec.name])
            r["source"] = "paired"
            out[spec.name] = r
        else:
            v = ratio(m.get(spec.num), m.get(spec.den))
            out[spec.name] = None if v is None else {"median": v, "source": "unpaired"}
    out["dynamic_order_taken"] = ((sima or {}).get("meta") or {}).get("order")
    out["op_level"] = pairs.op_breakdowns(prec) if prec else {}
    out["ns_per_element"] = pairs.ns_per_element(prec) if prec else {}
    out["stability"] = ((prec or {}).get("paired") or {}).get("stability")
    out["isolated_stability"] = {
        k: ((r.get("latency_ms") or {}).get("stability") or {}).get("verdict") for k, r in m.items()
    }
    return out


def _fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def _fmt_x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}×"


def bench_table(records: Sequence[dict[str, Any]], title: str = "") -> Any:
    from rich.table import Table

    m = by_method(records)
    base = m.get("softmax")
    t = Table(title=title or "attention block latency (ONNX Runtime)", title_justify="left")
    for col, kw in (
        ("method", {"no_wrap": True}),
        ("order", {"no_wrap": True}),
        ("p50 ms", {"justify": "right"}),
        ("p90 ms", {"justify": "right"}),
        ("cv", {"justify": "right", "no_wrap": True}),
        ("runs", {"justify": "right"}),
        ("÷MSA", {"justify": "right"}),
        ("GFLOP/s", {"justify": "right"}),
        ("Smax/Exp", {"justify": "center", "no_wrap": True}),
        ("MB", {"justify": "right"}),
    ):
        t.add_column(col, **kw)
    for rec in isolated(records):
        meta = rec.get("meta") or {}
        if rec.get("status") != "ok":
            t.add_row(
                meta.get("method", "?"),
                "",
                "[red]error[/]",
                (rec.get("error") or "")[:60],
                "",
                "",
                "",
                "",
                "",
                "",
            )
            continue
        lat = rec.get("latency_ms") or {}
        ops = meta.get("ops") or {}
        fused = meta.get("fused_attention") or 0
        census = f"{ops.get('Softmax', 0)}/{ops.get('Exp', 0)}"
        if fused:
            census += f"+{fused}F"
        cv = lat.get("cv")
        verdict = (lat.get("stability") or {}).get("verdict")
        cv_s = "-" if cv is None else f"{cv:.0%}"
        if verdict == "unstable":
            cv_s += " [yellow]unstable[/]"
        elif not lat.get("stable", True):
            cv_s += "[yellow]![/]"
        mem = (rec.get("memory") or {}).get("peak_rss_mb")
        t.add_row(
            meta.get("method", "?"),
            _order_str(meta),
            _fmt_ms(lat.get("median")),
            _fmt_ms(lat.get("p90")),
            cv_s,
            str(lat.get("runs", "-")),
            _fmt_x(ratio(rec, base)) if base else "-",
            _gflops_per_s(meta.get("gflops"), lat.get("median")),
            census,
            "-" if mem is None else f"{mem:.0f}",
        )
    return t


def _gflops_per_s(gflops: float | None, median_ms: float | None) -> str:
    """Achieved GFLOP/s (the block's multiply-adds at this shape / its median latency)."""
    if not gflops or not median_ms:
        return "-"
    return f"{gflops / (median_ms / 1e3):.1f}"


def legend(records: Sequence[dict[str, Any]]) -> list[str]:
    seen: dict[str, str] = {}
    for r in records:
        m = r.get("meta") or {}
        if m.get("method") and m.get("label"):
            seen.setdefault(m["method"], m["label"])
    return [f"{k}: {v}" for k, v in seen.items()]


def _order_str(meta: dict[str, Any]) -> str:
    order = meta.get("order")
    if meta.get("method") in ("softmax", "softmax_fused"):
        return "(QKᵀ)V"
    if meta.get("method") == "xca":
        return "V(KᵀQ) d×d"
    if meta.get("method") == "soft":
        return "Nyström"
    names = {"qk_first": "(QKᵀ)V", "kv_first": "Q(KᵀV)"}
    s = names.get(order, order or "?")
    if meta.get("order_policy") == "auto":
        s += " auto"
    return s


SUMMARY_RATIOS = (
    "exp_vs_l1_fixed_order",
    "dynamic_order_speedup",
    "fused_softmax_vs_sima_dynamic",
    "softmax_vs_soft",
    "xca_vs_sima_dynamic",
    "xca_vs_sima_kv",
    "op_softmax_vs_l1",
)


def summary_lines(summary: dict[str, Any], shape: str = "") -> list[str]:
    """One line per headline ratio: paired with its interval, or marked unpaired (``shape`` is
    kept for callers; the table title carries it)."""
    from edgeattn.bench import pairs

    out = []
    for name in SUMMARY_RATIOS:
        r = summary.get(name)
        if not r:
            continue
        if r.get("source") == "paired":
            out.append(pairs.ratio_line(name, r, summary.get("dynamic_order_taken")))
        else:
            spec = pairs.RATIO_BY_NAME[name]
            out.append(
                f"{spec.label} = {r['median']:.2f}× (ratio of medians from separate runs, "
                "unpaired: no interval; within run-to-run noise unless measured paired)"
            )
    npe = summary.get("ns_per_element") or {}
    if "op_softmax" in npe and "op_l1" in npe:
        out.append(
            f"per element: Softmax {npe['op_softmax']:.3f} ns, l1-normalise {npe['op_l1']:.3f} ns"
        )
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


def compare_table(records: Sequence[dict[str, Any]]) -> Any:
    """Side-by-side medians: one row per workload (method+shape), one column per device/run."""
    from rich.table import Table

    devices: list[str] = []
    cells: dict[tuple, dict[str, list[float]]] = {}
    unstable: set[tuple] = set()
    for r in ok(records):
        d = device_label(r)
        if d not in devices:
            devices.append(d)
        meta = r.get("meta") or {}
        wk = (
            meta.get("method") or meta.get("name") or (r.get("model") or {}).get("path"),
            meta.get("tokens"),
            meta.get("dim"),
            meta.get("heads"),
            (r.get("session") or {}).get("intra_op_threads"),
        )
        cells.setdefault(wk, {}).setdefault(d, []).append(p50(r))
        if ((r.get("latency_ms") or {}).get("stability") or {}).get("verdict") == "unstable":
            unstable.add((wk, d))
    t = Table(title="median latency (ms) by device", title_justify="left")
    for c in ("workload", "N", "D", "h", "threads"):
        t.add_column(c)
    for d in devices:
        t.add_column(d, justify="right")
    if len(devices) == 2:
        t.add_column("ratio", justify="right")
    for wk, per in cells.items():
        vals = [statistics.median(per[d]) if d in per else None for d in devices]
        row = [str(x) if x is not None else "-" for x in wk] + [
            _fmt_ms(v) + (" [yellow]unstable[/]" if (wk, d) in unstable else "")
            for v, d in zip(vals, devices, strict=True)
        ]
        if len(devices) == 2:
            row.append(_fmt_x(vals[1] / vals[0]) if vals[0] and vals[1] else "-")
        t.add_row(*row)
    return t


def compare_sweep_table(records: Sequence[dict[str, Any]]) -> Any:
    """Sweep results: one row per shape, one column per method (median ms)."""
    from rich.table import Table

    methods: list[str] = []
    rows: dict[tuple[int, int, int], dict[str, float | None]] = {}
    for r in ok(records):
        m = r.get("meta") or {}
        meth = m.get("method", "?")
        if meth not in methods:
            methods.append(meth)
        rows.setdefault((m.get("tokens"), m.get("dim"), m.get("heads")), {})[meth] = p50(r)
    t = Table(title="sweep: median latency (ms)", title_justify="left")
    for c in ("N", "D", "h"):
        t.add_column(c, justify="right")
    for meth in methods:
        t.add_column(meth, justify="right")
    for (n, d, h), per in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        t.add_row(str(n), str(d), str(h), *[_fmt_ms(per.get(x)) for x in methods])
    return t
