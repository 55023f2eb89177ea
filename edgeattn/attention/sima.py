"""SimA: softmax-free attention with ℓ1-normalised queries and keys (UCDvision/sima).

``out = Q̂ K̂ᵀ V`` per head, where each channel column of Q and of K is divided by its ℓ1 norm over
the **token** axis (as ``F.normalize(p=1, dim=-2)``, eps 1e-12). No softmax, no 1/√d scale. The
product is associative, so the evaluation order is a policy (:mod:`edgeattn.attention.order`).
Parameter names (``qkv``, ``proj``) follow the official code so its checkpoints load strictly.
"""

from __future__ import annotations

import torch
from torch import nn

from edgeattn.attention.order import order_threshold, validate_crossover, validate_order

SIMA_EPS = 1e-12  # F.normalize default, as in the official SimA block
CLASS_ATTN_EPS = 1e-6  # the official softmax-free class-attention layers


def l1_normalize_tokens(t: torch.Tensor, eps: float) -> torch.Tensor:
    """ℓ1-normalise (B, h, N, d) over the token axis N: ``t / max(Σ_N |t|, eps)``.

    The formula of ``F.normalize(p=1, dim=-2, eps=eps)`` (same clamp, same eps), written as
    Abs + ReduceSum instead of ``linalg.vector_norm``: F.normalize exports to ReduceL1, whose
    ``axes`` became an input in opset 18, and torch's exporter then cannot produce opset 17.
    The two agree to float rounding (a few ulp; reductions may sum in another order).

    The clamp is ``max(eps, finfo(t.dtype).tiny)``: in float32/float64 that is ``eps`` itself
    (1e-12 > 1.2e-38), so the numerics and the exported fp32 graph are unchanged; in float16,
    where 1e-12 rounds to 0 and an all-zero column would give 0/0 = NaN, it is float16's
    smallest normal number (6.1e-5), so such a column gives 0. (The fp16 ONNX file gets the same
    floor from ``edgeattn.export.precision``, since the traced graph holds the fp32 constant.)
    """
    floor = max(float(eps), float(torch.finfo(t.dtype).tiny)) if t.is_floating_point() else eps
    return t / t.abs().sum(dim=-2, keepdim=True).clamp_min(floor)


def sima_qk_first(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(Q̂ K̂ᵀ) V`` for (B, h, N, d) inputs: an (N × N) intermediate, cost ≈ 2·N²·C."""
    return (q @ k.transpose(-2, -1)) @ v  # (B, h, N, N) @ (B, h, N, d) -> (B, h, N, d)


def sima_kv_first(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``Q̂ (K̂ᵀ V)`` for (B, h, N, d) inputs: a (d × d) intermediate, cost ≈ 2·N·C·d."""
    return q @ (k.transpose(-2, -1) @ v)  # (B, h, N, d) @ (B, h, d, d) -> (B, h, N, d)


class SimA(nn.Module):
    """SimA multi-head attention, (B, N, C) -> (B, N, C).

    ``order`` (``auto`` | ``qk_first`` | ``kv_first``) and ``crossover`` are plain attributes that
    export code may change after construction. ``auto`` picks ``qk_first`` when
    ``N < (crossover or head_dim)``: in eager mode by a Python comparison; while being compiled
    or exported (dynamo, ``torch.export``, ``torch.onnx.export(dynamo=True)``) with a dynamic
    token axis through ``torch.cond``, so the graph keeps both branches (an ONNX ``If``). A
    static token count, or a fixed order, gives a graph with one branch. ``qk_scale`` and
    ``attn_drop`` are accepted for signature compatibility; like the official code, nothing
    applies them (no scale; no attention matrix exists in the ``kv_first`` order).
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

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Q̂K̂ᵀV on normalised (B, h, N, d) tensors, in the order the policy selects."""
        order = validate_order(self.order)
        if order == "qk_first":
            return sima_qk_first(q, k, v)
        if order == "kv_first":
            return sima_kv_first(q, k, v)
        threshold = order_threshold(self.head_dim, self.crossover)
        n_tokens = q.shape[-2]
        if torch.compiler.is_compiling() and isinstance(n_tokens, torch.SymInt):
            # Dynamic token axis: keep the choice in the graph as a runtime branch (ONNX If).
            # A static size falls through and is resolved at export, like eager mode.
            return torch.cond(n_tokens < threshold, sima_qk_first, sima_kv_first, (q, k, v))
        return sima_qk_first(q, k, v) if n_tokens < threshold else sima_kv_first(q, k, v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, h, N, d)
        q = l1_normalize_tokens(q, self.eps)
        k = l1_normalize_tokens(k, self.eps)
        x = self.attend(q, k, v).transpose(1, 2).reshape(B, N, C)  # (B, N, C)
        return self.proj_drop(self.proj(x))

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
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, h, N, d)
        q = l1_normalize_tokens(q, self.eps)
        k = l1_normalize_tokens(k, self.eps)
        attn = q[:, :, :1] @ k.transpose(-2, -1)  # (B, h, 1, N): class query only
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
