"""Single attention-block models for the bench: one attention layer (projections + core +
output projection) on a (B, N, C) token tensor, nothing else, so timing isolates the mechanism.

``block_msa`` (softmax, (QKᵀ)V), ``block_sima`` (l1, no softmax; order auto/qk_first/kv_first),
``block_xca`` (XCiT cross-covariance softmax over d×d), ``block_soft`` (Gaussian kernel, Nyström
landmarks, Newton inverse) and ``block_soft_norm`` (SOFT-Norm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from edgeattn.errors import ModelError
from edgeattn.models.registry import register_model

KINDS = ("msa", "sima", "xca", "soft", "soft_norm")


@dataclass(frozen=True)
class BlockConfig:
    kind: str
    dim: int = 384
    heads: int = 6
    tokens: int = 4096
    grid: tuple[int, int] | None = None  # (H, W) for kinds that need a token grid (SOFT)
    qkv_bias: bool = True
    order: str = "auto"  # SimA only
    crossover: int | None = None  # SimA only; None = official rule N < head_dim
    landmarks: str = "adaptive"  # SOFT only: conv | avgpool | adaptive
    num_landmarks: int = 49  # SOFT adaptive: fixed m (a square)
    ratio: int = 8  # SOFT conv/avgpool sampling ratio
    conv_size: int = 3  # SOFT depthwise skip on V
    newton_iters: int = 20

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ModelError(f"unknown block kind {self.kind!r}; valid: {', '.join(KINDS)}")
        for name in (
            "dim",
            "heads",
            "tokens",
            "newton_iters",
            "num_landmarks",
            "ratio",
            "conv_size",
        ):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise ModelError(f"{name}={v!r} must be a positive integer")
        if self.dim % self.heads:
            raise ModelError(f"dim={self.dim} is not divisible by heads={self.heads}")
        if self.kind in ("soft", "soft_norm"):
            H, W = self.grid_hw
            if H * W != self.tokens:
                raise ModelError(f"grid {H}x{W} does not hold tokens={self.tokens}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def grid_hw(self) -> tuple[int, int]:
        if self.grid is not None:
            return int(self.grid[0]), int(self.grid[1])
        side = math.isqrt(self.tokens)
        if side * side != self.tokens:
            raise ModelError(
                f"tokens={self.tokens} is not a square; SOFT needs a token grid: pass grid=(H, W) "
                f"or a square token count such as {side * side} or {(side + 1) ** 2}"
            )
        return side, side


class AttentionBlock(nn.Module):
    """One attention layer on (B, N, C) tokens. ``self.attn`` is the mechanism's module."""

    def __init__(self, cfg: BlockConfig) -> None:
        super().__init__()
        self.config = cfg
        k = cfg.kind
        if k == "msa":
            from edgeattn.attention.softmax import Attention

            self.attn = Attention(cfg.dim, cfg.heads, qkv_bias=cfg.qkv_bias)
        elif k == "sima":
            from edgeattn.attention.sima import SimA

            self.attn = SimA(
                cfg.dim, cfg.heads, qkv_bias=cfg.qkv_bias, order=cfg.order, crossover=cfg.crossover
            )
        elif k == "xca":
            from edgeattn.attention.xca import XCA

            self.attn = XCA(cfg.dim, cfg.heads, qkv_bias=cfg.qkv_bias)
        else:
            from edgeattn.attention.soft import SoftAttention

            self.grid = cfg.grid_hw
            self.attn = SoftAttention(
                cfg.dim,
                cfg.heads,
                qkv_bias=cfg.qkv_bias,
                ratio=cfg.ratio,
                conv_size=cfg.conv_size,
                landmarks=cfg.landmarks,
                num_landmarks=cfg.num_landmarks,
                newton_iters=cfg.newton_iters,
                norm=(k == "soft_norm"),
            )

    @property
    def needs_grid(self) -> bool:
        return self.config.kind in ("soft", "soft_norm")

    def example_input(self, batch: int = 1, tokens: int | None = None) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        n = tokens or self.config.tokens
        return torch.randn(batch, n, self.config.dim, generator=g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.needs_grid:
            H, W = self.grid
            return self.attn(x, H, W)
        return self.attn(x)


def _build(kind: str, **kw) -> AttentionBlock:
    grid = kw.pop("grid", None)
    if grid is not None:
        grid = tuple(int(v) for v in grid)
    return AttentionBlock(BlockConfig(kind=kind, grid=grid, **kw))


@register_model(family="block")
def block_msa(
    dim: int = 384, heads: int = 6, tokens: int = 4096, qkv_bias: bool = True
) -> AttentionBlock:
    """Softmax multi-head self-attention (DeiT), (QKᵀ)V, quadratic in tokens."""
    return _build("msa", dim=dim, heads=heads, tokens=tokens, qkv_bias=qkv_bias)


@register_model(family="block")
def block_sima(
    dim: int = 384,
    heads: int = 6,
    tokens: int = 4096,
    qkv_bias: bool = True,
    order: str = "auto",
    crossover: int | None = None,
) -> AttentionBlock:
    """SimA: l1-normalised Q, K over tokens, no softmax; (QKᵀ)V or Q(KᵀV) by `order`."""
    return _build(
        "sima",
        dim=dim,
        heads=heads,
        tokens=tokens,
        qkv_bias=qkv_bias,
        order=order,
        crossover=crossover,
    )


@register_model(family="block")
def block_xca(
    dim: int = 384, heads: int = 6, tokens: int = 4096, qkv_bias: bool = True
) -> AttentionBlock:
    """XCiT cross-covariance attention: softmax over the d×d channel map, linear in tokens."""
    return _build("xca", dim=dim, heads=heads, tokens=tokens, qkv_bias=qkv_bias)


def _soft_entry(kind: str, doc: str):
    def entry(
        dim: int = 384,
        heads: int = 6,
        tokens: int = 4096,
        grid: tuple[int, int] | None = None,
        qkv_bias: bool = True,
        landmarks: str = "adaptive",
        num_landmarks: int = 49,
        ratio: int = 8,
        conv_size: int = 3,
        newton_iters: int = 20,
    ) -> AttentionBlock:
        return _build(
            kind,
            dim=dim,
            heads=heads,
            tokens=tokens,
            grid=grid,
            qkv_bias=qkv_bias,
            landmarks=landmarks,
            num_landmarks=num_landmarks,
            ratio=ratio,
            conv_size=conv_size,
            newton_iters=newton_iters,
        )

    entry.__name__ = entry.__qualname__ = f"block_{kind}"
    entry.__doc__ = doc
    return register_model(entry, family="block")


block_soft = _soft_entry(
    "soft", "SOFT: Gaussian kernel, Q=K, Nyström landmarks (fixed m by default), Newton inverse."
)
block_soft_norm = _soft_entry(
    "soft_norm",
    "SOFT-Norm: SOFT with the symmetric D^-1/2 normalisation of the bottleneck inverse.",
)
