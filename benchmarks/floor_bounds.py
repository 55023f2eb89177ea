"""How close to its matmul floor a block can get at all: the floor plus only the work the block's
algorithm cannot leave out, timed interleaved against the floor and the block itself.

    .venv/bin/python benchmarks/floor_bounds.py [--tokens 1024,4096] [--rounds 400]

The floors of :mod:`edgeattn.bench.floor` hold the products of N-sized operands and nothing else.
Two blocks carry work that is neither such a product nor removable by any layout:

* **SOFT** (fp32): its 20 Newton-Schulz steps on the h (m x m) bottleneck kernels (m = 49). The
  floor leaves them out (they are N-independent). A step needs two m x m products and one
  elementwise update; the *bound* graph is the fp32 floor plus 20 steps written with the fewest
  ONNX nodes an exact evaluation can have, ``v <- v (2I - p v)`` (MatMul, Sub, MatMul; the
  official ``2v - (v p) v`` needs four nodes).
* **SimA Q(KᵀV)** at int8-static: the l1 norms of Q and K over the tokens (per channel, from the
  uint8 N x C tensors: ONNX has no uint8 reduction, so each is a DequantizeLinear and a float
  reduction), the QuantizeLinear of the block's float input and the DequantizeLinear of its
  output. The *bound* graphs are the int8 floor plus those four N x C passes, with the norms as
  ``ReduceL1``, as ``Abs`` + ``ReduceSum`` or as ``Abs`` and a ``(1 x N)·(N x C)`` MatMul with
  a ones row (all three are timed; the fastest is the bound).

Each N is one interleaved group (rounds in shuffled order, thread-pool spinning off as in the
bench's paired pass, ``edgeattn.runtime.paired.NO_SPIN``): the block (the bench's export),
its floor and the bound graphs. Printed: each ratio to the floor as the median of per-round ratios
with its 95 % interval (``edgeattn.runtime.intervals.ratio_summary``), and the medians in ms. A
block's ``block / floor`` target below ``bound / floor`` cannot be met by any graph ONNX Runtime
runs with these operators. Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DIM, HEADS, NEWTON_STEPS = 384, 6, 20
#: the ways the bound graph computes a column's l1 norm over the tokens (each one timed)
SIMA_NORMS = {"reduce_l1": "ReduceL1", "abs_sum": "Abs+ReduceSum", "matmul": "Abs, 1ᵀ·|t|"}


def _soft_bound(n: int):
    """The fp32 SOFT floor plus 20 Newton-Schulz steps, ``v <- v (2I - p v)``."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from edgeattn.bench.floor import SOFT_LANDMARKS, build

    m = SOFT_LANDMARKS
    model = build("floor_soft", 1, n, DIM, HEADS, 17)
    g = model.graph
    shape = [1, HEADS, m, m]
    g.input.extend([helper.make_tensor_value_info(t, TensorProto.FLOAT, shape) for t in "pv"])
    two_i = numpy_helper.from_array(2 * np.eye(m, dtype=np.float32), "newton_two_i")
    g.initializer.append(two_i)
    v = "v"
    for k in range(NEWTON_STEPS):
        pv, r, nv = f"newton{k}_pv", f"newton{k}_r", f"newton{k}_v"
        g.node.extend(
            [
                helper.make_node("MatMul", ["p", v], [pv], name=f"/newton/{k}/pv"),
                helper.make_node("Sub", ["newton_two_i", pv], [r], name=f"/newton/{k}/sub"),
                helper.make_node("MatMul", [v, r], [nv], name=f"/newton/{k}/update"),
            ]
        )
        v = nv
    g.output.append(helper.make_tensor_value_info(v, TensorProto.FLOAT, shape))
    return model


def _sima_int8_bound(n: int, norm: str):
    """The int8 Q(KᵀV) floor plus Q(x), DQ(y) and the l1 norms over N of two uint8 N x C
    tensors (see the module doc)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from edgeattn.bench.floor import build

    model = build("floor_kv_int8", 1, n, DIM, HEADS, 17)
    g = model.graph
    shape = [1, n, DIM]
    scale = numpy_helper.from_array(np.asarray(0.05, np.float32), "bound_scale")
    zp = numpy_helper.from_array(np.asarray(128, np.uint8), "bound_zp")
    axes = numpy_helper.from_array(np.asarray([1], np.int64), "bound_axes")
    ones = numpy_helper.from_array(np.ones((1, 1, n), np.float32), "bound_ones")
    g.initializer.extend([scale, zp, axes] + ([ones] if norm == "matmul" else []))
    g.input.append(helper.make_tensor_value_info("bound_x", TensorProto.FLOAT, shape))
    g.input.extend(
        helper.make_tensor_value_info(t, TensorProto.UINT8, shape)
        for t in ("bound_q", "bound_k", "bound_y")
    )
    q = ["bound_scale", "bound_zp"]
    nodes = [
        helper.make_node("QuantizeLinear", ["bound_x", *q], ["bound_xq"]),
        helper.make_node("DequantizeLinear", ["bound_y", *q], ["bound_yf"]),
    ]
    outs = [("bound_xq", TensorProto.UINT8, shape), ("bound_yf", TensorProto.FLOAT, shape)]
    for t in ("bound_q", "bound_k"):
        nodes.append(helper.make_node("DequantizeLinear", [t, *q], [f"{t}_f"]))
        if norm == "reduce_l1":
            nodes.append(helper.make_node("ReduceL1", [f"{t}_f"], [f"{t}_n"], axes=[1]))
        else:
            nodes.append(helper.make_node("Abs", [f"{t}_f"], [f"{t}_a"]))
            if norm == "matmul":  # 1ᵀ|t|: a (1 x N)·(N x C) product
                nodes.append(helper.make_node("MatMul", ["bound_ones", f"{t}_a"], [f"{t}_n"]))
            else:
                nodes.append(helper.make_node("ReduceSum", [f"{t}_a", "bound_axes"], [f"{t}_n"]))
        outs.append((f"{t}_n", TensorProto.FLOAT, [1, 1, DIM]))
    g.node.extend(nodes)
    g.output.extend(helper.make_tensor_value_info(*o) for o in outs)
    return model


def _session(model_or_path):
    import onnxruntime as ort

    from edgeattn.runtime.paired import NO_SPIN

    so = ort.SessionOptions()
    for k, v in NO_SPIN.items():
        so.add_session_config_entry(k, v)
    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def _feeds(sess, seed: int = 0) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    out = {}
    for i in sess.get_inputs():
        shape = [d if isinstance(d, int) else 1 for d in i.shape]
        if i.type == "tensor(uint8)":
            out[i.name] = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            out[i.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def _block(name: str, n: int, precision: str) -> str:
    from edgeattn.export import export_onnx

    extra = {"order": "kv_first"} if name == "block_sima" else {}
    res = export_onnx(name, tokens=n, dim=DIM, heads=HEADS, precision=precision, **extra)
    return str(res.path)


def _group(members: dict, rounds: int) -> dict[str, list[float]]:
    import numpy as np

    runs = {k: (_session(m), None) for k, m in members.items()}
    runs = {k: (s, _feeds(s)) for k, (s, _) in runs.items()}
    for s, f in runs.values():
        for _ in range(20):
            s.run(None, f)
    times = {k: [] for k in runs}
    rng = np.random.default_rng(1)
    keys = list(runs)
    for _ in range(rounds):
        for j in rng.permutation(len(keys)):
            s, f = runs[keys[j]]
            t0 = time.perf_counter()
            s.run(None, f)
            times[keys[j]].append((time.perf_counter() - t0) * 1e3)
    return times


def _line(label: str, num: list[float], den: list[float]) -> str:
    from edgeattn.runtime.intervals import median, ratio_summary

    r = ratio_summary(num, den)
    return (
        f"  {label:<44} {r['median']:.3f}x [{r['ci_low']:.3f}-{r['ci_high']:.3f}]"
        f"  ({median(num):.3f} ms / {median(den):.3f} ms)"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", default="1024,4096")
    ap.add_argument("--rounds", type=int, default=400)
    a = ap.parse_args(argv)
    from edgeattn.bench.floor import build

    for n in (int(t) for t in a.tokens.split(",")):
        print(f"N = {n}, C = {DIM}, h = {HEADS}: exporting", file=sys.stderr, flush=True)
        members = {
            "soft": _block("block_soft", n, "fp32"),
            "floor_soft": build("floor_soft", 1, n, DIM, HEADS, 17),
            "bound_soft": _soft_bound(n),
            "sima_int8": _block("block_sima", n, "int8-static"),
            "floor_kv_int8": build("floor_kv_int8", 1, n, DIM, HEADS, 17),
            **{f"bound_sima_{k}": _sima_int8_bound(n, k) for k in SIMA_NORMS},
        }
        print(f"N = {n}: {a.rounds} interleaved rounds", file=sys.stderr, flush=True)
        t = _group(members, a.rounds)
        print(f"N = {n} (median of per-round ratios to the floor, 95 % interval)")
        print(_line("SOFT fp32 / floor_soft", t["soft"], t["floor_soft"]))
        print(_line("bound: floor_soft + 20 Newton steps", t["bound_soft"], t["floor_soft"]))
        print(_line("SimA Q(KᵀV) int8 / floor_kv_int8", t["sima_int8"], t["floor_kv_int8"]))
        for key, how in SIMA_NORMS.items():
            label = f"bound: int8 floor + Q, DQ, norms ({how})"
            print(_line(label, t[f"bound_sima_{key}"], t["floor_kv_int8"]))


if __name__ == "__main__":
    main()
