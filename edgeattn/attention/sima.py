"""SimA: softmax-free attention with ℓ1-normalised queries and keys (UCDvision/sima).

``out = Q̂ K̂ᵀ V`` per head, where each channel column of Q and of K is divided by its ℓ1 norm over
the **token** axis (as ``F.normalize(p=1, dim=-2)``, eps 1e-12). No softmax, no 1/√d scale. The
product is associative, so the evaluation order is a policy (:mod:`edgeattn.attention.order`).
Parameter names (``qkv``, ``proj``) follow the official code so its checkpoints load strictly.

**Evaluated at the matmul floor.** The ℓ1 normalisation is a per-channel scale
(``Q̂ = Q·diag(1/‖q‖₁)``, ``K̂ = K·diag(1/‖k‖₁)``), so the forward never divides the two N×d
tensors. In the ``kv_first`` order, ``Q̂(K̂ᵀV) = Q·(diag(1/(‖q‖₁‖k‖₁))·KᵀV)``: the scales land on
the d×d product; from N ≥ C the output projection ``W_o`` is folded in as well, so the whole tail
is one (N×C)·(C×C) matmul ``Q·M``, ``M = blockdiag_h(scaled KᵀV)·W_oᵀ`` (C²·d, independent of N).
In the ``qk_first`` order, ``(Q̂K̂ᵀ)V = (Q·diag(1/(‖q‖₁‖k‖₁)))·KᵀV``: one scaled N×d operand.
No (B,N,3,h,d) tensor is split and transposed: in ``qk_first`` Q, K and V of each head come
straight from per-head slices of ``qkv``'s weight ((B,1,N,C)·(h,C,d)); in ``kv_first`` K and V
are projected channels-first (``W·xᵀ``, (B,C,N), each head's rows contiguous) by two full-width
GEMMs, which ORT runs faster than 2h per-head ones at large N. The same arithmetic as the
official block in
exact arithmetic, each channel divided by ``max(‖·‖₁, eps)``; in float32 it agrees with the
textbook order to rounding (about 1e-7 of the output's scale; see tests/test_sima.py).
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn import functional as F

from edgeattn.attention.layout import Projection, bias_in_weight, integer_layout, linear_t
from edgeattn.attention.order import order_threshold, validate_crossover, validate_order

SIMA_EPS = 1e-12  # F.normalize default, as in the official SimA block
CLASS_ATTN_EPS = 1e-6  # the official softmax-free class-attention layers


def l1_floor(eps: float, dtype: torch.dtype) -> float:
    """The clamp of the ℓ1 norms: ``max(eps, finfo(dtype).tiny)``.

    In float32/float64 that is ``eps`` itself (1e-12 > 1.2e-38), so the numerics and the exported
    fp32 graph are the official ones; in float16, where 1e-12 rounds to 0 and an all-zero column
    would give 0/0 = NaN, it is float16's smallest normal number (6.1e-5), so such a column gives
    0. (The fp16 ONNX file gets the same floor from ``edgeattn.export.precision``, since the
    traced graph holds the fp32 constant.)
    """
    return max(float(eps), float(torch.finfo(dtype).tiny)) if dtype.is_floating_point else eps


def l1_normalize_tokens(t: torch.Tensor, eps: float) -> torch.Tensor:
    """ℓ1-normalise (B, h, N, d) over the token axis N: ``t / max(Σ_N |t|, eps)``.

    The formula of ``F.normalize(p=1, dim=-2, eps=eps)`` (same clamp, same eps; see
    :func:`l1_floor`), written as Abs + ReduceSum instead of ``linalg.vector_norm``: F.normalize
    exports to ReduceL1, whose ``axes`` became an input in opset 18, and torch's exporter then
    cannot produce opset 17. The reference form of what :class:`SimA` computes as scales.
    """
    return t / token_l1_norm(t, eps)


def token_l1_norm(t: torch.Tensor, eps: float) -> torch.Tensor:
    """``max(Σ_N |t|, eps)`` over the token axis of (B, h, N, d): (B, h, 1, d)."""
    return t.abs().sum(dim=-2, keepdim=True).clamp_min(l1_floor(eps, t.dtype))


def token_l1_norm_flat(t: torch.Tensor, eps: float) -> torch.Tensor:
    """``max(Σ_N |t|, eps)`` over the token axis of (B, N, C): (B, 1, C).

    The sum over tokens is a (1×N)·(N×C) product with a ones row: ONNX Runtime's ReduceSum over
    the middle axis of a (1, N, C) tensor takes a slow path (measured, ORT 1.31 CPU, C = 384:
    1.6 ms at N = 4096 and 9.3 ms at N = 16384, against 0.12 ms and 1.2 ms for the product).
    """
    ones = torch.ones(1, t.shape[-2], dtype=t.dtype, device=t.device)
    return (ones @ t.abs()).clamp_min(l1_floor(eps, t.dtype))


def sima_qk_first(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(Q̂ K̂ᵀ) V`` for normalised (B, h, N, d) inputs: an (N × N) intermediate, ≈ 2·N²·C."""
    return (q @ k.transpose(-2, -1)) @ v  # (B, h, N, N) @ (B, h, N, d) -> (B, h, N, d)


def sima_kv_first(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``Q̂ (K̂ᵀ V)`` for normalised (B, h, N, d) inputs: a (d × d) intermediate, ≈ 2·N·C·d."""
    return q @ (k.transpose(-2, -1) @ v)  # (B, h, N, d) @ (B, h, d, d) -> (B, h, N, d)


def head_projection(
    qkv: nn.Linear | Projection, x: torch.Tensor, part: int, heads: int
) -> torch.Tensor:
    """Part ``part`` (0 q, 1 k, 2 v) of ``qkv(x)`` per head, (B, N, C) -> (B, h, N, d).

    Computed as (B, 1, N, C)·(h, C, d) from a view of the weight, so the result is born in the
    head-major layout (the weight slices are constants in an exported graph)."""
    C = qkv.in_features  # an int, not x's traced shape: the weight view folds to a constant
    out = qkv.out_features // 3
    d = out // heads
    w = qkv.weight[part * out : (part + 1) * out].reshape(heads, d, C).transpose(1, 2)
    y = x.unsqueeze(1) @ w  # (B, h, N, d)
    if qkv.bias is not None:
        y = y + qkv.bias[part * out : (part + 1) * out].reshape(heads, 1, d)
    return y


def channel_projection(
    qkv: nn.Linear | Projection, x: torch.Tensor, part: int, bias: bool = True
) -> torch.Tensor:
    """Part ``part`` of ``qkv(x)`` channels-first, ``W_part·xᵀ``: (B, N, C) -> (B, C, N)
    (:func:`~edgeattn.attention.layout.linear_t`). ``bias=False`` leaves the bias out."""
    out = qkv.out_features // 3
    sl = slice(part * out, (part + 1) * out)
    b = qkv.bias[sl] if bias and qkv.bias is not None else None
    return linear_t(qkv.weight[sl], b, x)


def flat_projection(qkv: nn.Linear | Projection, x: torch.Tensor, part: int) -> torch.Tensor:
    """Part ``part`` of ``qkv(x)`` in the token-major layout, (B, N, C) -> (B, N, C)."""
    out = qkv.out_features // 3
    sl = slice(part * out, (part + 1) * out)
    return F.linear(x, qkv.weight[sl], None if qkv.bias is None else qkv.bias[sl])


class SimA(nn.Module):
    """SimA multi-head attention, (B, N, C) -> (B, N, C).

    ``order`` (``auto`` | ``qk_first`` | ``kv_first``) and ``crossover`` are set at construction
    (:func:`set_sima_order` changes them on every SimA of a model). ``auto`` picks ``qk_first``
    when ``N < (crossover or head_dim)``: in eager mode by a Python comparison; while being
    compiled or exported (dynamo, ``torch.export``, ``torch.onnx.export(dynamo=True)``) with a
    dynamic token axis through ``torch.cond``, so the graph keeps both branches (an ONNX ``If``).
    A static token count, or a fixed order, gives a graph with one branch. ``qk_scale`` and
    ``attn_drop`` are accepted for signature compatibility; like the official code, nothing
    applies them (no scale; no attention matrix exists in the ``kv_first`` order). See the
    module doc for how each order is evaluated.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        order: str = "auto",
        crossover: int | None = None,
        eps: float = SIMA_EPS,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        del qk_scale, attn_drop  # accepted like the official SimA, never used (no scale, no A)
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.order = validate_order(order)
        self.crossover = validate_crossover(crossover)
        self.eps = eps
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k = head_projection(self.qkv, x, 1, self.num_heads)  # (B, h, N, d)
        v = head_projection(self.qkv, x, 2, self.num_heads)
        return k, v, token_l1_norm(k, self.eps)  # ‖k‖₁: (B, h, 1, d)

    def qk_first(self, x: torch.Tensor) -> torch.Tensor:
        """``proj((Q̂K̂ᵀ)V)``: the (N × N) order, Q scaled once by ``1/(‖q‖₁‖k‖₁)``."""
        B, N, C = x.shape
        k, v, nk = self._keys_values(x)
        q = head_projection(self.qkv, x, 0, self.num_heads)
        q = q / token_l1_norm(q, self.eps) / nk  # two per-channel divisors, as F.normalize
        o = (q @ k.transpose(-2, -1)) @ v  # (B, h, N, N) @ (B, h, N, d)
        return self.proj(o.transpose(1, 2).reshape(B, N, C))

    def kv_first(self, x: torch.Tensor, fold: bool | None = None) -> torch.Tensor:
        """``proj(Q̂(K̂ᵀV))`` with the scales on the (d × d) product ``K̂ᵀV``.

        K and V are projected channels-first, ``W·xᵀ`` (B, C, N), two full-width GEMMs that ORT
        runs with x transposed in the kernel (FusedMatMul transB), so each head's rows are
        contiguous and ``KᵀV = K_t·V_tᵀ`` per head needs no copy; ``‖k‖₁`` is a reduction over
        the last axis. From N ≥ C tokens (and always with a dynamic token axis), W_o is folded in
        too: the tail is ``Q·M + b`` with ``M = blockdiag(scaled KᵀV)·W_oᵀ``, one (N×C)·(C×C)
        matmul instead of the per-head product, a transpose and the projection; M costs C²·d
        multiply-adds, which the N·C·d saved pay for only from N ≥ C. ``fold`` forces the
        choice (inside ``torch.cond`` branches the token count cannot be tested). In a graph
        built for integer GEMMs (:func:`~edgeattn.attention.layout.integer_layout`, an int8
        export) W_o is never folded: Q·M would multiply two activations, uint8 × uint8, which
        ORT runs far slower than the per-head product and the weight projection (block_sima at
        N = 1024, int8-static: 4.12 -> 3.72 ms, interleaved). There the qkv biases also ride in
        the products (:func:`~edgeattn.attention.layout.bias_in_weight`: x with a ones column,
        one uint8 Concat) instead of the Q and K bias QLinearAdds and V's (Kᵀ1)·b_vᵀ tail:
        block_sima int8-static 0.89-0.92x the time at N = 4096 and 0.93-0.96x at 1024
        (interleaved, both orders, two runs each, 2026-12-05), the same error against PyTorch."""
        B, N, C = x.shape
        h, d = self.num_heads, self.head_dim
        qkv: nn.Linear | Projection = self.qkv
        if integer_layout():
            # int8: Q·M would be uint8 × uint8 (see attention.layout); and each bias rides in
            # its product (x with a ones column), not in a requantising QLinearAdd of it
            fold = False
            x, qkv = bias_in_weight(self.qkv, x)
        kv = self._scaled_kv(x, qkv)  # (B, h, d, d): K̂ᵀV
        if fold is None:
            fold = isinstance(N, torch.SymInt) or N >= C
        if not fold:
            q = head_projection(qkv, x, 0, h)  # (B, h, N, d)
            o = q @ (kv / token_l1_norm(q, self.eps).transpose(-2, -1))  # Q̂(K̂ᵀV)
            return self.proj(o.transpose(1, 2).reshape(B, N, C))
        q = flat_projection(self.qkv, x, 0)  # (B, N, C): the layout Q·M wants
        kv = kv / token_l1_norm_flat(q, self.eps).reshape(B, h, d, 1)  # rows / ‖q‖₁
        w_o = self.proj.weight.t().reshape(h, d, h * d)  # W_oᵀ's rows per head (a constant)
        m = (kv @ w_o).reshape(B, C, C)  # blockdiag(kv)·W_oᵀ
        y = q @ m
        return y if self.proj.bias is None else y + self.proj.bias

    def _scaled_kv(self, x: torch.Tensor, qkv: nn.Linear | Projection) -> torch.Tensor:
        """``K̂ᵀV = diag(1/‖k‖₁)·KᵀV`` per head, (B, h, d, d), from channels-first K and V.

        V's bias is applied on the d×d product, ``Kᵀ(XW_v + 1b_vᵀ) = Kᵀ(XW_v) + (Kᵀ1)b_vᵀ``,
        not on the (C × N) projection. In a graph built for integer GEMMs ``qkv`` has no bias
        (:meth:`kv_first` gives it the biases as a weight column, so V's is in its product), and
        V is projected token-major and transposed once to (B, h, N, d): channels-first, the
        activation-first rewrite would transpose it there and KᵀV back (block_sima int8-static:
        0.94-0.98x the time at N = 4096, 0.94-0.97x at 1024, interleaved, both orders)."""
        B, N, _ = x.shape
        h, d = self.num_heads, self.head_dim
        k_t = channel_projection(qkv, x, 1).reshape(B, h, d, N)
        nk = k_t.abs().sum(dim=-1, keepdim=True).clamp_min(l1_floor(self.eps, x.dtype))
        if integer_layout():
            v = flat_projection(qkv, x, 2).reshape(B, N, h, d).transpose(1, 2)
        else:
            v = channel_projection(qkv, x, 2, bias=False).reshape(B, h, d, N).transpose(-2, -1)
        kv = k_t @ v  # (B, h, d, d) = Kᵀ(XW_v)
        if qkv.bias is not None:
            b_v = qkv.bias[2 * h * d :].reshape(h, 1, d)
            kv = kv + k_t.sum(dim=-1, keepdim=True) * b_v
        return kv / nk  # rows / ‖k‖₁ (nk is (B, h, d, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        order = validate_order(self.order)
        if order == "auto":
            threshold = order_threshold(self.head_dim, self.crossover)
            n_tokens = x.shape[-2]
            if torch.compiler.is_compiling() and isinstance(n_tokens, torch.SymInt):
                # Dynamic token axis: keep the choice in the graph as a runtime branch (ONNX If).
                # A static size falls through and is resolved at export, like eager mode.
                folded = functools.partial(self.kv_first, fold=True)
                y = torch.cond(n_tokens < threshold, self.qk_first, folded, (x,))
                return self.proj_drop(y)
            order = "qk_first" if n_tokens < threshold else "kv_first"
        y = self.qk_first(x) if order == "qk_first" else self.kv_first(x)
        return self.proj_drop(y)

    def extra_repr(self) -> str:
        return (
            f"heads={self.num_heads}, head_dim={self.head_dim}, order={self.order!r}, "
            f"crossover={self.crossover}, eps={self.eps:g}"
        )


class SimAClassAttention(nn.Module):
    """Softmax-free class attention of the SimA nets (CaiT/XCiT style), (B, N, C) -> (B, N, C).

    Token 0 is the class token. Q and K are ℓ1-normalised over all N tokens (eps 1e-6), only the
    class query is used, no softmax and no scale (the official code computes a scale but never
    applies it). Returns ``cat([proj(cls), x[:, 1:]])``: the patch tokens of the *input* pass
    through unchanged, as in the official code (the block's residual then adds them again).
    As in :class:`SimA`, the normalisation is applied as scales: the class query is divided by
    ``‖q‖₁‖k‖₁`` (a 1×C row), K is never divided.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        eps: float = CLASS_ATTN_EPS,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        del qk_scale  # accepted, unused (as in the official code)
        self.num_heads = num_heads
        self.eps = eps
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        h = self.num_heads
        k = head_projection(self.qkv, x, 1, h)  # (B, h, N, d)
        v = head_projection(self.qkv, x, 2, h)
        q = flat_projection(self.qkv, x, 0)  # (B, N, C): every token's q, for ‖q‖₁
        q_cls = q[:, :1] / token_l1_norm_flat(q, self.eps)  # (B, 1, C)
        q_cls = q_cls.reshape(B, 1, h, C // h).transpose(1, 2) / token_l1_norm(k, self.eps)
        attn = q_cls @ k.transpose(-2, -1)  # (B, h, 1, N): class query only
        attn = self.attn_drop(attn)
        cls = (attn @ v).transpose(1, 2).reshape(B, 1, C)  # (B, 1, C)
        cls = self.proj_drop(self.proj(cls))
        return torch.cat([cls, x[:, 1:]], dim=1)  # (B, N, C)


def set_sima_order(module: nn.Module, order: str, crossover: int | None = None) -> int:
    """Set ``order`` and ``crossover`` on every :class:`SimA` inside ``module``; return how many."""
    order = validate_order(order)
    crossover = validate_crossover(crossover)
    count = 0
    for m in module.modules():
        if isinstance(m, SimA):
            m.order, m.crossover = order, crossover
            count += 1
    return count
