"""XCiT-style networks with SimA attention (UCDvision/sima), and the shared XCiT skeleton.

One network class, :class:`XCiTVisionTransformer`, serves both families: ``attention="sima"``
(softmax-free SimA + softmax-free class attention, registered here as ``sima_*``) and
``attention="xca"`` (XCiT's softmax cross-covariance attention + softmax class attention,
registered by :mod:`edgeattn.models.xcit` as ``xcit_*``). Variants are the data in
:data:`SIZES` x :data:`PATCH_SIZES`.

Parameter names and shapes equal the official checkpoints (``SyncBatchNorm`` is ``BatchNorm2d``
here: same keys and eval numerics). Differences from the official forward, all numerically
neutral in eval: the nano models' in-place ``x[:, 0:1] = norm2(x[:, 0:1])`` is a ``cat``; the
Fourier positional encoding is computed once for the grid and broadcast over the batch; the final
LayerNorm is applied to the class token only; eval and train both return logits (no ``(x, x)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from edgeattn.attention.order import validate_crossover, validate_order
from edgeattn.attention.sima import SimA, SimAClassAttention
from edgeattn.attention.xca import XCA, ClassAttention
from edgeattn.errors import ModelError
from edgeattn.models.layers import Mlp, init_vit_weights
from edgeattn.models.registry import ExportFacts, PaperFigures, register_variants

LN_EPS = 1e-6
ATTENTIONS = ("sima", "xca")
PATCH_SIZES = (16, 8)
# name -> (embed_dim, depth, num_heads, eta (LayerScale init), tokens_norm); XCiT's N/T/S/M/L.
SIZES: dict[str, tuple[int, int, int, float, bool]] = {
    "nano_12": (128, 12, 4, 1.0, False),
    "tiny_12": (192, 12, 4, 1.0, True),
    "small_12": (384, 12, 8, 1.0, True),
    "tiny_24": (192, 24, 4, 1e-5, True),
    "small_24": (384, 24, 8, 1e-5, True),
    "medium_24": (512, 24, 8, 1e-5, True),
    "large_24": (768, 24, 16, 1e-5, True),
}


def check_img_size(name: str, img_size: object, patch_size: int) -> int:
    """``img_size`` must be a positive int divisible by ``patch_size``; raise ModelError if not."""
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size <= 0:
        raise ModelError(f"{name}: img_size={img_size!r} must be a positive int")
    if img_size % patch_size:
        raise ModelError(
            f"{name}: img_size={img_size} is not divisible by the patch size {patch_size}",
            hint=f"use a multiple of {patch_size}, e.g. {max(patch_size, img_size // patch_size * patch_size)}",
        )
    return img_size


def check_num_classes(name: str, num_classes: object) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ModelError(f"{name}: num_classes={num_classes!r} must be an int >= 0")
    return num_classes


def check_order(name: str, order: object, crossover: object) -> None:
    """Order policy options, re-raised as ModelError (a ValueError) naming the model."""
    try:
        validate_order(order)
        validate_crossover(crossover)
    except ValueError as e:
        raise ModelError(f"{name}: {e}") from None


def check_input_size(name: str, x: torch.Tensor, patch_size: int) -> None:
    """Eager-only check that an image batch (B, C, H, W) tiles into patches. Skipped while
    tracing/compiling, where a shape test would freeze or guard a dynamic resolution."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    if x.ndim != 4:
        raise ModelError(
            f"{name}: expected an image batch (B, C, H, W), got shape {tuple(x.shape)}"
        )
    H, W = x.shape[-2:]
    if H % patch_size or W % patch_size:
        raise ModelError(
            f"{name}: input size {H}x{W} is not divisible by the patch size {patch_size}"
        )


@dataclass(frozen=True)
class XCiTConfig:
    """Hyper-parameters of one XCiT-style network (validated once, at construction)."""

    name: str
    attention: str  # "sima" or "xca"
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    eta: float  # LayerScale init of gamma1/2/3
    tokens_norm: bool  # class-attention norm2 on all tokens (True) or the class token only
    mlp_ratio: float = 4.0
    cls_attn_layers: int = 2
    img_size: int = 224
    num_classes: int = 1000
    order: str = "auto"  # SimA only; the construction-time value (modules may be changed later)
    crossover: int | None = None

    def __post_init__(self) -> None:
        if self.attention not in ATTENTIONS:
            raise ModelError(
                f"{self.name}: attention={self.attention!r}; valid: {', '.join(ATTENTIONS)}"
            )
        if self.patch_size not in PATCH_SIZES:
            raise ModelError(
                f"{self.name}: patch_size={self.patch_size!r}; the conv patch embedding supports {PATCH_SIZES}"
            )
        if self.embed_dim % self.num_heads or self.embed_dim % 8:
            raise ModelError(
                f"{self.name}: embed_dim={self.embed_dim} must be divisible by num_heads and 8"
            )
        check_img_size(self.name, self.img_size, self.patch_size)
        check_num_classes(self.name, self.num_classes)
        check_order(self.name, self.order, self.crossover)

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads


def conv3x3_bn(in_ch: int, out_ch: int, stride: int) -> nn.Sequential:
    """3x3 conv (no bias) + BatchNorm2d, keys ``0.weight`` / ``1.*``."""
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
    )


class ConvPatchEmbed(nn.Module):
    """Stride-2 3x3 conv+BN stages with GELU between: 4 stages for patch 16, 3 for patch 8.
    (B, 3, H, W) -> (B, D, H/p, W/p)."""

    def __init__(self, patch_size: int = 16, embed_dim: int = 768, in_chans: int = 3) -> None:
        super().__init__()
        if patch_size not in PATCH_SIZES:
            raise ModelError(
                f"patch_size={patch_size!r}; the conv patch embedding supports {PATCH_SIZES}"
            )
        stages = int(math.log2(patch_size))  # 16 -> 4, 8 -> 3
        widths = [embed_dim // 2 ** (stages - 1 - i) for i in range(stages)]
        layers: list[nn.Module] = []
        prev = in_chans
        for i, width in enumerate(widths):
            if i:
                layers.append(nn.GELU())
            layers.append(conv3x3_bn(prev, width, 2))
            prev = width
        self.proj = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class LPI(nn.Module):
    """Local patch interaction: depthwise 3x3 conv -> GELU -> BatchNorm2d -> depthwise 3x3 conv
    over the token grid. (B, N, C) -> (B, N, C)."""

    def __init__(self, dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(dim, dim, kernel_size, padding=pad, groups=dim)
        self.act = nn.GELU()
        self.bn = nn.BatchNorm2d(dim)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size, padding=pad, groups=dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, N, C = x.shape
        x = x.transpose(1, 2).reshape(B, C, H, W)  # (B, C, H, W)
        x = self.conv2(self.bn(self.act(self.conv1(x))))
        return x.reshape(B, C, N).transpose(1, 2)  # (B, N, C)


class PositionalEncodingFourier(nn.Module):
    """XCiT's Fourier positional encoding (DETR-style sine/cosine, ``hidden_dim`` features per
    axis, temperature 1e4, coordinates normalised to (0, 2π]) projected by a 1x1 conv.
    Returns (1, H*W, dim), to be broadcast over the batch."""

    def __init__(self, hidden_dim: int = 32, dim: int = 768, temperature: float = 10000) -> None:
        super().__init__()
        self.token_projection = nn.Conv2d(hidden_dim * 2, dim, kernel_size=1)
        self.scale = 2 * math.pi
        self.temperature = temperature
        self.hidden_dim = hidden_dim
        self.eps = 1e-6

    def _encode(self, n: int, dim_t: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(1, n + 1, dtype=dim_t.dtype, device=dim_t.device)  # (n,), 1..n
        pos = pos / (pos[-1:] + self.eps) * self.scale
        angles = pos[:, None] / dim_t  # (n, hidden)
        # interleave sin of the even and cos of the odd features (pairs share a frequency)
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    def forward(self, H: int, W: int) -> torch.Tensor:
        w = self.token_projection.weight
        dim_t = torch.arange(self.hidden_dim, dtype=w.dtype, device=w.device)
        dim_t = self.temperature ** (
            2 * torch.div(dim_t, 2, rounding_mode="floor") / self.hidden_dim
        )
        pos_y = self._encode(H, dim_t)[:, None, :].expand(H, W, self.hidden_dim)  # (H, W, hidden)
        pos_x = self._encode(W, dim_t)[None, :, :].expand(H, W, self.hidden_dim)  # (H, W, hidden)
        pos = torch.cat((pos_y, pos_x), dim=2).permute(2, 0, 1).unsqueeze(0)  # (1, 2*hidden, H, W)
        pos = self.token_projection(pos)  # (1, dim, H, W)
        return pos.flatten(2).transpose(1, 2)  # (1, H*W, dim)


def make_token_mixer(cfg: XCiTConfig) -> nn.Module:
    if cfg.attention == "sima":
        return SimA(
            cfg.embed_dim, cfg.num_heads, qkv_bias=True, order=cfg.order, crossover=cfg.crossover
        )
    return XCA(cfg.embed_dim, cfg.num_heads, qkv_bias=True)


def make_class_attention(cfg: XCiTConfig) -> nn.Module:
    if cfg.attention == "sima":
        return SimAClassAttention(cfg.embed_dim, cfg.num_heads, qkv_bias=True)
    return ClassAttention(cfg.embed_dim, cfg.num_heads, qkv_bias=True)


class XCiTBlock(nn.Module):
    """x += γ1·attn(LN1 x); x += γ3·LPI(LN3 x); x += γ2·MLP(LN2 x)."""

    def __init__(self, cfg: XCiTConfig) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = make_token_mixer(cfg)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))
        self.norm3 = nn.LayerNorm(dim, eps=LN_EPS)
        self.local_mp = LPI(dim)
        self.gamma1 = nn.Parameter(cfg.eta * torch.ones(dim))
        self.gamma2 = nn.Parameter(cfg.eta * torch.ones(dim))
        self.gamma3 = nn.Parameter(cfg.eta * torch.ones(dim))

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = x + self.gamma1 * self.attn(self.norm1(x))
        x = x + self.gamma3 * self.local_mp(self.norm3(x), H, W)
        return x + self.gamma2 * self.mlp(self.norm2(x))


class ClassAttentionBlock(nn.Module):
    """CaiT/XCiT class-attention block on (B, 1+N, C), class token first.

    As the official code: the attention returns the normalised patch tokens unchanged, so the
    residual adds γ1·LN1(x) to them; ``norm2`` covers all tokens (``tokens_norm``) or only the
    class token; only the class token goes through the MLP, and the residual adds the patch
    tokens to themselves. Both effects reach the next class-attention block's keys and values.
    """

    def __init__(self, cfg: XCiTConfig) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = make_class_attention(cfg)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))
        self.gamma1 = nn.Parameter(cfg.eta * torch.ones(dim))
        self.gamma2 = nn.Parameter(cfg.eta * torch.ones(dim))
        self.tokens_norm = cfg.tokens_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.gamma1 * self.attn(self.norm1(x))
        if self.tokens_norm:
            x = self.norm2(x)
        else:  # the official in-place x[:, 0:1] = norm2(x[:, 0:1]), as a cat
            x = torch.cat([self.norm2(x[:, :1]), x[:, 1:]], dim=1)
        cls = self.gamma2 * self.mlp(x[:, :1])  # (B, 1, C)
        return x + torch.cat([cls, x[:, 1:]], dim=1)


class XCiTVisionTransformer(nn.Module):
    """XCiT skeleton: conv patch embedding + Fourier positional encoding, ``depth`` blocks of
    (SimA | XCA) + LPI + MLP with LayerScale, then the class token and 2 class-attention blocks.
    (B, 3, H, W) with H, W multiples of the patch size -> logits (B, num_classes)."""

    def __init__(self, config: XCiTConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.embed_dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.patch_embed = ConvPatchEmbed(config.patch_size, dim)
        self.blocks = nn.ModuleList([XCiTBlock(config) for _ in range(config.depth)])
        self.cls_attn_blocks = nn.ModuleList(
            [ClassAttentionBlock(config) for _ in range(config.cls_attn_layers)]
        )
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.head = nn.Linear(dim, config.num_classes) if config.num_classes > 0 else nn.Identity()
        self.pos_embeder = PositionalEncodingFourier(dim=dim)  # official (misspelt) name
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_vit_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(self.config.name, x, self.config.patch_size)
        B = x.shape[0]
        x = self.patch_embed(x)  # (B, D, Hp, Wp)
        Hp, Wp = x.shape[-2], x.shape[-1]
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        x = x + self.pos_embeder(Hp, Wp)  # + (1, N, D)
        for blk in self.blocks:
            x = blk(x, Hp, Wp)
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)  # (B, 1+N, D)
        for blk in self.cls_attn_blocks:
            x = blk(x)
        return self.norm(x[:, 0])  # (B, D); LayerNorm is per token

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def _xcit_doc(name: str, spec: tuple[str, str, int]) -> str:
    attention, size, patch_size = spec
    embed_dim, depth, num_heads, eta, _ = SIZES[size]
    kind = "SimA" if attention == "sima" else "XCA (softmax)"
    return (
        f"XCiT-style {kind} net: dim {embed_dim}, depth {depth}, {num_heads} heads "
        f"(d_h {embed_dim // num_heads}), patch {patch_size}, LayerScale {eta:g}."
    )


def _fixed(name: str, spec: tuple[str, str, int]) -> dict[str, Any]:
    attention, size, patch_size = spec
    embed_dim, depth, num_heads, eta, tokens_norm = SIZES[size]
    return dict(
        name=name,
        attention=attention,
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        eta=eta,
        tokens_norm=tokens_norm,
    )


def _sima_net(
    name: str,
    spec: tuple[str, str, int],
    img_size: int = 224,
    num_classes: int = 1000,
    order: str = "auto",
    crossover: int | None = None,
) -> XCiTVisionTransformer:
    cfg = XCiTConfig(
        **_fixed(name, spec),
        img_size=img_size,
        num_classes=num_classes,
        order=order,
        crossover=crossover,
    )
    return XCiTVisionTransformer(cfg)


def _xca_net(
    name: str, spec: tuple[str, str, int], img_size: int = 224, num_classes: int = 1000
) -> XCiTVisionTransformer:
    cfg = XCiTConfig(**_fixed(name, spec), img_size=img_size, num_classes=num_classes)
    return XCiTVisionTransformer(cfg)


#: Export facts of the SimA nets: the XCiT blocks' SimA layers see the patch grid alone
#: (N = (H/p)(W/p)); class attention is another module, outside the order policy.
SIMA_EXPORT = ExportFacts(
    method="sima",
    tolerance="TOL_SIMA",
    tolerance_reason="l1 normalisation then two float32 products, the order chosen alike",
)


def register_family(
    prefix: str,
    attention: str,
    family: str,
    paper: dict[str, PaperFigures] | None = None,
    export: ExportFacts = SIMA_EXPORT,
) -> list[str]:
    """Register ``{prefix}_{size}_p{patch}`` for every size and patch; return the names.

    ``paper``: published figures by size (the same for both patch sizes) or by full name.
    ``export``: the family's export facts; the patch size is filled in per variant."""
    paper = paper or {}
    variants = {
        f"{prefix}_{size}_p{patch_size}": (attention, size, patch_size)
        for patch_size in PATCH_SIZES
        for size in SIZES
    }
    entries = register_variants(
        variants,
        family=family,
        doc=_xcit_doc,
        export=lambda name, spec: replace(export, patch=spec[2], size_multiple=spec[2]),
        paper=lambda name, spec: paper.get(name, paper.get(spec[1])),
    )(_sima_net if attention == "sima" else _xca_net)
    return list(entries)


SIMA_MODELS = register_family("sima", "sima", "sima")
