"""LiteMLA in true float16 arithmetic: does its attention need float32 (keep-fp32 ``litemla_att``)?

    .venv/bin/python benchmarks/litemla_fp16.py [--tokens 196,1024,4096] [--dim 32]

ONNX Runtime's CPU provider runs most float16 ops as float32 behind casts, so an fp16 export
measured on this machine cannot overflow where a native fp16 device (Jetson, Apple silicon,
ARMv8.2 ``fphp``) does. This script evaluates one LiteMLA head's two forms (the official
``relu_linear_att`` and ``relu_quadratic_att``: ReLU(Q), ReLU(K), V of one head, d = ``--dim``
channels, N tokens) with every tensor stored in float16 (PyTorch half on the CPU: each matmul's
result rounded to half, as a half GEMM writes it), against the same algebra in float64, for
activations of growing RMS ``s`` (standard normal × s: the scale a trained net's qkv conv sets,
unknown without checkpoints). It prints the largest intermediate (the linear form's numerator
``(V·Kᵀ)·Q`` sums N·d products) against float16's largest finite value (65504), the output's
max relative error, and whether anything became inf/NaN; then the same with the attention in
float32 (what ``litemla_att`` keeps, like the official ``qkv.float()``).

No timing: a correctness check, safe to run beside other work.
"""

from __future__ import annotations

import argparse

import torch

FP16_MAX = 65504.0


def _forms(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float):
    """(linear output, its largest intermediate, quadratic output, its map sums), in the
    inputs' dtype; q, k, v are (d, N), q and k already through the ReLU."""
    ones = torch.ones(1, k.shape[1], dtype=k.dtype)
    vk = v @ k.T  # (d, d)
    num = vk @ q  # (d, N)
    den = (ones @ k.T) @ q  # (1, N): the denominator, the ones row's product
    linear = num / (den + eps)
    largest = max(float(t.abs().max()) for t in (vk, num, den))
    att = k.T @ q  # (N, N): [key, query]
    sums = att.sum(dim=0, keepdim=True)
    quad = v @ (att / (sums + eps))
    return linear, largest, quad, sums


def run(tokens: list[int], dim: int, scales: list[float], seed: int = 0) -> list[dict]:
    from edgeattn.attention.litemla import LITEMLA_EPS

    rows = []
    g = torch.Generator().manual_seed(seed)
    for n in tokens:
        base = [torch.randn(dim, n, generator=g, dtype=torch.float64) for _ in range(3)]
        for s in scales:
            q, k, v = (t * s for t in base)
            q, k = torch.relu(q), torch.relu(k)
            ref = _forms(q, k, v, LITEMLA_EPS)
            for dtype, label in ((torch.float16, "fp16"), (torch.float32, "fp32 kept")):
                # eps is 0 in float16 (as in an fp16 graph); float32 keeps it
                got = _forms(q.to(dtype), k.to(dtype), v.to(dtype), LITEMLA_EPS)
                row = {"tokens": n, "rms": s, "arith": label}
                for name, i in (("linear", 0), ("quadratic", 2)):
                    r, o = ref[i], got[i].double()
                    finite = bool(torch.isfinite(o).all())
                    err = float((o - r).abs().max() / r.abs().max()) if finite else float("inf")
                    row[name] = err
                row["num_max"] = ref[1]
                row["sum_max"] = float(ref[3].abs().max())
                rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", default="196,1024,4096")
    ap.add_argument(
        "--dim", type=int, default=32, help="head width d (EfficientViT B1: 16, B2/B3: 32)"
    )
    ap.add_argument("--scales", default="0.25,1,2,4,8")
    a = ap.parse_args(argv)
    tokens = [int(t) for t in a.tokens.split(",")]
    scales = [float(s) for s in a.scales.split(",")]
    print(f"one LiteMLA head, d = {a.dim}; inputs standard normal x rms; error = max|out - ref| /")
    print("max|ref| against float64; 'inf' = the output holds inf or NaN")
    print(f"{'N':>5} {'rms':>5} {'arith':>10} {'linear err':>11} {'quad err':>9}  "
          f"{'max linear':>13} {'max map sum':>11}")  # fmt: skip
    for r in run(tokens, a.dim, scales):
        over = " > fp16 max" if r["num_max"] > FP16_MAX else ""
        print(
            f"{r['tokens']:>5} {r['rms']:>5g} {r['arith']:>10} {r['linear']:>11.2e} "
            f"{r['quadratic']:>9.2e}  {r['num_max']:>13.3g} {r['sum_max']:>11.3g}{over}"
        )


if __name__ == "__main__":
    main()
