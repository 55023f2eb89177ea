"""Matmul floors of the zoo blocks (``block_mobilevitv2``, ``block_hydra``), as
:mod:`edgeattn.bench.floor` builds them: a graph of exactly the products the block's algebra needs,
at its shapes, weights as initializers (packed by ONNX Runtime like a block's), activations as
graph inputs, every product a graph output.

Floors (B batch, N tokens, C channels; both mechanisms fix their own heads, so ``heads`` only
keeps the signature of :func:`edgeattn.bench.floor.products`):

- ``floor_mobilevitv2``, MobileViTv2 separable self-attention (:mod:`edgeattn.attention.separable`):
  the query column x·w_q (N×C·C×1); the score-weighted token sum sᵀ·x (1×N·N×C); the context
  vector x̄·W_kᵀ (1×C·C×C); the value projection x·W_vᵀ (N×C·C×C); the output projection
  (N×C·C×C). The textbook also projects the keys (N·C² more), which the algebra does not need
  (the scores sum to 1: ``Σ s_n K_n = W_k(sᵀx) + b_k``), so the floor leaves it out and is the
  stricter one.
- ``floor_hydra``, Hydra attention (:mod:`edgeattn.attention.hydra`): x·W_qkv (N×C·C×3C); the
  token sum of φ(K) ⊙ V as rᵀ·(K ⊙ V) (1×N·N×C, r = 1/‖K_n‖); the output projection
  (N×C·C×C). The Hadamard products and the per-token norms are elementwise: not in the floor.

The output projection of either floor is a plain weight (initializer), the textbook layer; the
blocks fold the context / kv channel weights into it per call (``diag(c)·W_oᵀ``, C² products),
which makes it a run-time operand: that, like every elementwise pass, is what ``block / floor``
measures.
"""

from __future__ import annotations

from pathlib import Path

from edgeattn.bench.floor import Product

FLOORS = ("floor_mobilevitv2", "floor_hydra")


def products(kind: str, batch: int, tokens: int, dim: int, heads: int = 1) -> list[Product]:
    """The matmuls of ``kind`` at this shape (see the module doc)."""
    if kind not in FLOORS:
        raise ValueError(f"unknown floor {kind!r}; valid: {', '.join(FLOORS)}")
    del heads  # fixed by the mechanism (one context score; heads = channels)
    B, N, C = batch, tokens, dim
    out = Product("out_proj", (B, N, C), (C, C), True)
    if kind == "floor_mobilevitv2":
        return [
            Product("query", (B, N, C), (C, 1), True),
            Product("token_sum", (B, 1, N), (B, N, C)),
            Product("context", (B, 1, C), (C, C), True),
            Product("v_proj", (B, N, C), (C, C), True),
            out,
        ]
    return [
        Product("qkv_proj", (B, N, C), (C, 3 * C), True),
        Product("kv_sum", (B, 1, N), (B, N, C)),
        out,
    ]


def macs(kind: str, batch: int, tokens: int, dim: int, heads: int = 1) -> int:
    """Multiply-adds of the floor (one multiply-add = one FLOP, as ``edgeattn.models.cost``)."""
    return sum(p.macs for p in products(kind, batch, tokens, dim, heads))


def build(kind: str, batch: int, tokens: int, dim: int, heads: int, opset: int):
    """The floor graph: one MatMul per product, as :func:`edgeattn.bench.floor.build`."""
    from edgeattn.bench.floor import graph_of

    prods = products(kind, batch, tokens, dim, heads)
    return graph_of(kind, prods, opset, "edgeattn.bench.floor_zoo")


def export(
    kind: str, batch: int, tokens: int, dim: int, heads: int, opset: int, cache_dir: Path
) -> Path:
    """Write (or reuse) the floor graph; the file name carries a hash of its bytes."""
    from edgeattn.bench.ops import write_cached

    model = build(kind, batch, tokens, dim, heads, opset)
    return write_cached(model, f"{kind}_B{batch}_N{tokens}_D{dim}_op{opset}", cache_dir)
