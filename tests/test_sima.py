"""SimA: the ordering policy, the attention against its explicit formula, the softmax-free class
attention, torch.cond for ``auto``, and the sima_* nets against the official keys, shapes and
parameter counts (shared/reference/official_models.md)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import edgeattn.models.sima as sima_models
from edgeattn.attention.order import ORDERS, choose_order, cost_macs, validate_order
from edgeattn.attention.sima import (
    SimA,
    SimAClassAttention,
    l1_normalize_tokens,
    set_sima_order,
    sima_kv_first,
    sima_qk_first,
)
from edgeattn.errors import ModelError
from edgeattn.models.registry import _REGISTRY

F64 = torch.float64
#: Two float64 evaluations of the same product in another association order.
F64_TOL = 1e-12
#: The same, in float32 (relative to the output's scale).
F32_RTOL = 1e-5
#: Our ℓ1 normalisation (Abs + ReduceSum, for opset-17 export) vs F.normalize: rounding only.
NORMALIZE_RTOL = 1e-6

# Copied from shared/reference/official_models.md (the official repos' constructors, read there).
REFERENCE = Path(__file__).resolve().parent / "data" / "official_models.md"

# From official_models.md (Summary): params and state_dict entries of the official constructors.
OFFICIAL_COUNTS = {
    "sima_nano_12_p16": (3_053_176, 371),
    "sima_tiny_12_p16": (6_716_224, 371),
    "sima_small_12_p16": (26_253_208, 371),
    "sima_tiny_24_p16": (12_116_800, 683),
    "sima_small_24_p16": (47_671_192, 683),
    "sima_medium_24_p16": (84_395_560, 683),
    "sima_large_24_p16": (189_095_752, 683),
    "sima_nano_12_p8": (3_048_968, 365),
    "sima_tiny_12_p8": (6_706_456, 365),
    "sima_small_12_p8": (26_212_936, 365),
    "sima_tiny_24_p8": (12_107_032, 677),
    "sima_small_24_p8": (47_630_920, 677),
    "sima_medium_24_p8": (84_323_432, 677),
    "sima_large_24_p8": (188_932_264, 677),
}
#: Nets too large for the default 2-core run to build and run (> 40M parameters).
BIG = {n for n, (p, _) in OFFICIAL_COUNTS.items() if p > 40_000_000}


# --------------------------------------------------------------------------- reference parsing


def parse_reference(path: Path = REFERENCE) -> dict[str, dict[str, tuple[tuple[int, ...], str]]]:
    """``{model: {key: (shape, dtype)}}`` from the collapsed state_dict listings, expanded."""
    if not path.is_file():
        pytest.fail(
            f"reference file missing: {path} (versioned test data: restore tests/data/official_models.md)"
        )
    out: dict[str, dict[str, tuple[tuple[int, ...], str]]] = {}
    for section in re.split(r"^### ", path.read_text(), flags=re.M)[1:]:
        name = section.split("\n", 1)[0].strip()
        block = re.search(r"state_dict keys.*?```\n(.*?)```", section, flags=re.S)
        if block is None:
            continue
        keys: dict[str, tuple[tuple[int, ...], str]] = {}
        for line in block.group(1).strip().splitlines():
            m = re.fullmatch(r"(\S+)\s+\[([\d, ]*)\]\s*(\w+)?", line.strip())
            assert m, f"{name}: cannot parse reference line {line!r}"
            key, dtype = m.group(1), m.group(3) or "float32"
            shape = tuple(int(s) for s in m.group(2).replace(",", " ").split())
            rng = re.search(r"\{(\d+)\.\.(\d+)\}", key)
            idx = range(int(rng.group(1)), int(rng.group(2)) + 1) if rng else [None]
            for i in idx:
                keys[key.replace(rng.group(0), str(i)) if rng else key] = (shape, dtype)
        out[name] = keys
    return out


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[str, tuple[tuple[int, ...], str]]]:
    ref = parse_reference()
    missing = sorted(set(OFFICIAL_COUNTS) - set(ref))
    assert not missing, f"no state_dict listing for {missing} in {REFERENCE}"
    return ref


def state_dict_spec(model: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], str]]:
    return {
        k: (tuple(v.shape), str(v.dtype).removeprefix("torch."))
        for k, v in model.state_dict().items()
    }


def build_meta(name: str, **kw) -> torch.nn.Module:
    with torch.device("meta"):
        return _REGISTRY[name].fn(**kw)


# --------------------------------------------------------------------------- order policy


def test_order_validation_names_the_value() -> None:
    assert ORDERS == ("auto", "qk_first", "kv_first")
    for good in ORDERS:
        assert validate_order(good) == good
    with pytest.raises(ValueError, match=r"'fastest'.*auto, qk_first, kv_first"):
        validate_order("fastest")
    with pytest.raises(ValueError, match="'fastest'"):
        SimA(64, 2, order="fastest")
    with pytest.raises(ValueError, match="crossover"):
        SimA(64, 2, crossover=0)
    m = SimA(64, 2)
    m.order = "bogus"  # export code may set it later: checked when used
    with pytest.raises(ValueError, match="'bogus'"):
        m(torch.randn(1, 5, 64))


def test_choose_order_and_cost_model() -> None:
    assert choose_order(31, 32) == "qk_first"
    assert choose_order(32, 32) == "kv_first"  # official: qk_first only when N < d_h
    assert choose_order(100, 32, crossover=101) == "qk_first"
    assert choose_order(101, 32, crossover=101) == "kv_first"
    N, C, h = 196, 384, 8
    assert cost_macs(N, C, h, "qk_first") == 2 * N * N * C
    assert cost_macs(N, C, h, "kv_first") == 2 * N * C * (C // h)
    assert cost_macs(N, C, h, "auto") == cost_macs(N, C, h, "kv_first")
    assert cost_macs(10, C, h, "auto") == cost_macs(10, C, h, "qk_first")
    d = C // h  # the costs cross exactly at N = d_h
    assert cost_macs(d, C, h, "qk_first") == cost_macs(d, C, h, "kv_first")
    with pytest.raises(ValueError, match="'x'"):
        cost_macs(N, C, h, "x")


# --------------------------------------------------------------------------- SimA numerics


def explicit_sima(m: SimA, x: torch.Tensor) -> torch.Tensor:
    """SimA written out independently: per head, l1-normalise the token columns of Q and K with
    F.normalize, build the (N x N) matrix explicitly, no softmax, no scale."""
    B, N, C = x.shape
    h, d = m.num_heads, C // m.num_heads
    q, k, v = (x @ m.qkv.weight.T + m.qkv.bias).split(C, dim=-1)
    out = []
    for i in range(h):
        sl = slice(i * d, (i + 1) * d)
        qi = F.normalize(q[..., sl], p=1.0, dim=1, eps=m.eps)  # over tokens
        ki = F.normalize(k[..., sl], p=1.0, dim=1, eps=m.eps)
        out.append(torch.einsum("bnc,bmc->bnm", qi, ki) @ v[..., sl])
    return torch.cat(out, dim=-1) @ m.proj.weight.T + m.proj.bias


def explicit_class_attention(m: SimAClassAttention, x: torch.Tensor) -> torch.Tensor:
    """The official softmax-free class attention written out: F.normalize per head over the
    tokens, the class query's dot products with every key, no softmax, no scale."""
    C = x.shape[-1]
    h = m.num_heads
    d = C // h
    q, k, v = (x @ m.qkv.weight.T + m.qkv.bias).split(C, dim=-1)
    cls = []
    for i in range(h):
        sl = slice(i * d, (i + 1) * d)
        qi = F.normalize(q[..., sl], p=1.0, dim=1, eps=m.eps)
        ki = F.normalize(k[..., sl], p=1.0, dim=1, eps=m.eps)
        w = (qi[:, :1] * ki).sum(-1)  # (B, N): class query only, no softmax, no scale
        cls.append(torch.einsum("bn,bnc->bc", w, v[..., sl]))
    cls = torch.cat(cls, -1) @ m.proj.weight.T + m.proj.bias
    return torch.cat([cls[:, None], x[:, 1:]], dim=1)


@pytest.mark.parametrize("n_tokens", [5, 48, 200])
def test_sima_orders_agree_and_match_the_formula(n_tokens: int) -> None:
    torch.manual_seed(0)
    m = SimA(96, num_heads=2, qkv_bias=True).to(F64).eval()  # head_dim 48
    x = torch.randn(2, n_tokens, 96, dtype=F64)
    ref = explicit_sima(m, x)
    outs = {}
    for order in ORDERS:
        m.order = order
        outs[order] = m(x)
        torch.testing.assert_close(outs[order], ref, rtol=F64_TOL, atol=F64_TOL)
    for fold in (False, True):  # W_o folded into the (C x C) tail or not: both the formula
        torch.testing.assert_close(m.kv_first(x, fold=fold), ref, rtol=F64_TOL, atol=F64_TOL)
    # the layout built for integer GEMMs (the biases as a weight column on x's ones column, V
    # token-major, W_o unfolded): the formula too
    from edgeattn.attention.layout import for_integer

    with for_integer():
        torch.testing.assert_close(m.kv_first(x), ref, rtol=F64_TOL, atol=F64_TOL)
    # float32: the two associations differ only by rounding
    m32 = m.float()
    x32 = x.float()
    m32.order = "qk_first"
    a = m32(x32)
    m32.order = "kv_first"
    b = m32(x32)
    torch.testing.assert_close(a, b, rtol=F32_RTOL, atol=F32_RTOL * a.abs().max().item())


def test_qk_first_and_kv_first_functions() -> None:
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 3, 17, 8, dtype=F64) for _ in range(3))
    full = torch.einsum("bhnd,bhmd,bhme->bhne", q, k, v)
    torch.testing.assert_close(sima_qk_first(q, k, v), full, rtol=F64_TOL, atol=F64_TOL)
    torch.testing.assert_close(sima_kv_first(q, k, v), full, rtol=F64_TOL, atol=F64_TOL)


@pytest.mark.parametrize(
    ("n_tokens", "crossover", "expected"),
    [
        (31, None, "qk"),
        (32, None, "kv"),
        (200, None, "kv"),
        (9, 10, "qk"),
        (10, 10, "kv"),
        (40, 64, "qk"),
    ],
)
def test_auto_dispatch(monkeypatch, n_tokens: int, crossover: int | None, expected: str) -> None:
    calls: list[str] = []
    qk, kv = SimA.qk_first, SimA.kv_first
    monkeypatch.setattr(SimA, "qk_first", lambda self, x: calls.append("qk") or qk(self, x))
    monkeypatch.setattr(SimA, "kv_first", lambda self, x: calls.append("kv") or kv(self, x))
    m = SimA(128, num_heads=4, crossover=crossover)  # head_dim 32
    m(torch.randn(1, n_tokens, 128))
    assert calls == [expected]
    calls.clear()
    m.order = "kv_first" if expected == "qk" else "qk_first"  # a fixed order overrides auto
    m(torch.randn(1, n_tokens, 128))
    assert calls == [{"qk": "kv", "kv": "qk"}[expected]]


def test_l1_normalisation_eps_like_f_normalize() -> None:
    torch.manual_seed(2)
    t = torch.randn(2, 3, 4, 6, dtype=F64)
    t[..., 0] = 0.0  # an all-zero column: 0 / eps = 0, no NaN
    t[..., 1] = (
        1e-14  # l1 norm 4e-14 < eps=1e-12: clamped (1e-14 / 1e-12), not 1e-14 / (4e-14 + eps)
    )
    t[:, :, :, 2] *= 1e-7
    for eps in (1e-12, 1e-6):
        ours = l1_normalize_tokens(t, eps)
        assert torch.isfinite(ours).all()
        torch.testing.assert_close(
            ours, F.normalize(t, p=1.0, dim=-2, eps=eps), rtol=F64_TOL, atol=0
        )
    assert (l1_normalize_tokens(t, 1e-12)[..., 0] == 0).all()
    torch.testing.assert_close(
        l1_normalize_tokens(t, 1e-12)[..., 1], torch.full_like(t[..., 1], 0.01)
    )
    t32 = torch.randn(2, 4, 196, 48)
    torch.testing.assert_close(
        l1_normalize_tokens(t32, 1e-12),
        F.normalize(t32, p=1.0, dim=-2),
        rtol=NORMALIZE_RTOL,
        atol=0,
    )


def test_sima_zero_column_is_finite() -> None:
    torch.manual_seed(3)
    m = SimA(64, num_heads=2, qkv_bias=True).to(F64)
    with torch.no_grad():  # q channel 0 and k channel 5 of head 0 identically zero
        m.qkv.weight[0].zero_()
        m.qkv.bias[0] = 0
        m.qkv.weight[64 + 5].zero_()
        m.qkv.bias[64 + 5] = 0
    x = torch.randn(2, 7, 64, dtype=F64)
    for y in (m.qk_first(x), m.kv_first(x, fold=False), m.kv_first(x, fold=True)):
        assert torch.isfinite(y).all()
        torch.testing.assert_close(y, explicit_sima(m, x), rtol=F64_TOL, atol=F64_TOL)


def test_set_sima_order_helper() -> None:
    model = sima_models.XCiTVisionTransformer(
        sima_models.XCiTConfig("t", "sima", 16, 64, 2, 2, 1.0, True, num_classes=0, img_size=64)
    )
    assert set_sima_order(model, "qk_first", crossover=7) == 2
    assert all(b.attn.order == "qk_first" and b.attn.crossover == 7 for b in model.blocks)
    with pytest.raises(ValueError, match="'nope'"):
        set_sima_order(model, "nope")


def test_class_attention_no_softmax_no_scale() -> None:
    torch.manual_seed(4)
    C, h = 64, 4
    m = SimAClassAttention(C, h, qkv_bias=True).to(F64)
    x = torch.randn(2, 10, C, dtype=F64)
    x[:, :, 3] = 0.0  # a zero input channel (with a zero bias) gives zero q/k columns
    with torch.no_grad():
        m.qkv.bias[[3, C + 3]] = 0
        m.qkv.weight[[3, C + 3], 3] = 0
        m.qkv.weight[3] = 0
        m.qkv.weight[C + 3] = 0
    y = m(x)
    cls = explicit_class_attention(m, x)[:, 0]
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[:, 0], cls, rtol=F64_TOL, atol=F64_TOL)
    torch.testing.assert_close(y[:, 1:], x[:, 1:], rtol=0, atol=0)  # patch tokens pass through
    assert m.eps == 1e-6


# --------------------------------------------------------------------------- torch.cond for auto


def test_auto_order_exports_as_a_runtime_branch() -> None:
    torch.manual_seed(5)
    m = SimA(64, num_heads=2, qkv_bias=True).eval()  # head_dim 32
    n = torch.export.Dim("N", min=2, max=1024)
    ep = torch.export.export(m, (torch.randn(2, 40, 64),), dynamic_shapes=({1: n},))
    conds = [nd for nd in ep.graph.nodes if nd.target is torch.ops.higher_order.cond]
    assert len(conds) == 1, "auto must stay a runtime choice in an exported graph"
    run = ep.module()
    for n_tokens in (5, 31, 32, 300):  # both branches
        x = torch.randn(2, n_tokens, 64)
        torch.testing.assert_close(run(x), m(x), rtol=F32_RTOL, atol=1e-6)
    m.order = "kv_first"
    ep = torch.export.export(m, (torch.randn(2, 40, 64),), dynamic_shapes=({1: n},))
    assert not [nd for nd in ep.graph.nodes if nd.target is torch.ops.higher_order.cond]


# --------------------------------------------------------------------------- sima_* nets


def test_all_official_nets_registered() -> None:
    assert sorted(sima_models.SIMA_MODELS) == sorted(OFFICIAL_COUNTS)
    from edgeattn.models.registry import list_models

    try:
        names = list_models(family="sima")
    except ImportError as e:  # another family's module is broken: not this test's business
        pytest.skip(f"list_models() failed outside the sima family: {e}")
    assert names == sorted(OFFICIAL_COUNTS)


@pytest.mark.parametrize("name", sorted(OFFICIAL_COUNTS))
def test_official_params_keys_and_shapes(name: str, reference) -> None:
    model = build_meta(name)
    params, entries = OFFICIAL_COUNTS[name]
    assert sum(p.numel() for p in model.parameters()) == params
    spec = state_dict_spec(model)
    assert len(spec) == entries
    expected = reference[name]
    assert len(expected) == entries, "reference listing parsed incompletely"
    assert sorted(set(expected) - set(spec)) == [], "missing official keys"
    assert sorted(set(spec) - set(expected)) == [], "keys the official model does not have"
    wrong = [(k, spec[k], expected[k]) for k in expected if spec[k] != expected[k]]
    assert not wrong, f"{len(wrong)} shape/dtype mismatches (key, ours, official): {wrong[:5]}"


def _resolutions(patch: int) -> tuple[int, int]:
    # p16: 4x4 (N=16 < d_h -> qk_first) and 7x7 (N=49 >= d_h -> kv_first); p8: 4x4 and 8x8
    return (64, 112) if patch == 16 else (32, 64)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in sorted(OFFICIAL_COUNTS)],
)
def test_forward_two_resolutions(name: str) -> None:
    torch.manual_seed(0)
    model = _REGISTRY[name].fn(num_classes=10).eval()
    for res in _resolutions(model.config.patch_size):
        with torch.no_grad():
            y = model(torch.randn(2, 3, res, res))
        assert y.shape == (2, 10) and torch.isfinite(y).all()


def test_default_resolution_forward_and_config() -> None:
    model = _REGISTRY["sima_nano_12_p16"].fn().eval()
    cfg = model.config
    assert (cfg.img_size, cfg.patch_size, cfg.embed_dim, cfg.depth, cfg.num_heads) == (
        224,
        16,
        128,
        12,
        4,
    )
    assert (cfg.eta, cfg.tokens_norm, cfg.order, cfg.attention) == (1.0, False, "auto", "sima")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.img_size = 256  # type: ignore[misc]
    with torch.no_grad():
        y = model(torch.randn(1, 3, 224, 224))
    assert y.shape == (1, 1000) and torch.isfinite(y).all()
    model.train()  # no (x, x) distillation tuple in either mode
    assert isinstance(model(torch.randn(2, 3, 64, 64)), torch.Tensor)


def test_order_option_reaches_every_block_and_orders_agree() -> None:
    torch.manual_seed(0)
    a = _REGISTRY["sima_nano_12_p16"].fn(order="qk_first", num_classes=10).to(F64).eval()
    assert {b.attn.order for b in a.blocks} == {"qk_first"}
    b = (
        _REGISTRY["sima_nano_12_p16"]
        .fn(order="kv_first", crossover=5, num_classes=10)
        .to(F64)
        .eval()
    )
    b.load_state_dict(a.state_dict())
    assert {(m.attn.order, m.attn.crossover) for m in b.blocks} == {("kv_first", 5)}
    x = torch.randn(1, 3, 96, 96, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=1e-10, atol=1e-10)
    with pytest.raises(ModelError, match="'sideways'"):
        _REGISTRY["sima_nano_12_p16"].fn(order="sideways")


@pytest.mark.parametrize(
    ("name", "bad"), [("sima_nano_12_p16", 100), ("sima_tiny_12_p8", 228), ("sima_nano_12_p16", 0)]
)
def test_bad_img_size_raises_model_error(name: str, bad: int) -> None:
    with pytest.raises(ModelError, match=str(bad)):
        _REGISTRY[name].fn(img_size=bad)


def test_bad_runtime_input_size_raises_model_error() -> None:
    model = _REGISTRY["sima_nano_12_p16"].fn(num_classes=10).eval()
    with pytest.raises(ModelError, match="72x80"):
        model(torch.randn(1, 3, 72, 80))
    model = _REGISTRY["sima_nano_12_p8"].fn(img_size=104, num_classes=10).eval()
    assert model.config.img_size == 104
    assert model(torch.randn(1, 3, 104, 104)).shape == (1, 10)


@pytest.mark.parametrize(
    "name", ["sima_nano_12_p16", pytest.param("sima_deit_tiny_patch16_224", marks=pytest.mark.slow)]
)
def test_nets_match_the_textbook_formula_in_float32(monkeypatch, name: str) -> None:
    """The scale-folded SimA (and class attention) inside whole nets, in float32, against the
    same nets running the textbook formula (F.normalize per head, explicit N x N matrix): equal
    to rounding in every order (1e-5 of the logits' scale)."""
    from edgeattn.models.registry import create_model

    torch.manual_seed(0)
    net = create_model(name).eval()
    x = torch.randn(1, 3, 224, 224)
    ours = {}
    with torch.no_grad():
        for order in ORDERS:
            set_sima_order(net, order)
            ours[order] = net(x)
        monkeypatch.setattr(SimA, "forward", explicit_sima)
        monkeypatch.setattr(SimAClassAttention, "forward", explicit_class_attention)
        ref = net(x)
    for order, y in ours.items():
        err = ((y - ref).abs().max() / ref.abs().max()).item()
        assert err <= F32_RTOL, f"{name} order={order}: max error {err:.2e} of the logits' scale"
