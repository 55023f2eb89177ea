"""EfficientViT classification nets (mit-han-lab/efficientvit): ``efficientvit_b0`` .. ``_b3`` and
``efficientvit_l1`` .. ``_l3``, with LiteMLA attention (:mod:`edgeattn.attention.litemla`); and
``block_litemla``, one LiteMLA layer on (B, N, C) tokens for the bench.

Layout as the official ``EfficientViTCls`` (module and parameter names equal its state_dicts, so
official checkpoints load with ``strict=True``):

* B series: ``backbone.input_stem`` (3x3 stride-2 ConvLayer + DSConv residual blocks), then
  ``backbone.stages.0..3``: two stages of MBConv (expand 4), two of one stride-2 MBConv (fewer
  norms: biases instead of the first two BatchNorms) followed by ``EfficientViTBlock``s
  (``context_module``: LiteMLA with aggregation scale 5 + residual; ``local_module``: MBConv +
  residual). Hardswish everywhere, norm eps 1e-5.
* L series: ``backbone.stages.0..4`` (stage 0 is the stem with ResBlocks; FusedMBConv, MBConv,
  then LiteMLA blocks with expand 6), GELU (tanh approximation), norm eps 1e-7 (as the official
  model zoo sets it on every BatchNorm and LayerNorm).
* ``head.op_list``: 1x1 ConvLayer, global average pool, Linear + LayerNorm + act, Linear.

Variants are the data in :data:`VARIANTS`, registered as family ``effvit`` (short: ``edgeattn list``
keeps one line per model at 80 columns). Options: ``img_size`` (the default input; any size
works, the export's dynamic sizes move by 32), ``num_classes``, ``order`` / ``crossover`` (the
LiteMLA evaluation, see :mod:`edgeattn.attention.litemla`). Differences from the official code,
none of them numeric in eval: the backbone returns the last feature map instead of a dict of
every stage, dropout (rate 0 in the released configs) is not built, and the weights are PyTorch's
default init (the official training init is irrelevant to loading a checkpoint).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from edgeattn.attention.litemla import (
    ConvLayer,
    LiteMLA,
    build_act,
    build_norm,
    validate_litemla_order,
)
from edgeattn.attention.order import validate_crossover
from edgeattn.errors import ModelError
from edgeattn.models.registry import ExportFacts, PaperFigures, register_variants

#: The nets' output stride: stage-3 LiteMLA layers see (H/16)(W/16) tokens, stage 4 (H/32)(W/32).
OUTPUT_STRIDE = 32
SERIES = ("b", "l")
#: L series, as the official EfficientViTLargeBackbone defaults: block kind, expand ratio and
#: "fewer norm" per stage (res = ResBlock, fmb = FusedMBConv, mb = MBConv, att = LiteMLA blocks).
L_BLOCKS = ("res", "fmb", "fmb", "mb", "att")
L_EXPAND = (1, 4, 4, 4, 6)
L_FEWER_NORM = (False, False, False, True, True)


@dataclass(frozen=True)
class Variant:
    """The sizes of one official constructor (``efficientvit_cls_*``)."""

    series: str  # "b" or "l"
    width_list: tuple[int, ...]
    depth_list: tuple[int, ...]
    dim: int  # LiteMLA per-head width (official ``dim`` / ``qkv_dim``)
    head_widths: tuple[int, int]  # ClsHead width_list
    paper: PaperFigures | None = None


_CLS_README = "efficientvit applications/efficientvit_cls/README.md (224x224, MACs)"
VARIANTS: dict[str, Variant] = {
    "efficientvit_b0": Variant("b", (8, 16, 32, 64, 128), (1, 2, 2, 2, 2), 16, (1024, 1280)),
    "efficientvit_b1": Variant(
        "b", (16, 32, 64, 128, 256), (1, 2, 3, 3, 4), 16, (1536, 1600),
        PaperFigures(9.1, 0.52, _CLS_README),
    ),
    "efficientvit_b2": Variant(
        "b", (24, 48, 96, 192, 384), (1, 3, 4, 4, 6), 32, (2304, 2560),
        PaperFigures(24, 1.6, _CLS_README),
    ),
    "efficientvit_b3": Variant(
        "b", (32, 64, 128, 256, 512), (1, 4, 6, 6, 9), 32, (2304, 2560),
        PaperFigures(49, 4.0, _CLS_README),
    ),
    "efficientvit_l1": Variant(
        "l", (32, 64, 128, 256, 512), (1, 1, 1, 6, 6), 32, (3072, 3200),
        PaperFigures(53, 5.3, _CLS_README),
    ),
    "efficientvit_l2": Variant(
        "l", (32, 64, 128, 256, 512), (1, 2, 2, 8, 8), 32, (3072, 3200),
        PaperFigures(64, 6.9, _CLS_README),
    ),
    "efficientvit_l3": Variant(
        "l", (64, 128, 256, 512, 1024), (1, 2, 2, 8, 8), 32, (6144, 6400),
        PaperFigures(246, 28, _CLS_README),
    ),
}  # fmt: skip


@dataclass(frozen=True)
class EfficientViTConfig:
    """One EfficientViT classifier (validated once, at construction)."""

    name: str
    series: str
    width_list: tuple[int, ...]
    depth_list: tuple[int, ...]
    dim: int
    head_widths: tuple[int, int]
    img_size: int = 224
    in_chans: int = 3
    num_classes: int = 1000
    order: str = "auto"
    crossover: int | None = None

    def __post_init__(self) -> None:
        if self.series not in SERIES:
            raise ModelError(f"{self.name}: series={self.series!r}; valid: {', '.join(SERIES)}")
        if len(self.width_list) != 5 or len(self.depth_list) != 5:
            raise ModelError(f"{self.name}: width_list and depth_list need 5 entries each")
        for k in ("img_size", "num_classes"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if k == "img_size" else 0):
                raise ModelError(f"{self.name}: {k}={v!r} must be a positive int")
        try:
            object.__setattr__(self, "order", validate_litemla_order(self.order))
            validate_crossover(self.crossover)
        except ValueError as e:
            raise ModelError(f"{self.name}: {e}") from None

    @property
    def act(self) -> str:
        return "hswish" if self.series == "b" else "gelu"

    @property
    def norm_eps(self) -> float:
        return 1e-5 if self.series == "b" else 1e-7  # the official model zoo's set_norm_eps


# ------------------------------------------------------------------------------ building blocks
class DSConv(nn.Module):
    """Depthwise 3x3 ConvLayer -> pointwise ConvLayer (official ``DSConv``)."""

    def __init__(self, cin: int, cout: int, stride: int, bias, norm, act, eps: float) -> None:
        super().__init__()
        self.depth_conv = ConvLayer(
            cin, cin, 3, stride, groups=cin, use_bias=bias[0], norm=norm[0], act=act[0],
            norm_eps=eps,
        )  # fmt: skip
        self.point_conv = ConvLayer(
            cin, cout, 1, use_bias=bias[1], norm=norm[1], act=act[1], norm_eps=eps
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(x))


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand -> depthwise 3x3 -> 1x1 project (official ``MBConv``)."""

    def __init__(
        self, cin: int, cout: int, stride: int, expand: float, bias, norm, act, eps: float
    ) -> None:
        super().__init__()
        mid = round(cin * expand)
        self.inverted_conv = ConvLayer(
            cin, mid, 1, use_bias=bias[0], norm=norm[0], act=act[0], norm_eps=eps
        )
        self.depth_conv = ConvLayer(
            mid, mid, 3, stride, groups=mid, use_bias=bias[1], norm=norm[1], act=act[1],
            norm_eps=eps,
        )  # fmt: skip
        self.point_conv = ConvLayer(
            mid, cout, 1, use_bias=bias[2], norm=norm[2], act=act[2], norm_eps=eps
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(self.inverted_conv(x)))


class FusedMBConv(nn.Module):
    """Full 3x3 expand -> 1x1 project (official ``FusedMBConv``, L series)."""

    def __init__(
        self, cin: int, cout: int, stride: int, expand: float, bias, norm, act, eps: float
    ) -> None:
        super().__init__()
        mid = round(cin * expand)
        self.spatial_conv = ConvLayer(
            cin, mid, 3, stride, use_bias=bias[0], norm=norm[0], act=act[0], norm_eps=eps
        )
        self.point_conv = ConvLayer(
            mid, cout, 1, use_bias=bias[1], norm=norm[1], act=act[1], norm_eps=eps
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.spatial_conv(x))


class ResBlock(nn.Module):
    """Two 3x3 ConvLayers (official ``ResBlock``, the L series' stem blocks)."""

    def __init__(self, cin: int, cout: int, stride: int, bias, norm, act, eps: float) -> None:
        super().__init__()
        self.conv1 = ConvLayer(
            cin, cin, 3, stride, use_bias=bias[0], norm=norm[0], act=act[0], norm_eps=eps
        )
        self.conv2 = ConvLayer(
            cin, cout, 3, 1, use_bias=bias[1], norm=norm[1], act=act[1], norm_eps=eps
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.conv1(x))


class ResidualBlock(nn.Module):
    """``main(x) + x`` with an identity shortcut, ``main(x)`` without (official ``ResidualBlock``
    with ``IdentityLayer`` / ``None``; no pre-norm or post-activation in these nets)."""

    def __init__(self, main: nn.Module, identity: bool) -> None:
        super().__init__()
        self.main = main
        self.shortcut = nn.Identity() if identity else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.main(x)
        return y if self.shortcut is None else y + self.shortcut(x)


class OpSequential(nn.Module):
    """Modules applied in turn, keys ``op_list.{i}`` (official ``OpSequential``)."""

    def __init__(self, ops: list[nn.Module]) -> None:
        super().__init__()
        self.op_list = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for op in self.op_list:
            x = op(x)
        return x


class EfficientViTBlock(nn.Module):
    """LiteMLA + residual (``context_module``), then MBConv + residual (``local_module``)."""

    def __init__(self, channels: int, cfg: EfficientViTConfig, expand: float) -> None:
        super().__init__()
        attn = LiteMLA(
            channels, channels, dim=cfg.dim, norm=(None, "bn2d"), scales=(5,),
            order=cfg.order, crossover=cfg.crossover, norm_eps=cfg.norm_eps,
        )  # fmt: skip
        self.context_module = ResidualBlock(attn, identity=True)
        self.local_module = ResidualBlock(
            _local(channels, channels, 1, expand, "mb", True, cfg), True
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.local_module(self.context_module(x))


def _local(
    cin: int, cout: int, stride: int, expand: float, kind: str, fewer: bool, cfg
) -> nn.Module:
    """The official ``build_local_block``: ``fewer`` norms = biases instead of all but the last."""
    act, eps = cfg.act, cfg.norm_eps
    if kind == "ds" or (kind == "mb" and expand == 1):
        bias, norm = ((True, False), (None, "bn2d")) if fewer else ((False,) * 2, ("bn2d",) * 2)
        return DSConv(cin, cout, stride, bias, norm, (act, None), eps)
    if kind == "mb":
        bias, norm = (
            ((True, True, False), (None, None, "bn2d")) if fewer else ((False,) * 3, ("bn2d",) * 3)
        )
        return MBConv(cin, cout, stride, expand, bias, norm, (act, act, None), eps)
    bias, norm = ((True, False), (None, "bn2d")) if fewer else ((False,) * 2, ("bn2d",) * 2)
    if kind == "fmb":
        return FusedMBConv(cin, cout, stride, expand, bias, norm, (act, None), eps)
    if kind == "res":
        return ResBlock(cin, cout, stride, bias, norm, (act, None), eps)
    raise ModelError(f"unknown block kind {kind!r}")


def _stem_conv(cfg: EfficientViTConfig) -> ConvLayer:
    return ConvLayer(
        cfg.in_chans, cfg.width_list[0], 3, 2, norm="bn2d", act=cfg.act, norm_eps=cfg.norm_eps
    )


class EfficientViTBackbone(nn.Module):
    """The official ``EfficientViTBackbone`` (B) / ``EfficientViTLargeBackbone`` (L); returns the
    last stage's feature map (B, width_list[-1], H/32, W/32)."""

    def __init__(self, cfg: EfficientViTConfig) -> None:
        super().__init__()
        w, d = cfg.width_list, cfg.depth_list
        stages: list[nn.Module] = []
        if cfg.series == "b":
            stem = [_stem_conv(cfg)]
            for _ in range(d[0]):
                stem.append(ResidualBlock(_local(w[0], w[0], 1, 1, "ds", False, cfg), True))
            self.input_stem = OpSequential(stem)
            cin = w[0]
            for width, depth in zip(w[1:3], d[1:3], strict=True):
                blocks = []
                for i in range(depth):
                    stride = 2 if i == 0 else 1
                    blocks.append(
                        ResidualBlock(_local(cin, width, stride, 4, "mb", False, cfg), stride == 1)
                    )
                    cin = width
                stages.append(OpSequential(blocks))
            for width, depth in zip(w[3:], d[3:], strict=True):
                blocks = [ResidualBlock(_local(cin, width, 2, 4, "mb", True, cfg), False)]
                cin = width
                blocks += [EfficientViTBlock(cin, cfg, 4) for _ in range(depth)]
                stages.append(OpSequential(blocks))
        else:
            stem = [_stem_conv(cfg)]
            for _ in range(d[0]):
                stem.append(ResidualBlock(_local(w[0], w[0], 1, 1, "res", False, cfg), True))
            stages.append(OpSequential(stem))
            cin = w[0]
            for s in range(1, 5):
                kind, expand, fewer = L_BLOCKS[s], L_EXPAND[s], L_FEWER_NORM[s]
                down = kind if kind in ("mb", "fmb") else "mb"
                blocks = [ResidualBlock(_local(cin, w[s], 2, expand * 4, down, fewer, cfg), False)]
                cin = w[s]
                for _ in range(d[s]):
                    if kind == "att":
                        blocks.append(EfficientViTBlock(cin, cfg, expand))
                    else:
                        block = _local(cin, cin, 1, expand, kind, fewer, cfg)
                        blocks.append(ResidualBlock(block, True))
                stages.append(OpSequential(blocks))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "input_stem"):
            x = self.input_stem(x)
        for stage in self.stages:
            x = stage(x)
        return x


class LinearLayer(nn.Module):
    """Flatten -> Linear -> optional LayerNorm -> optional act (official ``LinearLayer``)."""

    def __init__(
        self, cin: int, cout: int, bias: bool, norm: str | None, act: str | None, eps: float
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(cin, cout, bias)
        self.norm = build_norm(norm, cout, eps)
        self.act = build_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x.flatten(1) if x.dim() > 2 else x)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x


class ClsHead(OpSequential):
    """1x1 ConvLayer -> global average pool -> Linear+LN+act -> Linear (official ``ClsHead``)."""

    def __init__(self, cfg: EfficientViTConfig) -> None:
        w0, w1 = cfg.head_widths
        eps = cfg.norm_eps
        super().__init__(
            [
                ConvLayer(cfg.width_list[-1], w0, 1, norm="bn2d", act=cfg.act, norm_eps=eps),
                nn.AdaptiveAvgPool2d(1),
                LinearLayer(w0, w1, False, "ln", cfg.act, eps),
                LinearLayer(w1, cfg.num_classes, True, None, None, eps),
            ]
        )


class EfficientViTCls(nn.Module):
    """EfficientViT classifier: (B, 3, H, W) -> logits (B, num_classes)."""

    def __init__(self, config: EfficientViTConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = EfficientViTBackbone(config)
        self.head = ClsHead(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


# ------------------------------------------------------------------------------ registration
#: Export facts of the nets. ``patch``: the output stride (the last stage's LiteMLA layers see
#: (H/32)(W/32) tokens); each LiteMLA computes its own H·W in the graph for its order ``If``, so
#: export's SimA dispatcher is not involved.
EFFICIENTVIT_EXPORT = ExportFacts(
    method="litemla",
    tolerance="TOL_SIMA",
    tolerance_reason="ReLU kernel, two float32 products and a division by their sum (eps 1e-15), "
    "the evaluation order chosen alike on both sides: float32 accumulation only, as SimA",
    patch=OUTPUT_STRIDE,
    size_multiple=OUTPUT_STRIDE,
)


def _doc(name: str, v: Variant) -> str:
    return (
        f"EfficientViT-{name.rsplit('_', 1)[1].upper()}: widths "
        f"{'/'.join(map(str, v.width_list))}, depths {'/'.join(map(str, v.depth_list))}, "
        f"LiteMLA head dim {v.dim}."
    )


def _efficientvit_net(
    name: str,
    spec: Variant,
    img_size: int = 224,
    num_classes: int = 1000,
    order: str = "auto",
    crossover: int | None = None,
) -> EfficientViTCls:
    cfg = EfficientViTConfig(
        name,
        spec.series,
        spec.width_list,
        spec.depth_list,
        spec.dim,
        spec.head_widths,
        img_size=img_size,
        num_classes=num_classes,
        order=order,
        crossover=crossover,
    )
    return EfficientViTCls(cfg)


EFFICIENTVIT_MODELS = register_variants(
    VARIANTS,
    family="effvit",
    doc=_doc,
    export=EFFICIENTVIT_EXPORT,
    paper=lambda name, v: v.paper,
)(_efficientvit_net)


# ------------------------------------------------------------------------------ the bench block
@dataclass(frozen=True)
class LiteMLABlockConfig:
    """One LiteMLA layer on (B, N, C) tokens laid out on an (H, W) grid, H·W = N."""

    dim: int = 384
    heads: int = 12  # head dim 32, as B2/B3 and the L series
    tokens: int = 4096
    grid: tuple[int, int] | None = None
    order: str = "auto"
    crossover: int | None = None

    def __post_init__(self) -> None:
        for k in ("dim", "heads", "tokens"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ModelError(f"{k}={v!r} must be a positive integer")
        if self.dim % self.heads:
            raise ModelError(f"dim={self.dim} is not divisible by heads={self.heads}")
        H, W = self.grid_hw
        if H * W != self.tokens:
            raise ModelError(f"grid {H}x{W} does not hold tokens={self.tokens}")
        try:
            object.__setattr__(self, "order", validate_litemla_order(self.order))
            validate_crossover(self.crossover)
        except ValueError as e:
            raise ModelError(str(e)) from None

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def grid_hw(self) -> tuple[int, int]:
        """``grid``, else the most square H x W = tokens (H <= W; 1 x N for a prime N)."""
        if self.grid is not None:
            return int(self.grid[0]), int(self.grid[1])
        h = next(d for d in range(math.isqrt(self.tokens), 0, -1) if self.tokens % d == 0)
        return h, self.tokens // h


class LiteMLABlock(nn.Module):
    """``block_litemla``: tokens (B, N, C) -> the (B, C, H, W) grid -> LiteMLA (qkv 1x1 conv,
    scale-5 aggregation, ReLU attention, proj conv + BN) -> (B, N, C). ``self.attn`` is the
    mechanism's module."""

    def __init__(self, cfg: LiteMLABlockConfig) -> None:
        super().__init__()
        self.config = cfg
        self.grid = cfg.grid_hw
        self.attn = LiteMLA(
            cfg.dim, cfg.dim, dim=cfg.head_dim, order=cfg.order, crossover=cfg.crossover
        )

    def example_input(self, batch: int = 1, tokens: int | None = None) -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        return torch.randn(batch, tokens or self.config.tokens, self.config.dim, generator=g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        H, W = self.grid
        y = self.attn(x.transpose(1, 2).reshape(B, C, H, W))  # (B, C, H, W)
        return y.reshape(B, C, N).transpose(1, 2)  # (B, N, C)


BLOCK_EXPORT = ExportFacts(
    input="tokens",
    method="litemla",
    tolerance="TOL_SIMA",
    tolerance_reason=EFFICIENTVIT_EXPORT.tolerance_reason,
    fixed_grid=(
        "LiteMLA's aggregation convs see the tokens as the fixed (H, W) grid stored in the block"
    ),
)


def _litemla_block(
    name: str,
    kind: str,
    dim: int = 384,
    heads: int = 12,
    tokens: int = 4096,
    grid: tuple[int, int] | None = None,
    order: str = "auto",
    crossover: int | None = None,
) -> LiteMLABlock:
    if grid is not None:
        grid = tuple(int(v) for v in grid)
    cfg = LiteMLABlockConfig(dim, heads, tokens, grid, order, crossover)
    return LiteMLABlock(cfg)


BLOCK_MODELS = register_variants(
    {"block_litemla": "litemla"},
    family="block",
    doc="LiteMLA (EfficientViT): ReLU linear attention with scale-5 aggregation on an H x W token "
    "grid; [V;1]KᵀQ (linear) or V·norm(KᵀQ) (quadratic) by `order`.",
    export=BLOCK_EXPORT,
)(_litemla_block)

globals().update(EFFICIENTVIT_MODELS)
globals().update(BLOCK_MODELS)
