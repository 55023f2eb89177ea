"""Official checkpoint formats load strictly; mismatches and bad files give clear errors."""

from __future__ import annotations

import pytest
import torch

from edgeattn.errors import CheckpointError
from edgeattn.models import create_model


@pytest.fixture(scope="module")
def ref():
    torch.manual_seed(0)
    m = create_model("sima_nano_12_p16", img_size=64)
    for p in m.parameters():
        p.data.normal_(0, 0.02)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        y = m(x)
    return m, x, y


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"model": sd},
        lambda sd: {"state_dict": {}, "state_dict_ema": {f"module.{k}": v for k, v in sd.items()}},
        lambda sd: {"state_dict": sd, "epoch": 3},
    ],
    ids=["bare", "model", "ema+module-prefix", "state_dict"],
)
def test_official_formats_load_and_reproduce_output(tmp_path, ref, wrap):
    m, x, y = ref
    path = tmp_path / "ck.pth"
    torch.save(wrap(m.state_dict()), path)
    m2 = create_model("sima_nano_12_p16", img_size=64, checkpoint=str(path))
    with torch.no_grad():
        assert torch.equal(m2(x), y)


def test_mismatch_lists_missing_and_unexpected(tmp_path, ref):
    m, _, _ = ref
    sd = dict(m.state_dict())
    sd.pop("head.weight")
    sd["bogus.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(
        CheckpointError, match=r"missing 1: head\.weight; unexpected 1: bogus\.weight"
    ):
        create_model("sima_nano_12_p16", img_size=64, checkpoint=str(path))


def test_wrong_family_reports_shape_mismatch(tmp_path, ref):
    m, _, _ = ref
    path = tmp_path / "nano.pth"
    torch.save(m.state_dict(), path)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        create_model("sima_tiny_12_p16", img_size=64, checkpoint=str(path))


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        create_model("block_msa", tokens=16, dim=32, heads=2, checkpoint=str(tmp_path / "nope.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint: .*junk.pth"):
        create_model("block_msa", tokens=16, dim=32, heads=2, checkpoint=str(junk))
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"PK\x03\x04 a cut zip archive")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        create_model("block_msa", tokens=16, dim=32, heads=2, checkpoint=str(broken))


# --------------------------------------------------------------------------- timm layouts, safetensors
#: Same weights, same input, same float32 ops up to the cat of q/k/v: outputs agree far below this.
LOAD_TOL = 1e-5


def to_timm_xcit_layout(sd: dict) -> dict:
    """The inverse of edgeattn's mapping, written independently of timm: what timm's XCiT
    ``checkpoint_filter_fn`` makes of an official checkpoint (pos_embeder. -> pos_embed., class
    attention's qkv split into q, k, v along the output dimension)."""
    out = {}
    for k, v in sd.items():
        if k.startswith("pos_embeder."):
            out["pos_embed." + k[len("pos_embeder.") :]] = v
        elif k.startswith("cls_attn_blocks.") and ".attn.qkv." in k:
            prefix, kind = k.split(".qkv.")
            for part, t in zip("qkv", v.chunk(3, dim=0), strict=True):
                out[f"{prefix}.{part}.{kind}"] = t.clone()
        else:
            out[k] = v
    return out


def random_model(name: str, **kw):
    torch.manual_seed(1)
    m = create_model(name, **kw)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.05)
        for b in m.buffers():
            if b.is_floating_point():
                b.uniform_(0.5, 1.5)
    return m.eval()


def save(sd: dict, path, fmt: str) -> None:
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous().clone() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
@pytest.mark.parametrize("name", ["xcit_nano_12_p16", "sima_nano_12_p16", "xcit_tiny_12_p8"])
def test_timm_xcit_layout_loads_strictly_and_reproduces_outputs(tmp_path, name, fmt):
    img = 32 if name.endswith("_p8") else 64
    src = random_model(name, img_size=img)
    timm_sd = to_timm_xcit_layout(src.state_dict())
    assert (
        "cls_attn_blocks.1.attn.v.bias" in timm_sd
        and "pos_embed.token_projection.weight" in timm_sd
    )
    path = tmp_path / f"timm.{fmt}"
    save(timm_sd, path, fmt)
    m = create_model(name, img_size=img, checkpoint=str(path))
    assert m.checkpoint_info["mapped"] == (
        "timm layout mapped: pos_embed.token_projection.* -> pos_embeder.token_projection.*; "
        "cls_attn_blocks.{0,1}.attn.{q,k,v} -> qkv (cat)"
    )
    x = torch.randn(2, 3, img, img)
    with torch.no_grad():
        assert (m(x) - src(x)).abs().max().item() <= LOAD_TOL
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in m.state_dict().items())


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_official_layout_needs_no_mapping(tmp_path, ref, fmt):
    m, x, y = ref
    path = tmp_path / f"ck.{fmt}"
    save(m.state_dict(), path, fmt)
    m2 = create_model("sima_nano_12_p16", img_size=64, checkpoint=str(path))
    assert m2.checkpoint_info["mapped"] is None
    with torch.no_grad():
        assert torch.equal(m2(x), y)


def test_safetensors_deit(tmp_path):
    src = random_model("deit_tiny_patch16_224", img_size=64)
    path = tmp_path / "deit.safetensors"
    save(src.state_dict(), path, "safetensors")
    m = create_model("deit_tiny_patch16_224", img_size=64, checkpoint=str(path))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(m(x), src(x))


def test_other_family_still_fails_with_key_report(tmp_path):
    timm_xcit = to_timm_xcit_layout(random_model("xcit_nano_12_p16", img_size=64).state_dict())
    path = tmp_path / "xcit.safetensors"
    save(timm_xcit, path, "safetensors")
    with pytest.raises(CheckpointError, match=r"does not match deit_tiny_patch16_224: missing"):
        create_model("deit_tiny_patch16_224", img_size=64, checkpoint=str(path))
    # SimA has no XCA temperature: mapped, then the strict check names what is left over
    with pytest.raises(CheckpointError, match=r"unexpected 12: blocks\.0\.attn\.temperature"):
        create_model("sima_nano_12_p16", img_size=64, checkpoint=str(path))
    # a half-converted file (q and k but no v) is not guessed at
    half = {k: v for k, v in timm_xcit.items() if ".attn.v." not in k}
    save(half, path, "safetensors")
    with pytest.raises(CheckpointError, match=r"missing 4: cls_attn_blocks\.0\.attn\.qkv\.bias"):
        create_model("xcit_nano_12_p16", img_size=64, checkpoint=str(path))


def test_bad_safetensors_and_key(tmp_path):
    path = tmp_path / "cut.safetensors"
    save({"a": torch.zeros(4)}, path, "safetensors")
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        create_model("block_msa", tokens=16, dim=32, heads=2, checkpoint=str(path))
    from edgeattn.models.checkpoint import read_state_dict

    save({"a": torch.zeros(4)}, path, "safetensors")
    with pytest.raises(CheckpointError, match="no key 'model'"):
        read_state_dict(path, key="model")


# --------------------------------------------------------------------------- against timm itself
@pytest.fixture(scope="module")
def timm():
    from timm_compat import import_timm

    mod = import_timm()
    if mod is None:
        pytest.skip("timm is not installed (the independent tests above need no timm)")
    return mod


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
@pytest.mark.parametrize(
    "timm_name,name,img",
    [
        ("xcit_nano_12_p16_224", "xcit_nano_12_p16", 64),
        ("xcit_tiny_12_p8_224", "xcit_tiny_12_p8", 32),
    ],
)
def test_timm_xcit_state_dict_loads_and_matches_timm(tmp_path, timm, timm_name, name, img, fmt):
    from timm.models.xcit import checkpoint_filter_fn

    torch.manual_seed(2)
    t = timm.create_model(timm_name, pretrained=False, img_size=img).eval()
    with torch.no_grad():
        for p in t.parameters():
            p.normal_(0, 0.05)
    path = tmp_path / f"t.{fmt}"
    save(t.state_dict(), path, fmt)
    m = create_model(name, img_size=img, checkpoint=str(path))
    assert m.checkpoint_info["mapped"].startswith("timm layout mapped")
    x = torch.randn(2, 3, img, img)
    with torch.no_grad():
        assert (m(x) - t(x)).abs().max().item() <= LOAD_TOL
    # the independent inverse mapping above is what timm's own filter produces
    official = {k: v.clone() for k, v in m.state_dict().items()}
    by_timm = checkpoint_filter_fn(dict(official), t)
    mine = to_timm_xcit_layout(m.state_dict())
    assert set(by_timm) == set(mine) == set(t.state_dict())
    assert all(torch.equal(by_timm[k], mine[k]) for k in mine)


def test_timm_deit_state_dict_loads_and_matches_timm(tmp_path, timm):
    torch.manual_seed(3)
    t = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    with torch.no_grad():
        for p in t.parameters():
            p.normal_(0, 0.05)
    path = tmp_path / "deit.safetensors"
    save(t.state_dict(), path, "safetensors")
    m = create_model("deit_tiny_patch16_224", checkpoint=str(path))
    assert m.checkpoint_info["mapped"] is None
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert (m(x) - t(x)).abs().max().item() <= LOAD_TOL
