"""Verification of an exported file: ONNX checker (full), strict shape inference, then ONNX
Runtime (CPU) against PyTorch on the export shape and, for dynamic exports, other shapes.

An output passes when ``max|ort - torch| <= atol + rtol * max|torch|`` (a scale-aware bound:
element-wise relative error is meaningless for logits that cross zero). The bounds are named
constants per attention method; the looser ones say why.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import onnx

from edgeattn.errors import ExportError, ToleranceError
from edgeattn.export.naming import split_name
from edgeattn.export.util import first_line


@dataclass(frozen=True)
class Tolerance:
    name: str
    atol: float
    rtol: float

    def bound(self, ref_max: float) -> float:
        return self.atol + self.rtol * ref_max


#: Softmax attention (DeiT, MSA blocks): float32 GEMMs and a max-subtracted softmax; ORT and
#: PyTorch differ only by summation order (~1e-6 relative on these nets).
TOL_SOFTMAX = Tolerance("TOL_SOFTMAX", atol=1e-4, rtol=1e-4)
#: ONNX Runtime's fused attention kernel (block_msa_fused) against the unfused torch block:
#: same math, different blocking of the softmax reductions.
TOL_FUSED = Tolerance("TOL_FUSED", atol=1e-4, rtol=1e-4)
#: XCiT cross-covariance attention: l2-normalised q, k and a d×d softmax, as benign as MSA.
TOL_XCA = Tolerance("TOL_XCA", atol=1e-4, rtol=1e-4)
#: SimA: l1 normalisation over tokens then two float32 products; the order (QKᵀ)V vs Q(KᵀV)
#: is chosen identically on both sides, so the error stays at float32 accumulation level.
TOL_SIMA = Tolerance("TOL_SIMA", atol=1e-4, rtol=1e-4)
#: SOFT: the bottleneck inverse is 20 Newton–Raphson steps V <- 2V - V·P·V in float32
#: (P = K2 + 0.01·I, K2 the m×m Gaussian kernel of the landmarks), and K1·inv(K2)·(K1ᵀV) then
#: multiplies its error by the kernel norms. The float32 error of the iteration grows with the
#: conditioning of P: measured (torch f32 vs f64 on inv, 49 landmarks) 3e-7 relative at
#: cond 10, 3e-6 at cond 2e3, 1e-5 at cond 4e4 (the 0.01·I regulariser caps it near there), and
#: ORT vs torch f32 is of the same size. Random-init nets keep K2 near identity (soft_tiny at
#: 224: 1.3e-6 abs, 8e-7 relative, like the other families), trained landmarks cluster and do
#: not, so SOFT gets 10x the others' bound. A wrong graph (a missing Newton step, a wrong kernel
#: or landmark op) is off by O(1e-2..1) and still fails.
TOL_SOFT = Tolerance("TOL_SOFT", atol=1e-3, rtol=1e-3)

#: By name: a model's export facts name theirs (``ExportFacts.tolerance``) and say why.
TOLERANCES: dict[str, Tolerance] = {
    t.name: t for t in (TOL_SOFTMAX, TOL_FUSED, TOL_XCA, TOL_SIMA, TOL_SOFT)
}


def tolerance_for(name: str | None) -> Tolerance:
    """The bound named ``name`` (None: :data:`TOL_SOFTMAX`); an unknown name is an error."""
    if name is None:
        return TOL_SOFTMAX
    try:
        return TOLERANCES[name]
    except KeyError:
        raise ExportError(
            f"unknown verification tolerance {name!r} in the model's export facts; "
            f"valid: {', '.join(TOLERANCES)}"
        ) from None


def check_onnx(model: onnx.ModelProto) -> dict[str, Any]:
    """Full checker and strict shape inference; raises ExportError naming what failed."""
    t0 = time.perf_counter()
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise ExportError(
            f"the exported graph fails onnx.checker: {first_line(exc, 2000)}"
        ) from exc
    try:
        onnx.shape_inference.infer_shapes(model, strict_mode=True, check_type=True, data_prop=True)
    except Exception as exc:
        raise ExportError(
            f"the exported graph fails strict shape inference: {first_line(exc, 2000)}"
        ) from exc
    return {
        "checker": "ok (full_check)",
        "shape_inference": "ok (strict)",
        "seconds": time.perf_counter() - t0,
    }


def ort_session(model_bytes: bytes, *, threads: int | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(
            f"ONNX Runtime cannot load the exported graph: {first_line(exc, 400)}"
        ) from exc


def _refs(node: onnx.NodeProto) -> list[str]:
    """A node's inputs plus the outer names its subgraphs (If branches) read: a condition that
    depends on an earlier If's output needs what that If's branches use (EfficientViT: one If per
    LiteMLA layer)."""
    from edgeattn.export.graph import iter_nodes

    out = [i for i in node.input if i]
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out += [i for sn in iter_nodes(a.g) for i in sn.input if i]
    return out


def _cond_model(
    model: onnx.ModelProto,
) -> tuple[onnx.ModelProto, list[tuple[str, str, str]]] | None:
    """A model computing the condition of every top-level If (for reporting which branch runs).
    Returns it and, per If, ``(if_name, then_tag, else_tag)``."""
    ifs = [n for n in model.graph.node if n.op_type == "If"]
    if not ifs:
        return None
    producer = {o: n for n in model.graph.node for o in n.output}
    needed: list[onnx.NodeProto] = []
    seen: set[str] = set()
    stack = [n.input[0] for n in ifs]
    while stack:
        t = stack.pop()
        p = producer.get(t)
        if p is None or p.name in seen:
            continue
        seen.add(p.name)
        needed.append(p)
        stack.extend(_refs(p))
    order = {id(n): k for k, n in enumerate(model.graph.node)}
    needed.sort(key=lambda n: order[id(n)])
    used = {i for n in needed for i in _refs(n)}
    inits = [t for t in model.graph.initializer if t.name in used]
    outputs = [
        onnx.helper.make_tensor_value_info(n.input[0], onnx.TensorProto.BOOL, None) for n in ifs
    ]
    g = onnx.helper.make_graph(needed, "conds", list(model.graph.input), outputs, inits)
    m = onnx.helper.make_model(g, opset_imports=list(model.opset_import))
    m.ir_version = model.ir_version
    tags = []
    for n in ifs:
        tt, et = "then", "else"
        for a in n.attribute:
            if a.g.node:
                t = split_name(a.g.node[0].name)[0]
                if t:
                    if a.name == "then_branch":
                        tt = t[-1]
                    elif a.name == "else_branch":
                        et = t[-1]
        tags.append((n.name, tt, et))
    return m, tags


def compare(out: np.ndarray, ref: np.ndarray, tol: Tolerance) -> dict[str, Any]:
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if out.shape != ref.shape:
        return {"ok": False, "error": f"shape {list(out.shape)} != torch {list(ref.shape)}"}
    diff = np.abs(out - ref)
    max_abs = float(diff.max()) if diff.size else 0.0
    ref_max = float(np.abs(ref).max()) if ref.size else 0.0
    finite = bool(np.isfinite(out).all())
    bound = tol.bound(ref_max)
    return {
        "shape": list(out.shape),
        "max_abs": max_abs,
        "max_rel": max_abs / ref_max if ref_max > 0 else max_abs,
        "ref_max_abs": ref_max,
        "bound": bound,
        "ok": finite and max_abs <= bound,
        "finite": finite,
    }


def verify_runtime(
    model_bytes: bytes,
    model: onnx.ModelProto,
    cases: Sequence[dict[str, Any]],
    reference: Callable[[dict[str, np.ndarray]], tuple[dict[str, np.ndarray], dict[str, Any]]],
    tol: Tolerance,
) -> dict[str, Any]:
    """Run every case through ONNX Runtime and ``reference`` (PyTorch) and compare.

    ``cases``: ``{"label": str, "inputs": {name: array}}``. ``reference`` returns the torch
    outputs by ONNX output name and a dict of facts (e.g. the SimA order eager mode chose).
    Raises :class:`ToleranceError` on the first output beyond ``tol`` (after running all).
    """
    # One loop over cases and outputs with its record: split, the record's fields would scatter.
    t0 = time.perf_counter()
    sess = ort_session(model_bytes)
    out_names = [o.name for o in sess.get_outputs()]
    conds = _cond_model(model)
    cond_sess = ort_session(conds[0].SerializeToString(), threads=1) if conds else None
    results = []
    worst = None
    for case in cases:
        feeds = case["inputs"]
        shapes = {k: list(v.shape) for k, v in feeds.items()}
        t1 = time.perf_counter()
        try:
            outs = sess.run(out_names, feeds)
        except Exception as exc:
            raise ExportError(
                f"ONNX Runtime failed on {case['label']} {shapes}: {first_line(exc)}",
                hint="the exporter probably froze this dimension during tracing",
            ) from exc
        ort_ms = (time.perf_counter() - t1) * 1000
        ref, facts = reference(feeds)
        entry: dict[str, Any] = {
            "label": case["label"],
            "inputs": shapes,
            "ort_ms": ort_ms,
            **facts,
        }
        if cond_sess is not None:
            vals = cond_sess.run(None, feeds)
            taken = {}
            for (name, tt, et), v in zip(conds[1], vals, strict=True):
                taken[name] = tt if bool(np.asarray(v).reshape(-1)[0]) else et
            entry["branches"] = taken
            kinds = sorted(set(taken.values()))
            entry["branch"] = kinds[0] if len(kinds) == 1 else kinds
        entry["outputs"] = {}
        for name, o in zip(out_names, outs, strict=True):
            c = compare(o, ref[name], tol)
            entry["outputs"][name] = c
            if not c["ok"] and worst is None:
                worst = (case, name, c)
        results.append(entry)
    max_abs = max(
        (c.get("max_abs", float("inf")) for r in results for c in r["outputs"].values()),
        default=0.0,
    )
    max_rel = max(
        (c.get("max_rel", float("inf")) for r in results for c in r["outputs"].values()),
        default=0.0,
    )
    summary = {
        "tolerance": asdict(tol),
        "cases": results,
        "max_abs": max_abs,
        "max_rel": max_rel,
        "passed": worst is None,
        "seconds": time.perf_counter() - t0,
    }
    if worst is not None:
        case, name, c = worst
        detail = c.get("error") or (
            f"max abs {c['max_abs']:.3g} > {c['bound']:.3g} "
            f"(atol {tol.atol:g} + rtol {tol.rtol:g} × max|torch| {c['ref_max_abs']:.3g})"
            + ("" if c.get("finite", True) else ", non-finite values")
        )
        err = ToleranceError(
            f"ONNX Runtime output {name!r} differs from PyTorch on {case['label']} "
            f"{ {k: list(v.shape) for k, v in case['inputs'].items()} }: {detail} [{tol.name}]"
        )
        err.verification = summary  # type: ignore[attr-defined]
        raise err
    return summary
