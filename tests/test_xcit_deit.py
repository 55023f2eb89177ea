"""XCiT baselines (XCA, softmax class attention) and DeiT / DeiT-SimA: attention against explicit
formulas, parameter counts (timm's published models), key names and shapes, forwards."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import edgeattn.models.deit as deit_models
import edgeattn.models.sima as sima_models
import edgeattn.models.xcit as xcit_models
from edgeattn.attention.sima import SimA
from edgeattn.attention.softmax import Attention
from edgeattn.attention.xca import XCA, ClassAttention
from edgeattn.errors import ModelError
from edgeattn.models.registry import _REGISTRY

F64 = torch.float64
F64_TOL = 1e-12

# timm 1.0.31 `xcit_*_224` parameter counts (= official SimA count + depth * heads temperatures).
TIMM_XCIT_PARAMS = {
    "xcit_nano_12_p16": 3_053_224,
    "xcit_tiny_12_p16": 6_716_272,
    "xcit_small_12_p16": 26_253_304,
    "xcit_tiny_24_p16": 12_116_896,
    "xcit_small_24_p16": 47_671_384,
    "xcit_medium_24_p16": 84_395_752,
    "xcit_large_24_p16": 189_096_136,
    "xcit_nano_12_p8": 3_049_016,
    "xcit_tiny_12_p8": 6_706_504,
    "xcit_small_12_p8": 26_213_032,
    "xcit_tiny_24_p8": 12_107_128,
    "xcit_small_24_p8": 47_631_112,
    "xcit_medium_24_p8": 84_323_624,
    "xcit_large_24_p8": 188_932_648,
}
# timm / DeiT: deit_tiny_patch16_224 and deit_small_patch16_224.
DEIT_PARAMS = {"tiny": 5_717_416, "small": 22_050_664}
BIG = {n for n, p in TIMM_XCIT_PARAMS.items() if p > 40_000_000}


def build_meta(name: str, **kw) -> torch.nn.Module:
    with torch.device("meta"):
        return _REGISTRY[name].fn(**kw)


def spec(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- attention formulas


def test_xca_matches_explicit_formula() -> None:
    torch.manual_seed(0)
    C, h, N = 48, 3, 11
    d = C // h
    m = XCA(C, h, qkv_bias=True).to(F64)
    with torch.no_grad():
        m.temperature.copy_(torch.tensor([0.5, 1.0, 2.0], dtype=F64).view(h, 1, 1))
    x = torch.randn(2, N, C, dtype=F64)
    q, k, v = (x @ m.qkv.weight.T + m.qkv.bias).split(C, dim=-1)
    out = []
    for i in range(h):
        sl = slice(i * d, (i + 1) * d)
        qi = F.normalize(q[..., sl], dim=1)  # l2 over tokens: (B, N, d)
        ki = F.normalize(k[..., sl], dim=1)
        a = torch.softmax(
            torch.einsum("bnc,bne->bce", qi, ki) * m.temperature[i], dim=-1
        )  # (B, d, d)
        out.append(torch.einsum("bce,bne->bnc", a, v[..., sl]))
    ref = torch.cat(out, -1) @ m.proj.weight.T + m.proj.bias
    torch.testing.assert_close(m(x), ref, rtol=F64_TOL, atol=F64_TOL)
    assert m.temperature.shape == (h, 1, 1)


def test_xcit_class_attention_matches_explicit_formula() -> None:
    torch.manual_seed(1)
    C, h, N = 32, 4, 9
    d = C // h
    m = ClassAttention(C, h, qkv_bias=True).to(F64)
    x = torch.randn(2, N, C, dtype=F64)
    q, k, v = (x @ m.qkv.weight.T + m.qkv.bias).split(C, dim=-1)
    cls = []
    for i in range(h):
        sl = slice(i * d, (i + 1) * d)
        w = torch.softmax((q[:, :1, sl] * k[..., sl]).sum(-1) * d**-0.5, dim=-1)  # (B, N)
        cls.append(torch.einsum("bn,bnc->bc", w, v[..., sl]))
    cls = torch.cat(cls, -1) @ m.proj.weight.T + m.proj.bias
    y = m(x)
    torch.testing.assert_close(y[:, 0], cls, rtol=F64_TOL, atol=F64_TOL)
    torch.testing.assert_close(y[:, 1:], x[:, 1:], rtol=0, atol=0)


# --------------------------------------------------------------------------- xcit_* nets


def test_xcit_names_mirror_sima() -> None:
    assert sorted(xcit_models.XCIT_MODELS) == sorted(TIMM_XCIT_PARAMS)
    assert sorted(n.replace("xcit_", "sima_", 1) for n in xcit_models.XCIT_MODELS) == sorted(
        sima_models.SIMA_MODELS
    )


@pytest.mark.parametrize("name", sorted(TIMM_XCIT_PARAMS))
def test_xcit_params_and_keys(name: str) -> None:
    model = build_meta(name)
    assert sum(p.numel() for p in model.parameters()) == TIMM_XCIT_PARAMS[name]
    assert all(isinstance(b.attn, XCA) for b in model.blocks)
    assert all(isinstance(b.attn, ClassAttention) for b in model.cls_attn_blocks)
    # keys = the SimA net's (checked against the official listing in test_sima) + temperatures
    expected = spec(build_meta(name.replace("xcit_", "sima_", 1)))
    h = model.config.num_heads
    expected.update({f"blocks.{i}.attn.temperature": (h, 1, 1) for i in range(model.config.depth)})
    assert spec(model) == expected


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in BIG else n for n in sorted(TIMM_XCIT_PARAMS)],
)
def test_xcit_forward_two_resolutions(name: str) -> None:
    torch.manual_seed(0)
    model = _REGISTRY[name].fn(num_classes=7).eval()
    for res in (64, 112) if model.config.patch_size == 16 else (32, 64):
        with torch.no_grad():
            y = model(torch.randn(2, 3, res, res))
        assert y.shape == (2, 7) and torch.isfinite(y).all()


def test_xcit_default_resolution_and_options() -> None:
    model = _REGISTRY["xcit_nano_12_p16"].fn().eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    assert _REGISTRY["xcit_nano_12_p16"].options == ["img_size", "num_classes"]  # no order: XCA
    with pytest.raises(ModelError, match="200"):
        _REGISTRY["xcit_tiny_12_p16"].fn(img_size=200)


# --------------------------------------------------------------------------- deit / sima_deit


def deit_keys(depth: int, layer_scale: bool = False) -> list[str]:
    """timm's DeiT state_dict keys, in timm's order (plus gamma1/2 with layer_scale)."""
    keys = ["cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias"]
    for i in range(depth):
        if layer_scale:
            keys += [f"blocks.{i}.gamma1", f"blocks.{i}.gamma2"]
        for mod in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            keys += [f"blocks.{i}.{mod}.weight", f"blocks.{i}.{mod}.bias"]
    return keys + ["norm.weight", "norm.bias", "head.weight", "head.bias"]


@pytest.mark.parametrize("size", ["tiny", "small"])
@pytest.mark.parametrize("prefix", ["deit", "sima_deit"])
def test_deit_params_keys_and_attention(prefix: str, size: str) -> None:
    name = f"{prefix}_{size}_patch16_224"
    model = build_meta(name)
    dim = {"tiny": 192, "small": 384}[size]
    assert sum(p.numel() for p in model.parameters()) == DEIT_PARAMS[size]
    assert list(model.state_dict()) == deit_keys(12)
    shapes = spec(model)
    assert shapes["pos_embed"] == (1, 197, dim) and shapes["patch_embed.proj.weight"] == (
        dim,
        3,
        16,
        16,
    )
    assert shapes["blocks.0.attn.qkv.weight"] == (3 * dim, dim)
    kind = SimA if prefix == "sima_deit" else Attention
    assert all(type(b.attn) is kind for b in model.blocks)
    assert all(b.norm1.eps == 1e-6 for b in model.blocks) and model.norm.eps == 1e-6


def test_sima_deit_layer_scale_option() -> None:
    model = build_meta("sima_deit_small_patch16_224", layer_scale=1e-5)
    assert list(model.state_dict()) == deit_keys(12, layer_scale=True)
    with pytest.raises(ModelError, match="layer_scale"):
        _REGISTRY["sima_deit_tiny_patch16_224"].fn(layer_scale="big")


@pytest.mark.parametrize("name", sorted(deit_models.DEIT_MODELS))
def test_deit_forward_default_and_other_resolution(name: str) -> None:
    torch.manual_seed(0)
    model = _REGISTRY[name].fn().eval()
    with torch.no_grad():
        y224 = model(torch.randn(1, 3, 224, 224))
        y = model(torch.randn(2, 3, 112, 160))  # pos_embed resized to a 7x10 grid
    assert y224.shape == (1, 1000) and y.shape == (2, 1000)
    assert torch.isfinite(y224).all() and torch.isfinite(y).all()


def test_deit_pos_embed_resize_identity_at_stored_grid() -> None:
    model = _REGISTRY["deit_tiny_patch16_224"].fn(img_size=384).eval()
    assert model.config.img_size == 384 and model.pos_embed.shape == (1, 197, 192)
    assert model.resized_pos_embed(14, 14) is model.pos_embed
    # the dynamic-shape export path always resizes: the weights at the same size are the identity
    assert torch.equal(deit_models.aa_bicubic_weights(14, 14), torch.eye(14))
    grid = model.pos_embed[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    assert torch.equal(deit_models.resize_pos_grid(grid, 14, 14), grid)
    resized = model.resized_pos_embed(24, 24)
    assert resized.shape == (1, 1 + 24 * 24, 192)
    assert torch.equal(resized[:, :1], model.pos_embed[:, :1])  # the class position is kept


#: The separable matmul form of the antialiased resize against F.interpolate: float32 rounding
#: of the weights and of the summation order (measured <= 2e-7 on 0.02-scale embeddings).
RESIZE_TOL = 1e-5


def timm_style_resize(pos_embed: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """What timm's resample_abs_pos_embed computes (1 class token, old grid square), by hand."""
    cls_pos, patch = pos_embed[:, :1], pos_embed[:, 1:]
    g = int(patch.shape[1] ** 0.5)
    patch = patch.reshape(1, g, g, -1).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, size=hw, mode="bicubic", antialias=True, align_corners=False)
    return torch.cat([cls_pos, patch.permute(0, 2, 3, 1).reshape(1, -1, pos_embed.shape[-1])], 1)


@pytest.mark.parametrize("hw", [(10, 10), (18, 18), (4, 4), (7, 10), (24, 5)])
def test_deit_pos_embed_resize_is_timms_antialiased_bicubic(hw) -> None:
    torch.manual_seed(0)
    model = _REGISTRY["deit_small_patch16_224"].fn().eval()
    got = model.resized_pos_embed(*hw)
    want = timm_style_resize(model.pos_embed, hw)
    assert (got - want).abs().max().item() <= RESIZE_TOL
    plain = F.interpolate(
        model.pos_embed[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2), size=hw, mode="bicubic"
    )
    plain = plain.permute(0, 2, 3, 1).reshape(1, -1, 384)
    assert (plain - want[:, 1:]).abs().max().item() > 10 * RESIZE_TOL  # antialias matters


@pytest.mark.parametrize("img", [160, 288])
def test_deit_small_at_160_and_288_matches_timm_style_resize(img) -> None:
    """deit_small at another resolution = the same blocks on timm's antialiased pos_embed."""
    torch.manual_seed(0)
    model = _REGISTRY["deit_small_patch16_224"].fn(img_size=img).eval()
    with torch.no_grad():
        model.pos_embed.normal_(0, 0.5)  # larger than the init: make the resize count
    x = torch.randn(1, 3, img, img)
    with torch.no_grad():
        got = model(x)
        t = model.patch_embed(x).flatten(2).transpose(1, 2)
        t = torch.cat([model.cls_token, t], 1) + timm_style_resize(
            model.pos_embed, (img // 16,) * 2
        )
        for blk in model.blocks:
            t = blk(t)
        want = model.head(model.norm(t[:, 0]))
    assert (got - want).abs().max().item() <= RESIZE_TOL


@pytest.mark.parametrize("img", [160, 288])
def test_deit_small_matches_timm_at_other_resolutions(img) -> None:
    from timm_compat import import_timm

    timm = import_timm()
    if timm is None:
        pytest.skip("timm is not installed (the hand-computed resize above needs no timm)")
    torch.manual_seed(0)
    t = timm.create_model("deit_small_patch16_224", pretrained=False, dynamic_img_size=True).eval()
    with torch.no_grad():
        for prm in t.parameters():
            prm.normal_(0, 0.05)
    model = _REGISTRY["deit_small_patch16_224"].fn(img_size=img).eval()
    model.load_state_dict(t.state_dict(), strict=True)
    x = torch.randn(1, 3, img, img)
    with torch.no_grad():
        assert (model(x) - t(x)).abs().max().item() <= RESIZE_TOL


def test_deit_bad_sizes() -> None:
    with pytest.raises(ModelError, match="100"):
        _REGISTRY["deit_tiny_patch16_224"].fn(img_size=100)
    model = _REGISTRY["sima_deit_tiny_patch16_224"].fn(num_classes=3).eval()
    with pytest.raises(ModelError, match="100x112"):
        model(torch.randn(1, 3, 100, 112))
    with pytest.raises(ModelError, match="'nope'"):
        _REGISTRY["sima_deit_tiny_patch16_224"].fn(order="nope")


def test_sima_deit_order_option() -> None:
    torch.manual_seed(0)
    a = _REGISTRY["sima_deit_tiny_patch16_224"].fn(order="qk_first", num_classes=5).to(F64).eval()
    b = _REGISTRY["sima_deit_tiny_patch16_224"].fn(order="kv_first", num_classes=5).to(F64).eval()
    b.load_state_dict(a.state_dict())
    assert {m.attn.order for m in a.blocks} == {"qk_first"}
    x = torch.randn(1, 3, 64, 64, dtype=F64)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=1e-10, atol=1e-10)


def test_registry_families() -> None:
    from edgeattn.models.registry import list_models

    try:
        xcit, deit = list_models(family="xcit"), list_models(family="deit")
    except ImportError as e:  # another family's module is broken: not this test's business
        pytest.skip(f"list_models() failed outside these families: {e}")
    assert xcit == sorted(TIMM_XCIT_PARAMS)
    assert deit == sorted(deit_models.DEIT_MODELS)
