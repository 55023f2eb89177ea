"""SOFT attention (Lu et al., NeurIPS 2021; "SOFT-Norm" of the IJCV 2024 extension).

Softmax is replaced by a Gaussian kernel ``S_ij = exp(-||q_i - k_j||^2 / 2)`` on queries scaled by
``d_h^-1/4`` with keys tied to queries (``K = Q``), approximated in Nystrom form through ``m``
bottleneck ("landmark") tokens ``Q~`` taken from the token grid:

    X = (K1 @ pinv(K2)) @ (K1^T @ V) + DWConv(V),   K1 = exp(Q (-) Q~) (N x m),  K2 = exp(Q~ (-) Q~),

with ``pinv`` the Newton-Raphson iteration of :mod:`edgeattn.attention.pinv`, evaluated in this
order so the cost is linear in N for a fixed m. Parameter names (``W_q``, ``W_v``, ``attn``,
``ff``; ``attn.Qlandmark_op``, ``attn.Qnorm_act``, ``attn.conv``) follow fudan-zvg/SOFT so
official checkpoints load strictly.

Differences from the official code, all intentional:

* the squared distance is built with ``.sum(-1, keepdim=True)`` instead of matmuls against
  ``torch.ones(...).cuda()`` (hard-coded device, and constants whose shapes were baked to the
  export resolution); see :func:`squared_distance`;
* the pseudo-inverse is the plain traceable Newton iteration (the official CUDA-only
  ``newton_inverse_kernel`` runs the same forward under ``no_grad`` with a hand-written backward;
  here autograd differentiates through the iteration);
* SOFT-Norm scales its Newton step per sample, not over the whole batch (see ``newton_inv_norm``);
* landmarks can also be average-pooled (the paper's default) or adaptively pooled to a fixed
  grid, which keeps m, hence the cost, fixed at any resolution (the released code fixes the ratio,
  so m grows with the image).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from edgeattn.attention.layout import linear_t
from edgeattn.attention.pinv import newton_inv, newton_inv_norm

LANDMARK_MODES = ("conv", "avgpool", "adaptive")


def squared_distance(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Pairwise squared distances ``||q_i - k_j||^2`` for q (..., n, d), k (..., m, d) -> (..., n, m).

    Same order of operations as the official 'torch' kernel method,
    ``(|q|^2 summed over d) + (|k|^2 summed over d) - 2 q k^T``, but the two sums are
    ``.sum(-1, keepdim=True)`` reductions rather than matmuls against ones matrices, so nothing
    depends on a device or on the shapes seen at export time.
    """
    q_sq = q.pow(2).sum(dim=-1, keepdim=True)  # (..., n, 1)
    k_sq = k.pow(2).sum(dim=-1, keepdim=True).transpose(-1, -2)  # (..., 1, m)
    return q_sq + k_sq - 2.0 * (q @ k.transpose(-1, -2))


def gaussian_kernel(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """SOFT's kernel ``exp(-||q_i - k_j||^2 / 2)``: (..., n, d), (..., m, d) -> (..., n, m).

    The ``1 / (2 sqrt(d))`` of the paper is obtained by scaling q (and so k) by ``d^-1/4`` first.
    """
    return torch.exp(-squared_distance(q, k) / 2)


def gaussian_kernel_cols(k: torch.Tensor, q_t: torch.Tensor) -> torch.Tensor:
    """:func:`gaussian_kernel` of few rows k (..., m, d) against many columns given
    channels-first, q_t (..., d, n): (..., m, n), the transpose of ``gaussian_kernel(q, k)``.
    Written as ``exp(k·q_t − |k|²/2 − |q|²/2)``: the same value, three passes over the (m × n)
    result (product, two broadcast subtractions, exp) instead of five; ``|q|²`` is a ones-row
    product (a reduction over the channel axis, which is not the last one here)."""
    k_half = k.pow(2).sum(dim=-1, keepdim=True) * 0.5  # (..., m, 1)
    ones = torch.ones(1, q_t.shape[-2], dtype=q_t.dtype, device=q_t.device)
    q_half = (ones @ (q_t * q_t)) * 0.5  # (..., 1, n)
    return torch.exp(k @ q_t - k_half - q_half)


def _avg_matrix(n_in: int, n_out: int, size: int | None) -> torch.Tensor:
    """(n_out, n_in) averaging matrix: ``size``-wide bins from 0 (AvgPool2d with kernel = stride
    = size, remainder dropped) or, with ``size=None``, adaptive_avg_pool's bins."""
    if size is None:
        return _pool_matrix(n_in, n_out)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        m[i, i * size : (i + 1) * size] = 1.0 / size
    return m


def _validate_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _pool_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) averaging matrix with adaptive_avg_pool's bins [floor(i n/o), ceil((i+1) n/o))."""
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        s, e = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        m[i, s:e] = 1.0 / (e - s)
    return m


class AdaptivePool2d(nn.Module):
    """``adaptive_avg_pool2d`` that ONNX can take at any grid: a plain AveragePool when the grid
    divides evenly, else two small averaging matmuls (rows, then columns), which is the same
    arithmetic (each bin is a rectangle). The TorchScript exporter rejects adaptive pooling whose
    output does not divide the input. The bins are fixed from the grid seen at export, like the
    official fixed-ratio landmarks; no parameters, so checkpoints are unaffected."""

    def __init__(self, output_size: tuple[int, int]) -> None:
        super().__init__()
        self.output_size = (int(output_size[0]), int(output_size[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        oh, ow = self.output_size
        H, W = int(x.shape[-2]), int(x.shape[-1])
        if H % oh == 0 and W % ow == 0:
            return F.avg_pool2d(x, kernel_size=(H // oh, W // ow))  # (.., oh, ow)
        ph = _pool_matrix(H, oh).to(dtype=x.dtype, device=x.device)  # (oh, H)
        pw = _pool_matrix(W, ow).to(dtype=x.dtype, device=x.device)  # (ow, W)
        return ph @ x @ pw.transpose(0, 1)  # (.., oh, ow)


class SoftAttentionKernel(nn.Module):
    """The kernel part of SOFT attention (official ``SoftmaxFreeAttentionKernel``).

    Takes ``Q`` and ``V`` channels-first, (B, h, d, P + H*W) and (B, C, P + H*W) -- ``P =
    num_prefix_tokens`` leading non-spatial tokens (a cls token; 0 in SOFT stages 1-3) followed
    by the row-major H x W token grid -- and returns X as (B, C, P + H*W).

    Args:
        dim: model width (``num_heads * head_dim``).
        num_heads: heads h.
        ratio: landmark sampling ratio r for ``"conv"`` and ``"avgpool"`` (kernel = stride = r).
        conv_size: kernel of the depthwise conv skip on V (one k x k filter per head, shared by the
            head's d channels, no bias); 0 disables the skip.
        landmarks: ``"conv"`` (official: Conv2d(d, d, r, stride r, no bias) shared by the heads),
            ``"avgpool"`` (r x r average pooling, no parameters; the paper's default), or
            ``"adaptive"`` (adaptive average pooling to a fixed ``num_landmarks`` grid).
            Landmarks always go through ``Qnorm_act`` = LayerNorm(d) + exact GELU, as upstream.
        num_landmarks: m for ``"adaptive"``: a perfect square (grid sqrt(m) x sqrt(m)).
        newton_iters: Newton-Raphson iterations for the pseudo-inverse (official 20).
        norm: SOFT-Norm: ``pinv(K2)`` is replaced by ``D^-1/2 pinv(K2) D^-1/2`` with ``D`` the row
            sums of K2, and the inverse uses the soft_norm initialisation (``newton_inv_norm``).
        num_prefix_tokens: leading tokens outside the grid (0 or 1). They are extra landmarks
            (after Qnorm_act) and their depthwise-conv "skip" is their own V, as in the official
            (dead) ratio == 1 branch. Used only by the fully softmax-free stage 4.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ratio: int = 8,
        conv_size: int = 9,
        landmarks: str = "conv",
        num_landmarks: int | None = None,
        newton_iters: int = 20,
        norm: bool = False,
        num_prefix_tokens: int = 0,
    ) -> None:
        super().__init__()
        _validate_int("num_heads", num_heads, 1)
        _validate_int("dim", dim, 1)
        if dim % num_heads:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        _validate_int("ratio", ratio, 1)
        _validate_int("conv_size", conv_size, 0)
        if conv_size and conv_size % 2 == 0:
            raise ValueError(f"conv_size must be odd (or 0 to disable), got {conv_size}")
        _validate_int("newton_iters", newton_iters, 0)
        if landmarks not in LANDMARK_MODES:
            raise ValueError(f"landmarks must be one of {LANDMARK_MODES}, got {landmarks!r}")
        if num_prefix_tokens not in (0, 1):
            raise ValueError(f"num_prefix_tokens must be 0 or 1, got {num_prefix_tokens!r}")
        self.head_dim = dim // num_heads
        self.num_head = num_heads
        self.ratio = ratio
        self.landmarks = landmarks
        self.newton_iters = newton_iters
        self.norm = bool(norm)
        self.num_prefix_tokens = num_prefix_tokens
        # official: Q / sqrt(sqrt(head_dim)); kept as a division by the same constant
        self.q_divisor = math.sqrt(math.sqrt(self.head_dim))

        d = self.head_dim
        if landmarks == "conv":
            self.Qlandmark_op: nn.Module = nn.Conv2d(
                d, d, kernel_size=ratio, stride=ratio, bias=False
            )
            self.num_landmarks = None
        elif landmarks == "avgpool":
            self.Qlandmark_op = nn.AvgPool2d(kernel_size=ratio, stride=ratio)
            self.num_landmarks = None
        else:
            if num_landmarks is None:
                raise ValueError(
                    "landmarks='adaptive' needs num_landmarks (a perfect square, e.g. 49)"
                )
            _validate_int("num_landmarks", num_landmarks, 1)
            side = math.isqrt(num_landmarks)
            if side * side != num_landmarks:
                raise ValueError(f"num_landmarks must be a perfect square, got {num_landmarks}")
            self.Qlandmark_op = AdaptivePool2d((side, side))
            self.num_landmarks = num_landmarks
        self.Qnorm_act = nn.Sequential(nn.LayerNorm(d), nn.GELU())
        self.conv: nn.Module | None = None
        if conv_size:
            self.conv = nn.Conv2d(
                num_heads,
                num_heads,
                kernel_size=conv_size,
                padding=conv_size // 2,
                groups=num_heads,
                bias=False,
            )

    def _inverse(self, k2: torch.Tensor) -> torch.Tensor:
        """pinv(K2) (plain SOFT) or D^-1/2 pinv(K2) D^-1/2 (SOFT-Norm); k2 (B, h, m, m)."""
        if not self.norm:
            return newton_inv(k2, self.newton_iters)
        d_sym = 1 / k2.sum(dim=-1, keepdim=True).sqrt()  # (B, h, m, 1)
        inv = newton_inv_norm(k2, self.newton_iters)  # (B, h, m, m)
        return d_sym * inv * d_sym.transpose(-1, -2)

    def landmarks_of(self, Q_t: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """The m bottleneck tokens of scaled Q, channels-first (B, h, d, P + H*W), after
        ``Qnorm_act``: (B, h, m, d).

        In that layout the grid is already the (B·h, d, H, W) image the official strided ``conv``
        landmarks take, and pooled landmarks (``avgpool``, ``adaptive``) are two small averaging
        products over it, columns first ((W × ow) on all B·C·H rows at once), then rows
        ((oh × H) on the ow-wide result): the same averages as the pooling layers."""
        B, h, d, _ = Q_t.shape
        P = self.num_prefix_tokens
        grid = Q_t[..., P:] if P else Q_t  # (B, h, d, H*W)
        if self.landmarks == "conv":
            lm = self.Qlandmark_op(grid.reshape(B * h, d, H, W))  # (B*h, d, H', W')
        else:
            if self.landmarks == "adaptive":
                (oh, ow), size = self.Qlandmark_op.output_size, None
            else:
                (oh, ow), size = (H // self.ratio, W // self.ratio), self.ratio
            ph = _avg_matrix(H, oh, size).to(dtype=Q_t.dtype, device=Q_t.device)  # (oh, H)
            pw = _avg_matrix(W, ow, size).to(dtype=Q_t.dtype, device=Q_t.device)  # (ow, W)
            lm = grid.reshape(B, h * d * H, W) @ pw.transpose(0, 1)  # (B, C*H, ow)
            lm = ph @ lm.reshape(B, h * d, H, ow)  # (B, C, oh, ow)
        lm = lm.reshape(B, h, d, -1).transpose(-2, -1)  # (B, h, m, d), row-major landmark grid
        if P:  # constructor setting, not a shape test: prefix tokens are extra landmarks
            lm = torch.cat([Q_t[..., :P].transpose(-2, -1), lm], dim=2)  # (B, h, P + m, d)
        return self.Qnorm_act(lm)

    def forward(self, Q_t: torch.Tensor, V_t: torch.Tensor, H: int, W: int) -> torch.Tensor:
        """X for Q channels-first, Q_t (B, h, d, N), **already divided by** ``q_divisor``, and V
        channels-first, V_t (B, C, N) with channel ``head * d + i``; returns X channels-first,
        (B, C, N).

        Everything N-sized stays channels-first, so no N-sized tensor is transposed or copied:
        the kernel is computed transposed, ``K1ᵀ = exp(L·Q_t − |l|²/2 − |q|²/2)`` (B, h, m, N),
        the low-rank product as ``Xᵀ = (Vᵀ K1)·(pinv(K2)ᵀ K1ᵀ)`` (the official association,
        ``(K1 pinv)(K1ᵀV)``, transposed), and the depthwise skip is a plain depthwise
        convolution over (B, C, H, W) (each head's filter repeated for its d channels)."""
        B, h, d, N = Q_t.shape
        P = self.num_prefix_tokens
        lm = self.landmarks_of(Q_t, H, W)  # (B, h, m, d)
        k1_t = gaussian_kernel_cols(lm, Q_t)  # (B, h, m, N) = K1ᵀ
        k2 = gaussian_kernel(lm, lm)  # (B, h, m, m)
        v_t = V_t.reshape(B, h, d, N)
        kv_t = v_t @ k1_t.transpose(-1, -2)  # (B, h, d, m) = (K1ᵀ V)ᵀ
        X_t = (kv_t @ (self._inverse(k2).transpose(-1, -2) @ k1_t)).reshape(B, h * d, N)
        if self.conv is not None:
            grid = V_t[:, :, P:] if P else V_t  # (B, C, H*W)
            # (h, 1, k, k) -> (C, 1, k, k): each head's filter for its d channels; sizes from
            # the module (Python ints), so a traced export knows the kernel's shape
            hh, dd, k = self.num_head, self.head_dim, self.conv.kernel_size[0]
            w = self.conv.weight.expand(hh, dd, k, k).reshape(hh * dd, 1, k, k)
            skip = F.conv2d(grid.reshape(B, h * d, H, W), w, padding=k // 2, groups=h * d)
            skip = skip.reshape(B, h * d, H * W)
            if P:  # prefix tokens skip with their own V
                skip = torch.cat([V_t[:, :, :P], skip], dim=2)  # (B, C, N)
            X_t = X_t + skip
        return X_t


class SoftAttention(nn.Module):
    """SOFT multi-head attention (official ``SoftmaxFreeAttention``, the ``mha`` submodule).

    ``forward(x, H, W)``: x (B, N, C) with N = P + H*W tokens (P = ``num_prefix_tokens``) ->
    (B, N, C). ``Q = W_q x`` split into heads and scaled by ``head_dim^-1/4`` inside ``attn``;
    keys are the queries (no ``W_k``); ``V = W_v x``; the output projection is ``ff``.
    See :class:`SoftAttentionKernel` for the other arguments. ``qkv_bias`` sets the bias of
    ``W_q`` and ``W_v`` (always on upstream).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        ratio: int = 8,
        conv_size: int = 9,
        landmarks: str = "conv",
        num_landmarks: int | None = None,
        newton_iters: int = 20,
        norm: bool = False,
        num_prefix_tokens: int = 0,
    ) -> None:
        super().__init__()
        self.attn = SoftAttentionKernel(
            dim,
            num_heads,
            ratio=ratio,
            conv_size=conv_size,
            landmarks=landmarks,
            num_landmarks=num_landmarks,
            newton_iters=newton_iters,
            norm=norm,
            num_prefix_tokens=num_prefix_tokens,
        )
        self.dim = dim
        self.num_head = num_heads
        self.head_dim = dim // num_heads
        self.W_q = nn.Linear(dim, dim, bias=qkv_bias)
        self.W_v = nn.Linear(dim, dim, bias=qkv_bias)
        self.ff = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
        B, N, C = x.shape
        h, d = self.num_head, self.head_dim
        # Q and V channels-first, (C, C) @ xᵀ: (B, C, N), each head's rows contiguous; Q scaled
        # by head_dim^-1/4 (as the official division) through its weights
        c = self.attn.q_divisor
        b_q = None if self.W_q.bias is None else self.W_q.bias / c
        q_t = linear_t(self.W_q.weight / c, b_q, x).reshape(B, h, d, N)
        v_t = linear_t(self.W_v.weight, self.W_v.bias, x)
        out = self.attn(q_t, v_t, H, W)  # (B, C, N)
        # ff on the channels-first X as W_ff·X (+ b as a column), then one transpose of the
        # result: 0.85x the time of a product reading X transposed (FusedMatMul transA) at
        # N = 16384, and faster than F.linear on a materialised transpose (measured here)
        y_t = self.ff.weight @ out  # (B, C, N)
        if self.ff.bias is not None:
            y_t = y_t + self.ff.bias[:, None]
        return y_t.transpose(1, 2)  # (B, N, C)
