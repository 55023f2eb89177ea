"""LiteMLA: EfficientViT's ReLU linear attention with multi-scale aggregation (mit-han-lab/efficientvit).

On a feature map (B, C, H, W): a 1x1 conv gives Q, K, V for ``h = C // d`` heads of ``d`` channels
(``d`` is the official ``dim``); each aggregation scale (official: 5) adds ``h`` more heads, made by
a depthwise ``s x s`` conv and a grouped 1x1 conv (3·h groups) of the same Q, K, V. Per head, with
the ReLU kernel ``φ = relu`` and N = H·W tokens::

    out_j = Σ_i v_i (φ(k_i)·φ(q_j)) / (Σ_i φ(k_i)·φ(q_j) + eps),   eps = 1e-15

then the heads are concatenated and a 1x1 conv + BatchNorm projects them (``proj``). No softmax,
no scale. The official code evaluates it two ways and picks one by the token count:

* ``relu_linear_att`` (``kv_first`` here, H·W > d): V padded with a row of ones, ``[V;1]·Kᵀ`` is
  (d+1) x d, times Q gives (d+1) x N; the last row is the denominator (≈ 2·N·d·(d+1) per head).
  Here the ones row is its own pair of products, ``(1ᵀKᵀ)·Q`` (N·d each), next to ``(V·Kᵀ)·Q``:
  the same multiply-adds and sums, without padding V or slicing the (d+1) x N result;
* ``relu_quadratic_att`` (``qk_first``, H·W ≤ d): the N x N map ``KᵀQ``, each query's column
  divided by its sum + eps, then ``V·map`` (≈ 2·N²·d per head).

Both are reproduced op for op, the float16 handling included: the linear form runs in float32
when given float16 (and divides in float32 under bfloat16), the quadratic form divides the map
in float32. The order is a policy (:mod:`edgeattn.attention.order`'s names, ``linear`` and
``quadratic`` accepted as aliases): ``auto`` is the official rule, ``qk_first`` if
``N < threshold`` with ``threshold = crossover or d + 1``. With ``auto`` the choice stays in an
exported graph whose spatial axes are dynamic: an ONNX ``If`` per layer (the TorchScript
exporter: the dispatch is a scripted function, whose ``if`` becomes an ``If`` and is folded away
when the shape is static; dynamo: ``torch.cond``). Module and parameter names follow the
official ``LiteMLA`` and ``ConvLayer`` so official state_dicts load strictly.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn

from edgeattn.attention.order import validate_crossover, validate_order

LITEMLA_EPS = 1e-15  # the official LiteMLA eps
#: The evaluations by their official names; ``order`` accepts these as aliases.
ORDER_ALIASES = {"linear": "kv_first", "quadratic": "qk_first"}

#: Activations of the official ``build_act`` (GELU is its tanh approximation).
ACTS = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "hswish": nn.Hardswish,
    "silu": nn.SiLU,
    "gelu": functools.partial(nn.GELU, approximate="tanh"),
}
NORMS = ("bn2d", "ln")


def build_act(name: str | None) -> nn.Module | None:
    if name is None:
        return None
    if name not in ACTS:
        raise ValueError(f"act={name!r}; valid: {', '.join(ACTS)} or None")
    return ACTS[name]()


def build_norm(name: str | None, channels: int, eps: float = 1e-5) -> nn.Module | None:
    """``bn2d`` (BatchNorm2d) or ``ln`` (LayerNorm over the last axis), as the official
    ``build_norm``; ``eps`` is what the official model zoo sets on every norm (1e-5 / 1e-7)."""
    if name is None:
        return None
    if name == "bn2d":
        return nn.BatchNorm2d(channels, eps=eps)
    if name == "ln":
        return nn.LayerNorm(channels, eps=eps)
    raise ValueError(f"norm={name!r}; valid: {', '.join(NORMS)} or None")


class ConvLayer(nn.Module):
    """Conv2d ('same' padding) -> optional norm -> optional activation; keys ``conv.*`` and
    ``norm.*`` as the official ``ConvLayer``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        use_bias: bool = False,
        norm: str | None = "bn2d",
        act: str | None = "relu",
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={kernel_size} must be odd ('same' padding)")
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=kernel_size // 2,
            groups=groups,
            bias=use_bias,
        )
        self.norm = build_norm(norm, out_channels, norm_eps)
        self.act = build_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.act is not None:
            x = self.act(x)
        return x


def validate_litemla_order(order: object) -> str:
    """An order of :data:`~edgeattn.attention.order.ORDERS`, or an alias of
    :data:`ORDER_ALIASES`, as the canonical name."""
    if isinstance(order, str) and order in ORDER_ALIASES:
        return ORDER_ALIASES[order]
    try:
        return validate_order(order)
    except ValueError:
        raise ValueError(
            f"invalid order {order!r}; valid orders: auto, qk_first (quadratic), kv_first (linear)"
        ) from None


def litemla_threshold(dim: int, crossover: int | None = None) -> int:
    """Token count from which ``auto`` takes the linear form: ``crossover``, else ``dim + 1``
    (the official ``H·W > dim``)."""
    crossover = validate_crossover(crossover)
    return dim + 1 if crossover is None else crossover


def _split_heads(qkv: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, heads·3d, H, W) -> q, k, v, each (B, heads, d, N); q and k through the ReLU kernel."""
    B, _, H, W = qkv.shape
    qkv = qkv.reshape(B, -1, 3 * dim, H * W)  # (B, h, 3d, N): per head [q; k; v]
    q = torch.relu(qkv[:, :, 0:dim])
    k = torch.relu(qkv[:, :, dim : 2 * dim])
    v = qkv[:, :, 2 * dim :]
    return q, k, v


def relu_linear_att(qkv: torch.Tensor, dim: int, eps: float) -> torch.Tensor:
    """The official linear form (``kv_first``): ``([V;1]·Kᵀ)·Q``, rows / last row.
    (B, heads·3d, H, W) -> (B, heads·d, H, W), in ``qkv``'s dtype."""
    B, _, H, W = qkv.shape
    dtype = qkv.dtype
    if dtype == torch.float16:
        qkv = qkv.float()  # the official upcast: the whole linear form in float32
    q, k, v = _split_heads(qkv, dim)
    N = H * W
    # [V;1]·Kᵀ·Q with the ones row as its own products: the same multiply-adds, but neither V
    # padded nor the (d+1) × N result sliced (two N-sized copies fewer in ONNX Runtime)
    ones = torch.ones(N, 1, dtype=k.dtype, device=k.device)
    ks = (k @ ones).transpose(-1, -2)  # (B, h, 1, d): 1ᵀKᵀ, the ones row times Kᵀ
    num = (v @ k.transpose(-1, -2)) @ q  # (B, h, d, N)
    den = ks @ q  # (B, h, 1, N): Σ_i k_i·q_j
    if num.dtype == torch.bfloat16:
        num, den = num.float(), den.float()
    out = num / (den + eps)  # (B, h, d, N)
    return out.reshape(B, -1, H, W).to(dtype)


def relu_quadratic_att(qkv: torch.Tensor, dim: int, eps: float) -> torch.Tensor:
    """The official quadratic form (``qk_first``): the (N x N) map ``KᵀQ``, columns / (sum + eps),
    then ``V·map``. (B, heads·3d, H, W) -> (B, heads·d, H, W)."""
    B, _, H, W = qkv.shape
    q, k, v = _split_heads(qkv, dim)
    att = k.transpose(-1, -2) @ q  # (B, h, N, N): [key i, query j]
    dtype = att.dtype
    if dtype == torch.float16 or dtype == torch.bfloat16:
        att = att.float()  # the official float32 division
    att = att / (att.sum(dim=2, keepdim=True) + eps)
    out = v @ att.to(dtype)  # (B, h, d, N)
    return out.reshape(B, -1, H, W)


def litemla_dispatch(qkv: torch.Tensor, dim: int, eps: float, threshold: int) -> torch.Tensor:
    """``auto``: quadratic if ``H·W < threshold`` else linear (scripted for the TorchScript
    exporter, where this ``if`` becomes an ONNX ``If``)."""
    if qkv.shape[-2] * qkv.shape[-1] < threshold:
        return relu_quadratic_att(qkv, dim, eps)
    return relu_linear_att(qkv, dim, eps)


@functools.cache
def _scripted_dispatch():  # compiled on the first TorchScript export, not at import
    return torch.jit.script(litemla_dispatch)


class LiteMLA(nn.Module):
    """Lightweight multi-scale linear attention, (B, C_in, H, W) -> (B, C_out, H, W).

    ``dim`` is the per-head width (official name), ``heads`` defaults to
    ``int(in_channels // dim * heads_ratio)``; ``use_bias``, ``norm`` and ``act`` are
    (qkv, proj) pairs as in the official code (a single value is used for both). ``order``
    and ``crossover``: see the module doc; :func:`set_litemla_order` changes them later.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        heads: int | None = None,
        heads_ratio: float = 1.0,
        dim: int = 8,
        use_bias: bool | Sequence[bool] = False,
        norm: str | None | Sequence[str | None] = (None, "bn2d"),
        act: str | None | Sequence[str | None] = (None, None),
        kernel_func: str = "relu",
        scales: Sequence[int] = (5,),
        eps: float = LITEMLA_EPS,
        order: str = "auto",
        crossover: int | None = None,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if kernel_func != "relu":
            raise ValueError(f"kernel_func={kernel_func!r}: only the ReLU kernel is implemented")
        heads = int(in_channels // dim * heads_ratio) if heads is None else heads
        if heads < 1:
            raise ValueError(f"in_channels={in_channels} gives no head of dim {dim}")
        use_bias, norm, act = (_pair(v) for v in (use_bias, norm, act))
        total = heads * dim
        self.dim = dim
        self.heads = heads
        self.eps = eps
        self.order = validate_litemla_order(order)
        self.crossover = validate_crossover(crossover)
        self.qkv = ConvLayer(
            in_channels, 3 * total, 1, use_bias=use_bias[0], norm=norm[0], act=act[0],
            norm_eps=norm_eps,
        )  # fmt: skip
        self.aggreg = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(
                    3 * total, 3 * total, s, padding=s // 2, groups=3 * total, bias=use_bias[0]
                ),
                nn.Conv2d(3 * total, 3 * total, 1, groups=3 * heads, bias=use_bias[0]),
            )
            for s in scales
        )
        self.proj = ConvLayer(
            total * (1 + len(scales)), out_channels, 1, use_bias=use_bias[1], norm=norm[1],
            act=act[1], norm_eps=norm_eps,
        )  # fmt: skip

    @property
    def threshold(self) -> int:
        return litemla_threshold(self.dim, self.crossover)

    def attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """The attention of the concatenated multi-scale ``qkv`` by the order policy."""
        order = validate_litemla_order(self.order)
        if order == "auto":
            n = qkv.shape[-2] * qkv.shape[-1]
            thr = self.threshold
            if torch.compiler.is_compiling() and isinstance(n, torch.SymInt):
                # dynamic spatial axes (torch.export / dynamo ONNX): both forms, an If at run time
                return torch.cond(
                    n < thr,
                    functools.partial(relu_quadratic_att, dim=self.dim, eps=self.eps),
                    functools.partial(relu_linear_att, dim=self.dim, eps=self.eps),
                    (qkv,),
                )
            if torch.jit.is_tracing():  # TorchScript exporter: If, folded when shapes are static
                out = _scripted_dispatch()(qkv, self.dim, self.eps, thr)
                # the traced sizes (constants when static) give the If's output its shape back,
                # so the next layers' conditions fold too
                B, C, H, W = qkv.shape
                return out.reshape(B, C // 3, H, W)
            order = "qk_first" if n < thr else "kv_first"
        if order == "qk_first":
            return relu_quadratic_att(qkv, self.dim, self.eps)
        return relu_linear_att(qkv, self.dim, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(x)  # (B, 3·h·d, H, W)
        # each scale's heads attend on their own: the official code concatenates the scales'
        # qkv first (heads never mix, so the outputs are the same), which costs ONNX Runtime a
        # copy of 2·3·h·d·N values before the head split; the outputs (a third of that) are
        # concatenated instead, in the official head order
        parts = [qkv] + [op(qkv) for op in self.aggreg]
        return self.proj(torch.cat([self.attend(p) for p in parts], dim=1))

    def extra_repr(self) -> str:
        return (
            f"heads={self.heads}, dim={self.dim}, order={self.order!r}, "
            f"crossover={self.crossover}, eps={self.eps:g}"
        )


def _pair(v: object) -> tuple:
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise ValueError(f"expected one value or a (qkv, proj) pair, got {v!r}")
        return tuple(v)
    return (v, v)


def set_litemla_order(module: nn.Module, order: str, crossover: int | None = None) -> int:
    """Set ``order`` and ``crossover`` on every :class:`LiteMLA` in ``module``; return how many."""
    order = validate_litemla_order(order)
    crossover = validate_crossover(crossover)
    count = 0
    for m in module.modules():
        if isinstance(m, LiteMLA):
            m.order, m.crossover = order, crossover
            count += 1
    return count
