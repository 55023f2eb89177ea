"""onnxsim, guarded: the attention op census must survive and node names must keep their module
paths; otherwise the unsimplified graph is kept and the reason recorded."""

from __future__ import annotations

import time
from typing import Any

import onnx

from edgeattn.export._capture import captured_fds
from edgeattn.export.audit import census
from edgeattn.export.graph import default_opset, repair_names
from edgeattn.export.util import first_line

#: Ops whose counts simplification must not change (the audit and the bench rely on them).
CENSUS_KEYS: tuple[str, ...] = ("Softmax", "Exp", "ReduceL1", "ReduceSum", "MatMul", "If")

#: onnxsim 0.8 rewrites MatMul+Add into (Reshape+)Gemm(+Reshape) with fresh node names. That
#: changes the MatMul census and drops module paths, and ONNX Runtime fuses MatMul+Add itself
#: at session level, so these passes are skipped. ``fuse_qkv`` merges the three per-head
#: q/k/v products of one input (SimA's projections from weight slices) into one MatMul and a
#: Split: the census changes (sima_nano_12_p16: 114 -> 92 MatMuls) and the guard would keep the
#: unsimplified graph, so it is skipped too.
SKIPPED_OPTIMIZERS: tuple[str, ...] = (
    "fuse_matmul_add_bias_into_gemm",
    "fuse_matmul_add_bias_into_gemm_batched",
    "fuse_qkv",
)


def attention_census(model: onnx.ModelProto) -> dict[str, int]:
    c = census(model)
    return {k: c[k] for k in CENSUS_KEYS}


def simplify_model(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Simplify ``model`` with onnxsim. Returns ``(model, info)``; ``info["applied"]`` says
    whether the simplified graph was kept and ``info["reason"]`` why not."""
    t0 = time.perf_counter()
    before = attention_census(model)
    info: dict[str, Any] = {
        "tool": "onnxsim",
        "applied": False,
        "reason": None,
        "census_before": before,
        "census_after": None,
        "nodes_before": len(model.graph.node),
        "nodes_after": None,
    }
    try:
        import onnxsim

        info["tool"] = f"onnxsim {getattr(onnxsim, '__version__', '?')}"
        kwargs: dict[str, Any] = {"skipped_optimizers": list(SKIPPED_OPTIMIZERS)}
        with captured_fds() as captured:
            try:
                simplified, ok = onnxsim.simplify(model, certify=False, **kwargs)
            except TypeError:  # older onnxsim without `certify`
                simplified, ok = onnxsim.simplify(model, **kwargs)
        lines = [ln for ln in captured.getvalue().splitlines() if ln.strip()]
        if lines:
            info["messages"] = len(lines)
            info["first_message"] = lines[0][:300]
    except Exception as exc:  # onnxsim failures are not fatal: keep the exported graph
        info["reason"] = f"onnxsim failed: {type(exc).__name__}: {first_line(exc)}"
        info["seconds"] = time.perf_counter() - t0
        return model, info
    if not ok:
        info["reason"] = "onnxsim's own equality check failed"
    after = attention_census(simplified)
    info["census_after"] = after
    info["nodes_after"] = len(simplified.graph.node)
    if info["reason"] is None and after != before:
        diff = {k: f"{before[k]}->{after[k]}" for k in CENSUS_KEYS if before[k] != after[k]}
        info["reason"] = f"onnxsim changed the attention op census {diff}"
    if info["reason"] is None and default_opset(simplified) != default_opset(model):
        info["reason"] = (
            f"onnxsim changed the opset {default_opset(model)} -> {default_opset(simplified)}"
        )
    if info["reason"] is not None:
        info["seconds"] = time.perf_counter() - t0
        return model, info
    # onnxsim records what it did in metadata_props (long lists of node names); the sidecar
    # says what we need, so keep the file lean.
    keep = [p for p in simplified.metadata_props if not p.key.startswith("onnxsim.")]
    del simplified.metadata_props[:]
    simplified.metadata_props.extend(keep)
    repair_names(simplified, reference=model)
    info["applied"] = True
    info["seconds"] = time.perf_counter() - t0
    return simplified, info
