"""SOFT vision transformers (fudan-zvg/SOFT): ``soft_{tiny,small,medium,large,huge}`` and the
SOFT-Norm twins ``soft_norm_*``; ``soft_small`` is the released SOFT-Small (stage-3 depth 7), the
official code's depth-20 ``soft_small`` is ``soft_small_code`` / ``soft_norm_small_code``.

Layout as released (module and parameter names match the official state_dicts, so official
checkpoints load with ``strict=True``): a PVT-like four-stage pyramid. Stage 1 embeds with
3 x (Conv3x3 + BN + ReLU), strides 2, 1, 2; stages 2-4 with one Conv3x3 stride 2 + BN + ReLU.
Stages 1-3 are post-norm SOFT layers (``block{1,2,3}[i].att``); stage 4 prepends a cls token and
runs PVT softmax blocks (``block4``), so a faithful SOFT net is *not* softmax-free. Learned
positional embeddings are stored at the 224 x 224 grids (56^2, 28^2, 14^2, 7^2 + cls) and always
bilinearly resized (align_corners=False) to the actual grid, which is the identity at 224.

Variants are data (:data:`SOFT_VARIANTS`); every registered name accepts the same overrides:
``img_size``, ``num_classes``, ``landmarks``, ``num_landmarks``, ``newton_iters``,
``softmax_free_stage4``. The model stores them, with the sizes, as a frozen :class:`SoftConfig`
(``config.faithful`` is False as soon as an option departs from the released network).

Inference first: there is no dropout / stochastic depth (the official rates are 0 and they are
no-ops in eval), and the official ``soft_norm_*`` quirk of rebuilding blocks without re-init is
not reproduced: every variant is initialised the same way (trunc-normal 0.02 Linear weights and
embeddings, zero biases, unit LayerNorms).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgeattn.attention.soft import LANDMARK_MODES, SoftAttention
from edgeattn.attention.softmax import SRAttention
from edgeattn.errors import ModelError
from edgeattn.models.layers import Mlp, init_vit_weights
from edgeattn.models.registry import ExportFacts, PaperFigures, register_variants

#: Input height and width must be multiples of this (overall stride 32; stage-1 grid / r = 8).
SIZE_MULTIPLE = 32
#: Grids the positional embeddings are stored at (the 224 x 224 layout of the checkpoints).
POS_GRIDS = (56, 28, 14, 7)

# Sizes per variant, as in the official registered functions, except ``small``: the official code
# registers soft_small with depths (1, 3, 20, 4) = 38.86M parameters, but the released SOFT-Small is
# (1, 3, 7, 4) = 24.11M: the paper's Table 1 reads x7 in stage 3, the official README lists
# SOFT-Small at 24M / 3.3G (depth 7: 24.11M, 3.43G without the Newton iterations), and its
# detection table puts the released SOFT-Small-Norm backbone in RetinaNet at 34M against
# SOFT-Tiny-Norm's 23M: +11M, which depth 7 gives (+11.04M) and depth 20 does not (+25.8M).
# The code's depths stay available as ``small_code`` (soft_small_code, soft_norm_small_code).
SOFT_VARIANTS: dict[str, dict[str, tuple[int, ...]]] = {
    "tiny": {
        "embed_dims": (64, 128, 320, 512),
        "num_heads": (2, 4, 10, 16),
        "depths": (1, 2, 3, 2),
    },
    "small": {
        "embed_dims": (64, 128, 320, 512),
        "num_heads": (2, 4, 10, 16),
        "depths": (1, 3, 7, 4),
    },
    "small_code": {
        "embed_dims": (64, 128, 320, 512),
        "num_heads": (2, 4, 10, 16),
        "depths": (1, 3, 20, 4),
    },
    "medium": {
        "embed_dims": (64, 128, 288, 512),
        "num_heads": (2, 4, 9, 16),
        "depths": (1, 3, 29, 5),
    },
    "large": {
        "embed_dims": (64, 128, 320, 512),
        "num_heads": (2, 4, 10, 16),
        "depths": (1, 3, 40, 5),
    },
    "huge": {
        "embed_dims": (64, 128, 352, 512),
        "num_heads": (2, 4, 11, 16),
        "depths": (1, 5, 49, 5),
    },
}


#: The official README's Params / FLOPs per variant (the paper's Table 3: the same, no Huge).
SOFT_PAPER = {
    "tiny": (13, 1.9),
    "small": (24, 3.3),
    "medium": (45, 7.2),
    "large": (64, 11.0),
    "huge": (87, 16.3),
}


def _is_int(value: object, minimum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


@dataclass(frozen=True)
class SoftConfig:
    """Everything that shapes a SOFT net. Validated once, in ``__post_init__``.

    ``softmax_free_stage4=True`` is NOT the released architecture (which keeps softmax attention
    in stage 4): inside the same pre-norm stage-4 blocks, ``attn`` becomes a :class:`SoftAttention`
    over the cls token + the grid, with the model's landmark mode at sampling ratio 1 (``conv``:
    a per-head 1x1 conv; ``avgpool``: every grid token; ``adaptive``: a ``num_landmarks`` grid),
    the cls token as one extra landmark (so it attends to, and is attended by, the image), a 3x3
    depthwise skip on the grid's V and the cls token's own V as its skip (as the official, dead
    ratio == 1 branch intended). It needs retraining; the ``block4.*.attn`` parameters of
    official checkpoints will not load strictly into it.
    """

    name: str = "soft_tiny"
    embed_dims: tuple[int, ...] = (64, 128, 320, 512)
    num_heads: tuple[int, ...] = (2, 4, 10, 16)
    depths: tuple[int, ...] = (1, 2, 3, 2)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)  # landmark sampling ratio r per stage
    conv_sizes: tuple[int, ...] = (9, 5, 3, 3)  # dwconv skip kernel; [3] only if stage 4 is SOFT
    mlp_ratio: float = 4.0  # stage-4 MLP (stages 1-3 are hard-coded to 4 upstream)
    in_chans: int = 3
    img_size: int = 224
    num_classes: int = 1000
    landmarks: str = "conv"
    num_landmarks: int = 49
    newton_iters: int = 20
    norm: bool = False  # SOFT-Norm attention (soft_norm_*)
    softmax_free_stage4: bool = False
    faithful: bool = True  # False when an option departs from the released network

    def __post_init__(self) -> None:
        # ModelError is a ValueError: one type for the library and the CLI's one-line report
        for field in ("embed_dims", "num_heads", "depths", "sr_ratios", "conv_sizes"):
            v = getattr(self, field)
            if len(v) != 4 or any(not _is_int(x, 0) for x in v):
                raise ModelError(f"{field} must be 4 non-negative ints, got {v!r}")
        for dim, heads in zip(self.embed_dims, self.num_heads, strict=True):
            if heads < 1 or dim % heads:
                raise ModelError(f"embed dim {dim} is not divisible by num_heads {heads}")
        if not _is_int(self.img_size, 1) or self.img_size % SIZE_MULTIPLE:
            raise ModelError(
                f"img_size={self.img_size!r} is not a positive multiple of {SIZE_MULTIPLE}",
                hint="SOFT nets need H and W divisible by 32 (e.g. 224, 256, 288, 320, 384)",
            )
        if not _is_int(self.num_classes, 0):
            raise ModelError(f"num_classes must be an int >= 0, got {self.num_classes!r}")
        if self.landmarks not in LANDMARK_MODES:
            raise ModelError(f"landmarks must be one of {LANDMARK_MODES}, got {self.landmarks!r}")
        nl = self.num_landmarks
        if not _is_int(nl, 1) or math.isqrt(nl) ** 2 != nl:
            raise ModelError(
                f"num_landmarks must be a positive perfect square (e.g. 49), got {nl!r}"
            )
        if not _is_int(self.newton_iters, 0):
            raise ModelError(f"newton_iters must be an int >= 0, got {self.newton_iters!r}")
        if not isinstance(self.softmax_free_stage4, bool):
            raise ModelError(
                f"softmax_free_stage4 must be a bool, got {self.softmax_free_stage4!r}"
            )

    def to_dict(self) -> dict:
        return asdict(self)


class ApproxGELU(nn.Module):
    """tanh-approximate GELU written out as in the official ``Approx_GeLU`` (SOFT FFN)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


class PatchEmbed(nn.Module):
    """Conv stem of one stage; ``proj`` indices match the official Sequential (conv, bn, relu)."""

    def __init__(self, in_chans: int, embed_dim: int, stem: bool) -> None:
        super().__init__()
        if stem:  # stage 1: strides 2, 1, 2
            self.proj = nn.Sequential(
                nn.Conv2d(in_chans, 32, kernel_size=3, stride=2, padding=1),
                nn.BatchNorm2d(32),
                nn.ReLU(),
                nn.Conv2d(32, 32, kernel_size=3, stride=1, padding=1),
                nn.BatchNorm2d(32),
                nn.ReLU(),
                nn.Conv2d(32, embed_dim, kernel_size=3, stride=2, padding=1),
                nn.BatchNorm2d(embed_dim),
                nn.ReLU(),
            )
        else:
            self.proj = nn.Sequential(
                nn.Conv2d(in_chans, embed_dim, kernel_size=3, stride=2, padding=1),
                nn.BatchNorm2d(embed_dim),
                nn.ReLU(),
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)  # (B, C, H, W)
        H, W = x.shape[-2], x.shape[-1]
        return x.flatten(2).transpose(1, 2), H, W  # (B, H*W, C)


class SoftLayer(nn.Module):
    """Official ``SoftmaxFreeTransformer``: post-norm SOFT attention + FFN(4*dim, tanh GELU).

    ``y = norm1(x + mha(x)); z = norm2(y + ff2(act(ff1(y))))``; both LayerNorms use eps 1e-5.
    """

    def __init__(self, dim: int, mha: SoftAttention) -> None:
        super().__init__()
        self.mha = mha
        self.norm1 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, 4 * dim)
        self.act = ApproxGELU()
        self.ff2 = nn.Linear(4 * dim, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = self.norm1(x + self.mha(x, H, W))
        return self.norm2(x + self.ff2(self.act(self.ff1(x))))


class SoftBlock(nn.Module):
    """Official ``SoftmaxFreeTransformerBlock``: a wrapper holding the layer as ``att``."""

    def __init__(self, dim: int, mha: SoftAttention) -> None:
        super().__init__()
        self.att = SoftLayer(dim, mha)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        return self.att(x, H, W)


class Stage4Block(nn.Module):
    """PVT ``Block`` of stage 4: pre-norm (eps 1e-6) attention + MLP (exact GELU).

    ``attn`` is the released softmax ``SRAttention(sr_ratio=1)``, or a :class:`SoftAttention`
    with the cls token as prefix when the model is built with ``softmax_free_stage4=True``.
    """

    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), H, W)
        return x + self.mlp(self.norm2(x))


def _resize_pos_embed(pos: torch.Tensor, grid: int, H: int, W: int) -> torch.Tensor:
    """(1, grid*grid, C) stored embedding -> (1, H*W, C), bilinear, align_corners=False."""
    C = pos.shape[-1]
    pos = pos.reshape(1, grid, grid, C).permute(0, 3, 1, 2)  # (1, C, g, g)
    pos = F.interpolate(pos, size=(H, W), mode="bilinear", align_corners=False)  # (1, C, H, W)
    return pos.flatten(2).transpose(1, 2)  # (1, H*W, C)


def _check_input_size(x: torch.Tensor) -> None:
    """Clear error for an input SOFT cannot run on; skipped while tracing/compiling/exporting."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return
    if x.dim() != 4:
        raise ModelError(f"expected an image batch (B, C, H, W), got shape {tuple(x.shape)}")
    H, W = int(x.shape[-2]), int(x.shape[-1])
    if H % SIZE_MULTIPLE or W % SIZE_MULTIPLE or H == 0 or W == 0:
        raise ModelError(
            f"input size {H}x{W} is not a multiple of {SIZE_MULTIPLE}",
            hint="SOFT nets need H and W divisible by 32 (e.g. 224, 256, 288)",
        )


class SoftVisionTransformer(nn.Module):
    """Official ``SoftmaxFreeVisionTransformer`` / ``SoftmaxFreeNormVisionTransformer``.

    ``forward(x)``: (B, in_chans, H, W) with H, W multiples of 32 (any such size: the positional
    embeddings are resized; ``config.img_size`` is the nominal size, e.g. for export) ->
    (B, num_classes) logits from the cls token.
    """

    def __init__(self, config: SoftConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        dims = c.embed_dims
        self.num_classes = c.num_classes

        self.patch_embed1 = PatchEmbed(c.in_chans, dims[0], stem=True)
        self.patch_embed2 = PatchEmbed(dims[0], dims[1], stem=False)
        self.patch_embed3 = PatchEmbed(dims[1], dims[2], stem=False)
        self.patch_embed4 = PatchEmbed(dims[2], dims[3], stem=False)

        self.pos_embed1 = nn.Parameter(torch.zeros(1, POS_GRIDS[0] ** 2, dims[0]))
        self.pos_embed2 = nn.Parameter(torch.zeros(1, POS_GRIDS[1] ** 2, dims[1]))
        self.pos_embed3 = nn.Parameter(torch.zeros(1, POS_GRIDS[2] ** 2, dims[2]))
        self.pos_embed4 = nn.Parameter(torch.zeros(1, POS_GRIDS[3] ** 2 + 1, dims[3]))

        def soft_attn(stage: int, prefix: int = 0) -> SoftAttention:
            return SoftAttention(
                dims[stage],
                c.num_heads[stage],
                qkv_bias=True,
                ratio=c.sr_ratios[stage],
                conv_size=c.conv_sizes[stage],
                landmarks=c.landmarks,
                num_landmarks=c.num_landmarks if c.landmarks == "adaptive" else None,
                newton_iters=c.newton_iters,
                norm=c.norm,
                num_prefix_tokens=prefix,
            )

        self.block1 = nn.ModuleList(SoftBlock(dims[0], soft_attn(0)) for _ in range(c.depths[0]))
        self.block2 = nn.ModuleList(SoftBlock(dims[1], soft_attn(1)) for _ in range(c.depths[1]))
        self.block3 = nn.ModuleList(SoftBlock(dims[2], soft_attn(2)) for _ in range(c.depths[2]))

        def stage4_attn() -> nn.Module:
            if c.softmax_free_stage4:
                return soft_attn(3, prefix=1)
            return SRAttention(dims[3], c.num_heads[3], qkv_bias=True, sr_ratio=1)

        self.block4 = nn.ModuleList(
            Stage4Block(dims[3], stage4_attn(), c.mlp_ratio) for _ in range(c.depths[3])
        )
        self.norm = nn.LayerNorm(dims[3], eps=1e-6)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dims[3]))
        self.head = nn.Linear(dims[3], c.num_classes) if c.num_classes > 0 else nn.Identity()

        for p in (
            self.pos_embed1,
            self.pos_embed2,
            self.pos_embed3,
            self.pos_embed4,
            self.cls_token,
        ):
            nn.init.trunc_normal_(p, std=0.02)
        self.apply(init_vit_weights)

    def no_weight_decay(self) -> set[str]:
        return {"cls_token"}  # as upstream

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head (the official one reads a missing ``self.embed_dim``)."""
        self.num_classes = num_classes
        dim = self.config.embed_dims[3]
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()

    def _stage(
        self,
        x: torch.Tensor,
        embed: PatchEmbed,
        pos: torch.Tensor,
        grid: int,
        blocks: nn.ModuleList,
    ) -> torch.Tensor:
        B = x.shape[0]
        x, H, W = embed(x)  # (B, H*W, C)
        x = x + _resize_pos_embed(pos, grid, H, W)
        for blk in blocks:
            x = blk(x, H, W)
        return x.transpose(1, 2).reshape(B, -1, H, W)  # (B, C, H, W)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        _check_input_size(x)
        x = self._stage(x, self.patch_embed1, self.pos_embed1, POS_GRIDS[0], self.block1)
        x = self._stage(x, self.patch_embed2, self.pos_embed2, POS_GRIDS[1], self.block2)
        x = self._stage(x, self.patch_embed3, self.pos_embed3, POS_GRIDS[2], self.block3)

        B = x.shape[0]
        x, H, W = self.patch_embed4(x)  # (B, H*W, C)
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)  # (B, 1 + H*W, C)
        pos = torch.cat(
            [self.pos_embed4[:, :1], _resize_pos_embed(self.pos_embed4[:, 1:], POS_GRIDS[3], H, W)],
            dim=1,
        )  # (1, 1 + H*W, C)
        x = x + pos
        for blk in self.block4:
            x = blk(x, H, W)
        x = self.norm(x)
        return x[:, 0]  # (B, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


def _build(variant: str, norm: bool, **opts) -> SoftVisionTransformer:
    name = f"soft_norm_{variant}" if norm else f"soft_{variant}"
    faithful = (
        opts["landmarks"] == "conv"
        and opts["newton_iters"] == 20
        and not opts["softmax_free_stage4"]
    )
    cfg = SoftConfig(name=name, norm=norm, faithful=faithful, **SOFT_VARIANTS[variant], **opts)
    return SoftVisionTransformer(cfg)


#: What export is told about every SOFT net (edgeattn.models.registry.ExportFacts).
SOFT_EXPORT = ExportFacts(
    input="image",
    method="soft",
    tolerance="TOL_SOFT",
    tolerance_reason="20 float32 Newton steps for the landmark inverse amplify rounding",
    size_multiple=SIZE_MULTIPLE,
    strict_hint=(
        "the released SOFT nets keep softmax attention in stage 4; "
        "--set softmax_free_stage4=true builds the fully softmax-free variant"
    ),
)
_SOFT_NAMES = {f"soft_{v}": (v, False) for v in SOFT_VARIANTS} | {
    f"soft_norm_{v}": (v, True) for v in SOFT_VARIANTS
}


def _soft_doc(name: str, spec: tuple[str, bool]) -> str:
    variant, norm = spec
    kind = "SOFT-Norm (symmetric normalisation)" if norm else "SOFT"
    sizes = SOFT_VARIANTS[variant]
    note = (
        "the official code's soft_small depths (not the released SOFT-Small)"
        if variant == "small_code"
        else "stage 4 softmax as released"
    )
    return (
        f"{kind} {variant}: dims {sizes['embed_dims']}, heads {sizes['num_heads']}, "
        f"depths {sizes['depths']}; {note}.\n\n"
        "Options: img_size (multiple of 32), num_classes, landmarks ('conv' as released, "
        "'avgpool', 'adaptive'), num_landmarks (m for 'adaptive', a perfect square), newton_iters, "
        "softmax_free_stage4 (SOFT attention in stage 4 too: needs retraining; official "
        "checkpoints do not load strictly into it)."
    )


def _soft_paper(name: str, spec: tuple[str, bool]) -> PaperFigures | None:
    variant, norm = spec
    if variant not in SOFT_PAPER or norm:  # the README gives no Params / FLOPs for the Norm nets
        return None
    params_m, gflops = SOFT_PAPER[variant]
    source = "SOFT README" if variant == "huge" else "SOFT README / paper Table 3"
    return PaperFigures(params_m, gflops, source)


def _soft_net(
    name: str,
    spec: tuple[str, bool],
    img_size: int = 224,
    num_classes: int = 1000,
    landmarks: str = "conv",
    num_landmarks: int = 49,
    newton_iters: int = 20,
    softmax_free_stage4: bool = False,
) -> SoftVisionTransformer:
    variant, norm = spec
    return _build(
        variant,
        norm,
        img_size=img_size,
        num_classes=num_classes,
        landmarks=landmarks,
        num_landmarks=num_landmarks,
        newton_iters=newton_iters,
        softmax_free_stage4=softmax_free_stage4,
    )


SOFT_MODELS = register_variants(
    _SOFT_NAMES, family="soft", doc=_soft_doc, export=SOFT_EXPORT, paper=_soft_paper
)(_soft_net)
globals().update(SOFT_MODELS)
