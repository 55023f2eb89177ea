"""`edgeattn profile`: per-block latency of a whole net or an .onnx file, from ORT's profile.

Headline latency comes from the unprofiled pass; block shares from the profiled pass (profiling
adds overhead per node). Tables: stages (``block1``, ``blocks`` ...), blocks (``block1.0``,
``blocks.3``, ``cls_attn_blocks.0``) with attention / MLP / norm / LPI split, and operators.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from edgeattn.bench.core import Settings, default_cache_dir
from edgeattn.errors import BenchError

_INDEX = re.compile(r"\.\d+$")


def prepare_profile_run(
    target: str, img_size: int | None, settings: Settings, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A runtime spec for one profiled measurement of ``target`` (model name or .onnx path)."""
    p = Path(target)
    if target.endswith(".onnx") or p.is_file():
        if not p.is_file():
            raise BenchError(f"no such ONNX file: {target}")
        sidecar = p.with_name(p.name + ".json")
        sc = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
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


def _table(title: str, rows: list[dict[str, Any]], count_col: str | None = None) -> Any:
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    t.add_column("name")
    if count_col:
        t.add_column(count_col, justify="right")
    for c in ("ms", "share", "attention", "mlp", "norm", "lpi", "other"):
        t.add_column(c, justify="right")
    t.add_column("top ops")
    tot_ms = tot_share = 0.0
    for r in rows:
        comps = r.get("components") or {}
        other = sum(v for k, v in comps.items() if k not in ("attention", "mlp", "norm", "lpi"))
        ops = r.get("ops") or {}
        top = ", ".join(f"{k} {v:.2f}" for k, v in list(ops.items())[:3])
        cells = [str(r["name"])]
        if count_col:
            cells.append(str(r.get("blocks", r.get("nodes", ""))))
        cells += [
            f"{r['ms']:.3f}",
            f"{r['share']:.1%}",
            *(f"{comps.get(k, 0.0):.3f}" for k in ("attention", "mlp", "norm", "lpi")),
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
        "",
        "",
        "",
        "",
        "",
        "",
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
    if depth in ("stage", "all"):
        out.append(
            _table(
                f"{name}: stages (profiled node time per run)", stage_rows(d1), count_col="blocks"
            )
        )
    if depth in ("block", "all"):
        out.append(_table(f"{name}: blocks", d1))
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
    return lines
