"""Tiny ONNX models for runtime tests, built with ``onnx.helper`` (tests may import onnx; the
runtime may not). Node names follow the PyTorch exporter's scoping (``/blocks.0/attn/MatMul``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # old enough for any onnxruntime the tests meet

# node names of attention_model, in graph order
ATTENTION_NODES = (
    "/blocks.0/attn/MatMul",
    "/blocks.0/attn/MatMul_1",
    "/blocks.0/attn/Transpose",
    "/blocks.0/attn/MatMul_2",
    "/blocks.0/attn/Softmax",
    "/blocks.0/attn/MatMul_3",
    "Add",
    "/blocks.0/mlp/fc1/MatMul",
    "/blocks.0/mlp/act/Relu",
    "/blocks.0/mlp/fc2/MatMul",
    "Add_1",
    "/head/ReduceMean",
)


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def attention_model(path: Path, tokens: int = 16, dim: int = 32, dynamic: bool = False) -> Path:
    """x (1, N, D) -> single-head softmax attention + MLP block + mean head -> (1, D).

    ``dynamic=True`` makes N a symbolic dim named ``tokens``.
    """
    rng = np.random.default_rng(0)
    n = "tokens" if dynamic else tokens

    def w(name: str, *shape: int):
        return numpy_helper.from_array(
            (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32), name
        )

    inits = [
        w("wq", dim, dim),
        w("wk", dim, dim),
        w("fc1_w", dim, 2 * dim),
        w("fc2_w", 2 * dim, dim),
    ]
    names = ATTENTION_NODES
    nodes = [
        helper.make_node("MatMul", ["x", "wq"], ["q"], name=names[0]),
        helper.make_node("MatMul", ["x", "wk"], ["k"], name=names[1]),
        helper.make_node("Transpose", ["k"], ["kt"], name=names[2], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["s"], name=names[3]),
        helper.make_node("Softmax", ["s"], ["p"], name=names[4], axis=-1),
        helper.make_node("MatMul", ["p", "x"], ["o"], name=names[5]),
        helper.make_node("Add", ["x", "o"], ["h"], name=names[6]),
        helper.make_node("MatMul", ["h", "fc1_w"], ["f1"], name=names[7]),
        helper.make_node("Relu", ["f1"], ["a"], name=names[8]),
        helper.make_node("MatMul", ["a", "fc2_w"], ["f2"], name=names[9]),
        helper.make_node("Add", ["h", "f2"], ["h2"], name=names[10]),
        helper.make_node("ReduceMean", ["h2"], ["y"], name=names[11], axes=[1], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "attention_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n, dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, dim])],
        inits,
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)


def int_model(path: Path, vocab: int = 10, dim: int = 8, length: int = 4) -> Path:
    """ids (1, L) int64 and a float x (1, L, D) -> embedding lookup + x."""
    table = numpy_helper.from_array(
        np.arange(vocab * dim, dtype=np.float32).reshape(vocab, dim), "table"
    )
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["e"], name="/embed/Gather", axis=0),
        helper.make_node("Add", ["e", "x"], ["y"], name="Add"),
    ]
    graph = helper.make_graph(
        nodes,
        "int_inputs",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, [1, length]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, length, dim]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, length, dim])],
        [table],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)
