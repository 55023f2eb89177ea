"""Hydra attention (Bolya, Fu, Dai, Zhang & Hoffman 2022, "Hydra Attention: Efficient Attention
with Many Heads", arXiv 2209.07484).

Linear attention ``φ(Q)(φ(K)ᵀV)`` taken to as many heads as channels (H = C, one feature per
head), with the cosine-similarity kernel ``φ(x) = x / ‖x‖₂`` applied to each token's **full**
C-vector (the paper's code: ``q / q.norm(dim=-1, keepdim=True)``, before the heads split; with
one feature per head a per-head norm would only keep the sign). Per token n and channel c::

    out_nc = φ(Q)_nc · Σ_m φ(K)_mc V_mc        i.e.  out = φ(Q) ⊙ Σ_m (φ(K)_m ⊙ V_m)

O(N·C) beyond the projections, no softmax, no scale. As in the paper's ViT experiments the
layer keeps the ViT attention's ``qkv`` (C → 3C) and ``proj`` (C → C) Linear layers (names as
timm's ``Attention``). The norm is clamped like ``F.normalize``, ``‖x‖ → max(‖x‖, eps)`` with
eps 1e-12: equal to the paper's formula except for an all-zero token, which gives 0, not NaN.

**Evaluated lean** (equal in exact arithmetic, see tests/test_zoo_blocks.py):

* ``Σ_m φ(K)_m ⊙ V_m = rᵀ(K ⊙ V)`` with ``r_m = 1/‖K_m‖``: one (1 × N)·(N × C) product; K is
  never divided, and no ReduceSum runs over the token axis (slow in ONNX Runtime, see
  :func:`edgeattn.attention.sima.token_l1_norm_flat`).
* ``proj(φ(Q) ⊙ kv) = diag(1/‖Q_n‖)·(Q·M) + b_o`` with ``M = diag(kv)·W_oᵀ`` (C × C, per batch):
  the channel weights land on W_o (C² products) and the token norms on the output rows, so Q is
  never divided either. Matmuls left: the three projections and ``Q·M`` (N·C² each) and ``rᵀ(K⊙V)``
  (N·C): :mod:`edgeattn.bench.floor_zoo`.
* Token-major (B, N, C) throughout: the ℓ2 norms are reductions over the last, contiguous axis.
  Q, K and V come from slices of ``qkv``'s weight (constants in the graph), so no N × 3C tensor
  is split.

**Normalisation ops** in the exported graph: ``Mul`` + ``ReduceSum`` (over channels) + ``Sqrt``
(+ ``Max`` for the clamp, ``Div``/``Reciprocal``) per ℓ2 norm, written so because ``ReduceL2``
takes its axes as an input from opset 18 on (:func:`edgeattn.attention.xca.l2_normalize`). No
Softmax, no Exp.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

HYDRA_EPS = 1e-12  # F.normalize's default


def token_l2_norm(t: torch.Tensor, eps: float = HYDRA_EPS) -> torch.Tensor:
    """``max(‖t_n‖₂, eps)`` over the channels of each token: (B, N, C) -> (B, N, 1)."""
    return (t * t).sum(dim=-1, keepdim=True).sqrt().clamp_min(eps)


class HydraAttention(nn.Module):
    """Hydra attention on (B, N, C) tokens -> (B, N, C) (heads = channels; see the module doc)."""

    def __init__(
        self, dim: int, qkv_bias: bool = True, proj_drop: float = 0.0, eps: float = HYDRA_EPS
    ) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _part(self, x: torch.Tensor, part: int) -> torch.Tensor:
        """Part ``part`` (0 q, 1 k, 2 v) of ``qkv(x)``: (B, N, C) -> (B, N, C), from a weight
        slice (a constant in an exported graph)."""
        sl = slice(part * self.dim, (part + 1) * self.dim)
        return F.linear(
            x, self.qkv.weight[sl], None if self.qkv.bias is None else self.qkv.bias[sl]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        k = self._part(x, 1)  # (B, N, C)
        v = self._part(x, 2)  # (B, N, C)
        r = 1.0 / token_l2_norm(k, self.eps)  # (B, N, 1): 1/‖K_n‖
        kv = r.reshape(B, 1, N) @ (k * v)  # (B, 1, C): Σ_n φ(K)_n ⊙ V_n
        m = kv.reshape(B, C, 1) * self.proj.weight.t()  # (B, C, C): diag(kv)·W_oᵀ
        q = self._part(x, 0)  # (B, N, C)
        y = (q @ m) / token_l2_norm(q, self.eps)  # (B, N, C): φ(Q)·M
        if self.proj.bias is not None:
            y = y + self.proj.bias
        return self.proj_drop(y)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.dim} (one per channel), eps={self.eps:g}"
