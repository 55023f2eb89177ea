"""The headline ratios, from paired records: which pairs, how they are built, and how they read.

A bench or a sweep point measures its methods once more in a *paired group* (``kind: "paired"``
records, see ``edgeattn.runtime.paired``): all methods in one device-side process, in rounds with
the order shuffled per round, so the machine's drift cancels in each per-round ratio. The ratios
printed to a user come from there, as the median of per-round ratios with its 95 % interval, and
say so in words when the interval holds 1.0. Pure functions over record dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from edgeattn.runtime.intervals import verdict_text


@dataclass(frozen=True)
class Ratio:
    name: str
    num: str  # method key
    den: str
    label: str  # how the line reads: "<label> = 1.12× [...]"


RATIOS: tuple[Ratio, ...] = (
    Ratio(
        "exp_vs_l1_fixed_order",
        "softmax",
        "sima_qk",
        "exp vs l1 at fixed (QKᵀ)V order: softmax / SimA",
    ),
    Ratio("dynamic_order_speedup", "sima_qk", "sima", "dynamic ordering: SimA (QKᵀ)V / SimA auto"),
    Ratio(
        "fused_softmax_vs_sima_dynamic", "softmax_fused", "sima", "ORT fused softmax / SimA auto"
    ),
    Ratio(
        "softmax_vs_fused_softmax", "softmax", "softmax_fused", "softmax MSA / ORT fused softmax"
    ),
    Ratio("softmax_vs_soft", "softmax", "soft", "softmax / SOFT"),
    Ratio("xca_vs_sima_dynamic", "xca", "sima", "XCA / SimA auto"),
    Ratio("xca_vs_sima_kv", "xca", "sima_kv", "XCA / SimA Q(KᵀV)"),
    Ratio("qk_vs_kv_order", "sima_qk", "sima_kv", "SimA (QKᵀ)V / SimA Q(KᵀV)"),
    Ratio(
        "op_softmax_vs_l1", "op_softmax", "op_l1", "pure op over (B,h,N,N): Softmax / l1-normalise"
    ),
    # each block against its matmuls alone (edgeattn.bench.floor)
    Ratio("softmax_vs_floor", "softmax", "floor_qk", "softmax MSA / its matmul floor"),
    Ratio("sima_qk_vs_floor", "sima_qk", "floor_qk", "SimA (QKᵀ)V / its matmul floor"),
    Ratio("sima_kv_vs_floor", "sima_kv", "floor_kv", "SimA Q(KᵀV) / its matmul floor"),
    Ratio("xca_vs_floor", "xca", "floor_kv", "XCA / the Q(KᵀV) matmul floor"),
    Ratio("soft_vs_floor", "soft", "floor_soft", "SOFT / its matmul floor"),
)
RATIO_BY_NAME = {r.name: r for r in RATIOS}
#: the pair whose op-level breakdown answers "what does exp cost against l1" (profiled by default)
PROFILED_PAIR = ("softmax", "sima_qk")
NO_DIFFERENCE = "no measurable difference here"


def ratios_for(methods: Iterable[str]) -> list[Ratio]:
    have = set(methods)
    return [r for r in RATIOS if r.num in have and r.den in have]


def group_spec(
    group_id: str,
    members: Sequence[tuple[str, str]],
    settings: Any,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The runtime's paired-group spec for ``members`` = [(method key, run id)]."""
    ids = {m: rid for m, rid in members}
    ratios = [{"name": r.name, "num": ids[r.num], "den": ids[r.den]} for r in ratios_for(ids)]
    profile = [ids[m] for m in PROFILED_PAIR if m in ids] if settings.pair_profile else []
    return {
        "id": group_id,
        "runs": [rid for _, rid in members],
        "ratios": ratios,
        "min_rounds": settings.pair_min_rounds,
        "max_rounds": settings.pair_max_rounds,
        "min_time_s": settings.pair_min_time_s,
        "max_time_s": settings.pair_max_time_s,
        "tries": settings.tries,
        "tolerance": settings.tolerance,
        "seed": settings.seed,
        "profile": profile if len(profile) == len(PROFILED_PAIR) else [],
        "profile_runs": settings.profile_runs,
        "meta": dict(meta or {}),
    }


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


def taken_order(rec: dict[str, Any]) -> str | None:
    for m in (rec.get("paired") or {}).get("members", []):
        meta = m.get("meta") or {}
        if meta.get("method") == "sima":
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
            r["stability_text"].upper() if r.get("stability") == "unstable" else r["stability_text"]
        )
    line = f"{label} = {fmt_ratio(r)} ({', '.join(bits)})"
    if name == "dynamic_order_speedup" and order_taken:
        taken = {"qk_first": "(QKᵀ)V", "kv_first": "Q(KᵀV)"}.get(order_taken, order_taken)
        line += f"; auto took {taken}"
    if r.get("no_difference"):
        line += f": {NO_DIFFERENCE}"
    elif spec is not None:
        faster = spec.den if r["median"] > 1 else spec.num
        line += f": {faster} faster"
    return line


# ------------------------------------------------------------------------ op-level breakdown

#: the ops that do the normalisation, per normaliser (decomposed forms included)
NORM_OPS = {
    "exp": ("Softmax", "Exp", "ReduceMax", "Sub"),
    "l1": ("Abs", "ReduceSum", "ReduceL1", "Clip", "Max", "Div"),
}
_EXP_DECOMPOSED_TAIL = ("ReduceSum", "Div")
_MATMULS = ("MatMul", "FusedMatMul", "Gemm", "MatMulNBits")


def _is_nxn(shapes: Sequence[Sequence[int]] | None, n: int) -> bool:
    return any(len(s) >= 2 and s[-1] == n and s[-2] == n for s in shapes or [])


def op_breakdown(profile: dict[str, Any], normaliser: str, tokens: int) -> dict[str, Any]:
    """Normalisation ops / N×N MatMuls / other from a profile summary with per-node shapes.

    Softmax's ops: Softmax, or its decomposition (Exp, ReduceMax, Sub and the ReduceSum/Div that
    follow an Exp); l1's: Abs, ReduceSum, ReduceL1, Clip/Max (the eps) and Div. The N×N MatMuls are
    the MatMul-like nodes with an N×N input or output (QKᵀ and A·V).
    """
    nodes = profile.get("nodes") or []
    total = float(profile.get("total_node_ms") or 0.0)
    norm_set = set(NORM_OPS.get(normaliser, ()))
    if normaliser == "exp" and any(nd["op"] == "Exp" for nd in nodes):
        norm_set |= set(_EXP_DECOMPOSED_TAIL)
    norm_ms = mm_ms = 0.0
    norm_ops: dict[str, float] = {}
    mm_count = 0
    for nd in nodes:
        ms = float(nd.get("ms") or 0.0)
        if nd["op"] in norm_set:
            norm_ms += ms
            norm_ops[nd["op"]] = norm_ops.get(nd["op"], 0.0) + ms
        elif nd["op"] in _MATMULS and (
            _is_nxn(nd.get("in_shapes"), tokens) or _is_nxn(nd.get("out_shapes"), tokens)
        ):
            mm_ms += ms
            mm_count += 1
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
    }


def op_breakdowns(rec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{method: op_breakdown} for the profiled members of a paired record."""
    p = rec.get("paired") or {}
    out = {}
    for m in p.get("members", []):
        prof = (p.get("profiles") or {}).get(m["id"])
        if not prof:
            continue
        meta = m.get("meta") or {}
        out[meta.get("method", m["id"])] = op_breakdown(
            prof, meta.get("normaliser", ""), int(meta.get("tokens") or 0)
        )
    return out


def op_table(rec: dict[str, Any], title: str = "") -> Any:
    from rich.table import Table

    rows = op_breakdowns(rec)
    t = Table(
        title=title or "exp vs l1, isolated from the matmuls (ORT profiler, node time per run)",
        title_justify="left",
    )
    for c, kw in (
        ("method", {"no_wrap": True}),
        ("normalisation ops", {}),
        ("norm ms", {"justify": "right"}),
        ("share", {"justify": "right"}),
        ("N×N MatMuls ms", {"justify": "right"}),
        ("share", {"justify": "right"}),
        ("other ms", {"justify": "right"}),
        ("node ms", {"justify": "right"}),
    ):
        t.add_column(c, **kw)
    for meth, b in rows.items():
        ops = ", ".join(f"{k} {v:.2f}" for k, v in b["norm_ops"].items()) or "-"
        t.add_row(
            meth,
            ops,
            f"{b['norm_ms']:.2f}",
            _pct(b["norm_share"]),
            f"{b['nxn_matmul_ms']:.2f} ({b['nxn_matmuls']})",
            _pct(b["nxn_matmul_share"]),
            f"{b['other_ms']:.2f}",
            f"{b['node_ms']:.2f}",
        )
    return t


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0%}"


def ns_per_element(rec: dict[str, Any]) -> dict[str, float]:
    """For the pure-op pair: median paired ms per method as ns per element of its (B,h,N,N) input."""
    p = rec.get("paired") or {}
    out = {}
    for m in p.get("members", []):
        meta = m.get("meta") or {}
        if not str(meta.get("method", "")).startswith("op_"):
            continue
        elems = 1
        for d in (m.get("inputs") or {}).get("x", {}).get("shape") or []:
            elems *= int(d)
        ms = (p.get("latency_ms") or {}).get(m["id"], {}).get("median")
        if ms and elems:
            out[meta["method"]] = round(ms * 1e6 / elems, 4)
    return out
