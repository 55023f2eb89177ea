"""`edgeattn profile`: per-block latency of a whole net or an .onnx file, from ORT's profile.

Headline latency comes from the unprofiled pass; block shares from the profiled pass (profiling
adds overhead per node). Tables: stages (``block1``, ``blocks`` ...), blocks (``block1.0``,
``blocks.3``, ``cls_attn_blocks.0``) with attention / MLP / norm / LPI / patch-embed / head split, and operators. Each
block table ends with the reconciliation (:func:`reconciliation`): node time in blocks vs in
``(top)``, profiler overhead, the unprofiled headline; a ``(top)`` above :data:`TOP_WARN` of node
time is warned about with the largest unmapped nodes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edgeattn.bench.core import Settings, default_cache_dir
from edgeattn.errors import BenchError

_INDEX = re.compile(r"\.\d+$")
TOP = "(top)"
_COMPS = ("attention", "mlp", "norm", "lpi", "embed", "head")  # columns; the rest is "other"
TOP_WARN = 0.02  # share of node time in (top) above which the attribution is warned about


def prepare_profile_run(
    target: str, img_size: int | None, settings: Settings, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A runtime spec for one profiled measurement of ``target`` (model name or .onnx path)."""
    p = Path(target)
    if target.endswith(".onnx") or p.is_file():
        if not p.is_file():
            raise BenchError(f"no such ONNX file: {target}")
        from edgeattn.export.sidecar import read_sidecar

        sc = read_sidecar(p) or {}
        name = (sc.get("spec") or {}).get("model") or p.stem
        return {
            "id": f"profile/{name}",
            "model": str(p.resolve()),
            "meta": {"name": name, "method": "profile", "source": "onnx"},
            **_inputs_from_spec(sc.get("spec") or {}),
            **settings.runtime_fields(),
        }
    from edgeattn.export import export_onnx

    res = export_onnx(
        target,
        opset=settings.opset,
        img_size=img_size,
        overrides=overrides or None,
        cache_dir=default_cache_dir(),
    )
    return {
        "id": f"profile/{target}/{img_size or 'default'}",
        "model": str(res.path),
        "meta": {
            "name": target,
            "method": "profile",
            "img_size": img_size,
            "overrides": overrides or {},
        },
        **_inputs_from_spec(res.spec),
        **settings.runtime_fields(),
    }


def _inputs_from_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Static input shapes of an export spec (``spec['inputs']``: [{name, shape, ...}])."""
    shapes = {
        i["name"]: i["shape"]
        for i in spec.get("inputs") or []
        if i.get("shape") and all(isinstance(d, int) for d in i["shape"])
    }
    return {"inputs": shapes} if shapes else {}


def stage_rows(block_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sum depth-1 rows into stages by dropping a trailing ``.N`` index (``block1.0`` → ``block1``)."""
    stages: dict[str, dict[str, Any]] = {}
    for r in block_rows:
        name = _INDEX.sub("", r["name"])
        s = stages.setdefault(
            name, {"name": name, "ms": 0.0, "share": 0.0, "blocks": 0, "components": {}, "ops": {}}
        )
        for k, v in (r.get("ops") or {}).items():
            s["ops"][k] = s["ops"].get(k, 0.0) + v
        s["ms"] += r["ms"]
        s["share"] += r["share"]
        s["blocks"] += 1
        for k, v in (r.get("components") or {}).items():
            s["components"][k] = s["components"].get(k, 0.0) + v
    for s in stages.values():
        s["ops"] = dict(sorted(s["ops"].items(), key=lambda kv: -kv[1]))
    return list(stages.values())


def reconciliation(rec: dict[str, Any]) -> dict[str, Any]:
    """Where the profiled node time went and how the profiled pass relates to the headline.

    {node_ms, blocks_ms, blocks_share, top_ms, top_share, profiled_wall_ms, headline_ms,
    overhead (profiled wall / unprofiled median), opt_level, method, fused_nodes, spanning_nodes,
    split_nodes, names_only_top_share, unmapped: [{name, op, ms}], warn (top share > TOP_WARN)}.
    """
    prof = rec.get("profile") or {}
    att = prof.get("attribution") or {}
    d1 = (prof.get("blocks") or {}).get("1") or []
    node_ms = prof.get("total_node_ms") or sum(r["ms"] for r in d1)
    top_ms = sum(r["ms"] for r in d1 if r["name"] == TOP)
    blocks_ms = sum(r["ms"] for r in d1 if r["name"] != TOP)
    wall = prof.get("wall_ms")
    med = (rec.get("latency_ms") or {}).get("median")
    top_share = top_ms / node_ms if node_ms else None
    return {
        "node_ms": node_ms,
        "blocks_ms": blocks_ms,
        "blocks_share": blocks_ms / node_ms if node_ms else None,
        "top_ms": top_ms,
        "top_share": top_share,
        "profiled_wall_ms": wall,
        "headline_ms": med,
        "overhead": wall / med if wall and med else None,
        "opt_level": prof.get("opt_level") or (rec.get("session") or {}).get("opt_level"),
        "method": att.get("method", "names"),
        "fused_nodes": att.get("fused_nodes"),
        "spanning_nodes": att.get("spanning_nodes"),
        "split_nodes": att.get("split_nodes"),
        "names_only_top_share": att.get("names_only_top_share"),
        "unmapped": att["unmapped"]
        if "unmapped" in att
        else [
            {"name": r["name"], "op": r["op"], "ms": r["ms"]}
            for r in (prof.get("top_nodes") or [])
            if r.get("component") == "other" and "/" not in r["name"].strip("/")
        ][:5],
        "graph_error": att.get("graph_error"),
        "warn": top_share is not None and top_share > TOP_WARN,
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _caption(rc: dict[str, Any]) -> str:
    parts = [
        f"node time {rc['node_ms']:.3f} ms/run: {_pct(rc['blocks_share'])} in blocks, "
        f"{_pct(rc['top_share'])} in {TOP}"
    ]
    if rc["profiled_wall_ms"] is not None:
        over = f" = {rc['overhead']:.2f}× unprofiled" if rc["overhead"] else ""
        parts.append(f"profiled wall {rc['profiled_wall_ms']:.3f} ms{over}")
    if rc["headline_ms"] is not None:
        parts.append(f"headline (unprofiled median) {rc['headline_ms']:.3f} ms")
    how = f"opt level {rc['opt_level'] or '?'}, attribution by {rc['method']}"
    if rc["method"] == "graph":
        how += f" ({rc['fused_nodes']} fused nodes, {rc['split_nodes']} split across blocks)"
    parts.append(how)
    return "; ".join(parts)


def _table(
    title: str,
    rows: list[dict[str, Any]],
    count_col: str | None = None,
    rc: dict[str, Any] | None = None,
) -> Any:
    from rich.table import Table

    t = Table(
        title=title,
        title_justify="left",
        caption=_caption(rc) if rc else None,
        caption_justify="left",
    )
    t.add_column("name")
    if count_col:
        t.add_column(count_col, justify="right")
    for c in ("ms", "share", *_COMPS, "other"):
        t.add_column(c, justify="right")
    t.add_column("top ops")
    tot_ms = tot_share = 0.0
    for r in rows:
        comps = r.get("components") or {}
        other = sum(v for k, v in comps.items() if k not in _COMPS)
        ops = r.get("ops") or {}
        top = ", ".join(f"{k} {v:.2f}" for k, v in list(ops.items())[:2])
        cells = [str(r["name"])]
        if count_col:
            cells.append(str(r.get("blocks", r.get("nodes", ""))))
        cells += [
            f"{r['ms']:.3f}",
            f"{r['share']:.1%}",
            *(f"{comps.get(k, 0.0):.3f}" for k in _COMPS),
            f"{other:.3f}",
            top,
        ]
        t.add_row(*cells)
        tot_ms += r["ms"]
        tot_share += r["share"]
    t.add_section()
    t.add_row(
        "sum",
        *([""] if count_col else []),
        f"{tot_ms:.3f}",
        f"{tot_share:.1%}",
        *[""] * (len(_COMPS) + 2),
    )
    if rc:
        for label, ms, share in (
            ("in blocks", rc["blocks_ms"], rc["blocks_share"]),
            (TOP, rc["top_ms"], rc["top_share"]),
        ):
            t.add_row(
                label,
                *([""] if count_col else []),
                f"{ms:.3f}",
                _pct(share),
                *[""] * (len(_COMPS) + 2),
            )
    return t


def profile_tables(rec: dict[str, Any], depth: str = "all") -> list[Any]:
    from rich.table import Table

    prof = rec.get("profile") or {}
    blocks = prof.get("blocks") or {}
    if not blocks:
        raise BenchError("the record has no profile (was the run profiled?)")
    valid = ("stage", "block", "sub", "all")
    if depth not in valid:
        raise BenchError(f"--depth {depth!r}; valid: {', '.join(valid)}")
    name = (rec.get("meta") or {}).get("name", "")
    out = []
    d1 = blocks.get("1") or []
    rc = reconciliation(rec)
    if depth in ("stage", "all"):
        out.append(
            _table(
                f"{name}: stages (profiled node time per run)",
                stage_rows(d1),
                count_col="blocks",
                rc=rc if depth == "stage" else None,
            )
        )
    if depth in ("block", "all"):
        out.append(_table(f"{name}: blocks", d1, rc=rc))
    if depth in ("sub", "all") and blocks.get("2"):
        out.append(_table(f"{name}: sub-blocks (depth 2)", blocks["2"]))
    t = Table(title=f"{name}: operators", title_justify="left")
    t.add_column("op")
    t.add_column("ms", justify="right")
    t.add_column("share", justify="right")
    by_op = prof.get("by_op") or {}
    tot = sum(by_op.values()) or 1.0
    for op, ms in list(by_op.items())[:12]:
        t.add_row(op, f"{ms:.3f}", f"{ms / tot:.1%}")
    out.append(t)
    return out


def profile_summary_lines(rec: dict[str, Any]) -> list[str]:
    prof = rec.get("profile") or {}
    lat = rec.get("latency_ms") or {}
    lines = []
    med = lat.get("median")
    if med is not None:
        lines.append(
            f"unprofiled median: {med:.3f} ms over {lat.get('runs')} runs (cv {lat.get('cv', 0):.1%})"
        )
    tn, wall, cov = prof.get("total_node_ms"), prof.get("wall_ms"), prof.get("coverage")
    if tn is not None and wall:
        lines.append(
            f"profiled: sum of node times {tn:.3f} ms vs profiled wall {wall:.3f} ms per run "
            f"(coverage {cov:.1%}; the rest is ORT scheduling and copies)"
        )
    if med and wall:
        lines.append(f"profiling overhead: profiled wall / unprofiled median = {wall / med:.2f}×")
    if prof.get("blocks"):
        lines += top_warning_lines(reconciliation(rec))
    return lines


def top_warning_lines(rc: dict[str, Any]) -> list[str]:
    """The warning for a ``(top)`` above TOP_WARN of node time, naming the largest unmapped nodes."""
    out = []
    if rc.get("graph_error"):
        out.append(f"[yellow]warning:[/] fused nodes attributed by name only: {rc['graph_error']}")
    if not rc["warn"]:
        return out
    worst = ", ".join(f"{u['name']} ({u['op']}) {u['ms']:.3f} ms" for u in rc["unmapped"][:5])
    out.append(
        f"[yellow]warning:[/] {_pct(rc['top_share'])} of node time is in {TOP} (> {TOP_WARN:.0%}), "
        f"not attributed to any block; largest: {worst or 'n/a'}"
    )
    return out
