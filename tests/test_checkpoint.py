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
