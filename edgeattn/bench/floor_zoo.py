"""Matmul floors of the zoo blocks (``block_mobilevitv2``, ``block_hydra``, ``block_litemla``), as
:mod:`edgeattn.bench.floor` builds them: a graph of exactly the products the block's algebra needs,
at its shapes, weights as initializers (packed by ONNX Runtime like a block's), activations as
graph inputs, every product a graph output.

Floors (B batch, N tokens, C channels; MobileViTv2 and Hydra fix their own heads, so there
``heads`` only keeps the signature of :func:`edgeattn.bench.floor.products`):

- ``floor_mobilevitv2``, MobileViTv2 separable self-attention (:mod:`edgeattn.attention.separable`):
  the query column x·w_q (N×C·C×1); the score-weighted token sum sᵀ·x (1×N·N×C); the context
  vector x̄·W_kᵀ (1×C·C×C); the value projection x·W_vᵀ (N×C·C×C); the output projection
  (N×C·C×C). The textbook also projects the keys (N·C² more), which the algebra does not need
  (the scores sum to 1: ``Σ s_n K_n = W_k(sᵀx) + b_k``), so the floor leaves it out and is the
  stricter one.
- ``floor_hydra``, Hydra attention (:mod:`edgeattn.attention.hydra`): x·W_qkv (N×C·C×3C); the
  token sum of φ(K) ⊙ V as 1ᵀ·(φ(K) ⊙ V) (1×N·N×C); the output projection
  (N×C·C×C). The Hadamard products and the per-token norms are elementwise: not in the floor.

- ``floor_litemla``, EfficientViT's LiteMLA (:mod:`edgeattn.attention.litemla`; h heads of
  d = C/h channels, one aggregation scale of 5, so h' = 2h heads attend): the qkv 1×1 conv
  x·W_qkv (N×C·C×3C); the aggregation's depthwise 5×5 conv over the 3C channels (N·3C·25, a
  ``Conv`` node: not a matmul, but a product the algebra needs, as the FLOP count has it); its
  grouped 1×1 conv (3h groups of d→d: (N×d·d×d) × 3h); per head, by the official rule
  (quadratic if N < d + 1), either the linear form ``[V;1]·Kᵀ`` ((d+1)×N·N×d) and ``·Q``
  ((d+1)×d·d×N), or the quadratic one ``KᵀQ`` (N×d·d×N) and ``V·map`` (d×N·N×N); the proj 1×1
  conv (N×2C·2C×C). The ones row of ``[V;1]`` is the denominator's product (``1ᵀKᵀQ``), which
  the linear form needs; the BatchNorm after proj folds into the conv. These multiply-adds equal
  PyTorch's FLOP count of ``block_litemla`` (tests/test_zoo_blocks.py).

The output projection of the first two floors is a plain weight (initializer), the textbook layer; the
blocks fold the context / kv channel weights into it per call (``diag(c)·W_oᵀ``, C² products),
which makes it a run-time operand: that, like every elementwise pass, is what ``block / floor``
measures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgeattn.bench.floor import Product

FLOORS = ("floor_mobilevitv2", "floor_hydra", "floor_litemla")
#: LiteMLA's aggregation: one scale, a depthwise conv of this kernel (the official (5,))
LITEMLA_SCALE = 5


@dataclass(frozen=True)
class DepthwiseConv:
    """A depthwise ``k×k`` conv ('same' padding) over ``channels`` channels of a (B, H, W) grid."""

    name: str
    batch: int
    channels: int
    grid: tuple[int, int]
    kernel: int

    @property
    def macs(self) -> int:
        H, W = self.grid
        return self.batch * self.channels * H * W * self.kernel * self.kernel


def _check(kind: str) -> None:
    if kind not in FLOORS:
        raise ValueError(f"unknown floor {kind!r}; valid: {', '.join(FLOORS)}")


def products(kind: str, batch: int, tokens: int, dim: int, heads: int = 1) -> list[Product]:
    """The matmuls of ``kind`` at this shape (see the module doc)."""
    _check(kind)
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
    if kind == "floor_hydra":
        return [
            Product("qkv_proj", (B, N, C), (C, 3 * C), True),
            Product("kv_sum", (B, 1, N), (B, N, C)),
            out,
        ]
    if C % heads:
        raise ValueError(f"dim={C} is not divisible by heads={heads}")
    h, d = heads, C // heads
    hh = B * 2 * h  # the attending heads (the input's and the aggregated scale's), batch folded
    from edgeattn.attention.litemla import litemla_threshold

    if N < litemla_threshold(d):  # the official rule: quadratic below d + 1 tokens
        att = [
            Product("att_kq", (hh, N, d), (hh, d, N)),
            Product("att_v_map", (hh, d, N), (hh, N, N)),
        ]
    else:
        att = [
            Product("att_vk", (hh, d + 1, N), (hh, N, d)),
            Product("att_vk_q", (hh, d + 1, d), (hh, d, N)),
        ]
    return [
        Product("qkv_proj", (B, N, C), (C, 3 * C), True),
        Product("aggreg_group", (3 * h, B * N, d), (3 * h, d, d), True),
        *att,
        Product("proj", (B, N, 2 * C), (2 * C, C), True),
    ]


def convs(kind: str, batch: int, tokens: int, dim: int, heads: int = 1) -> list[DepthwiseConv]:
    """The floor's non-matmul products: LiteMLA's depthwise aggregation conv, on the bench's
    token grid (:func:`edgeattn.bench.grid.grid_for`, else 1 × N)."""
    _check(kind)
    if kind != "floor_litemla":
        return []
    from edgeattn.bench.grid import grid_for

    grid = grid_for(tokens) or (1, tokens)
    return [DepthwiseConv("aggreg_dw", batch, 3 * dim, grid, LITEMLA_SCALE)]


def macs(kind: str, batch: int, tokens: int, dim: int, heads: int = 1) -> int:
    """Multiply-adds of the floor (one multiply-add = one FLOP, as ``edgeattn.models.cost``)."""
    prods = products(kind, batch, tokens, dim, heads)
    return sum(p.macs for p in prods) + sum(c.macs for c in convs(kind, batch, tokens, dim, heads))


def build(kind: str, batch: int, tokens: int, dim: int, heads: int, opset: int):
    """The floor graph: one MatMul per product, as :func:`edgeattn.bench.floor.build`, and one
    depthwise ``Conv`` per :func:`convs` entry (input, weight initializer, output alike)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeattn.bench.floor import graph_of

    prods = products(kind, batch, tokens, dim, heads)
    model = graph_of(kind, prods, opset, "edgeattn.bench.floor_zoo")
    g = model.graph
    rng = np.random.default_rng(1)
    for c in convs(kind, batch, tokens, dim, heads):
        H, W = c.grid
        k = c.kernel
        shape = [c.batch, c.channels, H, W]
        w = (rng.standard_normal((c.channels, 1, k, k)) / k).astype(np.float32)
        g.input.append(helper.make_tensor_value_info(f"{c.name}_a", TensorProto.FLOAT, shape))
        g.initializer.append(numpy_helper.from_array(w, f"{c.name}_b"))
        g.output.append(helper.make_tensor_value_info(c.name, TensorProto.FLOAT, shape))
        g.node.append(
            helper.make_node(
                "Conv", [f"{c.name}_a", f"{c.name}_b"], [c.name], name=f"/floor/{c.name}/Conv",
                group=c.channels, kernel_shape=[k, k], pads=[k // 2] * 4,
            )
        )  # fmt: skip
    onnx.checker.check_model(model)
    return model


def export(
    kind: str, batch: int, tokens: int, dim: int, heads: int, opset: int, cache_dir: Path
) -> Path:
    """Write (or reuse) the floor graph; the file name carries a hash of its bytes."""
    from edgeattn.bench.ops import write_cached

    model = build(kind, batch, tokens, dim, heads, opset)
    return write_cached(model, f"{kind}_B{batch}_N{tokens}_D{dim}_op{opset}", cache_dir)
