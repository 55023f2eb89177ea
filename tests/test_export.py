"""torch -> ONNX export: exact opsets, exporter choice, SimA order policy (static and runtime If),
per-block op audit, verification, names, simplification, cache, atomicity, fused MSA."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from edgeattn.errors import AuditError, ExportError, ToleranceError
from edgeattn.export import audit_model, export_onnx
from edgeattn.export.graph import iter_nodes
from edgeattn.export.naming import has_module_path, split_name
from edgeattn.models.registry import get_entry, list_models

SMALL_BLOCK = {"tokens": 64, "dim": 64, "heads": 2}  # head_dim 32: the SimA threshold
BLOCKS = ["block_msa", "block_sima", "block_xca", "block_soft", "block_soft_norm"]
# One net per family in the default run; every registered model under -m slow.
DEFAULT_NETS = [
    "soft_tiny",
    "soft_norm_tiny",
    "sima_nano_12_p16",
    "xcit_nano_12_p16",
    "deit_tiny_patch16_224",
    "sima_deit_tiny_patch16_224",
]


def small_kwargs(name: str) -> dict:
    """Smallest input each model takes (nets: multiples of 32 for SOFT, of the patch else)."""
    if name.startswith("block_soft"):
        # 14x14 grid: the default adaptive landmarks pool to 7x7, and TorchScript exports
        # adaptive_avg_pool2d only when the output size divides the input size
        return {"tokens": 196, "dim": 64, "heads": 2}
    if get_entry(name).family == "block":
        return dict(SMALL_BLOCK)
    if name.endswith("_p8"):
        return {"img_size": 32}
    return {"img_size": 64}


def file_opset(path: Path) -> int:
    m = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))


_CACHE: dict[tuple, object] = {}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Export once per (name, options) for the whole module (the census tests and the guard
    test share the net exports)."""
    root = tmp_path_factory.mktemp("exports")

    def get(name: str, **kw):
        key = (name, json.dumps(kw, sort_keys=True))
        if key not in _CACHE:
            opts = {**small_kwargs(name), **kw}
            out = root / f"{name}-{len(_CACHE)}.onnx"
            _CACHE[key] = export_onnx(name, output=out, **opts)
        return _CACHE[key]

    return get


# --------------------------------------------------------------------------- opsets, exporters
@pytest.mark.parametrize("name", BLOCKS)
def test_block_exports_at_opset17(exported, name):
    res = exported(name)
    assert file_opset(res.path) == 17
    assert res.spec["exporter"] == "torchscript"
    assert res.verification["passed"]
    assert res.verification["max_abs"] <= res.verification["cases"][0]["outputs"]["y"]["bound"]
    side = json.loads(res.sidecar_path.read_text())
    assert side["onnx"]["bytes"] == res.path.stat().st_size
    assert side["spec"]["inputs"][0]["name"] == "x" and side["spec"]["outputs"][0]["name"] == "y"
    assert side["versions"]["onnxruntime"]
    assert set(side["timings"]) >= {"export_s", "verify_s", "total_s"}


@pytest.mark.parametrize("opset", [13, 18, 20])
def test_sima_block_exact_opset_torchscript(tmp_path, opset):
    res = export_onnx("block_sima", opset=opset, output=tmp_path / "s.onnx", **SMALL_BLOCK)
    assert file_opset(res.path) == opset
    assert res.spec["exporter"] == "torchscript"
    assert res.verification["passed"]


def test_opset_beyond_torchscript_uses_dynamo(tmp_path):
    res = export_onnx("block_sima", opset=21, output=tmp_path / "s.onnx", **SMALL_BLOCK)
    assert file_opset(res.path) == 21
    assert res.spec["exporter"] == "dynamo"
    assert all(has_module_path(n.name) for n in iter_nodes(onnx.load(str(res.path)).graph))
    assert any(n.name.startswith("/attn/") for n in onnx.load(str(res.path)).graph.node)


def test_dynamo_cannot_write_opset17(tmp_path):
    with pytest.raises(ExportError, match="cannot convert down to opset 17"):
        export_onnx(
            "block_sima", opset=17, exporter="dynamo", output=tmp_path / "x.onnx", **SMALL_BLOCK
        )
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("opset", [9, 12, 24, 30])
def test_unsupported_opset_names_range(tmp_path, opset):
    with pytest.raises(ExportError, match=r"opsets 13\.\.23"):
        export_onnx("block_msa", opset=opset, output=tmp_path / "x.onnx")


# --------------------------------------------------------------------------- SimA order policy
def _attention_maps(path: Path) -> list[list]:
    """Output shapes of the 4-D (B, h, ., .) products inside `attn` (not the projections)."""
    m = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {
        v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
        for v in m.graph.value_info
    }
    out = [
        shapes.get(n.output[0])
        for n in m.graph.node
        if n.op_type == "MatMul" and n.name.startswith("/attn/")
    ]
    return [s for s in out if s and len(s) == 4]


@pytest.mark.parametrize(("tokens", "expected"), [(16, "qk_first"), (48, "kv_first")])
def test_static_shape_resolves_order(tmp_path, tokens, expected):
    res = export_onnx(
        "block_sima", tokens=tokens, dim=64, heads=2, output=tmp_path / "s.onnx"
    )  # head_dim 32
    assert res.spec["order"]["mode"] == "static"
    assert res.spec["order"]["resolved"] == expected
    assert res.audit["totals"]["If"] == 0
    maps = _attention_maps(res.path)
    assert maps
    # only (QKᵀ)V holds the (B, h, N, N) map; N differs from the head dim and the width here
    assert any(s[-2:] == [tokens, tokens] for s in maps) == (expected == "qk_first"), maps


def test_crossover_overrides_threshold(tmp_path):
    res = export_onnx("block_sima", crossover=100, output=tmp_path / "s.onnx", **SMALL_BLOCK)
    assert res.spec["order"]["threshold"] == 100
    assert res.spec["order"]["resolved"] == "qk_first"  # 64 < 100


def _profiled_nodes(path: Path, x: np.ndarray, tmp_path: Path) -> set[str]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "prof")
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    sess.run(None, {"x": x})
    events = json.loads(Path(sess.end_profiling()).read_text())
    return {e["name"].removesuffix("_kernel_time") for e in events if e.get("cat") == "Node"}


def test_dynamic_sima_block_runtime_if_takes_both_branches(tmp_path):
    import onnxruntime as ort
    import torch

    from edgeattn.models.registry import create_model

    torch.manual_seed(0)
    model = create_model("block_sima", **SMALL_BLOCK)
    res = export_onnx(model, dynamic=True, opset=17, output=tmp_path / "dyn.onnx")
    assert res.spec["exporter"] == "torchscript"
    assert res.spec["order"]["mode"] == "runtime_if"
    assert res.spec["order"]["threshold"] == 32
    assert res.audit["totals"]["If"] == 1
    assert res.audit["branches"] == ["kv_first", "qk_first"]
    # the sidecar's verification ran both branches and the If condition agreed with eager torch
    branches = {c["branch"] for c in res.verification["cases"]}
    assert branches == {"qk_first", "kv_first"}
    assert all(c["branch"] == c["order"] for c in res.verification["cases"])

    sess = ort.InferenceSession(str(res.path), providers=["CPUExecutionProvider"])
    m64 = model.double()
    for n, expected in ((8, "qk_first"), (128, "kv_first")):
        other = "kv_first" if expected == "qk_first" else "qk_first"
        x = np.random.default_rng(n).standard_normal((2, n, 64)).astype(np.float32)
        ran = _profiled_nodes(res.path, x, tmp_path)
        assert any(r.startswith("/attn/") and r.endswith(f"@{expected}") for r in ran), ran
        assert not any(r.endswith(f"@{other}") for r in ran)
        y = sess.run(None, {"x": x})[0]
        for order in ("qk_first", "kv_first"):  # both orders are the same math in float64
            m64.attn.order = order
            with torch.no_grad():
                ref = m64(torch.from_numpy(x).double()).numpy()
            np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)
    m64.attn.order = "auto"


def test_dynamic_sima_block_opset18_uses_torch_cond(tmp_path):
    res = export_onnx(
        "block_sima", dynamic=True, opset=18, output=tmp_path / "d.onnx", **SMALL_BLOCK
    )
    assert res.spec["exporter"] == "dynamo"
    assert file_opset(res.path) == 18
    assert "torch.cond" in res.spec["order"]["implementation"]
    m = onnx.load(str(res.path))
    ifs = [n for n in m.graph.node if n.op_type == "If"]
    assert len(ifs) == 1 and ifs[0].name.startswith("/attn/")
    inner = [n.name for n in iter_nodes(m.graph) if "@" in n.name]
    assert any(n.startswith("/attn/MatMul") and n.endswith("@qk_first") for n in inner)
    assert any(n.startswith("/attn/MatMul") and n.endswith("@kv_first") for n in inner)
    assert {c["branch"] for c in res.verification["cases"]} == {"qk_first", "kv_first"}


def test_dynamic_soft_block_is_refused(tmp_path):
    with pytest.raises(ExportError, match="fixed .* grid"):
        export_onnx("block_soft", dynamic=True, output=tmp_path / "x.onnx", **SMALL_BLOCK)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- audit per block
def test_soft_tiny_softmax_only_in_stage4(exported):
    a = exported("soft_tiny").audit
    assert set(a["softmax_blocks"]) == {"block4.0", "block4.1"}
    assert all(a["blocks"][b]["Softmax"] == 1 for b in ("block4.0", "block4.1"))
    assert {b for b in a["exp_blocks"]} == {"block1.0", "block2.0", "block2.1"} | {
        f"block3.{i}" for i in range(3)
    }
    assert not a["softmax_free"]


def test_soft_tiny_softmax_free_stage4(exported):
    a = exported("soft_tiny", overrides={"softmax_free_stage4": True})
    assert a.audit["totals"]["Softmax"] == 0
    assert a.audit["softmax_free"]
    assert "block4.0" in a.audit["exp_blocks"]


def test_sima_net_has_no_softmax_no_exp(exported):
    a = exported("sima_nano_12_p16").audit
    assert a["totals"]["Softmax"] == 0 and a["totals"]["Exp"] == 0
    assert a["softmax_free"] and not a["exp_blocks"]
    assert all(a["blocks"][f"blocks.{i}"]["MatMul"] > 0 for i in range(12))


def test_xcit_net_softmax_in_every_block(exported):
    a = exported("xcit_nano_12_p16").audit
    expected = {f"blocks.{i}" for i in range(12)} | {"cls_attn_blocks.0", "cls_attn_blocks.1"}
    assert set(a["softmax_blocks"]) == expected
    assert all(a["blocks"][b]["Softmax"] == 1 for b in expected)


def test_deit_softmax_in_every_block(exported):
    a = exported("deit_tiny_patch16_224").audit
    assert set(a["softmax_blocks"]) == {f"blocks.{i}" for i in range(12)}
    assert a["totals"]["Softmax"] == 12


def test_strict_softmax_free_names_blocks(tmp_path):
    with pytest.raises(AuditError, match=r"block4\.0, block4\.1"):
        export_onnx("soft_tiny", img_size=64, strict_softmax_free=True, output=tmp_path / "s.onnx")
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------- names, simplify
def test_names_carry_module_paths_after_simplify(exported, tmp_path):
    res = exported("sima_nano_12_p16")
    assert res.spec["simplify"]["applied"]
    m = onnx.load(str(res.path))
    names = [n.name for n in iter_nodes(m.graph)]
    assert all(has_module_path(n) for n in names)
    assert len(names) == len(set(names))
    assert any(n.startswith("/blocks.3/attn/") for n in names)
    assert any(n.startswith("/cls_attn_blocks.1/") for n in names)
    # inside If branches too (runtime order dispatch)
    dyn = export_onnx(
        "sima_nano_12_p16", img_size=64, dynamic=True, verify=False, output=tmp_path / "d.onnx"
    )
    inner = [n.name for n in iter_nodes(onnx.load(str(dyn.path)).graph) if split_name(n.name)[0]]
    assert inner and all(has_module_path(n) for n in inner)
    assert any(n.startswith("/blocks.11/attn/MatMul") and n.endswith("@kv_first") for n in inner)


def test_simplify_keeps_census_or_keeps_original(monkeypatch):
    import onnxsim

    from edgeattn.export.simplify import attention_census, simplify_model
    from edgeattn.models.block import AttentionBlock, BlockConfig

    m = AttentionBlock(BlockConfig(kind="msa", dim=32, heads=2, tokens=8))
    from edgeattn.export.exporters import export_torchscript

    proto = export_torchscript(m, m.example_input(), 17, "x", "y", {}, {})
    s, info = simplify_model(proto)
    assert info["applied"] and attention_census(s) == attention_census(proto)
    assert len(s.graph.node) < len(proto.graph.node)

    def drop_softmax(model, **kw):  # a "simplifier" that loses the Softmax
        out = onnx.ModelProto.FromString(model.SerializeToString())
        for n in out.graph.node:
            if n.op_type == "Softmax":
                n.op_type = "Identity"
        return out, True

    monkeypatch.setattr(onnxsim, "simplify", drop_softmax)
    kept, info = simplify_model(proto)
    assert not info["applied"] and "census" in info["reason"] and "Softmax" in info["reason"]
    assert kept is proto


# --------------------------------------------------------------------------- cache, atomicity
def test_cache_hit_skips_export(tmp_path, monkeypatch):
    import edgeattn.export.exporters as ex
    import edgeattn.export.onnx as eo

    kw = dict(SMALL_BLOCK, cache_dir=tmp_path / "cache")
    first = export_onnx("block_msa", **kw)
    assert not first.cached and first.path.parent == tmp_path / "cache"

    def boom(*a, **k):
        raise AssertionError("re-exported on a cache hit")

    monkeypatch.setattr(ex, "export_torchscript", boom)
    monkeypatch.setattr(eo, "build_model", boom)
    second = export_onnx("block_msa", **kw)
    assert second.cached and second.sha256 == first.sha256
    third = export_onnx("block_msa", output=tmp_path / "copy.onnx", **kw)
    assert third.cached and third.path.read_bytes() == first.path.read_bytes()
    assert third.sidecar_path.exists()
    with pytest.raises(AssertionError):  # another opset is another key
        export_onnx("block_msa", opset=16, **kw)


def test_cache_misses_when_the_model_code_changes(tmp_path, monkeypatch):
    """A cached export belongs to the code that wrote it: with another source fingerprint (a
    model's forward edited, same package version) the same request exports again."""
    import edgeattn.export.plan as ep

    kw = dict(SMALL_BLOCK, cache_dir=tmp_path / "cache")
    first = export_onnx("block_msa", **kw)
    assert export_onnx("block_msa", **kw).cached
    monkeypatch.setattr(ep, "code_fingerprint", lambda: "0" * 64)
    second = export_onnx("block_msa", **kw)
    assert not second.cached and second.spec["cache_key"] != first.spec["cache_key"]
    assert second.path != first.path and first.path.exists()


def test_source_fingerprint_follows_the_graph_sources_only(tmp_path):
    import shutil

    import edgeattn
    import edgeattn.export.plan as ep

    pkg = Path(edgeattn.__file__).resolve().parent
    root = tmp_path / "edgeattn"
    for sub in (*ep.GRAPH_SOURCES, "runtime"):
        shutil.copytree(pkg / sub, root / sub, ignore=shutil.ignore_patterns("__pycache__"))
    base = ep.source_fingerprint(root)
    assert base == ep.code_fingerprint()  # the copy hashes as the running package does
    with open(root / "runtime" / "records.py", "a") as f:  # device-side code: not in the key
        f.write("# edited\n")
    assert ep.source_fingerprint(root) == base
    for sub in ep.GRAPH_SOURCES:
        f = root / sub / "__init__.py"
        before = f.read_bytes()
        f.write_bytes(before + b"# edited\n")
        assert ep.source_fingerprint(root) != base, sub
        f.write_bytes(before)
    assert ep.source_fingerprint(root) == base


def test_failed_verification_leaves_nothing(tmp_path, monkeypatch):
    import edgeattn.export.verify as ev

    monkeypatch.setitem(ev.TOLERANCES, "TOL_SIMA", ev.Tolerance("TOL_IMPOSSIBLE", -1.0, 0.0))
    out = tmp_path / "v.onnx"
    with pytest.raises(ToleranceError, match="TOL_IMPOSSIBLE"):
        export_onnx("block_sima", output=out, **SMALL_BLOCK)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_fails_before_work(monkeypatch, tmp_path):
    import edgeattn.export.onnx as eo

    monkeypatch.setattr(eo, "build_model", lambda *a, **k: pytest.fail("built the model"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    for bad in ("/proc/edgeattn-test/x.onnx", str(blocker / "x.onnx")):
        with pytest.raises(ExportError, match=bad.rsplit("/", 1)[0].replace(".", r"\.")):
            export_onnx("block_msa", output=bad)


# --------------------------------------------------------------------------- fused MSA
def test_block_msa_fused_verifies_and_audit_shows_fused_op(tmp_path):
    res = export_onnx("block_msa_fused", dynamic=True, output=tmp_path / "f.onnx", **SMALL_BLOCK)
    assert res.verification["passed"] and res.verification["max_abs"] < 1e-4
    assert res.spec["exporter"] == "onnx.helper"
    a = res.audit
    assert a["totals"]["Softmax"] == 0 and a["totals"]["fused_attention"] == 1
    assert a["fused_attention_ops"] == {"com.microsoft::MultiHeadAttention": 1}
    assert not a["softmax_free"] and a["softmax_blocks"] == ["attn"]
    assert file_opset(res.path) == 17
    alt = export_onnx(
        "block_msa_fused",
        overrides={"fused_op": "Attention"},
        output=tmp_path / "g.onnx",
        **SMALL_BLOCK,
    )
    assert alt.audit["fused_attention_ops"] == {"com.microsoft::Attention": 1}
    with pytest.raises(AuditError, match="fused attention"):
        export_onnx(
            "block_msa_fused", strict_softmax_free=True, output=tmp_path / "h.onnx", **SMALL_BLOCK
        )


def test_audit_model_reads_files(exported):
    res = exported("block_xca")
    assert audit_model(res.path) == res.audit


# --------------------------------------------------------------------------- guard: every model
_ALL = list_models()
_DEFAULT = set(DEFAULT_NETS) | set(BLOCKS)


@pytest.mark.parametrize(
    "name",
    [n if n in _DEFAULT else pytest.param(n, marks=pytest.mark.slow) for n in _ALL],
)
def test_every_registered_model_exports_and_verifies(exported, name):
    # Non-default nets carry the `slow` marker, deselected by default (pyproject addopts); the full
    # model zoo (~8 min on 2 cores) runs with `./dev.sh test -m slow` or `-m ""`.
    res = exported(name)
    assert res.verification["passed"], res.verification
    assert file_opset(res.path) == 17
    assert all(has_module_path(n.name) for n in iter_nodes(onnx.load(str(res.path)).graph))
    assert res.audit["nodes"] > 0
