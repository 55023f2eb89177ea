"""The headline ratios, from paired records: which pairs, how they are built, and how they read.

A bench or a sweep point measures its methods once more in a *paired group* (``kind: "paired"``
records, see ``edgeattn.runtime.paired``): all methods in one device-side process, in rounds with
the order shuffled per round, so the machine's drift cancels in each per-round ratio. The ratios
printed to a user come from there, as the median of per-round ratios with its 95 % interval, and
say so in words when the interval holds 1.0. Pure functions over record dicts.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from edgeattn.bench import methods as _methods
from edgeattn.runtime.intervals import verdict_text

#: a named ratio (declared in the method table, ``edgeattn.bench.methods``)
Ratio = _methods.NamedRatio
#: the named ratios, read live from the method table
RATIO_BY_NAME = _methods.RATIOS
NO_DIFFERENCE = "no measurable difference here"


def __getattr__(name: str) -> Any:
    """RATIOS (the named ratios in table order) and PROFILED_PAIR (the methods profiled for the
    op-level table), computed from the method table when read."""
    if name == "RATIOS":
        return tuple(_methods.RATIOS.values())
    if name == "PROFILED_PAIR":
        return _methods.profiled()
    raise AttributeError(name)


def ratios_for(methods: Iterable[str]) -> list[Ratio]:
    return _methods.ratios_between(methods)


#: every ratio edgeattn prints reads "baseline time / candidate time": > 1 means the candidate
#: (the denominator) is faster. The table's column is the reference over each method.
DIRECTION = "ratios are reference time ÷ method time: > 1 means faster than the reference"
#: the prefix of the per-method ratios to the reference a paired group carries
VS_REF = "vs_ref/"


def is_graph_method(key: str) -> bool:
    """A graph the bench builds (pure op, matmul floor), not an attention block."""
    m = _methods.get(key)
    return bool(m and m.is_graph)


def reference_method(members: Sequence[str]) -> str | None:
    """The reference every method is compared with: softmax (fp32) when measured, else the first
    attention block, else (only graphs measured) the first member."""
    if not members:
        return None
    first = next(iter(_methods.default_methods()), None)  # the table's first default: softmax
    if first in members:
        return first
    blocks = [m for m in members if not is_graph_method(m)]
    return blocks[0] if blocks else members[0]


def vs_ref_ratios(ids: dict[str, str]) -> list[dict[str, str]]:
    """``vs_ref/<member>`` = reference time / member time for every other member of the same kind
    (blocks against the reference block; graphs, which time other inputs, against the first
    graph only when no block was measured)."""
    ref = reference_method(list(ids))
    if ref is None:
        return []
    same = is_graph_method(ref)
    return [
        {"name": f"{VS_REF}{m}", "num": ids[ref], "den": rid}
        for m, rid in ids.items()
        if m != ref and is_graph_method(m) == same
    ]


def group_spec(
    group_id: str,
    members: Sequence[tuple[str, str]],
    settings: Any,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The runtime's paired-group spec for ``members`` = [(method key, run id)]."""
    ids = {m: rid for m, rid in members}
    ratios = [{"name": r.name, "num": ids[r.num], "den": ids[r.den]} for r in ratios_for(ids)]
    ratios += vs_ref_ratios(ids)
    profile = _profiled_members(ids) if settings.pair_profile else []
    return {
        "id": group_id,
        "runs": [rid for _, rid in members],
        "ratios": ratios,
        "min_rounds": settings.pair_min_rounds,
        "max_rounds": settings.pair_max_rounds,
        "min_time_s": settings.pair_min_time_s,
        "max_time_s": settings.pair_max_time_s,
        "tries": settings.pair_tries,
        "tolerance": settings.stability_tolerance,
        "seed": settings.seed,
        "profile": profile,
        "profile_runs": settings.pair_profile_runs,
        "target_halfwidth": settings.pair_target_halfwidth,
        "budget_s": settings.pair_budget_s,
        "meta": dict(meta or {}),
    }


def _profiled_members(ids: dict[str, str]) -> list[str]:
    """The run ids the op table profiles: the table's profiled pair (exp vs l1 at fixed order)
    when both are measured; else, for a set without it (``--methods zoo``), every block whose
    normalisation ops the profile can find (not a fused attention op, whose softmax is inside
    it), so each attention's normalisation ops get their own row."""
    pair = _methods.profiled()
    if all(m in ids for m in pair):
        return [ids[m] for m in pair]
    blocks = [
        m
        for m in ids
        if (spec := _methods.get(m)) is not None and spec.kind == "block" and spec.ops()
    ]
    return [ids[m] for m in blocks] if len(blocks) >= 2 else []


# ----------------------------------------------------------------------------------- reading


def paired(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("kind") == "paired" and r.get("status") == "ok"]


def member_methods(rec: dict[str, Any]) -> dict[str, str]:
    """{run id: method key} of a paired record's members."""
    return {
        m["id"]: (m.get("meta") or {}).get("method", m["id"])
        for m in (rec.get("paired") or {}).get("members", [])
    }


def ratio_results(rec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{ratio name: its summary + stability} of one paired record."""
    p = rec.get("paired") or {}
    stab = p.get("stability") or {}
    out = {}
    for r in p.get("ratios") or []:
        d = dict(r)
        d["stability"] = stab.get("verdict")
        d["stability_text"] = verdict_text(stab)
        d["no_difference"] = bool(r.get("contains_one"))
        out[r["name"]] = d
    return out


def member_keys(rec: dict[str, Any]) -> dict[str, str]:
    """{run id: pair key} of a paired record's members (``method``, ``method@precision``)."""
    out = {}
    for m in (rec.get("paired") or {}).get("members", []):
        meta = m.get("meta") or {}
        key = meta.get("method", m["id"])
        prec = meta.get("precision") or "fp32"
        out[m["id"]] = key if prec == "fp32" else f"{key}@{prec}"
    return out


def vs_fastest(rec: dict[str, Any]) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """(the fastest block, {other block: fastest time / its time}) from one paired record's
    rounds: the same direction as every ratio (> 1 would be faster than the fastest: never),
    median of per-round ratios with its interval. Graphs (ops, floors) are left out."""
    from edgeattn.runtime import intervals

    p = rec.get("paired") or {}
    lat = p.get("latency_ms") or {}
    keys = {rid: k for rid, k in member_keys(rec).items() if not is_graph_method(k)}
    if len(keys) < 3 or not p.get("rounds_ms"):
        return None, {}
    col = {m["id"]: i for i, m in enumerate(p.get("members", []))}
    best = min(keys, key=lambda rid: (lat.get(rid) or {}).get("median") or float("inf"))
    rounds = p["rounds_ms"]
    out = {}
    for rid, key in keys.items():
        if rid == best:
            continue
        r = intervals.ratio_summary(
            [row[col[best]] for row in rounds], [row[col[rid]] for row in rounds]
        )
        r["no_difference"] = bool(r.get("contains_one"))
        out[key] = r
    return keys[best], out


def vs_reference(rec: dict[str, Any]) -> tuple[str | None, dict[str, dict[str, Any]]]:
    """(reference pair key, {member pair key: reference / member ratio}) of one paired record.

    Read from the record's ``vs_ref/`` ratios; records written before those existed get them
    computed here from the same rounds (``rounds_ms``), with the same statistics."""
    from edgeattn.runtime import intervals

    keys = member_keys(rec)
    ids = {k: rid for rid, k in keys.items()}
    res = ratio_results(rec)
    out: dict[str, dict[str, Any]] = {}
    specs = vs_ref_ratios(ids)
    p = rec.get("paired") or {}
    col = {m["id"]: i for i, m in enumerate(p.get("members", []))}
    rounds = p.get("rounds_ms") or []
    stab = p.get("stability") or {}
    for spec in specs:
        member = spec["name"][len(VS_REF) :]
        r = res.get(spec["name"])
        if r is None and rounds:
            num = [row[col[spec["num"]]] for row in rounds]
            den = [row[col[spec["den"]]] for row in rounds]
            r = intervals.ratio_summary(num, den)
            r.update(
                name=spec["name"],
                num=spec["num"],
                den=spec["den"],
                stability=stab.get("verdict"),
                stability_text=verdict_text(stab),
                no_difference=bool(r.get("contains_one")),
                recomputed=True,
            )
        if r is not None:
            out[member] = r
    ref = keys.get(specs[0]["num"]) if specs else reference_method(list(ids))
    return ref, out


def stability_note(stab: dict[str, Any] | None) -> str | None:
    """One line that says what an unstable verdict means for a figure whose interval is tight
    (the interval is over rounds, each paired; the verdict compares whole tries)."""
    if not stab or stab.get("verdict") != "unstable":
        return None
    deltas = [d for d in stab.get("deltas") or [] if d is not None]
    worst = f"{max(deltas):.0%}" if deltas else "more"
    return (
        f"unstable: the {stab.get('tries')} tries' figures differed by up to {worst} "
        f"(tolerance {stab.get('tolerance', 0.05):.0%}); the interval is over all rounds, each "
        "ratio paired within its round, so it is as wide as the rounds' spread, but the machine "
        "changed between tries: treat the figure as this moment's, rerun on a quieter machine "
        "before relying on it"
    )


def taken_order(rec: dict[str, Any]) -> str | None:
    """The order the dynamic-order member resolved to (the first member with policy auto)."""
    for m in (rec.get("paired") or {}).get("members", []):
        meta = m.get("meta") or {}
        if meta.get("order_policy") == "auto":
            return meta.get("order")
    return None


def fmt_ratio(r: dict[str, Any] | None) -> str:
    if not r:
        return "-"
    return f"{r['median']:.2f}× [{r['ci_low']:.2f}–{r['ci_high']:.2f}]"


def ratio_line(name: str, r: dict[str, Any], order_taken: str | None = None) -> str:
    """e.g. 'exp vs l1 ...: softmax / SimA = 1.12× [1.04–1.19] (95 % CI, 60 paired rounds, stable)'."""
    spec = RATIO_BY_NAME.get(name)
    label = spec.label if spec else name
    bits = [f"95 % CI, {r['rounds']} paired rounds"]
    if r.get("confidence") is not None and r["confidence"] < 0.95:
        bits[0] = f"{r['confidence']:.0%} CI (too few rounds for 95 %), {r['rounds']} paired rounds"
    if r.get("stability_text"):
        bits.append(
            r["stability_text"].upper() + ", see the note"
            if r.get("stability") == "unstable"
            else r["stability_text"]
        )
    line = f"{label} = {fmt_ratio(r)} ({', '.join(bits)})"
    den = _methods.get(spec.den) if spec else None
    num = _methods.get(spec.num) if spec else None
    same_block = num is not None and den is not None and num.model == den.model
    if same_block and den.order_policy == "auto" and order_taken:  # a line about the order
        taken = {"qk_first": "(QKᵀ)V", "kv_first": "Q(KᵀV)"}.get(order_taken, order_taken)
        line += f"; auto took {taken}"
    if r.get("no_difference"):
        line += f": {NO_DIFFERENCE}"
    elif spec is not None:
        faster = spec.den if r["median"] > 1 else spec.num
        line += f": {faster} faster"
    return line


# ------------------------------------------------------------------------ op-level breakdown

#: the ops that do the normalisation, per normaliser (declared in the method table)
NORM_OPS = _methods.NORM_OPS
_EXP_DECOMPOSED_TAIL = ("ReduceSum", "Div")
_MATMULS = ("MatMul", "FusedMatMul", "Gemm", "MatMulNBits")


def _is_nxn(shapes: Sequence[Sequence[int]] | None, n: int) -> bool:
    return any(len(s) >= 2 and s[-1] == n and s[-2] == n for s in shapes or [])


#: an op-level figure is "consistent" when its 95 % interval spans at most ±OP_SPREAD of its median
OP_SPREAD = 0.10


def _classify(nd: dict[str, Any], norm_set: set[str], tokens: int) -> str:
    if nd["op"] in norm_set:
        return "norm"
    if nd["op"] in _MATMULS and (
        _is_nxn(nd.get("in_shapes"), tokens) or _is_nxn(nd.get("out_shapes"), tokens)
    ):
        return "nxn"
    return "other"


def _spread(values: Sequence[float]) -> dict[str, Any] | None:
    """Median of per-run values with its order-statistic interval and a verdict."""
    from edgeattn.runtime.intervals import median, median_ci

    if len(values) < 2:
        return None
    lo, hi, conf = median_ci(values)
    med = median(values)
    width = (hi - lo) / 2 / med if med > 0 else float("inf")
    return {
        "median": round(med, 6),
        "ci_low": round(lo, 6),
        "ci_high": round(hi, 6),
        "confidence": round(conf, 4),
        "runs": len(values),
        "verdict": "consistent" if width <= OP_SPREAD else "noisy",
    }


def op_breakdown(
    profile: dict[str, Any], normaliser: str, tokens: int, norm_ops: Sequence[str] | None = None
) -> dict[str, Any]:
    """Normalisation ops / N×N MatMuls / other from a profile summary with per-node shapes.

    Softmax's ops: Softmax, or its decomposition (Exp, ReduceMax, Sub and the ReduceSum/Div that
    follow an Exp); l1's: Abs, ReduceSum, ReduceL1, Clip/Max (the eps) and Div. The N×N MatMuls are
    the MatMul-like nodes with an N×N input or output (QKᵀ and A·V).

    With per-run node times (``runs_ms``, recorded since the op table got its interval), the
    normalisation time and share also come per profiled run: ``norm_ms_runs`` / ``norm_share_runs``
    hold the median, its 95 % interval and a verdict (``consistent`` within ±10 %, else ``noisy``).
    """
    nodes = profile.get("nodes") or []
    total = float(profile.get("total_node_ms") or 0.0)
    norm_set = set(norm_ops if norm_ops is not None else NORM_OPS.get(normaliser, ()))
    if normaliser == "exp" and any(nd["op"] == "Exp" for nd in nodes):
        norm_set |= set(_EXP_DECOMPOSED_TAIL)
    norm_ms = mm_ms = 0.0
    norm_ops: dict[str, float] = {}
    mm_count = 0
    n_runs = max((len(nd.get("runs_ms") or []) for nd in nodes), default=0)
    per_run = {k: [0.0] * n_runs for k in ("norm", "nxn", "other")}
    if n_runs:  # per-run times: each node's median run, so the lines agree with the table
        total = 0.0
    for nd in nodes:
        runs = nd.get("runs_ms") or []
        ms = statistics.median(float(v) for v in runs) if runs else float(nd.get("ms") or 0.0)
        if n_runs:
            total += ms
        kind = _classify(nd, norm_set, tokens)
        for i, v in enumerate(nd.get("runs_ms") or []):
            per_run[kind][i] += float(v)
        if kind == "norm":
            norm_ms += ms
            norm_ops[nd["op"]] = norm_ops.get(nd["op"], 0.0) + ms
        elif kind == "nxn":
            mm_ms += ms
            mm_count += 1
    totals = [sum(per_run[k][i] for k in per_run) for i in range(n_runs)]
    shares = [per_run["norm"][i] / t for i, t in enumerate(totals) if t > 0]
    return {
        "norm_ms": round(norm_ms, 6),
        "norm_ops": {k: round(v, 6) for k, v in sorted(norm_ops.items(), key=lambda kv: -kv[1])},
        "norm_share": round(norm_ms / total, 6) if total else None,
        "nxn_matmul_ms": round(mm_ms, 6),
        "nxn_matmuls": mm_count,
        "nxn_matmul_share": round(mm_ms / total, 6) if total else None,
        "other_ms": round(total - norm_ms - mm_ms, 6),
        "node_ms": round(total, 6),
        "profiled_runs": profile.get("runs"),
        "norm_ms_runs": _spread(per_run["norm"]),
        "norm_share_runs": _spread(shares),
    }


def op_breakdowns(rec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{member key: op_breakdown} for the profiled members of a paired record, keyed as the pair
    keys are (``method``, ``method@precision``: a bench of several precisions profiles each file,
    and one method's rows must not overwrite each other)."""
    p = rec.get("paired") or {}
    keys = member_keys(rec)
    out = {}
    for m in p.get("members", []):
        prof = (p.get("profiles") or {}).get(m["id"])
        if not prof:
            continue
        meta = m.get("meta") or {}
        spec = _methods.get(meta.get("method"))
        out[keys[m["id"]]] = op_breakdown(
            prof,
            meta.get("normaliser", ""),
            int(meta.get("tokens") or 0),
            spec.ops() if spec is not None else None,
        )
    return out


def op_table(rec: dict[str, Any], title: str = "") -> Any:
    """The op-level table: per profiled method, the normalisation ops' time and share of node time
    (median of the profiled runs [95 % interval]) with a verdict, next to the N×N MatMuls and the
    whole node time; which ops were counted is :func:`op_lines`."""
    from rich import box
    from rich.table import Table

    rows = op_breakdowns(rec)
    runs = sorted({b.get("profiled_runs") or 0 for b in rows.values()})
    t = Table(
        title=title
        or f"{_op_title(rows)}, isolated from the matmuls (ORT profiler, ms per run: median of "
        f"{'/'.join(map(str, runs))} profiled runs [95 % interval])",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for c in ("method", "norm ms", "norm share", "N×N ms", "node ms", "verdict"):
        t.add_column(c, no_wrap=True, justify="left" if c in ("method", "verdict") else "right")
    for meth, b in rows.items():
        nm, sh = b.get("norm_ms_runs"), b.get("norm_share_runs")
        norm = _ms(b["norm_ms"]) if nm is None else _fmt_iv(nm, "ms")
        share = _pct(b["norm_share"]) if sh is None else _fmt_iv(sh, "{:.0%}")
        t.add_row(meth, norm, share, _ms(b["nxn_matmul_ms"]), _ms(b["node_ms"]), op_verdict(b))
    return t


def _op_title(rows: dict[str, dict[str, Any]]) -> str:
    """'exp vs l1' for the profiled pair; 'normalisation ops' for any other set."""
    return "exp vs l1" if set(rows) == set(_methods.profiled()) else "normalisation ops"


def op_lines(rec: dict[str, Any]) -> list[str]:
    """'normalisation ops of softmax: Softmax 27.4 ms; N×N MatMuls: 2' per profiled method."""
    out = []
    for meth, b in op_breakdowns(rec).items():
        ops = ", ".join(f"{k} {_ms(v)}" for k, v in b["norm_ops"].items()) or "none"
        out.append(
            f"{meth}: normalisation ops {ops} ms; {b['nxn_matmuls']} N×N MatMuls; "
            f"other {_ms(b['other_ms'])} ms"
        )
    return out


def _fmt_iv(d: dict[str, Any], fmt: str) -> str:
    f = fmt.format if fmt != "ms" else _ms
    return f"{f(d['median'])} [{f(d['ci_low'])}–{f(d['ci_high'])}]"


def _ms(v: float) -> str:
    """Three significant figures: an op of 0.0123 ms stays readable."""
    return f"{v:.3g}" if v < 10 else f"{v:.1f}"


def op_verdict(b: dict[str, Any]) -> str:
    """'consistent' (the normalisation time's interval within ±10 %), 'noisy ±X %', or 'no
    interval' for records made before per-run profile times."""
    nm = b.get("norm_ms_runs")
    if nm is None:
        return "no interval"
    if nm["verdict"] == "consistent":
        return "consistent"
    if not nm["median"]:
        return "no such ops"  # none of its normalisation ops ran (fused away)
    half = (nm["ci_high"] - nm["ci_low"]) / 2 / nm["median"]
    return f"noisy ±{half:.0%}"


def op_note(rec: dict[str, Any]) -> str | None:
    """One line under the op table when a verdict needs explaining."""
    rows = op_breakdowns(rec)
    noisy = [m for m, b in rows.items() if op_verdict(b).startswith("noisy")]
    if not noisy:
        return None
    share_ok = all(
        (rows[m].get("norm_share_runs") or {}).get("verdict") == "consistent" for m in noisy
    )
    why = (
        "the share of node time held (each run's share is its own ratio): read the share"
        if share_ok
        else "so did the share: the machine was busy while profiling; rerun before quoting it"
    )
    return (
        f"op table: {', '.join(noisy)}: the normalisation time varied more than ±"
        f"{OP_SPREAD:.0%} across profiled runs; {why}"
    )


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0%}"


def ns_per_element(rec: dict[str, Any]) -> dict[str, float]:
    """For the pure-op pair: median paired ms per method as ns per element of its (B,h,N,N) input."""
    p = rec.get("paired") or {}
    out = {}
    for m in p.get("members", []):
        meta = m.get("meta") or {}
        spec = _methods.get(meta.get("method"))
        if spec is None or spec.kind != "op":
            continue
        elems = 1
        for d in (m.get("inputs") or {}).get("x", {}).get("shape") or []:
            elems *= int(d)
        ms = (p.get("latency_ms") or {}).get(m["id"], {}).get("median")
        if ms and elems:
            out[meta["method"]] = round(ms * 1e6 / elems, 4)
    return out
