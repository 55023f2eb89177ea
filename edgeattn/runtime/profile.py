"""Per-block times from ONNX Runtime's profile (chrome-trace JSON).

ORT writes one event per kernel call: ``cat == "Node"``, ``name == "<node name>_kernel_time"``,
``args = {op_name, provider, ...}``, ``dur`` in microseconds, and one ``cat == "Session"`` event named
``model_run`` per ``session.run``. Node names carry the PyTorch module path the exporter wrote
(``/blocks.3/attn/MatMul_2``, ``/attn/Softmax``; ``Add_3`` for top-level ops), so node time adds up
into a tree by path prefix.

Once ONNX Runtime fuses nodes (``SkipLayerNormalization_token_46``, ``GPT2Gelu``, ``ReorderInput``)
the executed names lose that path. Given ``origins`` (executed node -> the original nodes it
replaced, from :func:`edgeattn.runtime.graph.origins`, which maps them by tensor names), each
executed node is attributed through its original nodes' module paths instead:

* its **component** (attention / mlp / norm / lpi / embed / head / other) is the most frequent
  component among its original nodes other than ``other`` (first seen wins a tie): the residual
  ``Add`` fused into a SkipLayerNormalization does not make it ``other``, it is ``norm``;
* its **time is split** across module paths in proportion to the number of its original nodes of
  that component in each path (nodes of other components and unscoped nodes weigh 0; if none are
  left, every scoped node weighs 1). So a SkipLayerNormalization made of ``block1.0``'s residual Add
  and ``block1.1``'s norm1 is ``block1.1`` norm time; one covering norms of two blocks is halved.
  Executed nodes whose original nodes lie in more than one top-level path are counted
  (``spanning_nodes``), and those whose time is split across top-level paths (``split_nodes``).

Nodes absent from ``origins`` fall back to their own names (counted as ``fallback_nodes``).

Standard library only; the output is plain JSON-serialisable data.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

KERNEL_SUFFIX = "_kernel_time"
TOP = "(top)"
COMPONENTS = ("attention", "mlp", "norm", "lpi", "embed", "head", "other")
DEFAULT_DEPTHS = (1, 2, 3)

MAX_NODES_LISTED = 300
_ROUND = 6  # ms decimals kept in the summary (sub-microsecond)


def load_events(path: str) -> List[Dict[str, Any]]:
    """Read an ORT profile file. Tolerates the unterminated array of an interrupted profile."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except ValueError:
        data = json.loads(text.rstrip().rstrip(",") + "]")
    if isinstance(data, dict):  # chrome-trace object form
        data = data.get("traceEvents", [])
    return [e for e in data if isinstance(e, dict)]


def run_windows(events: Sequence[Dict[str, Any]]) -> List[Dict[str, float]]:
    """The ``model_run`` events as [{ts, end, dur}] in time order."""
    runs = [
        {"ts": float(e["ts"]), "end": float(e["ts"]) + float(e["dur"]), "dur": float(e["dur"])}
        for e in events
        if e.get("cat") == "Session" and e.get("name") == "model_run" and "dur" in e
    ]
    runs.sort(key=lambda r: r["ts"])
    return runs


def node_events(events: Sequence[Dict[str, Any]], skip_runs: int = 0) -> List[Dict[str, Any]]:
    """Kernel events as [{node, op, provider, dur_us, ts, run}].

    ``run`` is the index of the ``model_run`` that contains the event (None if the profile has no
    run events); events of the first ``skip_runs`` runs (warm-up) are dropped.
    """
    windows = run_windows(events)
    out: List[Dict[str, Any]] = []
    for e in events:
        if e.get("cat") != "Node":
            continue
        name = e.get("name", "")
        if not name.endswith(KERNEL_SUFFIX) or "dur" not in e:
            continue
        ts = float(e.get("ts", 0.0))
        run = _run_index(windows, ts)
        if windows and (run is None or run < skip_runs):
            continue
        args = e.get("args") or {}
        out.append(
            {
                "node": name[: -len(KERNEL_SUFFIX)],
                "op": args.get("op_name") or "?",
                "provider": args.get("provider"),
                "dur_us": float(e["dur"]),
                "ts": ts,
                "run": run,
                "in_shapes": _shapes(args.get("input_type_shape")),
                "out_shapes": _shapes(args.get("output_type_shape")),
            }
        )
    out.sort(key=lambda ev: ev["ts"])
    return out


def node_providers_from_events(node_events: List[Dict[str, Any]]) -> Dict[str, int]:
    """{provider: distinct node count} from parsed kernel events (:func:`node_events` rows)."""
    seen: Dict[str, set] = {}
    for ev in node_events:
        prov = ev.get("provider") or "unknown"
        seen.setdefault(prov, set()).add(ev["node"])
    return {prov: len(nodes) for prov, nodes in seen.items()}


def _shapes(raw: Any) -> Optional[List[List[int]]]:
    """ORT's ``[{"float": [1, 64, 32]}, ...]`` as ``[[1, 64, 32], ...]`` (None when absent)."""
    if not isinstance(raw, list):
        return None
    out: List[List[int]] = []
    for item in raw:
        if isinstance(item, dict) and item:
            dims = list(item.values())[0]
            if isinstance(dims, list):
                out.append([int(d) for d in dims if isinstance(d, (int, float))])
    return out


def _run_index(windows: Sequence[Dict[str, float]], ts: float) -> Optional[int]:
    for i, w in enumerate(windows):
        if w["ts"] <= ts <= w["end"]:
            return i
    return None


def scope(node_name: str) -> List[str]:
    """Module path of a node: ``/blocks.3/attn/MatMul_2`` -> ``['blocks.3', 'attn']``.

    Segments from the first ORT fusion marker on (``.../Mul/LayerNormFusion/``) are dropped, so a
    fused node keeps the scope of the node it replaced. Unscoped names give ``[]``.
    """
    segs = [s for s in node_name.split("/") if s]
    for i, s in enumerate(segs):
        if "Fusion" in s:
            segs = segs[:i]
            break
    return segs[:-1]


def group_name(node_name: str, depth: int) -> str:
    segs = scope(node_name)
    return "/".join(segs[:depth]) if segs else TOP


_ATTENTION = {"attn", "mha", "xca", "attention", "self_attn", "cross_attn", "sima", "soft"}
# "act": a bare activation inside a block is the MLP's (SOFT's ff1 -> act -> ff2); one inside
# attn / local_mp / patch_embed is claimed by that outer segment first
_MLP = {"mlp", "ff", "ffn", "ff1", "ff2", "fc1", "fc2", "feed_forward", "feedforward", "act"}
_NORM_EXACT = {"ln", "ln1", "ln2", "ln_1", "ln_2", "layer_norm", "layernorm", "bn"}
_LPI = {"local_mp", "lpi"}
_EMBED = {"embed", "embeddings", "cls_token", "dist_token", "stem"}
_HEAD = {"head", "head_dist", "fc_norm_head", "classifier"}


def _segment_component(seg: str) -> Optional[str]:
    for tok in seg.lower().split("."):
        if not tok or tok.isdigit():
            continue
        if tok in _ATTENTION or tok.startswith("attn"):
            return "attention"
        if tok in _MLP or tok.startswith("mlp"):
            return "mlp"
        if tok in _LPI:
            return "lpi"
        if tok.startswith("patch_embed") or tok.startswith("pos_embed") or tok in _EMBED:
            return "embed"
        if tok in _HEAD or tok.startswith("head"):
            return "head"
        if tok.startswith("norm") or tok in _NORM_EXACT:
            return "norm"
    return None


def classify(path: str) -> str:
    """Component of a node or group path: attention / mlp / norm / lpi / embed / head / other.

    The outermost recognised segment wins, so ``blocks.0/attn/q_norm`` is attention and
    ``blocks.0/local_mp/bn`` is lpi.
    """
    for seg in (s for s in path.split("/") if s):
        comp = _segment_component(seg)
        if comp is not None:
            return comp
    return "other"


def _r(x: float) -> float:
    return round(x, _ROUND)


Parts = List[Tuple[Tuple[str, ...], float]]


class Attribution:
    """Executed node name -> (parts, component, by_graph), cached.

    ``parts``: [(module path segments, weight)] with weights summing to 1; ``by_graph``: False when
    the node was attributed by its own name (no ``origins`` entry)."""

    def __init__(self, origins: Optional[Dict[str, List[str]]] = None) -> None:
        self.origins = origins
        self._cache: Dict[str, Tuple[Parts, str, bool]] = {}

    def __call__(self, node: str) -> Tuple[Parts, str, bool]:
        hit = self._cache.get(node)
        if hit is None:
            hit = self._cache[node] = self._resolve(node)
        return hit

    def _resolve(self, node: str) -> Tuple[Parts, str, bool]:
        orig = (self.origins or {}).get(node)
        if not orig:
            segs = scope(node)
            return [(tuple(segs), 1.0)], classify("/".join(segs)), False
        scopes = [tuple(scope(o)) for o in orig]
        comps = [classify("/".join(sc)) for sc in scopes]
        counts: Dict[str, int] = {}
        for c in comps:
            if c != "other":
                counts[c] = counts.get(c, 0) + 1
        comp = max(counts, key=lambda c: counts[c]) if counts else "other"  # first seen wins ties
        weights = [1.0 if c == comp and sc else 0.0 for sc, c in zip(scopes, comps)]  # noqa: B905
        if not any(weights):
            weights = [1.0 if sc else 0.0 for sc in scopes]
        if not any(weights):
            weights = [1.0] * len(scopes)
        total = sum(weights)
        merged: Dict[Tuple[str, ...], float] = {}
        for sc, w in zip(scopes, weights):  # noqa: B905 (3.8)
            if w:
                merged[sc] = merged.get(sc, 0.0) + w / total
        return list(merged.items()), comp, True

    def spans(self, node: str) -> int:
        """How many top-level paths the node's original nodes lie in (1 for a name-attributed one)."""
        orig = (self.origins or {}).get(node)
        if not orig:
            return 1
        return len({_group(scope(o), 1) for o in orig})


def _group(segs: Sequence[str], depth: int) -> str:
    return "/".join(segs[:depth]) if segs else TOP


def aggregate(
    events: Sequence[Dict[str, Any]],
    depth: int,
    runs: int = 1,
    attribution: Optional[Attribution] = None,
) -> List[Dict[str, Any]]:
    """Node time grouped by the first ``depth`` path segments, in execution order.

    ``events`` are :func:`node_events` rows; times are divided by ``runs`` (per-run ms).
    ``attribution`` (default: by node names) says where each executed node's time goes.
    Each group: {name, component, ms, share, nodes, ops: {op: ms}, components: {component: ms}};
    ``nodes`` counts the executed nodes with time in the group (a split node counts in each).
    """
    if depth < 1:
        raise ValueError(f"depth {depth!r} is invalid; expected an integer >= 1")
    attribution = attribution or Attribution()
    runs = max(int(runs), 1)
    groups: Dict[str, Dict[str, Any]] = {}
    total_us = 0.0
    for ev in events:
        parts, comp, _ = attribution(ev["node"])
        dur = ev["dur_us"]
        total_us += dur
        for segs, w in parts:
            name = _group(segs, depth)
            g = groups.get(name)
            if g is None:
                g = groups[name] = {"us": 0.0, "ops": {}, "components": {}, "nodes": set()}
            us = dur * w
            g["us"] += us
            g["ops"][ev["op"]] = g["ops"].get(ev["op"], 0.0) + us
            g["components"][comp] = g["components"].get(comp, 0.0) + us
            g["nodes"].add(ev["node"])
    out = []
    for name, g in groups.items():
        ms = g["us"] / 1e3 / runs
        out.append(
            {
                "name": name,
                "component": classify(name) if name != TOP else "other",
                "ms": _r(ms),
                "share": _r(g["us"] / total_us) if total_us else 0.0,
                "nodes": len(g["nodes"]),
                "ops": _sorted_ms(g["ops"], runs),
                "components": _sorted_ms(g["components"], runs),
            }
        )
    return out


def _sorted_ms(us_by_key: Dict[str, float], runs: int) -> Dict[str, float]:
    items = sorted(us_by_key.items(), key=lambda kv: -kv[1])
    return {k: _r(v / 1e3 / runs) for k, v in items}


def summarize(
    events: Sequence[Dict[str, Any]],
    skip_runs: int = 0,
    depths: Sequence[int] = DEFAULT_DEPTHS,
    top_nodes: int = 20,
    origins: Optional[Dict[str, List[str]]] = None,
    unmapped_listed: int = 5,
) -> Dict[str, Any]:
    """The profile summary stored in a record (JSON-serialisable).

    ``skip_runs``: leading ``model_run``s to ignore (first run + warm-up of the profiled session).
    ``origins``: executed node -> original node names (see the module docstring); without it,
    attribution is by node names only. ``attribution`` in the result says how it went: method,
    executed / fused / fallback / spanning / split node counts, the share of node time in ``(top)`` with this
    attribution and with names only, and the largest ``(top)`` nodes.
    """
    # Long on purpose: one pass over the kernel events fills every table of the summary at once.
    att = Attribution(origins)
    windows = run_windows(events)[skip_runs:]
    rows = node_events(events, skip_runs=skip_runs)
    runs = len(windows) if windows else 1
    total_us = sum(r["dur_us"] for r in rows)
    total_ms = total_us / 1e3 / runs
    wall_ms = (sum(w["dur"] for w in windows) / len(windows) / 1e3) if windows else None

    by_op: Dict[str, float] = {}
    by_comp: Dict[str, float] = {}
    by_prov_us: Dict[str, float] = {}
    by_node: Dict[str, Dict[str, Any]] = {}
    for r in rows:
        by_op[r["op"]] = by_op.get(r["op"], 0.0) + r["dur_us"]
        comp = att(r["node"])[1]
        by_comp[comp] = by_comp.get(comp, 0.0) + r["dur_us"]
        prov = r["provider"] or "unknown"
        by_prov_us[prov] = by_prov_us.get(prov, 0.0) + r["dur_us"]
        n = by_node.setdefault(
            r["node"],
            {
                "op": r["op"],
                "provider": prov,
                "us": 0.0,
                "in": r.get("in_shapes"),
                "out": r.get("out_shapes"),
            },
        )
        n["us"] += r["dur_us"]
        if windows and r.get("run") is not None:
            per = n.setdefault("per_run", [0.0] * runs)
            i = r["run"] - skip_runs
            if 0 <= i < runs:
                per[i] += r["dur_us"]

    nodes_sorted = sorted(by_node.items(), key=lambda kv: -kv[1]["us"])[:top_nodes]
    return {
        "runs": runs,
        "skipped_runs": skip_runs,
        "wall_ms": _r(wall_ms) if wall_ms is not None else None,
        "total_node_ms": _r(total_ms),
        "coverage": _r(total_ms / wall_ms) if wall_ms else None,
        "node_count": len(by_node),
        "by_op": _sorted_ms(by_op, runs),
        "components": _sorted_ms(by_comp, runs),
        "providers_ms": _sorted_ms(by_prov_us, runs),
        "node_providers": node_providers_from_events(rows),
        "blocks": {str(d): aggregate(rows, d, runs, att) for d in depths},
        "attribution": _attribution_summary(by_node, att, origins, total_us, runs, unmapped_listed),
        "top_nodes": [
            {
                "name": name,
                "op": n["op"],
                "provider": n["provider"],
                "component": att(name)[1],
                "ms": _r(n["us"] / 1e3 / runs),
            }
            for name, n in nodes_sorted
        ],
        # every node with its tensor shapes, in graph order (small graphs only: a single block has
        # a few dozen nodes), so a reader can pick ops by shape (e.g. the N×N MatMuls)
        "nodes": [
            {
                "name": name,
                "op": n["op"],
                "ms": _r(n["us"] / 1e3 / runs),
                # this node's time in each profiled run (the op-level table's interval)
                "runs_ms": [_r(u / 1e3) for u in n.get("per_run") or []] or None,
                "in_shapes": n["in"],
                "out_shapes": n["out"],
            }
            for name, n in by_node.items()
        ]
        if len(by_node) <= MAX_NODES_LISTED
        else None,
    }


def _attribution_summary(
    by_node: Dict[str, Dict[str, Any]],
    att: Attribution,
    origins: Optional[Dict[str, List[str]]],
    total_us: float,
    runs: int,
    listed: int,
) -> Dict[str, Any]:
    fused = fallback = spanning = split = 0
    fallback_us = top_us = names_top_us = 0.0
    unmapped: List[Tuple[float, str, str]] = []
    for name, n in by_node.items():
        parts, _, by_graph = att(name)
        orig = (origins or {}).get(name) or []
        if by_graph and orig != [name]:
            fused += 1
        if not by_graph:
            fallback += 1
            fallback_us += n["us"]
        if att.spans(name) > 1:
            spanning += 1
        if len({_group(segs, 1) for segs, _ in parts}) > 1:
            split += 1
        top = sum(w for segs, w in parts if not segs) * n["us"]
        if top:
            top_us += top
            unmapped.append((top, name, n["op"]))
        if not scope(name):
            names_top_us += n["us"]
    unmapped.sort(key=lambda u: -u[0])

    def share(us: float) -> Optional[float]:
        return _r(us / total_us) if total_us else None

    return {
        "method": "graph" if origins is not None else "names",
        "executed_nodes": len(by_node),
        "fused_nodes": fused,
        "fallback_nodes": fallback,
        "fallback_share": share(fallback_us),
        "spanning_nodes": spanning,
        "split_nodes": split,
        "top_share": share(top_us),
        "names_only_top_share": share(names_top_us),
        "unmapped": [
            {"name": name, "op": op, "ms": _r(us / 1e3 / runs)}
            for us, name, op in unmapped[:listed]
        ],
    }


def summarize_file(
    path: str,
    skip_runs: int = 0,
    depths: Sequence[int] = DEFAULT_DEPTHS,
    origins: Optional[Dict[str, List[str]]] = None,
) -> Dict[str, Any]:
    return summarize(load_events(path), skip_runs=skip_runs, depths=depths, origins=origins)
