"""Op census of an exported ONNX file, per block, recursing into If branches.

Block rule: a node belongs to the **top-level submodule** it was traced in, i.e. the first
segment of its module path (see :mod:`edgeattn.export.naming` for the naming convention). For
blocks held in a ModuleList that segment carries the index, so the blocks of every family come
out one by one: ``blocks.3`` (SimA, XCiT, DeiT), ``block1.0`` / ``block4.1`` (SOFT stages),
``cls_attn_blocks.0`` (class attention), ``attn`` (the single-block bench models). Stems and
heads come out as their module (``patch_embed``, ``pos_embeder``, ``norm``, ``head``);
nodes of the root module's own forward are ``(root)``; the SimA order dispatcher is
``order_dispatch``. Branch tags (``@qk_first``) are ignored for the block but listed under
``branches``: nodes of both If branches are counted, since both are in the file.

``softmax_free`` is False as soon as any Softmax / LogSoftmax **or a fused attention op**
(ONNX Runtime's ``com.microsoft`` ``Attention`` / ``MultiHeadAttention`` …, or the ONNX
``Attention`` op of opset 23) is present: a fused attention op computes a softmax inside.
``Exp`` is counted separately (SOFT's Gaussian kernel legitimately uses it) and listed in
``exp_blocks``.

Quantised files (``edgeattn.export.precision``): a QDQ'd Softmax is still a ``Softmax`` node and
counts as one, and ORT's integer ``com.microsoft::QLinearSoftmax`` counts as a Softmax too, so
the softmax-free audit holds on int8 graphs. ``quantization`` counts QuantizeLinear /
DequantizeLinear / DynamicQuantizeLinear and the integer ops per block. Nodes the quantiser or
the fp16 converter adds carry tensor names, not module paths (``attn.qkv.weight_DequantizeLinear``):
they are attributed to the block of the node they feed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import onnx

from edgeattn.errors import AuditError
from edgeattn.export.graph import iter_nodes
from edgeattn.export.naming import block_of, split_name

#: Census columns, in table order. ``other`` is everything else.
CATEGORIES: tuple[str, ...] = (
    "Softmax",
    "Exp",
    "ReduceL1",
    "ReduceSum",
    "MatMul",
    "If",
    "fused_attention",
    "other",
)
SOFTMAX_OPS = frozenset({"Softmax", "LogSoftmax"})
#: ORT's integer softmax (QOperator format): a softmax all the same.
INTEGER_SOFTMAX_OPS = frozenset({"QLinearSoftmax"})
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")
#: Ops that compute in integers (ONNX and com.microsoft), counted as ``integer_ops``.
INTEGER_OPS = frozenset(
    {
        "MatMulInteger",
        "ConvInteger",
        "QLinearMatMul",
        "QLinearConv",
        "QLinearAdd",
        "QLinearMul",
        "QLinearSoftmax",
        "QLinearSigmoid",
        "QLinearAveragePool",
        "QLinearGlobalAveragePool",
        "QLinearConcat",
        "QLinearLeakyRelu",
        "QGemm",
        "DynamicQuantizeMatMul",
        "MatMulIntegerToFloat",
        "QAttention",
    }
)
FUSED_ATTENTION_OPS = frozenset(
    {
        "Attention",
        "MultiHeadAttention",
        "GroupQueryAttention",
        "PackedAttention",
        "PackedMultiHeadAttention",
        "SparseAttention",
        "DecoderMaskedMultiHeadAttention",
        "LongformerAttention",
        "QAttention",
    }
)


def category_of(node: onnx.NodeProto) -> str:
    op = node.op_type
    if node.domain in ("", "ai.onnx"):
        if op in SOFTMAX_OPS:
            return "Softmax"
        if op == "Attention":
            return "fused_attention"
        if op in ("Exp", "ReduceL1", "ReduceSum", "MatMul", "If"):
            return op
        return "other"
    if op in FUSED_ATTENTION_OPS:
        return "fused_attention"
    if op in INTEGER_SOFTMAX_OPS:
        return "Softmax"
    return "other"


def quant_category(node: onnx.NodeProto) -> str | None:
    """``QuantizeLinear`` / ``DequantizeLinear`` / ``DynamicQuantizeLinear`` / ``integer_ops``."""
    if node.op_type in QDQ_OPS:
        return node.op_type
    if node.op_type in INTEGER_OPS:
        return "integer_ops"
    return None


def _block_by_consumer(model: onnx.ModelProto) -> dict[str, str]:
    """For nodes without a module path (added by a quantiser/converter): the block of the first
    node downstream that has one (else upstream), so QDQ pairs land in the block they serve."""
    from edgeattn.export.naming import has_module_path

    nodes = list(iter_nodes(model.graph))
    if all(has_module_path(n.name) for n in nodes):
        return {}
    cons: dict[str, list[onnx.NodeProto]] = {}
    prod: dict[str, onnx.NodeProto] = {}
    for n in nodes:
        for i in n.input:
            cons.setdefault(i, []).append(n)
        for o in n.output:
            prod[o] = n
    out: dict[str, str] = {}

    def walk(n: onnx.NodeProto, down: bool, depth: int = 0) -> str | None:
        if depth > 64:
            return None
        nexts = (
            [c for o in n.output for c in cons.get(o, [])]
            if down
            else [prod[i] for i in n.input if i in prod]
        )
        for c in nexts:
            if has_module_path(c.name):
                return block_of(c.name)
        for c in nexts:
            b = walk(c, down, depth + 1)
            if b is not None:
                return b
        return None

    for n in nodes:
        if not has_module_path(n.name):
            b = walk(n, True) or walk(n, False)
            if b is not None:
                out[n.name] = b
    return out


def census(model: onnx.ModelProto) -> dict[str, int]:
    """Totals per category over the whole model (subgraphs included)."""
    c = Counter(category_of(n) for n in iter_nodes(model.graph))
    return {k: int(c.get(k, 0)) for k in CATEGORIES}


def audit_model(model: onnx.ModelProto | str | Path) -> dict[str, Any]:
    """Per-block op census of ``model`` (a ModelProto or a path to a .onnx file).

    Returns ``{"blocks": {block: {category: count}}, "totals": {...}, "other_ops": {op: n},
    "softmax_blocks": [...], "exp_blocks": [...], "fused_attention_ops": [...],
    "branches": [...], "nodes": n, "softmax_free": bool, "rule": str}``.
    """
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    blocks: dict[str, Counter] = {}
    positions: dict[str, list[int]] = {}
    other_ops: Counter = Counter()
    fused: Counter = Counter()
    branches: set[str] = set()
    quant: dict[str, Counter] = {}
    quant_int: Counter = Counter()
    adopted = _block_by_consumer(model)
    n_nodes = 0
    for k, n in enumerate(iter_nodes(model.graph)):
        n_nodes += 1
        tags, _ = split_name(n.name)
        branches.update(tags)
        b = adopted.get(n.name) or block_of(n.name)
        cat = category_of(n)
        qc = quant_category(n)
        if qc is not None:
            quant.setdefault(b, Counter())[qc] += 1
            if qc == "integer_ops":
                quant_int[f"{n.domain or 'ai.onnx'}::{n.op_type}"] += 1
        blocks.setdefault(b, Counter())[cat] += 1
        positions.setdefault(b, []).append(k)
        if cat == "other":
            other_ops[n.op_type] += 1
        elif cat == "fused_attention":
            fused[f"{n.domain or 'ai.onnx'}::{n.op_type}"] += 1

    # rows in pipeline order: by the median position of the block's nodes in the graph
    # (first appearance is noisy: exporters hoist weight transposes and shape constants)
    def median(b: str) -> float:
        p = positions[b]
        return p[len(p) // 2]

    table = {
        b: {k: int(blocks[b].get(k, 0)) for k in CATEGORIES} for b in sorted(blocks, key=median)
    }
    totals = {k: sum(t[k] for t in table.values()) for k in CATEGORIES}
    softmax_blocks = [b for b, t in table.items() if t["Softmax"] or t["fused_attention"]]
    exp_blocks = [b for b, t in table.items() if t["Exp"]]
    qcols = (*QDQ_OPS, "integer_ops")
    quantization = {
        "totals": {c: sum(int(q.get(c, 0)) for q in quant.values()) for c in qcols},
        "blocks": {b: {c: int(quant[b].get(c, 0)) for c in qcols} for b in table if b in quant},
        "integer_ops": dict(sorted(quant_int.items())),
    }
    return {
        "rule": "block = first module-path segment (ModuleList items keep their index)",
        "blocks": table,
        "totals": totals,
        "other_ops": dict(sorted(other_ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "fused_attention_ops": dict(fused),
        "softmax_blocks": softmax_blocks,
        "exp_blocks": exp_blocks,
        "branches": sorted(branches),
        "nodes": n_nodes,
        "softmax_free": not softmax_blocks,
        "quantization": quantization,
    }


def check_softmax_free(
    audit: dict[str, Any], model_name: str = "model", hint: str | None = None
) -> None:
    """Raise :class:`AuditError` naming the blocks that hold a softmax (or fused attention)."""
    if audit["softmax_free"]:
        return
    blocks = audit["softmax_blocks"]
    shown = ", ".join(blocks[:12]) + (f", … (+{len(blocks) - 12})" if len(blocks) > 12 else "")
    t = audit["totals"]
    what = []
    if t["Softmax"]:
        what.append(f"{t['Softmax']} Softmax")
    if t["fused_attention"]:
        what.append(f"{t['fused_attention']} fused attention (softmax inside)")
    raise AuditError(
        f"{model_name} is not softmax-free: {' and '.join(what)} in block(s) {shown}",
        hint=hint,
    )
