"""Every exported path checked against eager PyTorch in the default run (issue 11 item 3), on
tiny variants of the real families registered for the test through the registry's own
decorator (so they take the same template, export facts and export code as the zoo):

* a dynamic SimA net with the runtime ``If``, on both sides of the crossover, the branch taken
  asserted from ONNX Runtime's own profile (a wrong condition or a wrong branch fails);
* a dynamic DeiT net, and a dynamic SimA-DeiT net (class token: ``N = (H/16)(W/16) + 1``);
* a SOFT net at several grids (a dynamic export verified at each);
* ``edgeattn profile FILE.onnx`` on an exported file (its sidecar names the model);
* the TorchScript -> dynamo and dynamo -> TorchScript fallbacks, forced once each;
* the model given to ``export_onnx`` is not changed by it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from edgeattn.export import export_onnx
from edgeattn.models import registry


@pytest.fixture
def sandbox(monkeypatch):
    """A copy of the registry for the test: what it registers is gone afterwards."""
    registry.list_models()  # every family loaded first
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    return monkeypatch


def _register_pico_sima(mp) -> str:
    from edgeattn.models import sima as S

    mp.setitem(S.SIZES, "pico_2", (64, 2, 2, 1.0, True))  # dim 64, depth 2, 2 heads: d_h 32
    spec = {"sima_pico_2_p16": ("sima", "pico_2", 16)}
    export = replace(S.SIMA_EXPORT, patch=16, size_multiple=16)
    registry.register_variants(spec, family="sima", doc=S._xcit_doc, export=export)(S._sima_net)
    return "sima_pico_2_p16"


def _register_pico_deit(mp) -> tuple[str, str]:
    from edgeattn.models import deit as D

    mp.setitem(D.DEIT_SIZES, "pico", (64, 2, 2))
    kw = dict(family="deit", doc=D._deit_doc)
    registry.register_variants({"deit_pico": ("softmax", "pico")}, export=D.DEIT_EXPORT, **kw)(
        D._deit
    )
    registry.register_variants(
        {"sima_deit_pico": ("sima", "pico")}, export=D.SIMA_DEIT_EXPORT, **kw
    )(D._sima_deit)
    return "deit_pico", "sima_deit_pico"


def _register_pico_soft(mp) -> str:
    from edgeattn.models import soft as F

    sizes = {"embed_dims": (16, 32, 32, 64), "num_heads": (1, 2, 2, 4), "depths": (1, 1, 1, 1)}
    mp.setitem(F.SOFT_VARIANTS, "pico", sizes)
    registry.register_variants(
        {"soft_pico": ("pico", False)}, family="soft", doc=F._soft_doc, export=F.SOFT_EXPORT
    )(F._soft_net)
    return "soft_pico"


def _profiled_nodes(path: Path, feeds: dict[str, np.ndarray], tmp_path: Path) -> dict[str, list]:
    """The nodes ONNX Runtime ran (from its profile), If branches included: name -> the shapes
    of its outputs."""
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "prof")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    sess.run(None, feeds)
    events = json.loads(Path(sess.end_profiling()).read_text())
    return {
        e["name"].removesuffix("_kernel_time"): [
            next(iter(o.values())) for o in e.get("args", {}).get("output_type_shape", [])
        ]
        for e in events
        if e.get("cat") == "Node"
    }


def _eager(model: torch.nn.Module, x: np.ndarray, order: str | None = None) -> np.ndarray:
    """Eager float64 PyTorch on a copy (``order``: every SimA fixed to it)."""
    import copy

    from edgeattn.attention.sima import set_sima_order

    m = copy.deepcopy(model).double()
    if order is not None:
        set_sima_order(m, order)
    with torch.no_grad():
        return m(torch.from_numpy(x).double()).numpy()


# --------------------------------------------------------------------------- SimA net, runtime If
def test_dynamic_sima_net_if_matches_eager_on_both_sides(sandbox, tmp_path):
    from edgeattn.models.registry import create_model

    name = _register_pico_sima(sandbox)
    res = export_onnx(name, img_size=64, dynamic=True, opset=17, output=tmp_path / "s.onnx")
    order = res.spec["order"]
    assert order["mode"] == "runtime_if" and order["threshold"] == 32
    assert order["token_formula"] == "N = (H//16)*(W//16)"
    assert res.audit["totals"]["If"] == 1 and res.audit["branches"] == ["kv_first", "qk_first"]
    # export's own verification: every case on the branch eager PyTorch chose, both branches run
    cases = res.verification["cases"]
    assert res.verification["passed"]
    for c in cases:
        expected = "qk_first" if c["tokens"] < 32 else "kv_first"
        assert c["order"] == expected and c["branch"] == expected, c
    assert {c["branch"] for c in cases} == {"qk_first", "kv_first"}

    # and independently: ORT at sizes on both sides of N = 32 against eager float64 PyTorch,
    # with the branch ONNX Runtime ran read from its profile
    torch.manual_seed(0)
    model = create_model(name, img_size=64)  # the export's weights: the same seed
    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    # N = 16, 25 | 36, 49: never the head dim (32) or the width (64), so an N x N map is one
    for side, expected in ((64, "qk_first"), (80, "qk_first"), (96, "kv_first"), (112, "kv_first")):
        other = "kv_first" if expected == "qk_first" else "qk_first"
        x = np.random.default_rng(side).standard_normal((2, 3, side, side)).astype(np.float32)
        ran = _profiled_nodes(res.path, {"image": x}, tmp_path)
        attn = {r: shp for r, shp in ran.items() if r.startswith("/blocks.1/attn/")}
        assert any(r.endswith(f"@{expected}") for r in attn), (side, sorted(attn))
        assert not any(r.endswith(f"@{other}") for r in ran), (side, expected)
        # the branch runs the order it is named for: only (QKᵀ)V makes the (B, h, N, N) map
        n = (side // 16) ** 2
        nxn = [
            r
            for r, shp in attn.items()
            if "MatMul" in r and any(len(s) == 4 and s[-2:] == [n, n] for s in shp)
        ]
        assert bool(nxn) == (expected == "qk_first"), (side, expected, nxn)
        y = sess.run(None, {"image": x})[0]
        ref = _eager(model, x)
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
        # the branch taken computes the order it is named for (the two agree in float64)
        np.testing.assert_allclose(_eager(model, x, expected), ref, rtol=1e-9, atol=1e-12)


def test_export_does_not_change_the_model(tmp_path):
    from edgeattn.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("block_sima", tokens=64, dim=64, heads=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for kw in ({"order": "qk_first"}, {"dynamic": True}, {"crossover": 100}):
        export_onnx(model, output=tmp_path / "m.onnx", **kw)
        assert (model.attn.order, model.attn.crossover) == ("auto", None), kw
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model._forward_pre_hooks and not model.attn._forward_pre_hooks


# --------------------------------------------------------------------------- DeiT, SOFT nets
def test_dynamic_deit_nets_verify(sandbox, tmp_path):
    deit, sima_deit = _register_pico_deit(sandbox)
    res = export_onnx(deit, img_size=32, dynamic=True, output=tmp_path / "d.onnx")
    assert res.verification["passed"] and res.spec["method"] == "softmax"
    grids = {tuple(c["inputs"]["image"][2:]) for c in res.verification["cases"]}
    assert len(grids) == 4 and res.audit["totals"]["Softmax"] == 2
    # SimA-DeiT: the class token is told (extra_tokens 1), and the If checks it at run time
    res = export_onnx(sima_deit, img_size=32, dynamic=True, output=tmp_path / "s.onnx")
    assert res.spec["order"]["token_formula"] == "N = (H//16)*(W//16) + 1"
    cases = res.verification["cases"]
    assert res.verification["passed"]
    assert {c["branch"] for c in cases} == {"qk_first", "kv_first"}
    assert all(c["tokens"] == (c["inputs"]["image"][2] // 16) ** 2 + 1 for c in cases[1:3])


def test_soft_net_at_several_grids(sandbox, tmp_path):
    name = _register_pico_soft(sandbox)
    res = export_onnx(name, img_size=64, dynamic=True, output=tmp_path / "f.onnx")
    assert res.verification["passed"] and res.spec["tolerance"]["name"] == "TOL_SOFT"
    grids = {tuple(c["inputs"]["image"][2:]) for c in res.verification["cases"]}
    assert (64, 64) in grids and len(grids) >= 3 and all(h % 32 == 0 for h, _ in grids)
    for c in res.verification["cases"]:  # the Newton inverse in the graph, at every grid
        assert c["outputs"]["logits"]["max_abs"] <= c["outputs"]["logits"]["bound"], c


# --------------------------------------------------------------------------- profile FILE.onnx
def test_profile_command_on_an_exported_file(tmp_path):
    res = export_onnx("block_sima", tokens=64, dim=64, heads=2, output=tmp_path / "b.onnx")
    out = tmp_path / "p.jsonl"
    cmd = [sys.executable, "-m", "edgeattn.cli", "profile", str(res.path), "--runs", "2"]
    cmd += ["--min-time", "0.05", "--depth", "block", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    [rec] = [
        r
        for r in map(json.loads, filter(str.strip, out.read_text().splitlines()))
        if r.get("kind") != "run_end"
    ]
    assert rec["meta"]["name"] == "block_sima"  # from the sidecar, read by read_sidecar
    assert rec["meta"]["source"] == "onnx"
    depth1 = {b["name"]: b for b in rec["profile"]["blocks"]["1"]}  # blocks by depth
    assert depth1["attn"]["component"] == "attention" and depth1["attn"]["ms"] > 0


# --------------------------------------------------------------------------- exporter fallbacks
def test_torchscript_failure_falls_back_to_dynamo(tmp_path, monkeypatch):
    import edgeattn.export.exporters as ex
    from edgeattn.errors import ExportError

    def fail(*a, **k):
        raise ExportError("TorchScript export failed at opset 18: forced by the test")

    monkeypatch.setattr(ex, "export_torchscript", fail)
    res = export_onnx("block_msa", opset=18, tokens=16, dim=32, heads=2, output=tmp_path / "a.onnx")
    assert res.spec["exporter"] == "dynamo" and res.verification["passed"]
    assert res.spec["exporter_notes"][0].startswith("TorchScript export failed, used dynamo")
    with pytest.raises(ExportError, match="forced by the test"):  # no dynamo below opset 18
        export_onnx("block_msa", opset=17, tokens=16, dim=32, heads=2, output=tmp_path / "b.onnx")


def test_dynamo_failure_falls_back_to_torchscript_if(tmp_path, monkeypatch):
    import edgeattn.export.exporters as ex

    def specialised(*a, **k):
        raise ex.Specialized("torch.export specialised axis 'tokens' to 64: forced by the test")

    monkeypatch.setattr(ex, "export_dynamo", specialised)
    res = export_onnx(
        "block_sima", opset=18, dynamic=True, tokens=64, dim=64, heads=2, output=tmp_path / "c.onnx"
    )
    assert res.spec["exporter"] == "torchscript"
    assert "fell back to TorchScript" in res.spec["exporter_notes"][0]
    assert "spliced under one If" in res.spec["order"]["implementation"]
    assert {c["branch"] for c in res.verification["cases"]} == {"qk_first", "kv_first"}
