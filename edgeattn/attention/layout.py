"""The channels-first projection the softmax-free blocks share, and the integer-layout switch.

:func:`integer_layout` says whether the graph being built is headed for integer GEMMs (an int8
export: :mod:`edgeattn.export.onnx` sets it around the graph export with :func:`for_integer`).
A block may then choose another evaluation of the same algebra: on this project's CPU an
activation × activation product quantised to uint8 × uint8 runs ~5x slower than a uint8 ×
int8 product against a weight (ONNX Runtime's QLinearMatMul), so a float32 trick that folds a
weight into a run-time operand (SimA's ``blockdiag(KᵀV)·W_oᵀ``) costs more than it saves there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

import torch

#: a plain module flag, not a ContextVar: dynamo (the torch.export path) reads a global as a
#: constant but breaks its graph on ContextVar.get; exports run one at a time
_INTEGER = [False]


def integer_layout() -> bool:
    """Whether the graph being built is for integer GEMMs (see the module doc)."""
    return _INTEGER[0]


@contextlib.contextmanager
def for_integer(on: bool = True) -> Iterator[None]:
    """Build graphs for integer GEMMs inside this block (when ``on``)."""
    before = _INTEGER[0]
    _INTEGER[0] = bool(on)
    try:
        yield
    finally:
        _INTEGER[0] = before


def linear_t(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """A linear layer's output channels-first, ``weight·xᵀ (+ bias as a column)``:
    (B, N, C_in) -> (B, C_out, N).

    One full-width product whose result has each head's channels as contiguous rows (a reshape
    to (B, h, d, N) is free). ONNX Runtime reads x transposed inside the kernel (a FusedMatMul
    with transB), so no transpose of x is materialised; on this project's CPU it runs faster
    than the token-major ``x·Wᵀ`` Gemm (about 29 against 38 ms at N = 16384, C = 384)."""
    y = weight @ x.transpose(-2, -1)
    return y if bias is None else y + bias[:, None]


class Projection(NamedTuple):
    """A linear layer's parameters as the projection helpers read them (an ``nn.Linear`` has the
    same four attributes)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    in_features: int
    out_features: int


def bias_in_weight(linear: torch.nn.Linear, x: torch.Tensor) -> tuple[torch.Tensor, Projection]:
    """``(x̃, layer)`` with ``x̃ = [x, 1]`` (B, N, C + 1) and the bias as the layer's last input
    column, so ``x̃·W̃ᵀ = x·Wᵀ + b`` for every slice of the layer's outputs: each product then
    carries its bias, and no Add of an N-sized tensor is left. For a graph built for integer
    GEMMs, where a bias Add is a requantising QLinearAdd of the whole product (SimA at int8:
    :mod:`edgeattn.attention.sima`), or for float32 graphs where ONNX Runtime would fuse each bias
    Add into a Gemm that first writes the broadcast bias (Hydra, MobileViTv2)."""
    if linear.bias is None:
        return x, Projection(linear.weight, None, linear.in_features, linear.out_features)
    ones = torch.ones(*x.shape[:-1], 1, dtype=x.dtype, device=x.device)
    w = torch.cat([linear.weight, linear.bias[:, None]], dim=1)
    return torch.cat([x, ones], dim=-1), Projection(
        w, None, linear.in_features + 1, linear.out_features
    )
