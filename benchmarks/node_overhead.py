"""What one more graph node costs in ONNX Runtime, with thread-pool spinning on and off.

    .venv/bin/python benchmarks/node_overhead.py [--elements 1000,400000] [--nodes 11]

A chain of ``--nodes`` Relu nodes on a float32 vector against a single Relu, each in its own
session (CPU provider, graph optimisations off so the chain stays a chain), median of 500 runs
after 50 warm-ups; printed: the per-node cost ``(t_chain - t_one) / (nodes - 1)``. With spinning
off (the bench's paired pass: ``session.intra_op.allow_spinning = 0``, see
``edgeattn.runtime.paired.NO_SPIN``) a node big enough to be split across threads also pays a
worker wake-up, which is why blocks of a few milliseconds with several elementwise nodes sit
further from their matmul floors than large ones. Nothing else may run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import time


def _chain(k: int, n: int) -> bytes:
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"]) for i in range(k)]
    g = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info(f"t{k}", TensorProto.FLOAT, [n])],
    )  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return m.SerializeToString()


def per_node_us(n: int, nodes: int, spin: bool, runs: int = 500) -> float:
    import numpy as np
    import onnxruntime as ort

    medians = []
    for k in (1, nodes):
        so = ort.SessionOptions()
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        s = ort.InferenceSession(_chain(k, n), so, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
        for _ in range(50):
            s.run(None, {"t0": x})
        t = []
        for _ in range(runs):
            a = time.perf_counter()
            s.run(None, {"t0": x})
            t.append(time.perf_counter() - a)
        medians.append(float(np.median(t)) * 1e6)
    return (medians[1] - medians[0]) / (nodes - 1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--elements", default="1000,400000")
    ap.add_argument("--nodes", type=int, default=11)
    a = ap.parse_args(argv)
    for n in (int(e) for e in a.elements.split(",")):
        off, on = per_node_us(n, a.nodes, False), per_node_us(n, a.nodes, True)
        print(f"{n} elements: {off:.1f} us per node with spinning off, {on:.1f} us with it on")


if __name__ == "__main__":
    main()
