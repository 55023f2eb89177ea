"""Matmul floors: graphs that hold only the matmuls of an attention block, at the block's shapes.

A block can be no faster than the matrix products its algebra needs. For each attention method the
*floor* is a graph of exactly those products, with the shapes the textbook evaluation gives them,
every operand already in the layout a GEMM wants (weights as initializers, so ONNX Runtime packs
them as it does a block's; activations as graph inputs) and every product a graph output, so
nothing is folded away. ``block / floor``, timed interleaved in one process, is what a block pays
on top of its matmuls: normalisation, layout copies, elementwise work. Built with
``onnx.helper``; not models (no registry entry), cached by content like the pure-op graphs.

Floors (B batch, N tokens, C channels, h heads, d = C/h, m landmarks):

- ``floor_qk``, the (QKᵀ)V order (softmax MSA, SimA ``qk_first``): x·W_qkv (N×C·C×3C);
  Q·Kᵀ per head (N×d·d×N); A·V per head (N×N·N×d); O·W_o (N×C·C×C).
- ``floor_kv``, the Q(KᵀV) order (SimA ``kv_first``, XCA's shapes): x·W_qkv; Kᵀ·V per head
  (d×N·N×d); Q·(KᵀV) per head (N×d·d×d); O·W_o.
- ``floor_soft``, SOFT (m landmarks, K = Q): x·W_q and x·W_v (N×C·C×C each); K1 = Q·Lᵀ per
  head (N×d·d×m); K1ᵀ·V (m×N·N×d); K1·pinv (N×m·m×m); (K1·pinv)·(K1ᵀV) (N×m·m×d); O·W_ff. The
  m×m Newton iterations (N-independent), the landmark pooling and the depthwise-conv skip are not
  matmuls of N-sized operands and are left out.

A block may come in *under* its floor when it evaluates fewer products than the textbook (SimA's
``kv_first`` from N ≥ C folds W_o into one (C×C) matrix: ``edgeattn.attention.sima``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FLOORS = ("floor_qk", "floor_kv", "floor_soft")
SOFT_LANDMARKS = 49  # the bench's SOFT block: adaptive pooling to a 7 x 7 landmark grid


@dataclass(frozen=True)
class Product:
    """One matmul ``a (batch..., M, K) · b (batch..., K, P)``; ``b_const``: b is a weight."""

    name: str
    a: tuple[int, ...]
    b: tuple[int, ...]
    b_const: bool = False

    @property
    def macs(self) -> int:
        *batch, m, k = self.a
        n = 1
        for v in batch:
            n *= v
        return n * m * k * self.b[-1]


def products(kind: str, batch: int, tokens: int, dim: int, heads: int) -> list[Product]:
    """The matmuls of ``kind`` at this shape (see the module doc)."""
    if kind not in FLOORS:
        raise ValueError(f"unknown floor {kind!r}; valid: {', '.join(FLOORS)}")
    B, N, C, h = batch, tokens, dim, heads
    d = C // h
    out = Product("out_proj", (B, N, C), (C, C), True)
    if kind == "floor_soft":
        m = SOFT_LANDMARKS
        return [
            Product("q_proj", (B, N, C), (C, C), True),
            Product("v_proj", (B, N, C), (C, C), True),
            Product("k1", (B, h, N, d), (B, h, d, m)),
            Product("k1t_v", (B, h, m, N), (B, h, N, d)),
            Product("k1_pinv", (B, h, N, m), (B, h, m, m)),
            Product("attend", (B, h, N, m), (B, h, m, d)),
            out,
        ]
    qkv = Product("qkv_proj", (B, N, C), (C, 3 * C), True)
    if kind == "floor_qk":
        mid = [
            Product("q_kt", (B, h, N, d), (B, h, d, N)),
            Product("a_v", (B, h, N, N), (B, h, N, d)),
        ]
    else:
        mid = [
            Product("kt_v", (B, h, d, N), (B, h, N, d)),
            Product("q_kv", (B, h, N, d), (B, h, d, d)),
        ]
    return [qkv, *mid, out]


def macs(kind: str, batch: int, tokens: int, dim: int, heads: int) -> int:
    """Multiply-adds of the floor (one multiply-add = one FLOP, as ``edgeattn.models.cost``)."""
    return sum(p.macs for p in products(kind, batch, tokens, dim, heads))


def build(kind: str, batch: int, tokens: int, dim: int, heads: int, opset: int):
    return graph_of(kind, products(kind, batch, tokens, dim, heads), opset, "edgeattn.bench.floor")


def graph_of(kind: str, prods: list[Product], opset: int, producer: str):
    """The floor graph of ``prods``: one MatMul per product, weights as initializers,
    activations as inputs, every product an output (also ``bench.floor_zoo``'s)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inputs, outputs, inits, nodes = [], [], [], []
    for p in prods:
        a, b, y = f"{p.name}_a", f"{p.name}_b", p.name
        inputs.append(helper.make_tensor_value_info(a, TensorProto.FLOAT, list(p.a)))
        if p.b_const:  # scaled like a default-initialised Linear, so values stay O(1)
            w = (rng.standard_normal(p.b) / np.sqrt(p.b[0])).astype(np.float32)
            inits.append(numpy_helper.from_array(w, b))
        else:
            inputs.append(helper.make_tensor_value_info(b, TensorProto.FLOAT, list(p.b)))
        shape = list(p.a[:-1]) + [p.b[-1]]
        outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, shape))
        nodes.append(helper.make_node("MatMul", [a, b], [y], name=f"/floor/{p.name}/MatMul"))
    graph = helper.make_graph(nodes, kind, inputs, outputs, initializer=inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name=producer
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def export(
    kind: str, batch: int, tokens: int, dim: int, heads: int, opset: int, cache_dir: Path
) -> Path:
    """Write (or reuse) the floor graph; the file name carries a hash of its bytes."""
    from edgeattn.bench.ops import write_cached

    model = build(kind, batch, tokens, dim, heads, opset)
    return write_cached(model, f"{kind}_B{batch}_N{tokens}_D{dim}_h{heads}_op{opset}", cache_dir)
