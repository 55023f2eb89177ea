"""Hydra attention (Bolya, Fu, Dai, Zhang & Hoffman 2022, "Hydra Attention: Efficient Attention
with Many Heads", arXiv 2209.07484).

Linear attention ``φ(Q)(φ(K)ᵀV)`` taken to as many heads as channels (H = C, one feature per
head), with the cosine-similarity kernel ``φ(x) = x / ‖x‖₂`` applied to each token's **full**
C-vector (the paper's code: ``q / q.norm(dim=-1, keepdim=True)``, before the heads split; with
one feature per head a per-head norm would only keep the sign). Per token n and channel c::

    out_nc = φ(Q)_nc · Σ_m φ(K)_mc V_mc        i.e.  out = φ(Q) ⊙ Σ_m (φ(K)_m ⊙ V_m)

O(N·C) beyond the projections, no softmax, no scale. As in the paper's ViT experiments the
layer keeps the ViT attention's ``qkv`` (C → 3C) and ``proj`` (C → C) Linear layers (names as
timm's ``Attention``). The norm carries an eps (1e-12, ``F.normalize``'s) as
``sqrt(‖x‖² + eps²)`` (below): equal to the paper's formula except for an all-zero token, which
gives 0, not NaN.

**Evaluated lean** (equal in exact arithmetic up to the eps, see tests/test_zoo_blocks.py):

* ``φ(t) = t / sqrt(‖t‖² + eps²)``, written as ONNX Runtime's RMS-norm pattern
  ``t / sqrt(mean(t²) + eps²/C) · C^-½`` (Pow, ReduceMean, Add, Sqrt, Div, Mul), which its
  optimiser fuses into one ``SimplifiedLayerNormalization`` pass (opt level extended/all): one
  read and one write of the N × C tensor instead of a Mul, a ReduceSum, a Sqrt, a clamp and a
  Div. Against ``F.normalize``'s ``max(‖t‖, eps)`` the relative difference is below
  ``eps²/(2‖t‖²)`` (1e-24 for a unit-norm token), and an all-zero token still gives 0, not NaN.
* ``φ(t) = t / sqrt(‖t‖² + eps²)`` for Q (above); for K, never written: ``Σ_m φ(K)_m ⊙ V_m
  = rᵀ(K ⊙ V)`` with ``r_m = 1 / sqrt(‖k_m‖² + eps²)`` from one ``ReduceL2`` (a read of K and an
  N-vector, not a normalised N × C copy), then one (1 × N)·(N × C) product, no ReduceSum over
  the token axis (slow in ONNX Runtime, see :func:`edgeattn.attention.sima.token_l1_norm_flat`).
  Hydra / its floor, paired, three runs (2026-12-05): 1.15, 1.14, 1.15× at N = 4096 (1.15, 1.17,
  1.16× before), 1.15, 1.15, 1.18× at 1024 (1.16× ×3 before: within the run-to-run spread);
  with the ones column by Concat instead of Pad (below): 1.14, 1.14, 1.15× at 1024 (1.17, 1.17,
  1.18× the same day before it), 1.12, 1.11, 1.12× at 4096
  (``edgeattn bench --methods hydra,floor_hydra --tokens N --quiet``).
* ``proj(φ(Q) ⊙ kv) = (φ(Q) ⊙ kv)·W_oᵀ + b_o`` with the channel weights kv applied **inside the
  fused norm**: the RMS norm's per-channel scale input takes the run-time vector kv (its
  constant ``C^-½`` folded into r), so ``φ(Q) ⊙ kv`` is the one fused pass's output and the last
  product reads the plain weight W_oᵀ, prepacked like the floor's. This needs one (C,) scale,
  so it is the batch-1 form (the bench's and an edge device's); a batch of B > 1 folds kv into
  the weight instead, ``φ(Q)·M`` with ``M = diag(kv)·W_oᵀ`` (C × C per item, a FusedMatMul
  reading M transposed), or under the integer layout ``(φ(Q) ⊙ kv)·W_oᵀ``. Against that
  folded form the batch-1 graph runs one C × C Mul fewer and packs no run-time matrix:
  0.97–0.98× its time at N = 1024 (interleaved, both orders, two runs each), 0.98–1.00× at
  4096, and 0.93–0.96× at int8-static (2026-12-05). Matmuls left: the three projections and the output
  product (N·C² each) and ``1ᵀ(φ(K)⊙V)`` (N·C): :mod:`edgeattn.bench.floor_zoo`.
* In the exported graph the ``qkv`` biases ride in the projections: ``x`` gets one column of
  ones (a ``Concat``) and each weight slice its bias as one more row, so q, k and v are bias-free
  MatMuls on prepacked constants. ONNX Runtime would otherwise fuse each bias Add into a ``Gemm``
  that first writes the broadcast bias over the whole N × C output (≈ 20 % of that product here,
  measured): one Concat of ``x`` costs less than three of those. Eager PyTorch keeps ``F.linear``
  (its bias is free in ``addmm``, and the FLOP count stays the textbook's); both forms are
  tested against the textbook.
* Token-major (B, N, C) throughout: the norms reduce the last, contiguous axis. Q, K and V come
  from slices of ``qkv``'s weight (constants in the graph), so no N × 3C tensor is split.

**Normalisation ops** in the exported graph: for φ(Q), ``Pow`` + ``ReduceMean`` + ``Add`` +
``Sqrt`` + ``Div`` + ``Mul`` (ONNX Runtime runs them as one ``SimplifiedLayerNormalization``); for
φ(K), ``ReduceL2`` and ``Mul`` + ``Add`` + ``Sqrt`` + ``Div`` on the N-vector. No Softmax, no Exp.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from edgeattn.attention.layout import bias_in_weight, integer_layout

HYDRA_EPS = 1e-12  # F.normalize's default


def cosine_normalize(
    t: torch.Tensor, eps: float = HYDRA_EPS, scale: torch.Tensor | None = None
) -> torch.Tensor:
    """``φ(t) = t / sqrt(‖t_n‖² + eps²)`` over the channels of each token, (B, N, C) -> same,
    in the RMS-norm form ONNX Runtime fuses into one pass (see the module doc).

    ``scale`` (C,): the per-channel factor the RMS norm multiplies by, in place of its constant
    ``C^-½``; the result is then ``φ(t) ⊙ (C^½·scale)``. A run-time ``scale`` still fuses (the
    fused op's scale input need not be a constant), so a per-channel weight that follows the norm
    costs no pass of its own."""
    C = int(t.shape[-1])  # the model's width: a constant in an exported graph
    if scale is None:
        scale = torch.full((C,), float(C) ** -0.5, dtype=t.dtype, device=t.device)
    return t / (t.pow(2).mean(dim=-1, keepdim=True) + eps_squared(eps, t.dtype) / C).sqrt() * scale


def eps_squared(eps: float, dtype: torch.dtype) -> float:
    """``eps²``, but never below the dtype's smallest normal: 1e-24 is 0 in float16, where an
    all-zero token would then give 0/0 = NaN (float32, float64, bfloat16: ``eps²`` unchanged)."""
    return max(eps * eps, torch.finfo(dtype).tiny)


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

    def _parts(self, x: torch.Tensor, fold_bias: bool) -> list[torch.Tensor]:
        """q, k, v = ``qkv(x)``: 3 × (B, N, C), each from a weight slice (a constant in an
        exported graph). ``fold_bias``: the bias as one more weight row on ``x`` padded with a
        column of ones (the exported form, see the module doc)."""
        C, w, b = self.dim, self.qkv.weight, self.qkv.bias
        if b is not None and fold_bias:
            # (B, N, C + 1): a Concat with a ones column, not a Pad: ONNX Runtime's Pad took
            # 0.14 ms at N = 1024, C = 384, its Concat 0.06 ms (profiler, same file otherwise)
            x, p = bias_in_weight(self.qkv, x)
            w, b = p.weight, p.bias  # (3C, C + 1), None
        return [
            F.linear(x, w[i * C : (i + 1) * C], None if b is None else b[i * C : (i + 1) * C])
            for i in range(3)
        ]

    def forward(self, x: torch.Tensor, fold_bias: bool | None = None) -> torch.Tensor:
        """``fold_bias``: None = fold while exporting to ONNX only (see :meth:`_parts`)."""
        B, N, C = x.shape
        if fold_bias is None:
            fold_bias = torch.onnx.is_in_onnx_export()
        q, k, v = self._parts(x, fold_bias)
        # Σ_n φ(K)_n ⊙ V_n = rᵀ(K ⊙ V) with r_n = 1 / sqrt(‖k_n‖² + eps²): φ(K) is never
        # written (one ReduceL2 read of K and an N-vector instead of a normalised N × C copy)
        norm = torch.linalg.vector_norm(k, dim=-1)  # (B, N)
        den = (norm * norm + eps_squared(self.eps, k.dtype)).sqrt()
        if B == 1:
            # kv rides as the RMS norm's run-time scale: φ(Q) ⊙ kv in one fused pass, then the
            # plain weight W_oᵀ (prepacked); C^-½, the norm's constant, is folded into r
            kv = (den.new_tensor(float(C) ** -0.5) / den).unsqueeze(1) @ (k * v)  # (1, 1, C)
            y = cosine_normalize(q, self.eps, scale=kv.reshape(C)) @ self.proj.weight.t()
        else:  # one scale per batch item: a fused norm takes one (C,) vector only
            kv = (den.new_tensor(1.0) / den).unsqueeze(1) @ (k * v)  # (B, 1, C)
            q = cosine_normalize(q, self.eps)  # φ(Q)
            if integer_layout():  # int8: φ(Q)·M would be uint8 × uint8 (see attention.layout)
                y = (q * kv) @ self.proj.weight.t()
            else:
                mt = kv * self.proj.weight  # (B, C, C): (diag(kv)·W_oᵀ)ᵀ, no Reshape of kv
                y = q @ mt.transpose(1, 2)  # (B, N, C): φ(Q)·M; ORT: one FusedMatMul (transB)
        if self.proj.bias is not None:
            # (1, 1, C), not (C,): ONNX Runtime would fuse a MatMul on a constant weight and a
            # (C,) bias into a Gemm between two copies of the (N, C) output (reshapes to 2-D)
            y = y + self.proj.bias.reshape(1, 1, C)
        return self.proj_drop(y)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.dim} (one per channel), eps={self.eps:g}"
