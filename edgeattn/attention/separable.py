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
runs over the last axis of a (B, 1, N) tensor.

**Normalisation ops.** One ``Softmax`` over N scalars per block: faithful to the paper and to
ml-cvnets (its cost is O(N), not O(N²)), and the export audit counts it, so the block is not
"softmax-free" in the audit's sense.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


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

    def _part(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of ``qkv_proj`` applied to x: (B, N, C) -> (B, N, stop - start).
        The weight slice is a constant in an exported graph (no Split of an N-sized tensor)."""
        w = self.qkv_proj.weight[start:stop]
        b = None if self.qkv_proj.bias is None else self.qkv_proj.bias[start:stop]
        return F.linear(x, w, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q = self._part(x, 0, 1)  # (B, N, 1): one scalar per token
        s = self.attn_dropout(q.reshape(B, 1, N).softmax(dim=-1))  # (B, 1, N): softmax over N
        xbar = s @ x  # (B, 1, C): Σ_n s_n x_n
        w_k = self.qkv_proj.weight[1 : 1 + C]
        b_k = None if self.qkv_proj.bias is None else self.qkv_proj.bias[1 : 1 + C]
        c = F.linear(xbar, w_k, b_k)  # (B, 1, C): the context vector Σ_n s_n K_n
        v = self._part(x, 1 + C, 1 + 2 * C)  # (B, N, C)
        m = c.reshape(B, C, 1) * self.out_proj.weight.t()  # (B, C, C): diag(c)·W_oᵀ
        y = F.relu(v) @ m  # (B, N, C)
        if self.out_proj.bias is not None:
            y = y + self.out_proj.bias
        return self.proj_drop(y)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, attn_dropout={self.attn_dropout.p}"
