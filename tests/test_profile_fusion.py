"""Per-block attribution that survives ONNX Runtime's fusions (issue 13).

A two-block, SOFT-style post-norm net in exporter naming is fused by ORT at level ``extended`` /
``all`` into SkipLayerNormalization (residual Add + LayerNorm), Gelu (Div/Erf/Add/Mul/Mul), Gemm
(MatMul + Add) and FusedMatMul (Transpose + MatMul), whose names (``SkipLayerNormalization_token_3``,
``Gelu``, ``gemm_input_reshape``) carry no module path. Those tests run real ORT sessions and fail
if attribution falls back to names (``test_names_only_would_fail_these_tests`` shows by how much).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeattn.bench import profile as BP
from edgeattn.runtime import graph as G
from edgeattn.runtime import profile as P

M = importlib.import_module("edgeattn.runtime.measure")
FAST = {"warmup": 1, "min_runs": 3, "max_runs": 50, "min_time_s": 0.02, "max_time_s": 1.0}
BLOCKS = ("blocks.0", "blocks.1")


def two_block_model(path: Path, tokens: int = 32, dim: int = 32, blocks: int = 2) -> Path:
    """x (1, N, D) -> ``blocks`` post-norm blocks (attention, Add, norm1, MLP with erf-GELU, Add,
    norm2) -> /norm -> /head mean. Node and tensor names follow torch.onnx's exporter."""
    rng = np.random.default_rng(0)
    inits: list = []
    nodes: list = []

    def init(name: str, a) -> str:
        inits.append(numpy_helper.from_array(np.asarray(a, dtype=np.float32), name))
        return name

    def w(name: str, *shape: int, scale: float | None = None) -> str:
        s = 1 / np.sqrt(shape[0]) if scale is None else scale
        return init(name, rng.standard_normal(shape) * s)

    def node(op: str, ins: list, name: str, **attrs) -> str:
        out = f"{name}_output_0"
        nodes.append(helper.make_node(op, ins, [out], name=name, **attrs))
        return out

    sqrt2, one, half = init("sqrt2", np.sqrt(2.0)), init("one", 1.0), init("half", 0.5)

    def ln(prefix: str, key: str, x: str) -> str:
        g, b = init(f"{key}.weight", np.ones(dim)), init(f"{key}.bias", np.zeros(dim))
        return node("LayerNormalization", [x, g, b], f"{prefix}/LayerNormalization", axis=-1)

    x = "x"
    for i in range(blocks):
        p, k = f"/blocks.{i}", f"blocks.{i}"
        q = node("MatMul", [x, w(f"{k}.attn.wq", dim, dim)], f"{p}/attn/MatMul")
        kk = node("MatMul", [x, w(f"{k}.attn.wk", dim, dim)], f"{p}/attn/MatMul_1")
        kt = node("Transpose", [kk], f"{p}/attn/Transpose", perm=[0, 2, 1])
        s = node("MatMul", [q, kt], f"{p}/attn/MatMul_2")
        a = node("Softmax", [s], f"{p}/attn/Softmax", axis=-1)
        o = node("MatMul", [a, x], f"{p}/attn/MatMul_3")
        h = ln(f"{p}/norm1", f"{k}.norm1", node("Add", [x, o], f"{p}/Add"))
        f1 = node("MatMul", [h, w(f"{k}.mlp.fc1.weight", dim, 4 * dim)], f"{p}/mlp/fc1/MatMul")
        f1 = node("Add", [w(f"{k}.mlp.fc1.bias", 4 * dim, scale=0.1), f1], f"{p}/mlp/fc1/Add")
        g = node("Div", [f1, sqrt2], f"{p}/mlp/act/Div")
        g = node("Erf", [g], f"{p}/mlp/act/Erf")
        g = node("Add", [g, one], f"{p}/mlp/act/Add")
        g = node("Mul", [f1, g], f"{p}/mlp/act/Mul")
        g = node("Mul", [g, half], f"{p}/mlp/act/Mul_1")
        f2 = node("MatMul", [g, w(f"{k}.mlp.fc2.weight", 4 * dim, dim)], f"{p}/mlp/fc2/MatMul")
        f2 = node("Add", [w(f"{k}.mlp.fc2.bias", dim, scale=0.1), f2], f"{p}/mlp/fc2/Add")
        x = ln(f"{p}/norm2", f"{k}.norm2", node("Add", [h, f2], f"{p}/Add_1"))
    y = ln("/norm", "norm", x)
    nodes.append(
        helper.make_node("ReduceMean", [y], ["y"], name="/head/ReduceMean", axes=[1], keepdims=0)
    )
    graph = helper.make_graph(
        nodes,
        "two_blocks",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, tokens, dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return two_block_model(tmp_path_factory.mktemp("fusion") / "two_blocks.onnx")


def _profile(model: Path, opt_level: str) -> dict:
    rec = M.measure(dict(FAST, model=str(model), profile=True, profile_runs=3, opt_level=opt_level))
    assert rec["status"] == "ok", rec.get("error")
    return rec


def _row(prof: dict, name: str, depth: int = 1) -> dict:
    return next(r for r in prof["blocks"][str(depth)] if r["name"] == name)


# ------------------------------------------------------------------------ the graph reader


def _onnx_nodes(model: onnx.ModelProto) -> list:
    return [
        {
            "name": n.name,
            "op": n.op_type,
            "domain": n.domain,
            "inputs": list(n.input),
            "outputs": list(n.output),
        }
        for n in model.graph.node
    ]


def test_reader_matches_onnx_and_skips_weights(toy, tmp_path):
    ref = onnx.load(str(toy))
    g = G.read_graph(str(toy))
    assert g.nodes == _onnx_nodes(ref)
    assert g.inputs == {"x"}
    assert g.initializers == {t.name for t in ref.graph.initializer}

    # weights in an external file, a big Constant attribute, a sparse initializer, a subgraph
    big = onnx.load(str(toy))
    const = helper.make_node(
        "Constant",
        [],
        ["big_c"],
        name="/blocks.0/attn/Constant",
        value=numpy_helper.from_array(np.zeros((256, 256), np.float32), "big_value"),
    )
    big.graph.node.insert(0, const)
    big.graph.sparse_initializer.append(
        helper.make_sparse_tensor(
            numpy_helper.from_array(np.ones(2, np.float32), "sp"),
            numpy_helper.from_array(np.array([1, 5], np.int64), "sp_idx"),
            [8],
        )
    )
    onnx.save_model(
        big,
        str(tmp_path / "ext.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="ext.onnx.data",
        size_threshold=0,
    )
    g2 = G.read_graph(str(tmp_path / "ext.onnx"))
    assert g2.nodes == _onnx_nodes(big)
    assert g2.nodes[0]["op"] == "Constant" and g2.nodes[0]["outputs"] == ["big_c"]
    assert "sp" in g2.initializers
    assert G.read_graph_bytes(big.SerializeToString()).nodes == g2.nodes


def test_reader_says_why_not(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x3a\xff\xff\xff\xff\x0f")  # field 7, a length far past the end... then EOF
    origins, err = G.fusion_origins(str(bad))
    assert origins is None and err
    origins, err = G.fusion_origins(str(tmp_path / "missing.onnx"))
    assert origins is None and "FileNotFoundError" in err


# ------------------------------------------------------------------------ the tensor-name walk


def _g(nodes, inputs=("x",), inits=()):
    g = G.Graph()
    g.inputs, g.initializers = set(inputs), set(inits)
    g.nodes = [
        {"name": n, "op": op, "domain": "", "inputs": list(i), "outputs": list(o)}
        for n, op, i, o in nodes
    ]
    return g


def test_origins_by_tensor_names_not_node_names():
    orig = _g(
        [
            ("/blocks.0/Add", "Add", ["x", "r"], ["a"]),
            ("/blocks.0/Constant", "Constant", [], ["c"]),  # shared constant: never covered
            ("/blocks.1/norm1/LayerNormalization", "LayerNormalization", ["a", "c", "b"], ["n"]),
            ("/blocks.1/mlp/act/Erf", "Erf", ["n"], ["e"]),
            ("/blocks.1/mlp/act/Mul", "Mul", ["e", "n"], ["m"]),
            ("/blocks.1/conv/Conv", "Conv", ["m", "w"], ["cv"]),
            ("/blocks.1/conv/Relu", "Relu", ["cv"], ["y"]),
        ],
        inputs=("x", "r"),
        inits=("b", "w"),
    )
    opt = _g(
        [
            ("SkipLayerNormalization_token_3", "SkipLayerNormalization", ["x", "r", "s0"], ["n"]),
            ("Gelu", "Gelu", ["n"], ["m"]),
            ("ReorderInput", "ReorderInput", ["m"], ["t1"]),
            ("/blocks.1/conv/Relu_output_0_nchwc", "Conv", ["t1", "w_r"], ["t2"]),
            ("ReorderOutput_token_9", "ReorderOutput", ["t2"], ["y"]),
            ("MemcpyToHost", "MemcpyToHost", ["y"], ["y2"]),  # nothing original downstream
        ],
        inputs=("x", "r"),
        inits=("s0", "w_r"),
    )
    o = G.origins(orig, opt)
    assert o["SkipLayerNormalization_token_3"] == [
        "/blocks.0/Add",
        "/blocks.1/norm1/LayerNormalization",
    ]
    assert o["Gelu"] == ["/blocks.1/mlp/act/Erf", "/blocks.1/mlp/act/Mul"]
    conv = ["/blocks.1/conv/Conv", "/blocks.1/conv/Relu"]
    assert o["/blocks.1/conv/Relu_output_0_nchwc"] == conv  # named after the tensor it replaces
    assert o["ReorderInput"] == conv  # prepares its consumer's input: downstream
    assert o["ReorderOutput_token_9"] == conv
    assert o["MemcpyToHost"] == conv  # upstream when nothing is downstream

    # the component and split rules
    att = P.Attribution(o)
    parts, comp, by_graph = att("SkipLayerNormalization_token_3")
    assert comp == "norm" and by_graph and parts == [(("blocks.1", "norm1"), 1.0)]
    assert att.spans("SkipLayerNormalization_token_3") == 2
    assert att("Gelu")[1] == "mlp"
    assert att("unknown/Node")[2] is False  # not in the map: by its own name


def test_split_of_a_node_covering_two_blocks():
    att = P.Attribution(
        {"fused": ["/blocks.0/norm2/LayerNormalization", "/blocks.1/norm1/LayerNormalization"]}
    )
    ev = [{"node": "fused", "op": "X", "dur_us": 100.0}]
    rows = {r["name"]: r for r in P.aggregate(ev, 1, attribution=att)}
    assert rows["blocks.0"]["ms"] == pytest.approx(0.05) and rows["blocks.1"]["share"] == 0.5
    assert rows["blocks.0"]["components"] == {"norm": 0.05}


# ------------------------------------------------------------------------ real ORT sessions


@pytest.fixture(scope="module")
def fused(toy) -> dict:
    return _profile(toy, "all")


def test_fused_nodes_land_in_the_right_block_and_component(fused):
    prof = fused["profile"]
    att = prof["attribution"]
    assert prof["opt_level"] == "all" and fused["session"]["opt_level"] == "all"
    assert att["method"] == "graph" and att["graph_error"] is None
    assert att["fallback_nodes"] == 0 and att["fused_nodes"] >= 6
    ops = prof["by_op"]
    assert "SkipLayerNormalization" in ops and "Gelu" in ops  # ORT did fuse
    for b in BLOCKS:
        row = _row(prof, b)
        # both norms of each block were fused with the residual Add into SkipLayerNormalization;
        # that is the block's whole norm time, so it must be in this block's norm column
        skip = row["ops"].get("SkipLayerNormalization", 0.0)
        assert skip > 0
        assert row["components"]["norm"] == pytest.approx(skip, rel=1e-3, abs=2e-6)
        gelu = row["ops"].get("Gelu", 0.0)
        assert gelu > 0 and row["components"]["mlp"] >= gelu - 2e-6
        assert row["components"]["attention"] > 0
    # per executed node, too
    by_name = {n["name"]: n for n in prof["top_nodes"]}
    assert {n["component"] for n in by_name.values() if n["op"] == "SkipLayerNormalization"} == {
        "norm"
    }
    assert {n["component"] for n in by_name.values() if n["op"] == "Gelu"} == {"mlp"}


def test_coverage_of_a_two_block_net_at_opt_level_all(fused):
    prof = fused["profile"]
    d1 = prof["blocks"]["1"]
    covered = sum(r["share"] for r in d1 if r["name"] != P.TOP)
    assert covered >= 0.98
    assert prof["attribution"]["top_share"] <= 0.02
    assert sum(r["ms"] for r in d1) == pytest.approx(prof["total_node_ms"], rel=1e-3)
    rc = BP.reconciliation(fused)
    assert not rc["warn"] and rc["blocks_share"] >= 0.98
    assert rc["overhead"] == pytest.approx(prof["wall_ms"] / fused["latency_ms"]["median"])


def test_names_only_would_fail_these_tests(toy, monkeypatch):
    """Break the graph attribution (as if no optimised graph could be read): the same net then puts
    the fused nodes in (top), so the assertions above fail, and the record says why."""
    monkeypatch.setattr(G, "fusion_origins", lambda *a, **k: (None, "broken on purpose"))
    rec = _profile(toy, "all")
    prof = rec["profile"]
    att = prof["attribution"]
    assert att["method"] == "names" and att["graph_error"] == "broken on purpose"
    assert att["top_share"] > 0.02 and att["top_share"] == att["names_only_top_share"]
    assert "SkipLayerNormalization" not in _row(prof, "blocks.0")["ops"]
    rc = BP.reconciliation(rec)
    assert rc["warn"]
    lines = BP.top_warning_lines(rc)
    assert any("broken on purpose" in x for x in lines)
    assert any("(top)" in x and "SkipLayerNormalization" in x for x in lines)


@pytest.mark.parametrize("level", ["disable", "basic", "extended"])
def test_every_opt_level_is_attributed(toy, level):
    prof = _profile(toy, level)["profile"]
    assert prof["opt_level"] == level and prof["attribution"]["method"] == "graph"
    assert prof["attribution"]["top_share"] <= 0.02
    for b in BLOCKS:
        comps = _row(prof, b)["components"]
        assert comps.get("norm", 0) > 0 and comps.get("mlp", 0) > 0
        assert comps.get("attention", 0) > 0


# ------------------------------------------------------------------------ host side


def test_profile_command_opt_level_and_reconciliation(toy, tmp_path):
    out = tmp_path / "p.jsonl"
    cmd = [sys.executable, "-m", "edgeattn.cli", "profile", str(toy), "--opt-level", "basic"]
    cmd += ["--runs", "2", "--min-time", "0.05", "--depth", "block", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    [rec] = [
        r
        for r in map(json.loads, filter(str.strip, out.read_text().splitlines()))
        if r.get("kind") != "run_end"
    ]
    assert rec["profile"]["opt_level"] == "basic"
    assert rec["session"]["opt_level"] == "basic"
    assert "in blocks" in r.stdout and "opt level basic" in r.stdout
    assert "attribution by graph" in r.stdout and "warning" not in r.stdout

    bad = subprocess.run(
        [*cmd[:4], str(toy), "--opt-level", "max", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "disable, basic, extended, all" in bad.stdout + bad.stderr


def test_reconciliation_of_an_old_record_without_attribution():
    rec = {
        "latency_ms": {"median": 2.0},
        "profile": {
            "total_node_ms": 2.0,
            "wall_ms": 2.5,
            "coverage": 0.8,
            "blocks": {
                "1": [
                    {"name": "blocks.0", "ms": 1.5, "share": 0.75},
                    {"name": "(top)", "ms": 0.5, "share": 0.25},
                ]
            },
            "top_nodes": [
                {
                    "name": "SkipLayerNormalization",
                    "op": "SkipLayerNormalization",
                    "ms": 0.5,
                    "component": "other",
                },
                {
                    "name": "/blocks.0/attn/MatMul",
                    "op": "MatMul",
                    "ms": 0.4,
                    "component": "attention",
                },
            ],
        },
    }
    rc = BP.reconciliation(rec)
    assert rc["top_share"] == 0.25 and rc["blocks_share"] == 0.75 and rc["overhead"] == 1.25
    assert rc["warn"] and [u["name"] for u in rc["unmapped"]] == ["SkipLayerNormalization"]
    assert any("25.0%" in x for x in BP.profile_summary_lines(rec))


def test_bench_profile_opt_level_is_recorded(tmp_path):
    import os

    out = tmp_path / "b.jsonl"
    cmd = [sys.executable, "-m", "edgeattn.cli", "bench", "--tokens", "64", "--dim", "32"]
    cmd += ["--heads", "1", "--methods", "softmax", "--opt-level", "basic", "--profile"]
    cmd += ["--no-paired", "--min-time", "0.05", "--max-time", "1", "--out", str(out)]
    env = dict(os.environ, EDGEATTN_CACHE=str(tmp_path / "cache"))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    [rec] = [
        r
        for r in map(json.loads, filter(str.strip, out.read_text().splitlines()))
        if r.get("kind") != "run_end"
    ]
    assert rec["session"]["opt_level"] == "basic" and rec["profile"]["opt_level"] == "basic"
    assert rec["profile"]["attribution"]["method"] == "graph"
