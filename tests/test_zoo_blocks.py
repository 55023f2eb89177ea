"""The zoo blocks (issue 22, item 3): MobileViTv2 separable self-attention and Hydra attention
against their textbook formulas in float64 (MobileViTv2 also against apple/ml-cvnets'
formulation on (B, C, P, N) patches), their opset-17 export verified by the export pipeline, the
audit's census of their normalisation ops, and their matmul floors' multiply-adds."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from edgeattn.attention.hydra import HydraAttention
from edgeattn.attention.separable import SeparableSelfAttention
from edgeattn.bench import floor_zoo
from edgeattn.export import export_onnx
from edgeattn.models.cost import count_cost
from edgeattn.models.registry import create_model, get_entry

F64 = torch.float64
#: Two float64 evaluations of the same formula in another association order.
F64_ATOL = 1e-10
SMALL = {"tokens": 64, "dim": 32}  # heads: fixed by both mechanisms, any value is accepted
BLOCKS = ("block_mobilevitv2", "block_hydra")


def _randomise(m: torch.nn.Module) -> torch.nn.Module:
    """Weights and biases O(1), so no term is negligible against another."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    return m.to(F64).eval()


# --------------------------------------------------------------------------- MobileViTv2


def textbook_separable(m: SeparableSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """Mehta & Rastegari 2022, eq. 4-5 on (B, N, C): project to 1 + 2C, context scores
    c_s = softmax over the N tokens of the query scalar, context vector c_v = Σ_n c_s(n) K_n,
    out = W_o(ReLU(V) ⊙ c_v) + b_o."""
    C = x.shape[-1]
    w, b = m.qkv_proj.weight, m.qkv_proj.bias
    q = x @ w[:1].T + b[:1]  # (B, N, 1)
    k = x @ w[1 : 1 + C].T + b[1 : 1 + C]  # (B, N, C)
    v = x @ w[1 + C :].T + b[1 + C :]
    cs = torch.exp(q - q.max(dim=1, keepdim=True).values)
    cs = cs / cs.sum(dim=1, keepdim=True)  # softmax over N scalars
    cv = (cs * k).sum(dim=1, keepdim=True)  # (B, 1, C)
    return (torch.relu(v) * cv) @ m.out_proj.weight.T + m.out_proj.bias


def cvnets_linear_self_attention(
    x_bcpn: torch.Tensor, params: dict[str, torch.Tensor], embed_dim: int
) -> torch.Tensor:
    """ml-cvnets ``LinearSelfAttention._forward_self_attn`` (cvnets/layers/linear_attention.py,
    commit 77717569) on (B, C, P, N), re-written from its facts: 1×1 conv ``qkv_proj`` to
    1 + 2C channels with bias; ``split([1, C, C], dim=1)`` into query, key, value; softmax of
    the query over the last axis (N); ``context = sum(key * scores, dim=-1, keepdim)``;
    ``out_proj(relu(value) * context.expand_as(value))``, a 1×1 conv with bias."""
    qkv = F.conv2d(x_bcpn, params["qkv_proj.block.conv.weight"], params["qkv_proj.block.conv.bias"])
    query, key, value = torch.split(qkv, [1, embed_dim, embed_dim], dim=1)  # (B,1,P,N),(B,C,P,N)x2
    scores = F.softmax(query, dim=-1)  # over the N patches
    context = torch.sum(key * scores, dim=-1, keepdim=True)  # (B, C, P, 1)
    out = F.relu(value) * context.expand_as(value)
    return F.conv2d(out, params["out_proj.block.conv.weight"], params["out_proj.block.conv.bias"])


def cvnets_params(m: SeparableSelfAttention) -> dict[str, torch.Tensor]:
    """Our state_dict in ml-cvnets' layout: 1×1 conv weights (O, C, 1, 1) under ``.block.conv``."""
    out = {}
    for key, t in m.state_dict().items():
        mod, kind = key.rsplit(".", 1)
        out[f"{mod}.block.conv.{kind}"] = t[:, :, None, None] if kind == "weight" else t
    return out


@pytest.mark.parametrize("n_tokens", [1, 7, 64])
def test_separable_matches_the_textbook_formula(n_tokens):
    m = _randomise(SeparableSelfAttention(24))
    x = torch.randn(2, n_tokens, 24, dtype=F64)
    torch.testing.assert_close(m(x), textbook_separable(m, x), rtol=0, atol=F64_ATOL)


@pytest.mark.parametrize("pixels", [1, 3])
def test_separable_matches_ml_cvnets_on_patches(pixels):
    """(B, N, C) tokens = ml-cvnets' (B, C, P, N) with P = 1; with P > 1 each pixel position of
    the patches is one independent token block."""
    C, N = 24, 10
    m = _randomise(SeparableSelfAttention(C))
    x = torch.randn(2, C, pixels, N, dtype=F64)  # (B, C, P, N)
    ref = cvnets_linear_self_attention(x, cvnets_params(m), C)  # (B, C, P, N)
    for p in range(pixels):
        tokens = x[:, :, p, :].transpose(1, 2)  # (B, N, C)
        ours = m(tokens).transpose(1, 2)  # (B, C, N)
        torch.testing.assert_close(ours, ref[:, :, p, :], rtol=0, atol=F64_ATOL)


def test_separable_loads_an_ml_cvnets_state_dict():
    """Same parameters: the 1×1 conv weights squeezed are the Linear weights."""
    src = _randomise(SeparableSelfAttention(16))
    dst = SeparableSelfAttention(16).to(F64)
    mapped = {
        k.replace(".block.conv", ""): (v[:, :, 0, 0] if v.ndim == 4 else v)
        for k, v in cvnets_params(src).items()
    }
    dst.load_state_dict(mapped, strict=True)
    x = torch.randn(1, 5, 16, dtype=F64)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


# --------------------------------------------------------------------------- Hydra


def textbook_hydra(m: HydraAttention, x: torch.Tensor) -> torch.Tensor:
    """Bolya et al. 2022, eq. 10: H = C heads of one feature each, cosine-similarity kernel
    φ(t) = t / ‖t‖₂ over each token's full C-vector; per head (channel) c the linear attention
    φ(Q)_c (φ(K)_cᵀ V_c); then the output projection."""
    C = x.shape[-1]
    q, k, v = (x @ m.qkv.weight.T + m.qkv.bias).split(C, dim=-1)  # 3 x (B, N, C)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    k = k / torch.linalg.vector_norm(k, dim=-1, keepdim=True)
    heads = [q[..., c : c + 1] @ (k[..., c : c + 1].transpose(1, 2) @ v[..., c : c + 1])
             for c in range(C)]  # fmt: skip
    return torch.cat(heads, dim=-1) @ m.proj.weight.T + m.proj.bias


@pytest.mark.parametrize("batch", [1, 2], ids=["kv-as-norm-scale", "kv-on-W_o"])
@pytest.mark.parametrize("fold_bias", [False, True], ids=["eager", "exported-form"])
@pytest.mark.parametrize("n_tokens", [1, 7, 64])
def test_hydra_matches_the_textbook_formula(n_tokens, fold_bias, batch):
    """Both forms: eager (F.linear with bias) and the exported one (biases as a ones column);
    both tails: batch 1 applies kv as the fused norm's run-time scale, a batch of 2 folds it into
    W_o (the forward's two branches)."""
    m = _randomise(HydraAttention(24))
    x = torch.randn(batch, n_tokens, 24, dtype=F64)
    y = m(x, fold_bias=fold_bias)
    torch.testing.assert_close(y, textbook_hydra(m, x), rtol=0, atol=F64_ATOL)
    # the paper's code listing: q * (k * v).sum(tokens) on normalised q, k
    C = x.shape[-1]
    q, k, v = m.qkv(x).split(C, dim=-1)
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    listing = m.proj(q * (k * v).sum(dim=-2, keepdim=True))
    torch.testing.assert_close(y, listing, rtol=0, atol=F64_ATOL)


@pytest.mark.parametrize("batch", [1, 2])
@pytest.mark.parametrize("fold_bias", [False, True], ids=["eager", "exported-form"])
def test_hydra_zero_token_gives_no_nan(fold_bias, batch):
    """The eps (as F.normalize's clamp): an all-zero q or k contributes 0, not NaN."""
    m = _randomise(HydraAttention(8))
    with torch.no_grad():
        m.qkv.bias.zero_()
    x = torch.randn(batch, 4, 8, dtype=F64)
    x[:, 2] = 0
    y = m(x, fold_bias=fold_bias)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[:, 2], m.proj.bias.expand(batch, 8), rtol=0, atol=F64_ATOL)


# --------------------------------------------------------------------------- registry and export


@pytest.mark.parametrize("name", BLOCKS)
def test_registered_as_blocks_and_heads_are_not_used(name):
    entry = get_entry(name)
    assert entry.family == "block" and entry.export.is_tokens
    a = create_model(name, heads=6, **SMALL)  # 32 % 6 != 0: no heads to split
    b = create_model(name, heads=1, **SMALL)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all(a.state_dict()[k].shape == v.shape for k, v in b.state_dict().items())
    assert entry.cost is not None, "no row in edgeattn/models/_cost_table.py"


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    return {
        n: export_onnx(n, opset=17, heads=6, output=root / f"{n}.onnx", **SMALL) for n in BLOCKS
    }


def _shapes(path) -> tuple[onnx.ModelProto, dict[str, list[int]]]:
    m = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    vals = [*m.graph.value_info, *m.graph.input, *m.graph.output]
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in vals}
    shapes.update({t.name: list(t.dims) for t in m.graph.initializer})
    return m, shapes


@pytest.mark.parametrize("name", BLOCKS)
def test_exports_at_opset17_and_verifies(exports, name):
    res = exports[name]
    m = onnx.load(str(res.path))
    assert next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert res.verification["passed"]
    assert res.spec["method"] == name.removeprefix("block_")
    # lean: no N x N tensor, no transpose of an N-sized tensor, no split of the N x 3C projection
    _, shapes = _shapes(res.path)
    N = SMALL["tokens"]
    assert not [n for n, s in shapes.items() if s.count(N) > 1], "an N x N tensor"
    other = res.audit["other_ops"]
    assert not {"Split", "Slice", "Pad"} & set(other), other
    # a Transpose only of a C x C operand, as a MatMul's right-hand side (ONNX Runtime runs
    # the pair as one FusedMatMul with transB)
    for node in (n for n in m.graph.node if n.op_type == "Transpose"):
        assert N not in shapes[node.input[0]], (node.name, shapes[node.input[0]])
        users = [u for u in m.graph.node if node.output[0] in u.input]
        assert [(u.op_type, list(u.input).index(node.output[0])) for u in users] == [("MatMul", 1)]
    # Hydra, MobileViTv2: one Concat of x with a column of ones (the qkv biases as a weight
    # row); none elsewhere
    ones_col = name in ("block_hydra", "block_mobilevitv2")
    assert other.get("Concat", 0) == (1 if ones_col else 0), other
    assert res.audit["totals"]["MatMul"] == 5


def test_hydra_census_has_l2_norms_and_no_softmax(exports):
    a = exports["block_hydra"].audit
    assert a["softmax_free"] and a["totals"]["Softmax"] == 0 and a["totals"]["Exp"] == 0
    # φ(Q) in the RMS-norm form (Pow, ReduceMean over the channels, Sqrt); φ(K) as a row scale
    # 1/sqrt(‖k‖² + eps²) from one ReduceL2 (Sqrt on an N-vector)
    assert a["other_ops"]["ReduceMean"] == 1 and a["other_ops"]["Pow"] == 1
    assert a["other_ops"]["ReduceL2"] == 1 and a["other_ops"]["Sqrt"] == 2
    assert a["totals"]["ReduceSum"] == 0 and a["totals"]["ReduceL1"] == 0


def test_hydra_runs_lean_in_onnx_runtime(exports, tmp_path):
    """What ORT runs (opt level all): φ(Q) fused into one SimplifiedLayerNormalization whose
    scale is the run-time kv vector (so φ(Q) ⊙ kv is that pass's output), φ(K) never written (a
    ReduceL2 gives its row scale), the q/k/v projections bias-free MatMuls (no Gemm writing a
    broadcast bias), one Concat of x with a ones column, and the output product a plain MatMul
    on the constant W_oᵀ, its bias a separate Add (not a Gemm between two reshape copies)."""
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    path = str(exports["block_hydra"].path)
    ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    opt = onnx.load(so.optimized_model_filepath)
    ops = [n.op_type for n in opt.graph.node]
    assert ops.count("SimplifiedLayerNormalization") == 1 and ops.count("ReduceL2") == 1, ops
    assert ops.count("MatMul") == 5 and ops.count("Add") >= 1, ops
    assert not {"Gemm", "FusedMatMul", "Transpose"} & set(ops), ops
    assert ops.count("Concat") == 1 and not {"ReduceSum", "ReduceMean", "Pow", "Pad"} & set(ops)
    consts = {t.name for t in opt.graph.initializer}
    (sln,) = (n for n in opt.graph.node if n.op_type == "SimplifiedLayerNormalization")
    assert sln.input[1] not in consts, "the norm's scale should be the run-time kv vector"
    (last,) = (n for n in opt.graph.node if n.op_type == "MatMul" and n.input[0] == sln.output[0])
    assert last.input[1] in consts, "the output product should read W_oᵀ as a weight"


def test_mobilevitv2_census_has_one_softmax_over_n_scalars(exports):
    res = exports["block_mobilevitv2"]
    a = res.audit
    assert not a["softmax_free"] and a["totals"]["Softmax"] == 1  # faithful: the audit says so
    assert a["softmax_blocks"] == ["attn"] and a["totals"]["Exp"] == 0
    m, shapes = _shapes(res.path)
    (sm,) = [n for n in m.graph.node if n.op_type == "Softmax"]
    assert shapes[sm.input[0]] == [1, 1, SMALL["tokens"]]  # (B, 1, N): N scalars
    axis = next((att.i for att in sm.attribute if att.name == "axis"), -1)
    assert axis in (-1, 2)


# --------------------------------------------------------------------------- matmul floors


@pytest.mark.parametrize("n", [64, 1024, 4096])
def test_floor_macs_by_hand(n):
    B, C = 1, 384
    sep = floor_zoo.macs("floor_mobilevitv2", B, n, C)
    # query column, sᵀx, context C x C, V projection, output projection
    assert sep == n * C + n * C + C * C + n * C * C + n * C * C
    textbook = n * C * (1 + 2 * C) + n * C + n * C * C  # with the key projection
    assert textbook - sep == n * C * C - C * C
    hyd = floor_zoo.macs("floor_hydra", B, n, C)
    assert hyd == n * C * 3 * C + n * C + n * C * C  # qkv, rᵀ(K ⊙ V), output projection


#: each zoo floor and the block it is the floor of
FLOOR_OF = {"floor_mobilevitv2": "block_mobilevitv2", "floor_hydra": "block_hydra",
            "floor_litemla": "block_litemla"}  # fmt: skip


@pytest.mark.parametrize(("n", "heads"), [(64, 1), (64, 4), (4, 4)])
@pytest.mark.parametrize("kind", floor_zoo.FLOORS)
def test_floor_is_the_blocks_matmuls(kind, n, heads):
    """PyTorch's FLOP counter on each block counts exactly its floor's products (LiteMLA at
    N = 64: the linear form, d = 32 or 8; at N = 4 < d + 1 = 9: the quadratic one)."""
    c = 32
    cost = count_cost(FLOOR_OF[kind], tokens=n, dim=c, heads=heads).flops
    assert floor_zoo.macs(kind, 1, n, c, heads) == cost


def test_litemla_floor_macs_by_hand():
    """N = 4096 (64 × 64), C = 384, h = 12 heads of d = 32: qkv, the 5 × 5 depthwise conv over
    3C, the grouped 1 × 1 (3h groups of d → d), the linear form over 2h heads ([V;1]Kᵀ, ·Q), proj
    (2C → C); and the cost table's figure for block_litemla at that shape."""
    n, C, h, d = 4096, 384, 12, 32
    by_hand = n * C * 3 * C + n * 3 * C * 25 + 3 * h * n * d * d + 2 * (2 * h) * (d + 1) * d * n
    by_hand += n * 2 * C * C
    assert floor_zoo.macs("floor_litemla", 1, n, C, h) == by_hand == 3_496_476_672
    # below d + 1 tokens: the quadratic form, N² · d twice per head
    q = floor_zoo.products("floor_litemla", 1, 16, 384, 12)
    assert [p.name for p in q][2:4] == ["att_kq", "att_v_map"]
    assert sum(p.macs for p in q[2:4]) == 2 * (2 * 12) * 16 * 16 * 32


def _depthwise_same(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Depthwise 'same' conv by loops: x (B, C, H, W), w (C, 1, k, k)."""
    k = w.shape[-1]
    xp = np.pad(x, ((0, 0), (0, 0), (k // 2, k // 2), (k // 2, k // 2)))
    out = np.zeros_like(x)
    for i in range(k):
        for j in range(k):
            out += (
                xp[:, :, i : i + x.shape[2], j : j + x.shape[3]] * w[None, :, 0, i, j, None, None]
            )
    return out


@pytest.mark.parametrize("kind", floor_zoo.FLOORS)
def test_floor_graph_computes_its_products(kind):
    B, N, C = 1, 64, 32
    model = floor_zoo.build(kind, B, N, C, heads=1, opset=17)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {
        i.name: rng.standard_normal([int(v) for v in i.shape]).astype(np.float32)
        for i in sess.get_inputs()
    }
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))
    prods = floor_zoo.products(kind, B, N, C)
    convs = floor_zoo.convs(kind, B, N, C)
    assert [p.name for p in prods] + [c.name for c in convs] == list(outs)
    for p in prods:
        b = inits[f"{p.name}_b"] if p.b_const else feeds[f"{p.name}_b"]
        np.testing.assert_allclose(outs[p.name], feeds[f"{p.name}_a"] @ b, rtol=1e-4, atol=1e-4)
    for c in convs:  # LiteMLA's depthwise 5 × 5 over 3C channels on the 8 × 8 grid
        assert c.grid == (8, 8) and c.channels == 3 * C and c.kernel == 5
        want = _depthwise_same(feeds[f"{c.name}_a"], inits[f"{c.name}_b"])
        np.testing.assert_allclose(outs[c.name], want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="floor_hydra"):
        floor_zoo.products("floor_x", B, N, C)


def test_mobilevitv2_runs_lean_in_onnx_runtime(exports, tmp_path):
    """What ORT runs (opt level all): the query and value projections bias-free MatMuls (no Gemm
    writing a broadcast bias: the bias rides in the weights on x with a ones column), one
    Softmax over the N scalars, the output projection's bias the only Add, the C x C Transpose
    folded into the last product."""
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    path = str(exports["block_mobilevitv2"].path)
    ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    assert not {"Gemm", "Transpose"} & set(ops), ops
    assert ops.count("MatMul") == 4 and ops.count("FusedMatMul") == 1, ops  # ReLU(V)·Mᵀᵀ
    assert ops.count("Concat") == 1 and ops.count("Softmax") == 1 and ops.count("Add") == 1, ops


@pytest.mark.parametrize(
    ("name", "proj"),
    [("block_mobilevitv2", "out_proj"), ("block_hydra", "proj"), ("block_sima", "proj")],
)
def test_int8_graph_keeps_the_output_projection_a_weight(tmp_path, name, proj):
    """At fp32 the blocks fold the context / kv channel weights (SimA: blockdiag(KᵀV)) into the
    output projection per call, so W_o never appears as a graph constant (except Hydra at batch
    1, whose kv is the fused norm's scale); in a graph built for
    integer GEMMs (an int8 export, attention.layout.integer_layout) it stays a weight, so the
    tail is uint8 × int8, not uint8 × uint8. Checked on the float32 graph the int8 conversion
    starts from: some MatMul reads W_oᵀ as an initializer (values compared), and its output
    equals the folded graph's (ORT, seeded input)."""
    from edgeattn.attention.layout import for_integer

    kw = (
        {"tokens": 64, "dim": 32} if name != "block_sima" else {"tokens": 64, "dim": 32, "heads": 2}
    )
    model = create_model(name, **kw).eval()
    w_ot = getattr(model.attn, proj).weight.detach().numpy().T
    outs = {}
    for integer in (False, True):
        with for_integer(integer):
            res = export_onnx(model, **kw, output=tmp_path / f"{integer}.onnx")
        m = onnx.load(str(res.path))
        inits = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
        const_wo = [
            n
            for n in m.graph.node
            if n.op_type == "MatMul"
            and any(
                i in inits and inits[i].shape == w_ot.shape and np.allclose(inits[i], w_ot)
                for i in n.input
            )
        ]
        # Hydra at batch 1 reads W_oᵀ as a weight at fp32 too (kv is the fused norm's scale)
        assert bool(const_wo) == (integer or name == "block_hydra"), [n.name for n in const_wo]
        x = np.random.default_rng(4).standard_normal((1, 64, 32)).astype(np.float32)
        sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
        outs[integer] = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(outs[True], outs[False], rtol=1e-4, atol=1e-5)


def test_hydra_zero_token_is_finite_in_half():
    """An all-zero token (no qkv bias) in float16: eps² = 1e-24 is 0 there, and the norms gave
    0/0 = NaN over the whole output (the kv sum is shared by every token); the floor is now
    float16's smallest normal, so the output is finite and within half precision of float32's."""
    torch.manual_seed(0)
    m = HydraAttention(32, qkv_bias=False).eval()
    x = torch.randn(1, 8, 32)
    x[0, 3] = 0
    ref = m(x)
    got = m.half()(x.half()).float()
    assert torch.isfinite(got).all()
    assert ((got - ref).abs().max() / ref.abs().max()).item() < 1e-2
