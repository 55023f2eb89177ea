"""Precision variants at export (fp16, int8-dynamic, int8-static QDQ): each exports and verifies
against fp32 PyTorch for one small net per family; the precision hazards (SimA's eps in fp16,
SOFT's Newton inverse) are fixed and tested; int8 graphs pass the audit; a precision outside its
tolerance fails with one line (or is written with --allow-degraded)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgeattn.cli import main
from edgeattn.errors import ToleranceError
from edgeattn.export import audit_model, export_onnx
from edgeattn.export import precision as P
from edgeattn.export import precision_groups as PG
from edgeattn.models.registry import create_model

# one small net per family at a small resolution (32x32: 2x2 patches; SOFT's four stages
# need 64x64) so the 12 exports stay fast
NETS = ["sima_nano_12_p16", "soft_tiny", "xcit_nano_12_p16", "deit_tiny_patch16_224"]
IMG = {"soft_tiny": 64}
LOW = ["fp16", "int8-dynamic", "int8-static"]
SIMA_BLOCK = {"tokens": 64, "dim": 64, "heads": 2}
SOFT_BLOCK = {"tokens": 196, "dim": 64, "heads": 2}


# Default run: every precision at least once, on the cheaper nets (the 2-core CI box); the full
# 4 x 3 matrix under -m slow (~4 min here), which CI runs too (soft_tiny int8-static, SOFT's
# Newton inverse kept in float32, is 16 s of it).
DEFAULT_CASES = {
    ("sima_nano_12_p16", "fp16"),
    ("xcit_nano_12_p16", "int8-dynamic"),
    ("deit_tiny_patch16_224", "int8-static"),  # a QDQ'd Softmax
}
MATRIX = [
    pytest.param(n, p, marks=() if (n, p) in DEFAULT_CASES else pytest.mark.slow)
    for n in NETS
    for p in LOW
]


@pytest.mark.parametrize(("name", "precision"), MATRIX)
def test_each_precision_exports_and_verifies(tmp_path, name, precision):
    img = IMG.get(name, 32)
    res = export_onnx(name, img_size=img, precision=precision, output=tmp_path / "m.onnx")
    side = json.loads(res.sidecar_path.read_text())
    p = side["precision"]
    assert side["spec"]["precision"] == precision == p["precision"]
    assert side["verification"]["passed"]  # the fp32 graph was verified first
    v = p["verification"]
    assert v["passed"] and not v["degraded"] and v["samples"] >= 64
    for k in ("max_abs", "max_rel", "cosine_mean", "cosine_min", "top1_agreement"):
        assert np.isfinite(v[k]), k
    assert v["tolerance"]["name"] == P.precision_tolerance(precision, res.spec["method"]).name
    m = onnx.load(str(res.path))
    # float32 in and out for every precision (keep_io_types; int8 quantises inside)
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    q = res.audit["quantization"]["totals"]
    if precision == "int8-static":
        assert q["QuantizeLinear"] > 0 and q["DequantizeLinear"] > 0
    elif precision == "int8-dynamic":
        assert q["DynamicQuantizeLinear"] > 0 and q["integer_ops"] > 0
    else:
        assert not any(q.values())
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in m.graph.initializer), (
            "no float16 weights in the fp16 file"
        )


def test_cache_key_includes_precision(tmp_path):
    a = export_onnx("block_sima", **SIMA_BLOCK, cache_dir=tmp_path)
    b = export_onnx("block_sima", **SIMA_BLOCK, precision="int8-static", cache_dir=tmp_path)
    c = export_onnx("block_sima", **SIMA_BLOCK, precision="int8-static", cache_dir=tmp_path)
    assert a.path != b.path and a.spec["cache_key"] != b.spec["cache_key"]
    assert "int8_static" in b.path.name
    assert c.cached and c.path == b.path


# --------------------------------------------------------------------------- SimA eps in fp16
def _sima_with_zero_column() -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("block_sima", **SIMA_BLOCK, order="qk_first").eval()
    attn = next(m for m in model.modules() if type(m).__name__ == "SimA")
    C = SIMA_BLOCK["dim"]
    with torch.no_grad():
        for base in (0, C):  # q channel 0 and k channel 0: all-zero columns over the tokens
            attn.qkv.weight[base].zero_()
            if attn.qkv.bias is not None:
                attn.qkv.bias[base].zero_()
    return model


def test_sima_zero_column_finite_in_torch_fp16():
    model = _sima_with_zero_column()
    x = torch.randn(1, SIMA_BLOCK["tokens"], SIMA_BLOCK["dim"])
    y16 = model.half()(x.half())
    assert torch.isfinite(y16).all()
    # the hazard itself: F.normalize's eps 1e-12 is 0 in float16, so 0/0
    t = torch.zeros(1, 1, 4, 2, dtype=torch.half)
    assert torch.isnan(t / t.abs().sum(-2, keepdim=True).clamp_min(1e-12)).all()


def test_sima_zero_column_finite_in_fp16_graph(tmp_path):
    model = _sima_with_zero_column()
    res = export_onnx(model, precision="fp16", output=tmp_path / "z.onnx")
    side = json.loads(res.sidecar_path.read_text())
    assert side["precision"]["l1_clamps_floored"] == 2  # the q and k clamps
    assert side["precision"]["verification"]["finite"]
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).standard_normal((1, 64, 64)).astype(np.float32)
    (y,) = sess.run(None, {"x": x})
    assert np.isfinite(y).all()
    # without the floor (the converter told to keep tiny constants as fp16 rounds them: 0),
    # the same graph gives NaN: the fix is what makes it finite
    from onnxconverter_common import float16

    plain = export_onnx(model, output=tmp_path / "f32.onnx")
    raw = float16.convert_float_to_float16(
        onnx.load(str(plain.path)), min_positive_val=0.0, keep_io_types=True
    )
    sess = ort.InferenceSession(raw.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.isnan(sess.run(None, {"x": x})[0]).any()


def test_l1_clamp_unchanged_in_fp32():
    from edgeattn.attention.sima import l1_normalize_tokens

    t = torch.randn(2, 3, 10, 4)
    t[..., 0] = 0
    ref = torch.nn.functional.normalize(t, p=1, dim=-2, eps=1e-12)
    torch.testing.assert_close(l1_normalize_tokens(t, 1e-12), ref, rtol=1e-6, atol=0)


# --------------------------------------------------------------------------- SOFT's Newton inverse
def _gaussian_landmark_kernel(spread: float, seed: int = 1, m: int = 49) -> torch.Tensor:
    from edgeattn.attention.soft import gaussian_kernel

    g = torch.Generator().manual_seed(seed)
    lm = torch.randn(1, 1, m, 64, generator=g, dtype=torch.float64) * spread
    return gaussian_kernel(lm, lm)


@pytest.mark.parametrize("spread", [0.3, 0.1, 0.05, 0.02])  # cond(K2 + 0.01 I): 1.4 .. 4.4e3
def test_newton_inverse_converges_in_fp16(spread):
    """True half arithmetic (torch CPU): finite, and within 3e-2 of the float32 iterate up to
    cond 4.4e3 (measured 5e-4 at cond 1.4, 1.5e-3 at 2e2, 2.3e-2 at 4.4e3). The fp16 file
    still keeps the inverse in float32 (soft_newton): the error grows with conditioning."""
    from edgeattn.attention.pinv import newton_inv

    K = _gaussian_landmark_kernel(spread)
    v32 = newton_inv(K.float(), 20).double()
    v16 = newton_inv(K.half(), 20).double()
    assert torch.isfinite(v16).all()
    assert ((v16 - v32).abs().max() / v32.abs().max()).item() < 3e-2


@pytest.mark.parametrize("precision", ["fp16", "int8-static"])
def test_soft_newton_kept_in_fp32(tmp_path, precision):
    res = export_onnx("block_soft", **SOFT_BLOCK, precision=precision, output=tmp_path / "s.onnx")
    side = json.loads(res.sidecar_path.read_text())
    assert "soft_newton" in side["precision"]["keep_fp32"]
    n_kept = side["precision"]["kept_nodes"]["soft_newton"]
    assert n_kept >= 20 * 4  # 20 Newton steps of Mul, MatMul, MatMul, Sub
    m = onnx.load(str(res.path))
    added = {"Cast", "QuantizeLinear", "DequantizeLinear"}  # the converter's / quantiser's
    newton = {n.name for n in m.graph.node if n.op_type not in added} & set(P.group_soft_newton(m))
    assert len(newton) == n_kept
    fp16_inits = {t.name for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    for n in m.graph.node:
        if n.name in newton:
            if precision == "int8-static" and n.op_type == "MatMul":  # the iteration's
                assert not any(i.endswith("_DequantizeLinear_Output") for i in n.input), n.name
            else:
                assert not fp16_inits & set(n.input), n.name


# --------------------------------------------------------------------------- audit of int8 graphs
def test_int8_qdq_softmax_is_still_softmax(tmp_path):
    res = export_onnx(
        "block_msa", **SIMA_BLOCK, precision="int8-static", output=tmp_path / "msa.onnx"
    )
    a = res.audit
    assert a["totals"]["Softmax"] == 1 and not a["softmax_free"] and a["softmax_blocks"] == ["attn"]
    q = a["quantization"]
    assert q["totals"]["QuantizeLinear"] > 0 and q["totals"]["DequantizeLinear"] > 0
    # QDQ nodes named after tensors (weights: attn.qkv.weight_DequantizeLinear) land in a block
    assert set(q["blocks"]) == {"attn"}
    m = onnx.load(str(res.path))
    assert any(n.op_type == "Softmax" for n in m.graph.node)


def test_int8_sima_stays_softmax_free(tmp_path):
    res = export_onnx(
        "block_sima",
        **SIMA_BLOCK,
        precision="int8-static",
        strict_softmax_free=True,
        output=tmp_path / "s.onnx",
    )
    assert res.audit["softmax_free"] and res.audit["quantization"]["totals"]["QuantizeLinear"]


def test_integer_softmax_counts_as_softmax():
    node = onnx.helper.make_node(
        "QLinearSoftmax",
        ["x", "s", "z", "ys", "yz"],
        ["y"],
        name="/attn/QLinearSoftmax",
        domain="com.microsoft",
    )
    g = onnx.helper.make_graph([node], "g", [], [])
    m = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)])
    a = audit_model(m)
    assert a["totals"]["Softmax"] == 1 and not a["softmax_free"]
    assert a["quantization"]["totals"]["integer_ops"] == 1


# --------------------------------------------------------------------------- tolerances
def test_failing_tolerance_is_one_clear_line(tmp_path, monkeypatch, capsys):
    tight = P.PrecisionTolerance("TOL_TEST_TIGHT", max_rel=1e-9, min_cosine=1.0)
    monkeypatch.setitem(P.PRECISION_TOLERANCES, "int8-static", tight)
    out = tmp_path / "t.onnx"
    with pytest.raises(
        ToleranceError, match=r"block_sima at int8-static is outside TOL_TEST_TIGHT"
    ):
        export_onnx("block_sima", **SIMA_BLOCK, precision="int8-static", output=out)
    assert not out.exists()
    argv = ["export", "block_sima", "--tokens", "64", "--dim", "64", "--heads", "2"]
    rc = main([*argv, "--precision", "int8-static", "-o", str(out)])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("hint:")]
    assert rc == 1 and len(lines) == 1 and "outside TOL_TEST_TIGHT" in lines[0], err
    assert "max rel error" in lines[0] and "--allow-degraded" in err
    # --allow-degraded writes it and records the figures
    rc = main([*argv, "--precision", "int8-static", "-o", str(out), "--allow-degraded"])
    text = capsys.readouterr().out
    assert rc == 0 and out.exists() and "DEGRADED" in text
    v = json.loads(out.with_name("t.onnx.json").read_text())["precision"]["verification"]
    assert v["degraded"] and not v["passed"] and v["failed"] and v["max_rel"] > 1e-9


def test_bad_precision_and_group_are_one_line(capsys):
    argv = ["export", "block_sima", "--tokens", "16", "--dim", "32", "--heads", "2"]
    assert main([*argv, "--precision", "int4"]) == 1
    assert "precision='int4'; valid: fp32, fp16" in capsys.readouterr().err
    assert main([*argv, "--precision", "fp16", "--keep-fp32", "newton"]) == 1
    assert "unknown node group" in capsys.readouterr().err


def test_calibration_directory(tmp_path):
    from PIL import Image

    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    for k in range(3):
        Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(d / f"{k}.png")
    res = export_onnx(
        "xcit_nano_12_p16",
        img_size=32,
        precision="int8-static",
        calibration=d,
        output=tmp_path / "c.onnx",
    )
    q = json.loads(res.sidecar_path.read_text())["precision"]["quantization"]
    assert q["calibration"] == str(d) and q["calibration_samples"] == 3


# --------------------------------------------------------------------------- bench jobs
def test_bench_jobs_carry_precision(tmp_path):
    from edgeattn.bench import core

    shape = core.Shape(64, 64, 2)
    st = core.Settings()
    jobs = [
        core.Job(core.METHODS[m], shape, precision=p)
        for p in ("fp32", "int8-static")
        for m in ("softmax", "sima_qk")
    ]
    assert jobs[0].id == "softmax/N64/D64/h2/B1"  # fp32 ids unchanged
    assert jobs[2].id == "softmax/N64/D64/h2/B1/int8-static"
    jobs = core.prepare(jobs, st, cache_dir=tmp_path)
    meta = core.job_meta(jobs[3])
    assert meta["precision"] == "int8-static"
    info = meta["precision_info"]
    assert info["quantization"]["format"] == "QDQ" and info["quant_ops"]["QuantizeLinear"] > 0
    assert 0 <= info["error_vs_fp32"]["max_rel"] < 1
    assert core.job_meta(jobs[0])["precision"] == "fp32"
    [group] = core.paired_specs(jobs, st)
    names = {r["name"]: (r["num"], r["den"]) for r in group["ratios"]}
    assert names["speedup_vs_fp32/sima_qk/int8-static"] == (jobs[1].id, jobs[3].id)
    assert names["speedup_vs_fp32/softmax/int8-static"] == (jobs[0].id, jobs[2].id)
    assert "exp_vs_l1_fixed_order" in names  # the fp32 method ratios are still there


def test_runtime_if_graphs(tmp_path):
    """SimA order=auto with a dynamic token axis keeps an If: fp16 floors the l1 clamps inside
    both branches; int8 is refused (the quantiser does not enter If branches)."""
    from edgeattn.errors import ExportError

    res = export_onnx(
        "block_sima", **SIMA_BLOCK, dynamic=True, precision="fp16", output=tmp_path / "d.onnx"
    )
    side = json.loads(res.sidecar_path.read_text())
    assert res.audit["totals"]["If"] == 1 and side["precision"]["l1_clamps_floored"] == 4
    with pytest.raises(ExportError, match="does not quantise inside ONNX If branches"):
        export_onnx("block_sima", **SIMA_BLOCK, dynamic=True, precision="int8-static")


def test_cls_tail_is_the_late_class_token_only(tmp_path):
    """SimA/XCiT join the class token after the patch blocks: its tail (class attention, norm,
    head) is a small part of the graph; DeiT's joins first, so the group keeps nothing."""
    from edgeattn.export.naming import block_of

    sima = onnx.load(str(export_onnx("sima_nano_12_p16", img_size=32, output=tmp_path / "s").path))
    tail = P.group_cls_tail(sima)
    blocks = {block_of(n) for n in tail}
    assert {"cls_attn_blocks.0", "cls_attn_blocks.1", "norm", "head"} <= blocks
    assert not any(b.startswith("blocks.") for b in blocks)
    assert 0 < len(tail) < 0.25 * len(sima.graph.node)
    deit = onnx.load(
        str(export_onnx("deit_tiny_patch16_224", img_size=32, output=tmp_path / "d").path)
    )
    assert P.group_cls_tail(deit) == []


# ------------------------------------------------------------------------ int8 graph layout
def _ort_ops(path, tmp_path) -> dict[str, int]:
    """Op census of the graph ONNX Runtime runs (its optimised model)."""
    import collections

    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    so.log_severity_level = 3
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node)


def test_activation_first_matmuls_same_arithmetic_and_integer_gemms(tmp_path):
    """SimA kv_first projects K and V channels-first (W·xᵀ, a weight on the left), which ORT's
    QLinearMatMul cannot take (int8 x uint8): the rewrite to (x·Wᵀ)ᵀ computes the same values
    in float32 (ORT, seeded input, to 1e-5), and the int8-static file then runs every product
    as an integer GEMM (no float MatMul in ORT's optimised graph; 2 before the rewrite)."""
    from edgeattn.export.precision_convert import activation_first_matmuls

    kw = dict(SIMA_BLOCK, order="kv_first")
    fp32 = export_onnx("block_sima", **kw, output=tmp_path / "f.onnx")
    model = onnx.load(str(fp32.path))
    assert _ort_ops(fp32.path, tmp_path)["FusedMatMul"] >= 1  # W·xᵀ fused with x's transpose
    swapped = onnx.load(str(fp32.path))
    assert activation_first_matmuls(swapped) == 2
    assert activation_first_matmuls(onnx.load(str(fp32.path)).__class__()) == 0  # empty graph
    x = np.random.default_rng(3).standard_normal((1, 64, 64)).astype(np.float32)
    runs = [
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            None, {"x": x}
        )[0]
        for m in (model, swapped)
    ]
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-5, atol=1e-6)
    q8 = export_onnx("block_sima", **kw, precision="int8-static", output=tmp_path / "q.onnx")
    # one rewrite at int8: the integer layout (attention.layout.integer_layout) keeps K
    # channels-first but projects V token-major (one transpose of it, not two)
    assert (
        q8.sidecar_path
        and json.loads(q8.sidecar_path.read_text())["precision"]["activation_first_matmuls"] == 1
    )
    ops = _ort_ops(q8.path, tmp_path)
    # six integer GEMMs: the Q, K, V projections (each with its bias as a weight row on x's ones
    # column), KᵀV and Q(KᵀV) per head, W_o; the integer layout does not fold W_o into a
    # run-time operand: the float32 graph (N ≥ C here) does, one product more
    # (blockdiag(KᵀV)·W_oᵀ), the tail uint8 × uint8. No bias QLinearAdd is left: the one Add is
    # the output bias, kept float (the output_bias group), and W_o's product feeds it in float
    # (MatMulIntegerToFloat: precision_convert.float_product_outputs)
    assert ops["QLinearMatMul"] == 5 and ops["MatMulIntegerToFloat"] == 1, ops
    assert "MatMul" not in ops and "FusedMatMul" not in ops and "Gemm" not in ops, ops
    assert "QLinearAdd" not in ops and ops["QLinearConcat"] == 1, ops
    f32 = _ort_ops(fp32.path, tmp_path)
    assert sum(f32.get(k, 0) for k in ("MatMul", "FusedMatMul", "Gemm")) == 7, f32


def _softmax_graph(n: int | str, axis: int = -1) -> onnx.ModelProto:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("Softmax", ["x"], ["y"], name="/attn/Softmax", axis=axis)
    return helper.make_model(
        helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)]
    )


def test_softmax_long_is_a_static_axis_of_511_or_more():
    """ORT gives a QDQ'd Softmax output the fixed scale 1/255: from 511 entries a row's typical
    probability (1/N) is under half a step. The group takes those rows only, by the reduced
    axis (not the last one when axis says otherwise); a dynamic axis is not taken."""
    from edgeattn.export.precision_groups import group_softmax_long

    assert group_softmax_long(_softmax_graph(1024)) == ["/attn/Softmax"]
    assert group_softmax_long(_softmax_graph(511)) == ["/attn/Softmax"]
    assert group_softmax_long(_softmax_graph(510)) == []
    assert group_softmax_long(_softmax_graph(1024, axis=2)) == []  # softmax over the 8
    assert group_softmax_long(_softmax_graph("N")) == []
    assert "softmax_long" in P.DEFAULT_KEEP_FP32["int8-static"]
    assert P.resolve_keep_fp32("int8-static", "softmax_long") == ["softmax_long"]


def test_int8_recipe_is_selectable_and_recorded(tmp_path, capsys):
    """``int8-static:matmuls`` quantises the MatMuls only (x's ones column is joined in float32,
    where the default recipe runs a QLinearConcat on the quantised x), records its recipe, and is
    checked against int8-static's tolerance; an unknown recipe is one line naming the valid."""
    kw = dict(SIMA_BLOCK, order="kv_first")
    res = {
        p: export_onnx("block_sima", **kw, precision=p, output=tmp_path / f"{i}.onnx")
        for i, p in enumerate(("int8-static", "int8-static:matmuls"))
    }
    q = json.loads(res["int8-static:matmuls"].sidecar_path.read_text())["precision"]
    assert q["precision"] == "int8-static:matmuls"
    assert q["quantization"]["recipe"] == "matmuls" and q["quantization"]["op_types"] == ["MatMul"]
    assert q["verification"]["tolerance"]["name"] == "TOL_INT8_STATIC"
    ops = {p: _ort_ops(r.path, tmp_path) for p, r in res.items()}
    assert (
        ops["int8-static"]["QLinearConcat"] == 1
        and "QLinearConcat" not in ops["int8-static:matmuls"]
    )
    assert ops["int8-static:matmuls"]["Concat"] == 1
    # W_o unfolded at int8: 6 integer GEMMs, the last with a float output (see the test above)
    m8 = ops["int8-static:matmuls"]
    assert m8["QLinearMatMul"] == 5 and m8["MatMulIntegerToFloat"] == 1, m8
    argv = ["export", "block_sima", "--tokens", "16", "--dim", "32", "--heads", "2"]
    assert main([*argv, "--precision", "int8-static:nope"]) == 1
    err = capsys.readouterr().err
    assert "precision='int8-static:nope'; valid:" in err and "int8-static:matmuls" in err
    assert main([*argv, "--precision", "fp16:matmuls"]) == 1


# --------------------------------------------------------------------------- LiteMLA at fp16
LITEMLA_SMALL = {"dim": 64, "heads": 2}  # head width d = 32: linear from N = 33 on


@pytest.mark.parametrize(("tokens", "form"), [(64, "linear"), (16, "quadratic")])
def test_litemla_att_group_is_the_attention(tmp_path, tokens, form):
    """The group holds, per attending scale (the input's and one aggregated), exactly the
    official form's nodes: linear = the head split (3 Slices), 2 ReLUs, the 4 products
    (V·Kᵀ, ·Q, 1ᵀKᵀ, ·Q), their 2 transposes, the eps Add and the Div; quadratic = the map's
    column ReduceSum, the eps Add and the Div. Other blocks: nothing."""
    res = export_onnx("block_litemla", tokens=tokens, **LITEMLA_SMALL, output=tmp_path / "l.onnx")
    m = onnx.load(str(res.path))
    ops = {n.name: n.op_type for n in m.graph.node}
    got = sorted(ops[n] for n in PG.group_litemla_att(m))
    per_scale = (
        ["Slice"] * 3 + ["Relu"] * 2 + ["MatMul"] * 4 + ["Transpose"] * 2 + ["Add", "Div"]
        if form == "linear"
        else ["ReduceSum", "Add", "Div"]
    )
    assert got == sorted(per_scale * 2)
    for other in ("block_hydra", "block_sima", "block_msa"):
        r = export_onnx(other, tokens=64, dim=64, heads=2, output=tmp_path / f"{other}.onnx")
        assert PG.group_litemla_att(onnx.load(str(r.path))) == []


def test_litemla_linear_form_overflows_in_true_half():
    """Why fp16 keeps litemla_att: in true half arithmetic (torch CPU) the linear form's
    denominator (the column sums of the map, ~N·rms²) overflows float16 at N = 1024 and rms 8;
    the model's own fp16 path upcasts like the official code and stays within 1e-5 of float64."""
    from edgeattn.attention.litemla import LITEMLA_EPS, relu_linear_att

    g = torch.Generator().manual_seed(0)
    d, side = 16, 32
    qkv = torch.randn(1, 3 * d, side, side, generator=g, dtype=torch.float64) * 8
    ref = relu_linear_att(qkv, d, LITEMLA_EPS)
    q, k, v = (t.reshape(d, side * side).half() for t in qkv[0].split(d))
    q, k = torch.relu(q), torch.relu(k)
    den = (torch.ones(1, side * side, dtype=torch.half) @ k.T) @ q
    raw = (v @ k.T) @ q / den
    assert not torch.isfinite(den).all() and not torch.isfinite(raw).all()
    got = relu_linear_att(qkv.half(), d, LITEMLA_EPS).double()  # upcast inside
    assert torch.isfinite(got).all()
    # the half rounding of the input (2^-11) bounds the difference, not the arithmetic
    assert ((got - ref).abs().max() / ref.abs().max()).item() < 5e-3


def test_litemla_att_kept_at_fp16(tmp_path):
    res = export_onnx(
        "block_litemla", tokens=64, **LITEMLA_SMALL, precision="fp16", output=tmp_path / "l.onnx"
    )
    side = json.loads(res.sidecar_path.read_text())
    assert "litemla_att" in side["precision"]["keep_fp32"]
    assert side["precision"]["kept_nodes"]["litemla_att"] == 2 * 13
    # the group's names, from the float32 export (the converter's Casts break the pattern)
    f32 = export_onnx("block_litemla", tokens=64, **LITEMLA_SMALL, output=tmp_path / "f.onnx")
    kept = set(PG.group_litemla_att(onnx.load(str(f32.path))))
    m = onnx.load(str(res.path))
    assert len(kept) == 26 and kept <= {n.name for n in m.graph.node}
    fp16_inits = {t.name for t in m.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    assert all(not fp16_inits & set(n.input) for n in m.graph.node if n.name in kept)
    # every product, sum and division of the group computes in float32 (inferred types)
    g = onnx.shape_inference.infer_shapes(m).graph
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input)}
    types.update({t.name: t.data_type for t in g.initializer})
    for n in g.node:
        if n.op_type == "Constant":
            types[n.output[0]] = n.attribute[0].t.data_type
    checked = 0
    for n in g.node:
        if n.name in kept and n.op_type in ("MatMul", "Add", "Div"):
            assert {types.get(i) for i in n.input} == {onnx.TensorProto.FLOAT}, n.name
            checked += 1
    assert checked == 2 * 6


def test_int8_dynamic_quantises_weight_first_products(tmp_path):
    """SOFT projects Q and V channels-first (W·xᵀ) and applies ff as W_ff·X: three products with
    the weight on the left, which quantize_dynamic leaves in float32 (it quantises a MatMul's
    right-hand weight only). int8-dynamic rewrites them activation-first too, so every one of
    them runs as an integer GEMM (ORT's MatMulInteger family) and the output
    is no longer the float32 one (it was, to 1e-6, before)."""
    fp32 = export_onnx("block_soft", **SOFT_BLOCK, output=tmp_path / "f.onnx")
    q = export_onnx(
        "block_soft", **SOFT_BLOCK, precision="int8-dynamic", output=tmp_path / "d.onnx"
    )
    side = json.loads(q.sidecar_path.read_text())["precision"]
    assert side["activation_first_matmuls"] == 3
    assert q.audit["quantization"]["totals"]["integer_ops"] == 3
    ops = _ort_ops(q.path, tmp_path)
    integer = sum(v for k, v in ops.items() if "MatMulInteger" in k or "QuantizeMatMul" in k)
    assert integer == 3, ops  # MatMulInteger(ToFloat) or DynamicQuantizeMatMul after fusion
    x = np.random.default_rng(5).standard_normal(tuple(fp32.spec["inputs"][0]["shape"]))
    runs = [
        ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(
            None, {"x": x.astype(np.float32)}
        )[0]
        for p in (fp32.path, q.path)
    ]
    err = np.abs(runs[1] - runs[0]).max() / np.abs(runs[0]).max()
    assert 1e-4 < err < 0.05, err  # quantised (not float32), and close


def _bias_graph(tail: list[str], bias_const: bool = True) -> onnx.ModelProto:
    """x·W + b, then the ops of ``tail`` (one input, one output each), the last output y."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.ones((4, 4), np.float32), "w")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4])]
    if bias_const:
        inits.append(numpy_helper.from_array(np.ones(4, np.float32), "b"))
    else:
        inputs.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, [4]))
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"], name="/mm"),
        helper.make_node("Add", ["xw", "b"], ["t0"], name="/add"),
    ]
    for i, op in enumerate(tail):
        attrs = {"perm": [0, 2, 1]} if op == "Transpose" else {}
        nodes.append(helper.make_node(op, [f"t{i}"], [f"t{i + 1}"], name=f"/{op}{i}", **attrs))
    nodes.append(helper.make_node("Identity", [f"t{len(tail)}"], ["y"], name="/out"))
    if tail and tail[-1] == "Transpose":  # the chain ends at the graph output itself
        nodes[-2].output[0] = "y"
        nodes.pop()
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph(nodes, "g", inputs, [y], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_output_bias_group_takes_the_bias_add_that_writes_the_output():
    """The Add of a constant bias that writes the graph output, with the shape ops between
    (SOFT: channels-first W_ff·X + b, then a Transpose); not an Add of two activations, not
    one followed by any other op."""
    from edgeattn.export.precision_groups import group_output_bias

    assert group_output_bias(_bias_graph(["Transpose"])) == ["/add", "/Transpose0"]
    assert group_output_bias(_bias_graph(["Transpose"], bias_const=False)) == []
    assert group_output_bias(_bias_graph(["Relu"])) == []  # Relu, then Identity to y
    assert "output_bias" in P.DEFAULT_KEEP_FP32["int8-static"]


def test_int8_output_bias_is_added_in_float(tmp_path):
    """int8-static keeps the output bias Add in float32 by default: ORT runs one QLinearAdd
    fewer (the output's), and the output is closer to the fp32 PyTorch block than with the
    Add quantised, as the output is not requantised (block_sima at N = 1024, D = 384: 4.3e-4 ->
    5.0e-5); the last product then feeds the Add in float, one integer GEMM with a float output."""
    kw = dict(SIMA_BLOCK, order="kv_first")
    res = {
        keep: export_onnx(
            "block_sima", **kw, precision="int8-static", keep_fp32=keep,
            output=tmp_path / f"{i}.onnx",
        )
        for i, keep in enumerate(("auto", "soft_newton,cls_tail,softmax_long"))
    }  # fmt: skip
    side = {k: json.loads(r.sidecar_path.read_text())["precision"] for k, r in res.items()}
    assert side["auto"]["kept_nodes"]["output_bias"] == 1
    ops = {k: _ort_ops(r.path, tmp_path) for k, r in res.items()}
    assert ops["auto"]["QLinearAdd"] == ops["soft_newton,cls_tail,softmax_long"]["QLinearAdd"] - 1
    err = {k: s["verification"]["max_abs"] for k, s in side.items()}
    assert err["auto"] < err["soft_newton,cls_tail,softmax_long"], err
    # the kept Add reads W_o's product in float: no requantising Q/DQ pair between them, so ORT
    # runs it as MatMulIntegerToFloat; the bias was given the product's rank, or ORT would fuse
    # MatMul + Add into a float Gemm over dequantised operands first
    assert side["auto"]["float_product_outputs"] == 1
    assert side["soft_newton,cls_tail,softmax_long"]["float_product_outputs"] == 0
    assert ops["auto"]["MatMulIntegerToFloat"] == 1, ops["auto"]
    assert not {"Gemm", "FusedGemm", "MatMul"} & set(ops["auto"]), ops["auto"]
    assert ops["soft_newton,cls_tail,softmax_long"]["MatMulIntegerToFloat"] == 0
