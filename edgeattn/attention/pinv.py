"""Newton-Raphson (Newton-Schulz) iteration for the Moore-Penrose pseudo-inverse.

SOFT approximates the pseudo-inverse of the m x m bottleneck kernel ``A`` with

    A_0 = alpha * A,        A_{k+1} = 2 A_k - A_k A A_k,

which converges to ``A^+`` when ``0 < alpha < 2 / sigma_max(A)^2`` (Ben-Israel & Cohen 1966;
SOFT paper, Alg. 2, Thm. 1, Prop. 1). Everything here is plain, traceable torch: a fixed number of
batched matmuls, no data-dependent Python control flow and no ``.item()``, so the iteration
unrolls into an ONNX graph. Matrices are batched over any leading axes: ``(..., m, m)``.

Two variants exist in the official code and both are reproduced:

* :func:`newton_inv` -- the one the plain ``soft_*`` models use (``SOFT/kernel/inverse.py``,
  commit bb0eec0): ``alpha = 0.9 * 2 / max_row_sum(A)^2`` per matrix, the iteration runs on the
  regularised ``A + 0.01 I``.
* :func:`newton_inv_norm` -- the one of the ``soft_norm_*`` models
  (``SoftmaxFreeNormAttentionKernel.newton_inv``): ``alpha = 2 / max_row_sum^2`` followed by up to
  ten halvings of ``alpha`` while ``max column-L1 norm of (I - A alpha A) > 1.01``, no
  regulariser. The official code takes both maxima over the *whole batch tensor*, so an image's
  output depends on the other images in its batch; here they are taken per sample (dimension 0),
  which equals the official result at batch size 1. The official ``while`` loop is written as a
  fixed, unrolled sequence of ``torch.where`` steps, which is exactly equivalent (see the function).
"""

from __future__ import annotations

import torch

#: Regulariser added to the diagonal by the official ``newton_inv`` (``A + 0.01 I``).
NEWTON_REGULARIZER = 0.01
#: Safety factor on the initial step of the official ``newton_inv`` (``0.9 * 2 / ||A||_1^2``).
NEWTON_ALPHA_FACTOR = 0.9
#: Threshold and maximum number of halvings of the soft_norm initial step.
NORM_PNORM_THRESHOLD = 1.01
NORM_MAX_HALVINGS = 10


def _eye_like(mat: torch.Tensor) -> torch.Tensor:
    """Identity of the matrix size of ``mat`` (..., m, m), same dtype and device."""
    return torch.eye(mat.shape[-1], dtype=mat.dtype, device=mat.device)


def _check_square(mat: torch.Tensor, fn: str) -> None:
    if torch.jit.is_tracing():  # shapes are traced values there; the check is for eager callers
        return
    if mat.dim() < 2 or mat.shape[-1] != mat.shape[-2]:
        raise ValueError(
            f"{fn}: expected a batch of square matrices (..., m, m), got {tuple(mat.shape)}"
        )


def newton_inv(mat: torch.Tensor, iters: int = 20) -> torch.Tensor:
    """Pseudo-inverse of ``mat + 0.01 I`` by ``iters`` Newton steps (official ``newton_inv``).

    ``alpha = 0.9 * 2 / (max row sum of mat)^2`` per matrix (every leading index separately; the
    row sum is the 1-norm of a symmetric non-negative matrix). The iterate is
    ``V <- 2 V - (V @ P) @ V`` with ``P = mat + 0.01 I``, evaluated left to right as upstream.
    After convergence the result approximates ``torch.linalg.pinv(mat + 0.01 I)``.
    """
    _check_square(mat, "newton_inv")
    if iters < 0:
        raise ValueError(f"newton_inv: iters must be >= 0, got {iters}")
    eye = _eye_like(mat)
    alpha = NEWTON_ALPHA_FACTOR * 2 / mat.sum(dim=-1).amax(dim=-1) ** 2  # (...,)
    p = mat + NEWTON_REGULARIZER * eye  # (..., m, m)
    v = alpha[..., None, None] * p  # (..., m, m)
    for _ in range(iters):
        v = 2 * v - v @ p @ v
    return v


def _per_sample_max(t: torch.Tensor) -> torch.Tensor:
    """Max over every axis but the first, kept broadcastable: (B, ...) -> (B, 1, ..., 1)."""
    m = t.flatten(1).amax(dim=1)  # (B,)
    return m.reshape((-1,) + (1,) * (t.dim() - 1))


def newton_inv_norm(mat: torch.Tensor, iters: int = 20) -> torch.Tensor:
    """Pseudo-inverse of ``mat`` with the soft_norm initialisation, scaled PER SAMPLE.

    ``mat`` is ``(B, ..., m, m)`` (``(B, h, m, m)`` in SOFT). For every sample ``b``:
    ``alpha_b = 2 / (max row sum over all heads and rows of mat[b])^2``; then, up to 10 times,
    ``alpha_b`` is halved while ``max_j sum_i |(I - P alpha_b P)_ij|`` (the largest column L1 norm,
    maximised over the heads of sample ``b``) exceeds 1.01; then ``iters`` Newton steps.

    The official code does this with a data-dependent ``while`` loop over a batch-global alpha.
    Here the loop is unrolled into exactly ``NORM_MAX_HALVINGS`` steps of ``torch.where``. This is
    exactly equivalent: the test at step k only depends on the current alpha, so once it passes
    alpha stops changing and every later test passes too; a sample therefore ends with
    ``min(k*, 10)`` halvings, where k* is the first passing step, as in the ``while`` loop. No
    ``0.01 I`` regulariser is added in this variant (as upstream).
    """
    _check_square(mat, "newton_inv_norm")
    if mat.dim() < 3:
        raise ValueError(
            f"newton_inv_norm: expected a leading batch axis (B, ..., m, m), got {tuple(mat.shape)}"
        )
    if iters < 0:
        raise ValueError(f"newton_inv_norm: iters must be >= 0, got {iters}")
    eye = _eye_like(mat)
    p = mat
    alpha = 2 / _per_sample_max(p.sum(dim=-1, keepdim=True)) ** 2  # (B, 1, ..., 1)
    for _ in range(NORM_MAX_HALVINGS):
        v = alpha * p
        pnorm = _per_sample_max(torch.abs(eye - p @ v).sum(dim=-2, keepdim=True))  # (B, 1, ..., 1)
        alpha = torch.where(pnorm > NORM_PNORM_THRESHOLD, alpha * 0.5, alpha)
    v = alpha * p  # (B, ..., m, m)
    for _ in range(iters):
        v = 2 * v - v @ p @ v
    return v


def pinv_residual(mat: torch.Tensor, approx: torch.Tensor, ord: str | float = 2) -> torch.Tensor:
    """Relative residual ``||A X A - A|| / ||A||`` of an approximate pseudo-inverse ``X``.

    Computed per matrix over the leading axes. ``ord`` is passed to
    :func:`torch.linalg.matrix_norm`; the default (2, the spectral norm) is the metric of the SOFT
    paper (Fig. 4b); use ``"fro"`` for a cheaper one.
    """
    num = torch.linalg.matrix_norm(mat @ approx @ mat - mat, ord=ord)
    den = torch.linalg.matrix_norm(mat, ord=ord)
    return num / den


def newton_residuals(
    mat: torch.Tensor,
    iters: int = 20,
    regularizer: float = NEWTON_REGULARIZER,
    ord: str | float = 2,
) -> torch.Tensor:
    """Residual of every Newton iterate of :func:`newton_inv`, for tests and documentation.

    Returns a tensor ``(iters + 1, ...)``: entry ``k`` is ``pinv_residual(P, A_k)`` with
    ``P = mat + regularizer * I`` (the matrix the iteration actually inverts) and ``A_k`` the
    k-th iterate (``A_0 = alpha P``). The paper (Prop. 1) states that this decreases
    monotonically to 0; with ``regularizer=0`` it is the residual with respect to ``mat`` itself.
    """
    _check_square(mat, "newton_residuals")
    eye = _eye_like(mat)
    alpha = NEWTON_ALPHA_FACTOR * 2 / mat.sum(dim=-1).amax(dim=-1) ** 2
    p = mat + regularizer * eye
    v = alpha[..., None, None] * p
    out = [pinv_residual(p, v, ord)]
    for _ in range(iters):
        v = 2 * v - v @ p @ v
        out.append(pinv_residual(p, v, ord))
    return torch.stack(out)
