"""DeiT (plain ViT, timm key names) with softmax attention or SimA.

* ``deit_{tiny,small}_patch16_224``: timm's DeiT (class token, learned ``pos_embed``, pre-norm
  blocks, LayerNorm eps 1e-6, exact GELU, head on the class token); official checkpoints load
  strictly.
* ``sima_deit_{tiny,small}_patch16_224``: the same network with every softmax attention
  replaced by :class:`~edgeattn.attention.sima.SimA` (same ``qkv``/``proj`` parameters), as the
  SimA author describes for ViT/DeiT (UCDvision/sima issues #3 and #4): no LPI, no class-attention
  layers. The model the author posted in issue #4 also scales both residual branches by
  LayerScale ``gamma1``/``gamma2``; ``layer_scale=<init>`` adds them (keys ``blocks.i.gamma1/2``),
  the default ``None`` keeps DeiT's keys. The rest of that model (patch embedding, positional
  encoding) could not be read in full, so it is not reproduced here.

``pos_embed`` keeps the 224x224 grid (14x14 + class token) at any ``img_size`` so official
checkpoints load; the patch part is resized in forward to the input's grid exactly as timm's
``resample_abs_pos_embed`` does (used by its ``dynamic_img_size`` forward and when it loads a
checkpoint at another ``img_size``): ``F.interpolate(mode="bicubic", antialias=True,
align_corners=False)``. Antialiased bicubic is not plain bicubic, growing or shrinking: it uses
Keys' a = -0.5 (plain bicubic: -0.75), widens the filter by the scale when shrinking, and
renormalises the weights at the borders (plain bicubic clamps indices), so the two differ by
~7e-3 in the embedding at 14->18. No ONNX exporter converts ``_upsample_bicubic2d_aa``, so the
resize is written as its two separable weight matrices, ``W_h @ P @ W_w^T``
(:func:`aa_bicubic_weights`), equal to the interpolate to float rounding (<= 2e-6 relative).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from edgeattn.attention.sima import SimA
from edgeattn.attention.softmax import Attention
from edgeattn.errors import ModelError
from edgeattn.models.layers import Mlp, init_vit_weights
from edgeattn.models.registry import ExportFacts, PaperFigures, register_variants
from edgeattn.models.sima import (
    check_img_size,
    check_input_size,
    check_num_classes,
    check_order,
)

LN_EPS = 1e-6
DEIT_ATTENTIONS = ("softmax", "sima")
# name -> (embed_dim, depth, num_heads)
DEIT_SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
}


@dataclass(frozen=True)
class DeiTConfig:
    name: str
    attention: str  # "softmax" or "sima"
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int = 16
    mlp_ratio: float = 4.0
    img_size: int = 224
    base_img_size: int = 224  # grid of the stored pos_embed
    num_classes: int = 1000
    order: str = "auto"  # SimA only
    crossover: int | None = None  # SimA only
    layer_scale: float | None = None  # LayerScale init (gamma1/gamma2); None: plain DeiT

    def __post_init__(self) -> None:
        if self.attention not in DEIT_ATTENTIONS:
            raise ModelError(
                f"{self.name}: attention={self.attention!r}; valid: {', '.join(DEIT_ATTENTIONS)}"
            )
        if self.embed_dim % self.num_heads:
            raise ModelError(
                f"{self.name}: embed_dim={self.embed_dim} not divisible by num_heads={self.num_heads}"
            )
        check_img_size(self.name, self.img_size, self.patch_size)
        check_img_size(self.name, self.base_img_size, self.patch_size)
        check_num_classes(self.name, self.num_classes)
        check_order(self.name, self.order, self.crossover)
        if self.layer_scale is not None and (
            isinstance(self.layer_scale, bool) or not isinstance(self.layer_scale, int | float)
        ):
            raise ModelError(
                f"{self.name}: layer_scale={self.layer_scale!r} must be a number or None"
            )

    @property
    def base_grid(self) -> int:
        return self.base_img_size // self.patch_size


def aa_bicubic_weights(
    out_len: int, in_len: int, device: torch.device | None = None
) -> torch.Tensor:
    """(out_len, in_len) weights of PyTorch's antialiased bicubic resize along one axis.

    As ``aten::_upsample_bicubic2d_aa`` (align_corners=False, size given): output i is centred at
    ``(i + 0.5) * s`` in input pixels, s = in_len / out_len; input j weighs
    ``cubic((j + 0.5 - centre) / max(s, 1))`` with Keys' a = -0.5, and each row is normalised to
    sum 1 (which is what handles the borders). ``out_len`` enters only through ``arange``, so the
    matrix stays symbolic when a dynamic-shape export traces it, and folds to a constant otherwise.
    """
    i = torch.arange(out_len, dtype=torch.float32, device=device)  # (out,)
    n_out = torch.ones_like(i).sum()  # out_len as a tensor: symbolic under tracing
    scale = in_len / n_out
    inv_support = 1.0 / torch.clamp(scale, min=1.0)
    centre = (i + 0.5) * scale
    j = torch.arange(in_len, dtype=torch.float32, device=device)  # (in,)
    x = ((j[None, :] - centre[:, None] + 0.5) * inv_support).abs()  # (out, in)
    a = -0.5
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    w = torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))
    return w / w.sum(-1, keepdim=True)


def resize_pos_grid(grid: torch.Tensor, Hp: int, Wp: int) -> torch.Tensor:
    """(1, D, g, g) -> (1, D, Hp, Wp): timm's bicubic antialiased resize, as two matmuls."""
    g_h, g_w = grid.shape[-2], grid.shape[-1]
    w_h = aa_bicubic_weights(Hp, g_h, grid.device).to(grid.dtype)  # (Hp, g)
    w_w = aa_bicubic_weights(Wp, g_w, grid.device).to(grid.dtype)  # (Wp, g)
    return w_h @ grid @ w_w.transpose(0, 1)  # (1, D, Hp, Wp)


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches by a strided conv: (B, 3, H, W) -> (B, D, H/p, W/p)."""

    def __init__(self, patch_size: int = 16, embed_dim: int = 768, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class DeiTBlock(nn.Module):
    """Pre-norm block: x += [γ1·] attn(LN1 x); x += [γ2·] MLP(LN2 x)."""

    def __init__(self, cfg: DeiTConfig) -> None:
        super().__init__()
        dim = cfg.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        if cfg.attention == "sima":
            self.attn: nn.Module = SimA(
                dim, cfg.num_heads, qkv_bias=True, order=cfg.order, crossover=cfg.crossover
            )
        else:
            self.attn = Attention(dim, cfg.num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio))
        self.gamma1: nn.Parameter | None = None
        self.gamma2: nn.Parameter | None = None
        if cfg.layer_scale is not None:
            self.gamma1 = nn.Parameter(cfg.layer_scale * torch.ones(dim))
            self.gamma2 = nn.Parameter(cfg.layer_scale * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.attn(self.norm1(x))
        x = x + (a if self.gamma1 is None else self.gamma1 * a)
        m = self.mlp(self.norm2(x))
        return x + (m if self.gamma2 is None else self.gamma2 * m)


class VisionTransformer(nn.Module):
    """DeiT/ViT: (B, 3, H, W), H and W multiples of 16 -> logits (B, num_classes)."""

    def __init__(self, config: DeiTConfig) -> None:
        super().__init__()
        self.config = config
        dim, grid = config.embed_dim, config.base_grid
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
        self.patch_embed = PatchEmbed(config.patch_size, dim)
        self.blocks = nn.ModuleList([DeiTBlock(config) for _ in range(config.depth)])
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.head = nn.Linear(dim, config.num_classes) if config.num_classes > 0 else nn.Identity()
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_vit_weights)

    def resized_pos_embed(self, Hp: int, Wp: int) -> torch.Tensor:
        """(1, 1 + Hp*Wp, D): the class position and the patch grid resized to (Hp, Wp) as timm
        does (bicubic, antialias=True; :func:`resize_pos_grid`).

        Static sizes equal to the stored grid skip the resize (as timm does); symbolic sizes
        (dynamic export) always resize, which is exact at the stored grid (weights (0, 1, 0))."""
        g = self.config.base_grid
        symbolic = isinstance(Hp, torch.SymInt) or isinstance(Wp, torch.SymInt)
        if not symbolic and not torch.jit.is_tracing() and (Hp, Wp) == (g, g):
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patch_pos = patch_pos.reshape(1, g, g, -1).permute(0, 3, 1, 2)  # (1, D, g, g)
        patch_pos = resize_pos_grid(patch_pos, Hp, Wp)  # (1, D, Hp, Wp)
        patch_pos = patch_pos.flatten(2).transpose(1, 2)  # (1, Hp*Wp, D)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        check_input_size(self.config.name, x, self.config.patch_size)
        B = x.shape[0]
        x = self.patch_embed(x)  # (B, D, Hp, Wp)
        Hp, Wp = x.shape[-2], x.shape[-1]
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)  # (B, 1+N, D)
        x = x + self.resized_pos_embed(Hp, Wp)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x[:, 0])  # (B, D); LayerNorm is per token

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def _fixed(name: str, spec: tuple[str, str]) -> dict:
    attention, size = spec
    embed_dim, depth, num_heads = DEIT_SIZES[size]
    return dict(
        name=name, attention=attention, embed_dim=embed_dim, depth=depth, num_heads=num_heads
    )


def _deit_doc(name: str, spec: tuple[str, str]) -> str:
    attention, size = spec
    embed_dim, depth, num_heads = DEIT_SIZES[size]
    kind = "SimA" if attention == "sima" else "softmax"
    return (
        f"DeiT-{size} ({kind} attention): dim {embed_dim}, depth {depth}, {num_heads} heads, "
        "patch 16."
    )


def _deit_paper(name: str, spec: tuple[str, str]) -> PaperFigures | None:
    if name == "deit_small_patch16_224":  # as the SOFT paper's Table 3 quotes DeiT-S
        return PaperFigures(22, 4.6, "DeiT-S in SOFT paper Table 3")
    return None


#: Export facts: patch 16, and the class token joins the patch tokens in every block, so the
#: SimA layers see N = (H/16)(W/16) + 1.
DEIT_EXPORT = ExportFacts(patch=16, extra_tokens=1)
SIMA_DEIT_EXPORT = replace(
    DEIT_EXPORT,
    method="sima",
    tolerance="TOL_SIMA",
    tolerance_reason="l1 normalisation then two float32 products, the order chosen alike",
)
_KIND = dict(family="deit", doc=_deit_doc, paper=_deit_paper)


def _deit(
    name: str, spec: tuple[str, str], img_size: int = 224, num_classes: int = 1000
) -> VisionTransformer:
    return VisionTransformer(
        DeiTConfig(**_fixed(name, spec), img_size=img_size, num_classes=num_classes)
    )


def _sima_deit(
    name: str,
    spec: tuple[str, str],
    img_size: int = 224,
    num_classes: int = 1000,
    order: str = "auto",
    crossover: int | None = None,
    layer_scale: float | None = None,
) -> VisionTransformer:
    cfg = DeiTConfig(
        **_fixed(name, spec),
        img_size=img_size,
        num_classes=num_classes,
        order=order,
        crossover=crossover,
        layer_scale=layer_scale,
    )
    return VisionTransformer(cfg)


# the templates stay plain functions (a test registers a tiny variant through them)
_DEIT = {f"deit_{size}_patch16_224": ("softmax", size) for size in DEIT_SIZES}
_SIMA_DEIT = {f"sima_deit_{size}_patch16_224": ("sima", size) for size in DEIT_SIZES}
DEIT_MODELS = sorted(
    [
        *register_variants(_DEIT, export=DEIT_EXPORT, **_KIND)(_deit),
        *register_variants(_SIMA_DEIT, export=SIMA_DEIT_EXPORT, **_KIND)(_sima_deit),
    ]
)
