"""Single attention-block models for the bench: one attention layer (projections + core +
output projection) on a (B, N, C) token tensor, nothing else, so timing isolates the mechanism.

``block_msa`` (softmax, (QKᵀ)V), ``block_sima`` (l1, no softmax; order auto/qk_first/kv_first),
``block_xca`` (XCiT cross-covariance softmax over d×d), ``block_soft`` (Gaussian kernel, Nyström
landmarks, Newton inverse), ``block_soft_norm`` (SOFT-Norm) and ``block_msa_fused`` (``block_msa``
exported as ONNX Runtime's fused attention op, by the builder its export facts name),
``block_mobilevitv2`` (MobileViTv2 separable self-attention: a softmax over N scalars) and
``block_hydra`` (Hydra attention: heads = channels, cosine kernel, no softmax).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from edgeattn.errors import ModelError
from edgeattn.models.registry import ExportFacts, register_variants

KINDS = ("msa", "sima", "xca", "soft", "soft_norm")
#: Kinds whose mechanism fixes the heads (MobileViTv2: one context score; Hydra: heads =
#: channels): ``heads`` is accepted, like every block's shape option, and not used.
HEADLESS_KINDS = ("mobilevitv2", "hydra")
KINDS += HEADLESS_KINDS


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
        if self.dim % self.heads and self.kind not in HEADLESS_KINDS:
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
            h = next((d for d in range(side, 1, -1) if self.tokens % d == 0), None)
            grid = f"--set grid=[{h},{self.tokens // h}]" if h else "--set grid=[H,W] (H·W = N)"
            raise ModelError(
                f"tokens={self.tokens} is not a square; SOFT needs a token grid: pass {grid} "
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
        elif k == "mobilevitv2":
            from edgeattn.attention.separable import SeparableSelfAttention

            self.attn = SeparableSelfAttention(cfg.dim, bias=cfg.qkv_bias)
        elif k == "hydra":
            from edgeattn.attention.hydra import HydraAttention

            self.attn = HydraAttention(cfg.dim, qkv_bias=cfg.qkv_bias)
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


_TOKENS = dict(input="tokens")
#: Export facts per block kind (edgeattn.export reads these; see registry.ExportFacts).
BLOCK_FACTS: dict[str, ExportFacts] = {
    "msa": ExportFacts(**_TOKENS),
    "xca": ExportFacts(
        **_TOKENS,
        method="xca",
        tolerance="TOL_XCA",
        tolerance_reason="l2-normalised q, k and a d×d softmax: as benign as softmax attention",
    ),
    "sima": ExportFacts(
        **_TOKENS,
        method="sima",
        tolerance="TOL_SIMA",
        tolerance_reason="l1 normalisation then two float32 products, the order chosen alike",
    ),
    "soft": ExportFacts(
        **_TOKENS,
        method="soft",
        tolerance="TOL_SOFT",
        tolerance_reason="20 float32 Newton steps for the landmark inverse amplify rounding",
        fixed_grid=(
            "SOFT attention lays the tokens out on the fixed (H, W) grid stored in the block "
            "(landmark conv and the depthwise conv on V need it)"
        ),
    ),
    "msa_fused": ExportFacts(
        **_TOKENS,
        method="fused",
        tolerance="TOL_FUSED",
        tolerance_reason="ORT's fused attention kernel blocks the softmax reductions differently",
        builder="edgeattn.export.fused:build_fused_msa",
    ),
}
BLOCK_FACTS["soft_norm"] = BLOCK_FACTS["soft"]
BLOCK_FACTS["mobilevitv2"] = ExportFacts(
    **_TOKENS,
    method="mobilevitv2",
    tolerance_reason="a softmax over N scalars (not N×N) and float32 GEMMs: as softmax attention",
)
BLOCK_FACTS["hydra"] = ExportFacts(
    **_TOKENS,
    method="hydra",
    tolerance="TOL_XCA",
    tolerance_reason="per-token l2-normalised q, k (cosine kernel) then float32 products, no "
    "softmax: as benign as XCA's l2 normalisation",
)

_DOCS = {
    "msa": "Softmax multi-head self-attention (DeiT), (QKᵀ)V, quadratic in tokens.",
    "xca": "XCiT cross-covariance attention: softmax over the d×d channel map, linear in tokens.",
    "sima": "SimA: l1-normalised Q, K over tokens, no softmax; (QKᵀ)V or Q(KᵀV) by `order`.",
    "soft": "SOFT: Gaussian kernel, Q=K, Nyström landmarks (fixed m by default), Newton inverse.",
    "soft_norm": "SOFT-Norm: SOFT with the symmetric D^-1/2 normalisation of the bottleneck "
    "inverse.",
    "mobilevitv2": "MobileViTv2 separable self-attention: softmax over N scalars, context "
    "vector, ReLU(V) ⊙ context (heads not used).",
    "hydra": "Hydra attention: heads = channels, cosine kernel, φ(Q) ⊙ Σ φ(K) ⊙ V, O(N·C) "
    "(heads not used).",
    "msa_fused": "block_msa written with ONNX Runtime's fused attention op (com.microsoft "
    "MultiHeadAttention, or Attention by fused_op).",
}


def _variants(*kinds: str) -> dict[str, str]:
    return {f"block_{k}": k for k in kinds}


def _doc(name: str, kind: str) -> str:
    return _DOCS[kind]


def _facts(name: str, kind: str) -> ExportFacts:
    return BLOCK_FACTS[kind]


_BLOCK = dict(family="block", doc=_doc, export=_facts)


def _plain_block(
    name: str, kind: str, dim: int = 384, heads: int = 6, tokens: int = 4096, qkv_bias: bool = True
) -> AttentionBlock:
    return _build(kind, dim=dim, heads=heads, tokens=tokens, qkv_bias=qkv_bias)


def _sima_block(
    name: str,
    kind: str,
    dim: int = 384,
    heads: int = 6,
    tokens: int = 4096,
    qkv_bias: bool = True,
    order: str = "auto",
    crossover: int | None = None,
) -> AttentionBlock:
    return _build(
        kind,
        dim=dim,
        heads=heads,
        tokens=tokens,
        qkv_bias=qkv_bias,
        order=order,
        crossover=crossover,
    )


def _soft_block(
    name: str,
    kind: str,
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


FUSED_OPS = ("MultiHeadAttention", "Attention")


class FusedMSABlock(AttentionBlock):
    """A ``block_msa`` whose export is ONNX Runtime's fused attention op (``fused_op``); its
    torch forward is the unfused block, the reference the fused graph is verified against."""

    def __init__(self, cfg: BlockConfig, fused_op: str) -> None:
        super().__init__(cfg)
        self.fused_op = fused_op


def _fused_block(
    name: str,
    kind: str,
    dim: int = 384,
    heads: int = 6,
    tokens: int = 4096,
    qkv_bias: bool = True,
    fused_op: str = "MultiHeadAttention",
) -> AttentionBlock:
    if fused_op not in FUSED_OPS:
        raise ModelError(f"fused_op={fused_op!r}; valid: {', '.join(FUSED_OPS)}")
    cfg = BlockConfig(kind="msa", dim=dim, heads=heads, tokens=tokens, qkv_bias=qkv_bias)
    return FusedMSABlock(cfg, fused_op)


BLOCK_MODELS = {
    **register_variants(_variants("msa", "xca"), **_BLOCK)(_plain_block),
    **register_variants(_variants("sima"), **_BLOCK)(_sima_block),
    **register_variants(_variants("soft", "soft_norm"), **_BLOCK)(_soft_block),
    **register_variants(_variants("msa_fused"), **_BLOCK)(_fused_block),
    **register_variants(_variants("mobilevitv2", "hydra"), **_BLOCK)(_plain_block),
}
globals().update(BLOCK_MODELS)  # block_msa, block_sima, ... as module attributes
