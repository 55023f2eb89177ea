"""A model family is a file in ``edgeattn/models`` that declares its variants and export facts,
nothing else: a toy family registered here (never touching ``edgeattn.export``) is listed, built
and exported, dynamic with the SimA runtime ``If`` its facts make possible. Plus the facts every
registered entry declares, checked without exporting, and the guard that ``export/`` names no
model family."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

import edgeattn.export as export_pkg
from edgeattn.export import export_onnx
from edgeattn.models import registry
from edgeattn.models.registry import ExportFacts, register_variants


@dataclass(frozen=True)
class ToyConfig:
    name: str
    dim: int
    img_size: int = 32


class ToyNet(nn.Module):
    """Patch conv (8x8), a class token, one SimA layer, a head on the class token."""

    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        from edgeattn.attention.sima import SimA

        self.config = cfg
        self.embed = nn.Conv2d(3, cfg.dim, 8, stride=8)
        self.cls_token = nn.Parameter(torch.randn(1, 1, cfg.dim) * 0.02)
        self.attn = SimA(cfg.dim, num_heads=1, qkv_bias=True)  # head dim = dim: threshold dim
        self.head = nn.Linear(cfg.dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.embed(x).flatten(2).transpose(1, 2)  # (B, HW/64, C)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
        return self.head(self.attn(t)[:, 0])


TOY_EXPORT = ExportFacts(
    method="sima",
    tolerance="TOL_SIMA",
    tolerance_reason="one SimA layer: float32 accumulation only",
    patch=8,
    extra_tokens=1,  # the class token
)


def _toy(name: str, dim: int, img_size: int = 32, order: str = "auto") -> ToyNet:
    from edgeattn.attention.sima import set_sima_order

    net = ToyNet(ToyConfig(name, dim, img_size))
    set_sima_order(net, order)
    return net


@pytest.fixture
def toy_family(monkeypatch):
    registry.list_models()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    return register_variants(
        {"toy_s": 32, "toy_m": 48},
        family="toy",
        doc=lambda name, dim: f"Toy SimA net, dim {dim}.",
        export=TOY_EXPORT,
    )(_toy)


def test_toy_family_is_listed_and_built(toy_family):
    assert registry.list_models(family="toy") == ["toy_m", "toy_s"]
    e = registry.get_entry("toy_m")
    assert e.fn.__name__ == "toy_m" and e.fn.__doc__ == "Toy SimA net, dim 48."
    assert e.description == "Toy SimA net, dim 48." and e.options == ["img_size", "order"]
    assert e.export is TOY_EXPORT
    m = registry.create_model("toy_m", img_size=40)
    assert m.config.dim == 48 and registry.entry_of(m) is e
    with pytest.raises(Exception, match="unknown override 'dim'"):
        registry.create_model("toy_m", dim=8)


def test_toy_family_exports_dynamic_with_the_if(toy_family, tmp_path):
    res = export_onnx("toy_s", dynamic=True, opset=17, output=tmp_path / "t.onnx")
    s = res.spec
    assert s["family"] == "toy" and s["method"] == "sima"
    assert s["tolerance"]["name"] == "TOL_SIMA"
    assert s["inputs"][0]["name"] == "image" and s["outputs"][0]["name"] == "logits"
    assert s["order"]["mode"] == "runtime_if"
    assert s["order"]["token_formula"] == "N = (H//8)*(W//8) + 1"  # as the facts told
    cases = res.verification["cases"]
    assert res.verification["passed"]
    assert {c["branch"] for c in cases} == {"qk_first", "kv_first"}
    assert all(c["branch"] == c["order"] for c in cases)
    # static too, and the fixed order of the request is what the file holds
    res = export_onnx("toy_m", order="kv_first", output=tmp_path / "k.onnx")
    assert res.spec["order"]["mode"] == "fixed" and res.audit["totals"]["If"] == 0


def test_wrong_facts_are_caught_not_trusted(toy_family, tmp_path):
    wrong = ExportFacts(method="sima", tolerance="TOL_SIMA", patch=8)  # forgets the class token
    register_variants({"toy_wrong": 32}, family="toy", doc="Toy, wrong facts.", export=wrong)(_toy)
    with pytest.raises(Exception, match=r"extra_tokens 0\) do not match the model"):
        export_onnx("toy_wrong", dynamic=True, output=tmp_path / "w.onnx")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- every entry's facts
def test_every_entry_declares_usable_export_facts():
    import importlib

    from edgeattn.export.verify import TOLERANCES

    names = registry.list_models()
    assert "block_msa_fused" in names  # a registered block now, listed by `edgeattn list`
    for name in names:
        e = registry.get_entry(name)
        f = e.export
        assert f.tolerance in TOLERANCES, name
        assert f.tolerance_reason, name
        assert f.is_tokens == (e.family == "block"), name
        if f.builder:
            mod, _, fn = f.builder.partition(":")
            assert callable(getattr(importlib.import_module(mod), fn)), name
        if "order" in e.options and not f.is_tokens:  # SimA nets: the If needs the patch
            assert f.patch, name
    assert registry.get_entry("block_soft").export.fixed_grid
    assert registry.get_entry("sima_deit_tiny_patch16_224").export.extra_tokens == 1
    assert registry.get_entry("block_msa_fused").export.builder.endswith(":build_fused_msa")


def test_list_rows_include_the_fused_block():
    from edgeattn.cli.models_cmd import list_rows

    rows = {r["name"]: r for r in list_rows(family="block")}
    assert rows["block_msa_fused"]["params"] == rows["block_msa"]["params"]


def test_export_names_no_model_family():
    """Export is told by the registry: no family name, module path or size constant in it."""
    pattern = re.compile(r'"soft"|"Soft"|\.soft|SIZE_MULTIPLE|patch_size|_FAMILY_MODULES')
    root = Path(export_pkg.__file__).parent
    hits = [
        f"{p.name}:{i}: {line.strip()}"
        for p in sorted(root.glob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, hits
