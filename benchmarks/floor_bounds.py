"""How close to its matmul floor a block can get at all: the floor plus only the work the block's
algorithm cannot leave out, timed interleaved against the floor and the block itself.

    .venv/bin/python benchmarks/floor_bounds.py [--tokens 1024,4096] [--pair-time 4]

The floors of :mod:`edgeattn.bench.floor` hold the products of N-sized operands and nothing else.
Two blocks carry work that is neither such a product nor removable by any layout:

* **SOFT** (fp32): its 20 Newton-Schulz steps on the h (m x m) bottleneck kernels (m = 49). The
  floor leaves them out (they are N-independent). A step needs two m x m products and one
  elementwise update; the *bound* graph is the fp32 floor plus 20 steps written with the fewest
  ONNX nodes an exact evaluation can have, ``v <- v (2I - p v)`` (MatMul, Sub, MatMul; the
  official ``2v - (v p) v`` needs four nodes).
* **SimA Q(KᵀV)** at int8-static: the l1 norms of Q and K over the tokens (per channel, from the
  uint8 N x C tensors: ONNX has no uint8 reduction, so each is a DequantizeLinear and a float
  reduction) and the QuantizeLinear of the block's float input. (The block's output needs no
  pass of its own: its last product writes float, ORT's MatMulIntegerToFloat, as the floor's
  writes uint8; see ``precision_convert.float_product_outputs``.) The *bound* graphs are the
  int8 floor plus those three N x C passes, with the norms as
  ``ReduceL1``, as ``Abs`` + ``ReduceSum`` or as ``Abs`` and a ``(1 x N)·(N x C)`` MatMul with
  a ones row (all three are timed; the fastest is the bound).

Each N is one paired group of the project's runner (``edgeattn.runtime.paired``: rounds in
shuffled order, thread-pool spinning off, the stability check of the bench): the block (the
bench's export), its floor and the bound graphs, which are the floor's own file with the extra
nodes appended (written to --workdir). Printed: each ratio to the floor as the median of
per-round ratios with its 95 % interval and the verdict, and the medians in ms; records go to
--out. A block's ``block / floor`` target below ``bound / floor`` cannot be met by any graph ONNX
Runtime runs with these operators. Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgeattn.bench import core, pairs  # noqa: E402

DIM, HEADS, NEWTON_STEPS = 384, 6, 20
#: the ways the bound graph computes a column's l1 norm over the tokens (each one timed)
SIMA_NORMS = {"reduce_l1": "ReduceL1", "abs_sum": "Abs+ReduceSum", "matmul": "Abs, 1ᵀ·|t|"}
#: (block method, its floor method, precision of the block)
FAMILIES = (("soft", "floor_soft", "fp32"), ("sima_kv", "floor_kv_int8", "int8-static"))


def _soft_bound(floor_path: Path):
    """The fp32 SOFT floor plus 20 Newton-Schulz steps, ``v <- v (2I - p v)``."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeattn.bench.floor import SOFT_LANDMARKS

    m = SOFT_LANDMARKS
    model = onnx.load(str(floor_path))
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


def _sima_int8_bound(floor_path: Path, n: int, norm: str):
    """The int8 Q(KᵀV) floor plus Q(x) and the l1 norms over N of two uint8 N x C tensors (see
    the module doc)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(floor_path))
    g = model.graph
    shape = [1, n, DIM]
    scale = numpy_helper.from_array(np.asarray(0.05, np.float32), "bound_scale")
    zp = numpy_helper.from_array(np.asarray(128, np.uint8), "bound_zp")
    g.initializer.extend([scale, zp])
    if norm == "matmul":
        g.initializer.append(numpy_helper.from_array(np.ones((1, 1, n), np.float32), "bound_ones"))
    if norm == "abs_sum":
        g.initializer.append(numpy_helper.from_array(np.asarray([1], np.int64), "bound_axes"))
    g.input.append(helper.make_tensor_value_info("bound_x", TensorProto.FLOAT, shape))
    g.input.extend(
        helper.make_tensor_value_info(t, TensorProto.UINT8, shape) for t in ("bound_q", "bound_k")
    )
    q = ["bound_scale", "bound_zp"]
    nodes = [helper.make_node("QuantizeLinear", ["bound_x", *q], ["bound_xq"])]
    outs = [("bound_xq", TensorProto.UINT8, shape)]
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


def _bounds(jobs: dict[str, core.Job], n: int) -> dict[str, tuple[str, object]]:
    """{bound key: (its floor's method key, model)} for the floors of ``jobs``."""
    out = {"bound_soft": ("floor_soft", _soft_bound(Path(jobs["floor_soft"].onnx_path)))}
    kv = Path(jobs["floor_kv_int8"].onnx_path)
    for k in SIMA_NORMS:
        out[f"bound_sima_{k}"] = ("floor_kv_int8", _sima_int8_bound(kv, n, k))
    return out


def _measure(n: int, settings: core.Settings, out: Path, workdir: Path) -> list[str]:
    import onnx

    shape = core.Shape(n, DIM, HEADS)
    members = [(b, p) for b, _, p in FAMILIES] + [(f, "fp32") for _, f, _ in FAMILIES]
    jobs = core.prepare(
        [core.Job(core.METHODS[m], shape, precision=p) for m, p in members], settings
    )
    by = {j.method.key: j for j in jobs}
    specs = [core.job_run_spec(j, settings) for j in jobs]
    ids = {k: j.id for k, j in by.items()}
    ratios = [(f"{b}_vs_floor", b, f) for b, f, _ in FAMILIES]
    for key, (floor, model) in _bounds(by, n).items():
        path = workdir / f"{key}_N{n}.onnx"
        onnx.save(model, str(path))
        ids[key] = f"{key}/N{n}"
        base = core.job_run_spec(by[floor], settings)
        specs.append(dict(base, id=ids[key], model=str(path), meta=dict(base["meta"], bound=key)))
        ratios.append((f"{key}_vs_floor", key, floor))
    group = pairs.group_spec(
        f"paired/floor_bounds/N{n}", [(k, i) for k, i in ids.items()], settings
    )
    group["ratios"] = [{"name": r, "num": ids[a], "den": ids[b]} for r, a, b in ratios]
    group["profile"] = []
    print(f"N = {n}: {', '.join(ids)} paired", file=sys.stderr, flush=True)
    recs = core.run_local(specs, out=out, paired=[group])
    rec = next(r for r in recs if r.get("kind") == "paired")
    res, lat = pairs.ratio_results(rec), rec["paired"]["latency_ms"]
    labels = {
        "soft_vs_floor": "SOFT fp32 / floor_soft",
        "bound_soft_vs_floor": "bound: floor_soft + 20 Newton steps",
        "sima_kv_vs_floor": "SimA Q(KᵀV) int8 / floor_kv_int8",
        **{f"bound_sima_{k}_vs_floor": f"bound: int8 floor + Q, norms ({h})"
           for k, h in SIMA_NORMS.items()},
    }  # fmt: skip
    lines = [f"N = {n} (median of per-round ratios to the floor, 95 % interval)"]
    for name, a, b in ratios:
        r = res[name]
        lines.append(
            f"  {labels[name]:<49} {pairs.fmt_ratio(r):<20} {r['stability_text']:<22}"
            f" ({lat[ids[a]]['median']:.3f} ms / {lat[ids[b]]['median']:.3f} ms)"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", default="1024,4096")
    ap.add_argument("--pair-time", type=float, default=4.0, help="seconds per paired try (min)")
    ap.add_argument("--out", default="results/floor_bounds.jsonl")
    ap.add_argument("--workdir", default="results/floor_bounds")
    a = ap.parse_args(argv)
    # absolute: the runner measures in a directory of its own (core.run_local)
    out, workdir = Path(a.out).resolve(), Path(a.workdir).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    settings = core.Settings(
        pair_min_time_s=a.pair_time, pair_max_time_s=max(30.0, 4 * a.pair_time), pair_profile=False
    )
    for n in (int(t) for t in a.tokens.split(",")):
        print("\n".join(_measure(n, settings, out, workdir)))
    print(f"records: {out}")


if __name__ == "__main__":
    main()
