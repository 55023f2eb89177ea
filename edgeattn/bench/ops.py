"""Pure-op micro-bench graphs: Softmax vs l1-normalisation over one (B, h, N, N) tensor.

The device constant behind the SimA paper's claim is what one element of ``exp``-normalisation
costs against one element of l1-normalisation on that CPU. These two one-op graphs isolate it from
the matmuls. They are not models (no weights, no registry entry): built here with ``onnx.helper``
at the asked opset and cached by content.

- ``op_softmax``: ``Softmax(x, axis=-1)``
- ``op_l1``: ``x / max(ReduceSum(|x|, axis=-1), eps)``: what ``F.normalize(p=1)`` computes, as
  SimA's export writes it (Abs, ReduceSum, Clip, Div).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

OPS = ("op_softmax", "op_l1")
EPS = 1e-12  # F.normalize's default eps, as in SimA


def build(kind: str, batch: int, heads: int, tokens: int, opset: int):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if kind not in OPS:
        raise ValueError(f"unknown op graph {kind!r}; valid: {', '.join(OPS)}")
    shape = [batch, heads, tokens, tokens]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    inits = []
    if kind == "op_softmax":
        nodes = [helper.make_node("Softmax", ["x"], ["y"], axis=-1, name="/op/Softmax")]
    else:
        inits = [
            numpy_helper.from_array(np.array([-1], dtype=np.int64), "axes"),
            numpy_helper.from_array(np.array(EPS, dtype=np.float32), "eps"),
        ]
        nodes = [
            helper.make_node("Abs", ["x"], ["a"], name="/op/Abs"),
            helper.make_node("ReduceSum", ["a", "axes"], ["s"], keepdims=1, name="/op/ReduceSum"),
            helper.make_node("Clip", ["s", "eps"], ["c"], name="/op/Clip"),
            helper.make_node("Div", ["x", "c"], ["y"], name="/op/Div"),
        ]
    graph = helper.make_graph(nodes, kind, [x], [y], initializer=inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgeattn.bench.ops"
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def write_cached(model, stem: str, cache_dir: Path) -> Path:
    """Write (or reuse) a built graph as ``<stem>_<hash of its bytes>.onnx`` in ``cache_dir``."""
    data = model.SerializeToString()
    digest = hashlib.sha256(data).hexdigest()[:16]
    path = Path(cache_dir) / f"{stem}_{digest}.onnx"
    if not path.is_file():
        from edgeattn.runtime.records import write_atomic

        write_atomic(str(path), data)
    return path


def export(kind: str, batch: int, heads: int, tokens: int, opset: int, cache_dir: Path) -> Path:
    """Write (or reuse) the graph; the file name carries a hash of its bytes."""
    model = build(kind, batch, heads, tokens, opset)
    return write_cached(model, f"{kind}_B{batch}_h{heads}_N{tokens}_op{opset}", cache_dir)
