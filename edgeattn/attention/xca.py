"""XCiT cross-covariance attention (XCA) and XCiT's softmax class attention.

XCA attends over channels instead of tokens: per head, Q and K are ℓ2-normalised over the token
axis, the (d × d) matrix ``Q̂ᵀ K̂`` is scaled by a learned per-head ``temperature`` and
softmax-normalised over its last axis, and mixes the channels of V. Cost is linear in N.
Names (``qkv``, ``proj``, ``temperature``) follow facebookresearch/xcit and timm.
"""

from __future__ import annotations

import torch
from torch import nn


def l2_normalize(t: torch.Tensor, dim: int, eps: float = 1e-12) -> torch.Tensor:
    """``t / max(‖t‖₂, eps)`` along ``dim``: the formula of ``F.normalize`` (p=2), written as
    Mul + ReduceSum + Sqrt so it exports at opset 17 (ReduceL2 takes ``axes`` as an input from
    opset 18 on, and torch's exporter cannot convert that down). Equal up to float rounding."""
    return t / (t * t).sum(dim=dim, keepdim=True).sqrt().clamp_min(eps)


class XCA(nn.Module):
    """Cross-covariance attention, (B, N, C) -> (B, N, C)."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        del qk_scale  # accepted like the official XCA; the learned temperature replaces it
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 4, 1).unbind(0)  # 3 x (B, h, d, N)
        q = l2_normalize(q, dim=-1)  # ℓ2 over tokens, eps 1e-12
        k = l2_normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature  # (B, h, d, d)
        attn = self.attn_drop(attn.softmax(dim=-1))
        x = (attn @ v).permute(0, 3, 1, 2).reshape(B, N, C)  # (B, h, d, N) -> (B, N, C)
        return self.proj_drop(self.proj(x))


class ClassAttention(nn.Module):
    """XCiT/CaiT softmax class attention, (B, N, C) -> (B, N, C).

    Only the class token (token 0) queries: ``softmax(q_cls·kᵀ · d_h^-1/2) v``. Returns
    ``cat([proj(cls), x[:, 1:]])`` with the input's patch tokens unchanged, as the official code.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        qkv_bias: bool = False,
        qk_scale: float | None = None,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, h, N, d)
        attn = (q[:, :, :1] @ k.transpose(-2, -1)) * self.scale  # (B, h, 1, N)
        attn = self.attn_drop(attn.softmax(dim=-1))
        cls = (attn @ v).transpose(1, 2).reshape(B, 1, C)  # (B, 1, C)
        cls = self.proj_drop(self.proj(cls))
        return torch.cat([cls, x[:, 1:]], dim=1)  # (B, N, C)
