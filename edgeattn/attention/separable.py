"""MobileViTv2 separable self-attention (Mehta & Rastegari 2022, arXiv 2206.02680).

The formula of apple/ml-cvnets ``cvnets/layers/linear_attention.py`` (``LinearSelfAttention``,
self-attention path): one projection of ``x`` to ``1 + 2C`` channels, split ``[1, C, C]`` into a
query ``q`` (one scalar per token), keys ``K`` and values ``V``;

* context scores ``s = softmax_N(q)``: a softmax over the N token **scalars** (not N × N);
* context vector ``c = Σ_n s_n K_n`` (C numbers);
* ``out = out_proj(ReLU(V) ⊙ c)``, ``c`` broadcast over the tokens.

No heads, no scale. Dropout on the scores (``attn_dropout``) is identity at inference.

**Layout.** ml-cvnets runs it on unfolded patches ``(B, C, P, N)`` (P pixels per patch, N
patches) with 1×1 convolutions, attending over N independently for each of the P pixel
positions. A (B, N, C) token block is that layer with P = 1: ``x_cvnets[b, c, 0, n] = x[b, n, c]``,
a 1×1 conv weight ``(O, C, 1, 1)`` is a Linear weight ``(O, C)`` (``qkv_proj.block.conv.weight``
squeezed is ``qkv_proj.weight``), and the softmax over the last axis (N) is the softmax over the
token axis here. Same parameters (``qkv_proj``: C → 1 + 2C and ``out_proj``: C → C, both with bias),
same math.

**Evaluated lean.** The scores sum to 1, so the context vector needs no N × C key tensor:
``c = Σ_n s_n (W_k x_n + b_k) = W_k (sᵀx) + b_k``, a (1 × N)·(N × C) product and a C × C one
instead of the N·C² key projection. ``ReLU(V) ⊙ c`` then ``out_proj`` is
``ReLU(V)·(diag(c)·W_oᵀ) + b_o``: ``c`` scales the rows of ``W_oᵀ`` (C² products), never the
N × C tensor. Matmuls left: the query column (N·C), ``sᵀx`` (N·C), ``c`` (C²), the value
projection and ``ReLU(V)·M`` (N·C² each); ``edgeattn.bench.floor_zoo`` holds those products.
The queries come out as (B, N, 1) and are reshaped, not transposed, to (B, 1, N): the softmax
runs over the last axis of a (B, 1, N) tensor. In the exported graph the ``qkv_proj`` bias rides
in the weights: ``x`` gets a column of ones (a ``Concat``), each weight slice its bias as one
more column, so the query and value projections are bias-free MatMuls (ONNX Runtime would fuse
a bias Add into a ``Gemm`` that first writes the broadcast bias: the value projection took
1.04 ms as a Gemm, 0.82 ms as a MatMul at N = 1024, C = 384), and the key bias comes with
``sᵀ[x, 1] = [sᵀx, 1]`` (the scores sum to 1). MobileViTv2 / its floor, paired, three runs,
2026-12-05 (``edgeattn bench --methods mobilevitv2,floor_mobilevitv2 --tokens N --quiet``):
1.17, 1.16, 1.17× at N = 1024 and 1.11, 1.12, 1.11× at 4096 before this; 1.16, 1.18, 1.17× and
1.09, 1.11, 1.09× after. The value product's kernel time fell (1.04 -> 0.83 ms, ORT profiler)
but the ratio at 1024 did not move: with thread-pool spinning off (the paired pass's setting)
each multi-threaded node pays a worker wake-up, ~20 µs per node here (benchmarks/node_overhead.py:
a chain of Relu nodes on 1.6 MB, 44 µs per node without spinning, 19-21 with), and the block runs 6 nodes more than its
floor (Concat, Softmax, a Reshape, the C × C Mul, ReLU, the bias Add) around a 2 ms total. M is
built transposed (``c ⊙ W_o``, c broadcast over rows: no Reshape of c) and read through a
Transpose that ORT folds into the product (a FusedMatMul with transB): 0-1.5 % faster than
``diag(c)·W_oᵀ`` with its Reshape, three interleaved groups of block, variant and floor.

**Normalisation ops.** One ``Softmax`` over N scalars per block: faithful to the paper and to
ml-cvnets (its cost is O(N), not O(N²)), and the export audit counts it, so the block is not
"softmax-free" in the audit's sense.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from edgeattn.attention.layout import bias_in_weight, integer_layout


class SeparableSelfAttention(nn.Module):
    """MobileViTv2 separable self-attention on (B, N, C) tokens -> (B, N, C) (see the module doc).

    Parameter names follow ml-cvnets' ``LinearSelfAttention`` (``qkv_proj``, ``out_proj``), as
    Linear layers: an official ``*.block.conv.weight`` of shape (O, C, 1, 1) loads as
    ``*.weight`` of shape (O, C)."""

    def __init__(
        self, dim: int, attn_dropout: float = 0.0, bias: bool = True, proj_drop: float = 0.0
    ) -> None:
        super().__init__()
        self.embed_dim = dim
        self.qkv_proj = nn.Linear(dim, 1 + 2 * dim, bias=bias)  # [query | keys | values]
        self.attn_dropout = nn.Dropout(attn_dropout)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, fold_bias: bool | None = None) -> torch.Tensor:
        """``fold_bias``: None = fold the ``qkv_proj`` bias into its weight while exporting to
        ONNX only (see the module doc)."""
        B, N, C = x.shape
        w, b = self.qkv_proj.weight, self.qkv_proj.bias
        if fold_bias is None:
            fold_bias = torch.onnx.is_in_onnx_export()
        if b is not None and fold_bias:
            x, p = bias_in_weight(self.qkv_proj, x)  # (B, N, C + 1)
            w, b = p.weight, p.bias  # (1 + 2C, C + 1), None

        def part(start: int, stop: int, t: torch.Tensor) -> torch.Tensor:
            # rows start:stop of qkv_proj (a constant slice in an exported graph: no Split of
            # an N-sized tensor)
            return F.linear(t, w[start:stop], None if b is None else b[start:stop])

        q = part(0, 1, x)  # (B, N, 1): one scalar per token
        s = self.attn_dropout(q.reshape(B, 1, N).softmax(dim=-1))  # (B, 1, N): softmax over N
        xbar = s @ x  # (B, 1, C) or (B, 1, C + 1) ending in Σ s_n = 1: Σ_n s_n x_n
        c = part(1, 1 + C, xbar)  # (B, 1, C): the context vector Σ_n s_n K_n
        v = part(1 + C, 1 + 2 * C, x)  # (B, N, C)
        if integer_layout():  # int8: ReLU(V)·M would be uint8 × uint8 (see attention.layout)
            y = (F.relu(v) * c) @ self.out_proj.weight.t()
        else:
            mt = c * self.out_proj.weight  # (B, C, C): (diag(c)·W_oᵀ)ᵀ, no Reshape of c
            y = F.relu(v) @ mt.transpose(1, 2)  # (B, N, C); ORT: one FusedMatMul (transB)
        if self.out_proj.bias is not None:
            y = y + self.out_proj.bias
        return self.proj_drop(y)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, attn_dropout={self.attn_dropout.p}"
