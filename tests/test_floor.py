"""Matmul floors (edgeattn.bench.floor): their multiply-adds against PyTorch's own FLOP counter on
the textbook blocks, their ONNX graphs against numpy, and a real paired bench of a block against
its floor through the device runtime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from edgeattn.bench import core, floor, pairs
from edgeattn.models.cost import count_cost

B, N, C, H = 1, 64, 96, 2  # N < C: SimA's kv order is the textbook one here (no W_o fold)


def test_floor_qk_is_the_softmax_blocks_matmuls():
    """FlopCounterMode on the softmax MSA block counts exactly its four products."""
    assert (
        floor.macs("floor_qk", B, N, C, H)
        == count_cost("block_msa", tokens=N, dim=C, heads=H).flops
    )


def test_floor_kv_is_the_kv_blocks_matmuls():
    sima = count_cost("block_sima", tokens=N, dim=C, heads=H, order="kv_first")
    xca = count_cost("block_xca", tokens=N, dim=C, heads=H)
    assert floor.macs("floor_kv", B, N, C, H) == sima.flops == xca.flops


def test_floor_soft_leaves_out_the_pooling_the_conv_and_the_landmark_kernel():
    """SOFT's block count minus its floor is, by hand: the depthwise conv skip, the two
    landmark-pooling products, the m x m kernel and |q|² as a ones-row product over the channels
    (the Newton iterations are counted apart)."""
    n, c, h, m = 1024, 96, 2, floor.SOFT_LANDMARKS
    side, grid, d = 7, 32, c // h  # 49 landmarks pooled from a 32 x 32 grid
    block = count_cost("block_soft", tokens=n, dim=c, heads=h)
    k = 3  # block_soft's conv_size
    conv = n * c * k * k
    pool = c * grid * grid * side + c * side * grid * side  # columns, then rows
    landmark_kernel = h * m * m * d
    q_sq = n * c  # (1 x d) . (d x N) per head
    extra = conv + pool + landmark_kernel + q_sq
    assert block.flops - floor.macs("floor_soft", 1, n, c, h) == extra


@pytest.mark.parametrize("kind", floor.FLOORS)
def test_floor_graph_computes_its_products(kind):
    model = floor.build(kind, B, N, C, H, opset=17)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {
        i.name: rng.standard_normal([int(v) for v in i.shape]).astype(np.float32)
        for i in sess.get_inputs()
    }
    inits = {t.name: t for t in model.graph.initializer}
    from onnx import numpy_helper

    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))
    prods = floor.products(kind, B, N, C, H)
    assert [p.name for p in prods] == list(outs)
    for p in prods:
        a = feeds[f"{p.name}_a"]
        b = numpy_helper.to_array(inits[f"{p.name}_b"]) if p.b_const else feeds[f"{p.name}_b"]
        np.testing.assert_allclose(outs[p.name], a @ b, rtol=1e-4, atol=1e-4)


def test_floor_methods_refuse_other_precisions(tmp_path):
    job = core.Job(core.METHODS["floor_kv"], core.Shape(N, C, H), precision="fp16")
    with pytest.raises(core.BenchError, match="float32 only"):
        core.prepare([job], core.Settings(), cache_dir=tmp_path)


def test_block_against_its_floor_paired(tmp_path):
    """A real paired group (one runtime process): SimA Q(KᵀV) and its floor, with the ratio."""
    st = core.Settings(
        warmup=1, min_runs=3, min_time_s=0.05, max_time_s=1, pair_tries=1,
        pair_min_rounds=6, pair_min_time_s=0.1, pair_max_time_s=2, pair_budget_s=1, pair_profile=False,
    )  # fmt: skip
    shape = core.Shape(N, C, H)
    jobs = core.prepare(
        [core.Job(core.METHODS[m], shape) for m in ("sima_kv", "floor_kv")], st, cache_dir=tmp_path
    )
    assert jobs[1].cost["gflops"] == pytest.approx(floor.macs("floor_kv", 1, N, C, H) / 1e9)
    specs = core.paired_specs(jobs, st)
    recs = core.run_local(
        [core.job_run_spec(j, st) for j in jobs], out=tmp_path / "r.jsonl", paired=specs
    )
    (rec,) = pairs.paired(recs)
    r = pairs.ratio_results(rec)["sima_kv_vs_floor"]
    assert r["rounds"] >= 6 and r["median"] > 0
    assert "its matmul floor" in pairs.ratio_line("sima_kv_vs_floor", r)


# ------------------------------------------------------------------------------ int8 floors


def _optimized_ops(model, tmp_path) -> dict[str, int]:
    """Op census of the graph ONNX Runtime runs (its optimised model, all levels)."""
    import collections

    import onnx

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)


@pytest.mark.parametrize("kind", floor.INT8_FLOORS)
def test_int8_floor_runs_integer_matmuls_only(kind, tmp_path):
    """ORT fuses each DQ·DQ -> MatMul -> Q into one QLinearMatMul: no float MatMul, no Q/DQ
    left, one integer GEMM per product."""
    model = floor.build(kind, B, N, C, H, opset=17)
    ops = _optimized_ops(model, tmp_path)
    assert ops == {"QLinearMatMul": len(floor.products(kind, B, N, C, H))}
    assert floor.macs(kind, B, N, C, H) == floor.macs(floor.base_kind(kind)[0], B, N, C, H)


def _qparams(model, name):
    from onnx import numpy_helper

    t = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return float(t[f"{name}_scale"]), t[f"{name}_zero_point"]


@pytest.mark.parametrize("kind", floor.INT8_FLOORS)
def test_int8_floor_matches_the_fp32_floor(kind):
    """Float operands quantised by hand with the graph's scales (uint8 activations), the
    uint8 products dequantised: each is the product of the dequantised operands to one output
    step wherever it lies in the calibrated output range (over 99 % of the entries: MinMax on
    other draws clips the rare outliers), and the fp32 floor's product (numpy, float operands,
    the fp32 floor's own weights) to cosine > 0.995."""
    from onnx import numpy_helper

    q8 = floor.build(kind, B, N, C, H, opset=17)
    f32 = floor.build(floor.base_kind(kind)[0], B, N, C, H, opset=17)
    weights = {t.name: numpy_helper.to_array(t) for t in f32.graph.initializer}
    qweights = {t.name: numpy_helper.to_array(t) for t in q8.graph.initializer}
    sess = ort.InferenceSession(q8.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(7)
    feeds, floats, deq = {}, {}, {}
    for i in sess.get_inputs():
        x = rng.standard_normal([int(v) for v in i.shape]).astype(np.float32)
        s, z = _qparams(q8, i.name)
        assert i.type == "tensor(uint8)"
        lo, hi, dt = 0, 255, np.uint8
        feeds[i.name] = np.clip(np.rint(x / s) + int(z), lo, hi).astype(dt)
        floats[i.name] = x
        deq[i.name] = (feeds[i.name].astype(np.float32) - float(z)) * s
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))
    for p in floor.products(kind, B, N, C, H):
        b, bq = f"{p.name}_b", None
        if p.b_const:
            bq = qweights[b].astype(np.float32) * _qparams(q8, b)[0]
        exact = deq[f"{p.name}_a"] @ (bq if p.b_const else deq[b])
        ref = floats[f"{p.name}_a"] @ (weights[b] if p.b_const else floats[b])
        s, z = _qparams(q8, p.name)
        assert outs[p.name].dtype == np.uint8
        got = (outs[p.name].astype(np.float32) - float(z)) * s
        inside = (exact >= -float(z) * s) & (exact <= (255 - float(z)) * s)
        assert inside.mean() > 0.99, p.name
        assert np.abs(got - exact)[inside].max() <= 1.01 * s, p.name
        cos = float(ref.ravel() @ got.ravel() / np.linalg.norm(ref) / np.linalg.norm(got))
        assert cos > 0.995, (p.name, cos)


def test_bench_jobs_bring_the_int8_floors_and_their_ratios():
    """--precision fp32,int8-static with floors: each float32 floor brings its int8 twin once,
    and the paired group holds block@int8-static / int8 floor."""
    from edgeattn.bench import run

    shape = core.Shape(N, C, H)
    jobs = run.bench_jobs(shape, ["sima_kv", "floor_kv"], "fp32,int8-static")
    assert [j.pair_key for j in jobs] == [
        "sima_kv", "floor_kv", "sima_kv@int8-static", "floor_kv_int8",
    ]  # fmt: skip
    assert all(j.precision == "fp32" for j in jobs if j.method.is_graph)
    assert [j.pair_key for j in run.bench_jobs(shape, ["floor_kv"], "fp32")] == ["floor_kv"]
    twice = run.bench_jobs(shape, ["floor_kv"], "int8-static,int8-static:matmuls")
    assert [j.pair_key for j in twice] == ["floor_kv", "floor_kv_int8"]  # each graph once
    for j in jobs:
        j.onnx_path = "unused.onnx"
    [spec] = core.paired_specs(jobs, core.Settings())
    ratios = {r["name"]: (r["num"], r["den"]) for r in spec["ratios"]}
    assert ratios["sima_kv_int8_vs_floor"] == (jobs[2].id, jobs[3].id)
    assert ratios["sima_kv_vs_floor"] == (jobs[0].id, jobs[1].id)
