"""``block_msa_fused``: a ``block_msa`` written with ONNX Runtime's fused attention contrib op.

The bench needs "the best softmax attention the runtime offers" next to the softmax-free
mechanisms. ONNX Runtime's CPU provider runs two fused attention ops from the
``com.microsoft`` domain: ``Attention`` (QKV projection + attention in one op) and
``MultiHeadAttention`` (attention on projected q, k, v). Measured on ORT 1.31 CPU with
dim 384, 6 heads (the block_msa default), one thread, median of 6 interleaved runs:
N=1024: unfused 32.9 ms, Attention 31.9 ms, MultiHeadAttention 31.3 ms; N=3136: unfused
245 ms, Attention 248 ms, MultiHeadAttention 216 ms. ``MultiHeadAttention`` is the default;
``fused_op="Attention"`` selects the other. Both are built with :mod:`onnx.helper` from the
weights of a ``block_msa`` module, so the graph computes exactly that block.

The registered model ``block_msa_fused`` (:mod:`edgeattn.models.block`) is that block with a
``fused_op``; its export facts name :func:`build_fused_msa` as its builder.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeattn.models.block import FUSED_OPS

DEFAULT_FUSED_OP = FUSED_OPS[0]


def build_fused_msa(
    block, *, opset: int, batch: int, dynamic: bool
) -> tuple[onnx.ModelProto, dict[str, object]]:
    """ONNX model ``x (B, N, C) -> y (B, N, C)`` equal to ``block`` (a ``block_msa_fused``, or a
    ``block_msa`` for the default op), and what export records of it."""
    # Long on purpose: one small graph written node by node reads best in one place.
    fused_op = getattr(block, "fused_op", DEFAULT_FUSED_OP)
    if fused_op not in FUSED_OPS:
        raise ValueError(f"fused_op={fused_op!r}; valid: {', '.join(FUSED_OPS)}")
    attn = block.attn
    C = attn.qkv.in_features
    h = attn.num_heads
    N = block.config.tokens
    w_qkv = attn.qkv.weight.detach().cpu().numpy().T.astype(np.float32).copy()  # (C, 3C)
    b_qkv = (
        attn.qkv.bias.detach().cpu().numpy().astype(np.float32)
        if attn.qkv.bias is not None
        else np.zeros(3 * C, np.float32)
    )
    w_proj = attn.proj.weight.detach().cpu().numpy().T.astype(np.float32).copy()  # (C, C)
    b_proj = attn.proj.bias.detach().cpu().numpy().astype(np.float32)
    scale = float(attn.scale)
    inits = [
        numpy_helper.from_array(w_qkv, "attn.qkv.weight_t"),
        numpy_helper.from_array(b_qkv, "attn.qkv.bias"),
        numpy_helper.from_array(w_proj, "attn.proj.weight_t"),
        numpy_helper.from_array(b_proj, "attn.proj.bias"),
    ]
    nodes = []
    if fused_op == "Attention":
        nodes.append(
            helper.make_node(
                "Attention",
                ["x", "attn.qkv.weight_t", "attn.qkv.bias"],
                ["attn/ctx"],  # (B, N, C)
                name="/attn/Attention",
                domain="com.microsoft",
                num_heads=h,
                scale=scale,
            )
        )
    else:
        inits.append(numpy_helper.from_array(np.array([C, C, C], np.int64), "attn/split_sizes"))
        nodes += [
            helper.make_node(
                "MatMul", ["x", "attn.qkv.weight_t"], ["attn/qkv/mm"], name="/attn/qkv/MatMul"
            ),
            helper.make_node(
                "Add", ["attn/qkv/mm", "attn.qkv.bias"], ["attn/qkv"], name="/attn/qkv/Add"
            ),  # (B, N, 3C)
            helper.make_node(
                "Split",
                ["attn/qkv", "attn/split_sizes"],
                ["attn/q", "attn/k", "attn/v"],  # 3 x (B, N, C)
                name="/attn/Split",
                axis=2,
            ),
            helper.make_node(
                "MultiHeadAttention",
                ["attn/q", "attn/k", "attn/v"],
                ["attn/ctx"],  # (B, N, C)
                name="/attn/MultiHeadAttention",
                domain="com.microsoft",
                num_heads=h,
                scale=scale,
            ),
        ]
    nodes += [
        helper.make_node(
            "MatMul", ["attn/ctx", "attn.proj.weight_t"], ["attn/proj/mm"], name="/attn/proj/MatMul"
        ),
        helper.make_node("Add", ["attn/proj/mm", "attn.proj.bias"], ["y"], name="/attn/proj/Add"),
    ]
    dims = ["batch", "tokens", C] if dynamic else [batch, N, C]
    graph = helper.make_graph(
        nodes,
        "block_msa_fused",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
        inits,
    )
    ops = [helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(
        graph,
        opset_imports=ops,
        ir_version=helper.find_min_ir_version_for(ops, ignore_unknown=True),
        producer_name="edgeattn",
    )
    impl = f"com.microsoft::{fused_op}"
    return model, {"implementation": impl, "spec": {"fused_op": impl}}
