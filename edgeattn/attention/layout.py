"""The channels-first projection the softmax-free blocks share."""

from __future__ import annotations

import torch


def linear_t(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """A linear layer's output channels-first, ``weight·xᵀ (+ bias as a column)``:
    (B, N, C_in) -> (B, C_out, N).

    One full-width product whose result has each head's channels as contiguous rows (a reshape
    to (B, h, d, N) is free). ONNX Runtime reads x transposed inside the kernel (a FusedMatMul
    with transB), so no transpose of x is materialised; on this project's CPU it runs faster
    than the token-major ``x·Wᵀ`` Gemm (about 29 against 38 ms at N = 16384, C = 384)."""
    y = weight @ x.transpose(-2, -1)
    return y if bias is None else y + bias[:, None]
