"""SOFT: Newton-Raphson pseudo-inverse, SOFT attention against its explicit formula, and the
soft_* / soft_norm_* nets against the official parameter counts, keys and shapes."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import edgeattn.models.soft as soft_models
from edgeattn.attention.pinv import (
    newton_inv,
    newton_inv_norm,
    newton_residuals,
    pinv_residual,
)
from edgeattn.attention.soft import SoftAttention, gaussian_kernel, squared_distance
from edgeattn.attention.softmax import SRAttention
from edgeattn.errors import ModelError

F64 = torch.float64
#: Agreement of two float64 evaluations of the same formula in a different order.
F64_TOL = 1e-9
#: Newton iterations after which the float64 test matrices have converged to round-off.
CONVERGED_ITERS = 60

# Copied from shared/reference/official_models.md (the official repos' constructors, read there).
REFERENCE = Path(__file__).resolve().parent / "data" / "official_models.md"

# Params and state_dict entries. From official_models.md (Summary: the official constructors),
# except "small": the released SOFT-Small is the official soft_small constructor with stage-3 depth
# 7 instead of 20 (the note at the top of tests/data/official_models.md: paper Table 1, README
# 24M / 3.3G, RetinaNet +11M); 13 fewer stage-3 layers of 1,134,490 parameters and 18 entries each
# (counted from that file's soft_small listing). "small_code" is the official constructor as is.
OFFICIAL_COUNTS = {
    "tiny": (13_069_056, 187),
    "small": (24_110_092, 305),
    "small_code": (38_858_462, 539),
    "medium": (45_812_707, 715),
    "large": (64_700_646, 913),
    "huge": (87_108_273, 1111),
}
ALL_NAMES = [f"soft_{v}" for v in OFFICIAL_COUNTS] + [f"soft_norm_{v}" for v in OFFICIAL_COUNTS]
#: edgeattn name -> (section of official_models.md, stage-3 depth if it differs from that section)
REFERENCE_SECTIONS = {
    "soft_small": ("soft_small", 7),
    "soft_norm_small": ("soft_norm_small", 7),
    "soft_small_code": ("soft_small", None),
    "soft_norm_small_code": ("soft_norm_small", None),
}


def kernel_matrices(batch: int, m: int = 49, d: int = 32, scale: float = 0.3, seed: int = 0):
    """Gaussian-kernel (SPD) matrices like SOFT's K2; smaller ``scale`` = worse conditioned."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, m, d, generator=g, dtype=F64) / d**0.25 * scale
    return torch.exp(-(torch.cdist(q, q) ** 2) / 2)


# --------------------------------------------------------------------------- Newton-Raphson


def test_newton_inv_converges_to_pinv_of_regularised_matrix():
    a = kernel_matrices(3)
    eye = torch.eye(a.shape[-1], dtype=F64)
    ref = torch.linalg.pinv(a + 0.01 * eye)  # the official iteration inverts A + 0.01 I
    got = newton_inv(a, CONVERGED_ITERS)
    assert (got - ref).abs().max() / ref.abs().max() < 1e-10
    # and NOT pinv(A): the regulariser is part of the official numerics
    assert (got - torch.linalg.pinv(a)).abs().max() / ref.abs().max() > 1e-3


def test_newton_inv_alpha_is_per_matrix():
    a = kernel_matrices(2, m=16)
    both = newton_inv(torch.stack([a[0], 7 * a[1]]), 5)
    assert torch.equal(both[0], newton_inv(a[:1], 5)[0])


def test_newton_residual_decreases_monotonically_and_converges_in_20():
    a = kernel_matrices(4, scale=0.5)
    res = newton_residuals(a, iters=30)  # (31, 4)
    assert res.shape == (31, 4)
    assert (res[1:] <= res[:-1] + 1e-12).all(), "Prop. 1: ||A A_k A - A|| must not increase"
    assert (res[20] < 1e-8).all()  # the paper: converged within 20 iterations
    # the helper agrees with the final iterate of newton_inv
    eye = torch.eye(a.shape[-1], dtype=F64)
    final = pinv_residual(a + 0.01 * eye, newton_inv(a, 30))
    torch.testing.assert_close(final, res[-1], rtol=0, atol=1e-14)


def official_norm_newton_inv(mat: torch.Tensor, iters: int) -> torch.Tensor:
    """Python reference of the official soft_norm initialisation (batch-global while loop)."""
    eye = torch.eye(mat.shape[-1], dtype=mat.dtype)
    alpha = 2 / (torch.max(torch.sum(mat, dim=-1)) ** 2)
    v = alpha * mat
    pnorm = torch.max(torch.sum(torch.abs(eye - mat @ v), dim=-2))
    count = 0
    while pnorm > 1.01 and count < 10:
        alpha = alpha * 0.5
        v = alpha * mat
        pnorm = torch.max(torch.sum(torch.abs(eye - mat @ v), dim=-2))
        count += 1
    for _ in range(iters):
        v = 2 * v - v @ mat @ v
    return v


def halvings(mat: torch.Tensor) -> int:
    eye = torch.eye(mat.shape[-1], dtype=mat.dtype)
    alpha, n = 2 / mat.sum(-1).max() ** 2, 0
    while torch.max((eye - alpha * mat @ mat).abs().sum(-2)) > 1.01 and n < 10:
        alpha, n = alpha * 0.5, n + 1
    return n


def test_newton_inv_norm_unrolled_where_equals_official_while_loop():
    g = torch.Generator().manual_seed(1)
    w = 3 * torch.rand(1, 2, 12, 12, generator=g, dtype=F64)
    w = w + w.transpose(-1, -2)
    laplacian = torch.diag_embed(w.sum(-1)) - w  # zero row sums, large eigenvalues
    cases = {
        "kernel": kernel_matrices(2, m=20).unsqueeze(0),  # (1, h=2, m, m): a few halvings
        "diag_dominant": torch.eye(12, dtype=F64) + 0.001 * w,  # no halving
        "capped": laplacian + 0.5 * torch.eye(12, dtype=F64),  # tiny row sums: 10 halvings
    }
    counts = {k: halvings(v) for k, v in cases.items()}
    assert counts == {"kernel": 8, "diag_dominant": 0, "capped": 10}
    for mat in cases.values():
        for iters in (0, 3, 20):
            # the capped case diverges (as upstream would): compare non-finite values too
            torch.testing.assert_close(
                newton_inv_norm(mat, iters),
                official_norm_newton_inv(mat, iters),
                rtol=0,
                atol=0,
                equal_nan=True,
            )


def test_newton_inv_norm_is_per_sample():
    a = kernel_matrices(4, m=20).reshape(2, 2, 20, 20)  # (B=2, h=2, m, m)
    mixed = torch.cat([a[:1], 5 * a[1:]])  # a second sample with larger values joins
    alone = newton_inv_norm(a[:1], 3)
    batched = newton_inv_norm(mixed, 3)
    torch.testing.assert_close(batched[0], alone[0], rtol=0, atol=0)
    # the official batch-global alpha changes sample 0 (that bug is not reproduced)
    assert (official_norm_newton_inv(mixed, 3)[0] - alone[0]).abs().max() > 0.5 * alone.abs().max()
    # every sample equals the official result computed on that sample alone (batch 1)
    for b in range(2):
        want = official_norm_newton_inv(mixed[b : b + 1], 3)
        torch.testing.assert_close(batched[b : b + 1], want, rtol=0, atol=0)


def test_newton_inv_norm_converges_to_pinv():
    a = kernel_matrices(2, m=16, scale=0.6).unsqueeze(0)
    ref = torch.linalg.pinv(a)
    got = newton_inv_norm(a, CONVERGED_ITERS)
    assert (got - ref).abs().max() / ref.abs().max() < 1e-9


def test_newton_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        newton_inv(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="leading batch"):
        newton_inv_norm(torch.eye(3))


# --------------------------------------------------------------------------- SOFT attention


def test_squared_distance_matches_direct_difference():
    g = torch.Generator().manual_seed(0)
    q, k = (
        torch.randn(2, 3, 10, 8, generator=g, dtype=F64),
        torch.randn(2, 3, 4, 8, generator=g, dtype=F64),
    )
    direct = ((q[..., :, None, :] - k[..., None, :, :]) ** 2).sum(-1)
    torch.testing.assert_close(squared_distance(q, k), direct, rtol=0, atol=1e-12)
    torch.testing.assert_close(gaussian_kernel(q, k), torch.exp(-direct / 2), rtol=0, atol=1e-12)


def explicit_soft(mha: SoftAttention, x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """SOFT written out from the paper + official code, independently of the module's layout."""
    att = mha.attn
    B, N, C = x.shape
    h, d = mha.num_head, C // mha.num_head
    q = F.linear(x, mha.W_q.weight, mha.W_q.bias).reshape(B, N, h, d).permute(0, 2, 1, 3)
    v = F.linear(x, mha.W_v.weight, mha.W_v.bias).reshape(B, N, h, d).permute(0, 2, 1, 3)
    q = q / d**0.25
    grid = q.reshape(B, h, H, W, d)
    if att.landmarks == "conv":
        r = att.ratio
        lm = torch.stack(
            [
                torch.stack(
                    [
                        F.conv2d(
                            grid[b, j].permute(2, 0, 1)[None], att.Qlandmark_op.weight, stride=r
                        )[0]
                        .flatten(1)
                        .T
                        for j in range(h)
                    ]
                )
                for b in range(B)
            ]
        )
    else:
        r = att.ratio if att.landmarks == "avgpool" else H // math.isqrt(att.num_landmarks)
        lm = grid.reshape(B, h, H // r, r, W // r, r, d).mean(dim=(3, 5)).reshape(B, h, -1, d)
    ln = att.Qnorm_act[0]
    lm = F.gelu(F.layer_norm(lm, (d,), ln.weight, ln.bias, eps=1e-5))
    k1 = torch.exp(-(torch.cdist(q, lm) ** 2) / 2)  # (B, h, N, m)
    k2 = torch.exp(-(torch.cdist(lm, lm) ** 2) / 2)  # (B, h, m, m)
    if att.norm:
        dinv = torch.diag_embed(k2.sum(-1) ** -0.5)
        inv = dinv @ torch.linalg.pinv(k2) @ dinv
    else:
        inv = torch.linalg.pinv(k2 + 0.01 * torch.eye(k2.shape[-1], dtype=k2.dtype))
    out = k1 @ inv @ k1.transpose(-1, -2) @ v
    # depthwise skip: one k x k filter per head, applied to each of the head's d channels
    k = att.conv.weight.shape[-1]
    skip = torch.zeros_like(out)
    for j in range(h):
        img = v[:, j].transpose(1, 2).reshape(B * d, 1, H, W)
        filt = F.conv2d(img, att.conv.weight[j : j + 1], padding=k // 2)
        skip[:, j] = filt.reshape(B, d, H * W).transpose(1, 2)
    out = (out + skip).permute(0, 2, 1, 3).reshape(B, N, C)
    return F.linear(out, mha.ff.weight, mha.ff.bias)


@pytest.mark.parametrize(
    ("landmarks", "norm"),
    [("conv", False), ("conv", True), ("avgpool", False), ("adaptive", False), ("adaptive", True)],
)
def test_soft_attention_matches_explicit_low_rank_formula(landmarks, norm):
    torch.manual_seed(0)
    H = W = 8
    mha = SoftAttention(
        16,
        2,
        ratio=4,
        conv_size=3,
        landmarks=landmarks,
        num_landmarks=4,
        newton_iters=CONVERGED_ITERS,
        norm=norm,
    ).to(F64)
    with torch.no_grad():
        for p in mha.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        mha.attn.Qnorm_act[0].weight.add_(1.0)  # LayerNorm gain around 1
    x = torch.randn(2, H * W, 16, dtype=F64)
    got = mha(x, H, W)
    assert got.shape == (2, H * W, 16)
    want = explicit_soft(mha, x, H, W)
    assert (got - want).abs().max() / want.abs().max() < F64_TOL


def test_soft_attention_is_differentiable_and_exportable():
    mha = SoftAttention(32, 2, ratio=2, conv_size=3)
    x = torch.randn(1, 36, 32, requires_grad=True)
    mha(x, 6, 6).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(mha.attn.Qlandmark_op.weight.grad).all()

    class Grid6(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = mha

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return self.mha(t, 6, 6)

    x0 = torch.randn(2, 36, 32)  # batch 2: export specialises size-1 dims
    batch = torch.export.Dim("batch", min=1, max=8)
    exported = torch.export.export(Grid6(), (x0,), dynamic_shapes=({0: batch},))
    x3 = torch.randn(3, 36, 32)
    torch.testing.assert_close(exported.module()(x3), mha(x3, 6, 6))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"landmarks": "random"}, "'random'"),
        ({"conv_size": 4}, "4"),
        ({"ratio": 0}, "ratio"),
        ({"landmarks": "adaptive", "num_landmarks": 50}, "50"),
        ({"landmarks": "adaptive"}, "num_landmarks"),
        ({"newton_iters": -1}, "-1"),
    ],
)
def test_soft_attention_validates_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SoftAttention(64, 2, **kwargs)


# --------------------------------------------------------------------------- SOFT nets


def reference_state_dict(name: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """Keys -> (shape, dtype) from official_models.md, repeated blocks expanded (``block3`` only
    up to the released depth where :data:`REFERENCE_SECTIONS` says so)."""
    name, depth3 = REFERENCE_SECTIONS.get(name, (name, None))
    assert REFERENCE.is_file(), f"reference file missing: {REFERENCE}"
    text = REFERENCE.read_text()
    header = f"### {name}\n"
    assert header in text, f"no section for {name} in {REFERENCE}"
    section = text.split(header, 1)[1].split("\n### ", 1)[0]
    listing = section.split("```", 2)[1]
    out = {}
    for line in listing.strip().splitlines():
        m = re.fullmatch(r"(\S+)\s+\[([\d, ]*)\](?:\s+(\w+))?", line.strip())
        assert m, f"cannot parse reference line {line!r}"
        key, dims, dtype = m.group(1), m.group(2), m.group(3) or "float32"
        shape = tuple(int(v) for v in dims.split(",") if v.strip())
        rep = re.search(r"\{(\d+)\.\.(\d+)\}", key)
        indices = range(int(rep.group(1)), int(rep.group(2)) + 1) if rep else [None]
        if rep and depth3 is not None and key.startswith("block3."):
            indices = range(depth3)
        for i in indices:
            k = key if i is None else key[: rep.start()] + str(i) + key[rep.end() :]
            out[k] = (shape, dtype)
    return out


@pytest.mark.parametrize("name", ALL_NAMES)
def test_model_matches_official_params_keys_and_shapes(name):
    with torch.device("meta"):
        model = getattr(soft_models, name)()
    params, entries = OFFICIAL_COUNTS[name.removeprefix("soft_").removeprefix("norm_")]
    assert sum(p.numel() for p in model.parameters()) == params
    sd = model.state_dict()
    assert len(sd) == entries
    got = {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in sd.items()}
    assert got == reference_state_dict(name)
    assert model.config.name == name and model.config.norm == ("norm" in name)
    assert model.config.faithful


def test_soft_tiny_forward_224_and_other_resolutions():
    torch.manual_seed(0)
    model = soft_models.soft_tiny().eval()
    with torch.no_grad():
        y224 = model(torch.randn(1, 3, 224, 224))
        y96 = model(torch.randn(2, 3, 96, 160))  # rectangular, not the nominal size
    assert y224.shape == (1, 1000) and y96.shape == (2, 1000)
    assert torch.isfinite(y224).all() and torch.isfinite(y96).all()
    model320 = soft_models.soft_norm_tiny(img_size=320, num_classes=10).eval()
    assert model320.config.img_size == 320
    with torch.no_grad():
        assert model320(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_pos_embed_resize_is_identity_at_224():
    from edgeattn.models.soft import _resize_pos_embed

    pos = torch.randn(1, 56 * 56, 8)
    torch.testing.assert_close(_resize_pos_embed(pos, 56, 56, 56), pos, rtol=0, atol=0)
    assert _resize_pos_embed(pos, 56, 8, 12).shape == (1, 96, 8)


@pytest.mark.parametrize("size", [100, 0, 225])
def test_bad_img_size_raises_model_error_naming_it(size):
    with pytest.raises(ModelError, match=f"img_size={size} "):
        soft_models.soft_tiny(img_size=size)


def test_bad_input_size_raises_model_error():
    model = soft_models.soft_tiny().eval()
    with pytest.raises(ModelError, match="100x96"):
        model(torch.randn(1, 3, 100, 96))


def landmark_counts(model, size: int) -> list[int]:
    seen: list[int] = []
    hook = model.block1[0].att.mha.attn.Qnorm_act.register_forward_hook(
        lambda mod, inp, out: seen.append(out.shape[-2])  # (B, h, m, d) landmarks
    )
    with torch.no_grad():
        model(torch.randn(1, 3, size, size))
    hook.remove()
    return seen


def test_adaptive_landmarks_keep_m_fixed_at_higher_resolution():
    torch.manual_seed(0)
    adaptive = soft_models.soft_tiny(landmarks="adaptive", num_landmarks=4).eval()
    assert landmark_counts(adaptive, 64) == [4] and landmark_counts(adaptive, 128) == [4]
    assert not adaptive.config.faithful
    conv = soft_models.soft_tiny().eval()  # released: fixed ratio 8, m grows with the image
    assert landmark_counts(conv, 64) == [4] and landmark_counts(conv, 128) == [16]
    avg = soft_models.soft_tiny(landmarks="avgpool")
    n_conv = sum(p.numel() for p in conv.parameters())
    assert n_conv - sum(p.numel() for p in avg.parameters()) == 110_592  # the conv landmark weights


def test_softmax_free_stage4_option():
    torch.manual_seed(0)
    model = soft_models.soft_tiny(softmax_free_stage4=True, landmarks="avgpool").eval()
    assert model.config.softmax_free_stage4 and not model.config.faithful
    assert not any(isinstance(m, SRAttention) for m in model.modules())
    with torch.no_grad():
        x = torch.randn(2, 3, 64, 64)
        y = model(x)
        y_other = model(torch.cat([x[:1], torch.randn(1, 3, 64, 64)]))
    assert y.shape == (2, 1000) and torch.isfinite(y).all()
    torch.testing.assert_close(y_other[0], y[0])  # per-sample: no batch coupling
    # the cls token reads the image through stage-4 attention
    assert (y[0] - y[1]).abs().max() > 0
    # official (softmax stage-4) weights do not load strictly into it
    official_layout = soft_models.soft_tiny().state_dict()
    with pytest.raises(RuntimeError, match="block4.0.attn"):
        model.load_state_dict(official_layout, strict=True)


def test_config_is_frozen_and_validated():
    model = soft_models.soft_small(num_classes=0)
    with pytest.raises(Exception, match="cannot assign"):
        model.config.img_size = 256  # type: ignore[misc]
    assert model.config.depths == (1, 3, 7, 4)  # the released SOFT-Small
    assert soft_models.SOFT_VARIANTS["small_code"]["depths"] == (1, 3, 20, 4)  # official code
    with pytest.raises(ValueError, match="'pool'"):
        soft_models.soft_tiny(landmarks="pool")
    with pytest.raises(ValueError, match="48"):
        soft_models.soft_tiny(landmarks="adaptive", num_landmarks=48)


def test_registry_lists_and_rejects_unknown_override():
    from edgeattn.models.registry import create_model, list_models

    assert set(ALL_NAMES) <= set(list_models(family="soft"))
    with pytest.raises(ModelError, match="landmark"):
        create_model("soft_tiny", landmark="avgpool")


@pytest.mark.parametrize("hw", [(16, 16), (14, 14), (10, 23), (5, 9)])
def test_exportable_adaptive_pool_equals_adaptive_avg_pool(hw):
    import torch.nn.functional as F

    from edgeattn.attention.soft import AdaptivePool2d

    x = torch.randn(2, 3, *hw, dtype=torch.float64)
    torch.testing.assert_close(
        AdaptivePool2d((7, 7))(x), F.adaptive_avg_pool2d(x, (7, 7)), rtol=0, atol=1e-12
    )
