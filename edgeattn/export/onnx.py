"""torch → ONNX for every registered model, at the exact opset asked, verified, audited.

:func:`export_onnx` is a short pipeline; each step lives in the module its name says:

* :mod:`~edgeattn.export.plan`: the request validated, the destination (stem, cache key), the
  exporter; :mod:`~edgeattn.export.build`: the model (registry entry and its export facts);
* :mod:`~edgeattn.export.exporters`: the graph (TorchScript, dynamo, or the facts' builder);
* :mod:`~edgeattn.export.sima_order`: the SimA QKᵀV order, the runtime ``If``, the dynamic cases;
* :mod:`~edgeattn.export.audit` and :mod:`~edgeattn.export.verify` (the tolerance a model's facts
  name); :mod:`~edgeattn.export.precision`; :mod:`~edgeattn.export.sidecar` (the ``.onnx.json``,
  the cache, the atomic write).

Exporter per case (see :func:`~edgeattn.export.plan.choose_exporter`):

* opsets 13–20: the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``). It writes
  exactly the opset asked and names nodes by module path (``/blocks.0/attn/MatMul``).
* opsets 21–23: the dynamo exporter, the only one that reaches them (TorchScript stops at 20).
* SimA ``order="auto"`` with a dynamic token axis keeps both QKᵀV orders and picks one at run
  time with an ONNX ``If`` on the token count (``N < threshold``, threshold = ``crossover`` or
  the head dimension):

  - opset >= 18: the dynamo exporter, where :class:`~edgeattn.attention.sima.SimA` turns the
    choice into ``torch.cond`` -> one ``If`` per SimA layer;
  - opset < 18 (the dynamo exporter cannot write those: it emits 18 and its down-converter
    fails on ``ReduceL1``): the TorchScript exporter twice, once per fixed order, both graphs
    spliced under one ``If`` whose condition is computed from the input shape (blocks:
    ``N = x.shape[1]``; nets: ``N = (H//p)*(W//p) + extra`` with ``p`` and ``extra`` (class
    tokens) told by the model's export facts). The two branches share every weight.

  With a static shape the order is resolved at export (``choose_order``) and no ``If`` is left.
  ``exporter="torchscript"|"dynamo"`` forces one (within what it can write).

The model given is never changed: export sets the SimA order on its own copy. Every file: the
opset is asserted on the final model; node names carry module paths after simplification and
surgery (also inside If branches); the file and its ``.onnx.json`` sidecar are written to
temporary files and renamed at the end, so a failure leaves neither.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgeattn.defaults import OPSET
from edgeattn.errors import ExportError
from edgeattn.export.build import build_model, probe
from edgeattn.export.exporters import (  # noqa: F401 - re-exported: tests patch them here
    export_dynamo,
    export_torchscript,
    write_graph,
)
from edgeattn.export.plan import (  # noqa: F401 - the public constants and checks
    DYNAMO_MIN_OPSET,
    EXPORTERS,
    MAX_OPSET,
    MIN_OPSET,
    SUPPORTED_OPSETS,
    TORCHSCRIPT_MAX_OPSET,
    ExportPlan,
    Request,
    check_opset,
    choose_exporter,
    destination,
    input_spec,
    validate,
)
from edgeattn.export.sidecar import (  # noqa: F401 - SIDECAR_SCHEMA, ExportResult: public
    SIDECAR_SCHEMA,
    ExportResult,
    cache_lookup,
    copy_pair,
    make_spec,
    sidecar_bytes,
    sidecar_path,
    versions,
    write_pair,
)
from edgeattn.export.util import SEED, randn


def export_onnx(
    model_or_name: Any,
    *,
    opset: int = OPSET,
    img_size: int | tuple[int, int] | None = None,
    tokens: int | None = None,
    dim: int | None = None,
    heads: int | None = None,
    batch: int = 1,
    dynamic: bool = False,
    order: str = "auto",
    crossover: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    simplify: bool = True,
    verify: bool = True,
    strict_softmax_free: bool = False,
    output: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    exporter: str = "auto",
    precision: str = "fp32",
    keep_fp32: str | list[str] | None = None,
    calibration: str | os.PathLike | None = None,
    allow_degraded: bool = False,
) -> ExportResult:
    """Export a registered model (by name) or an ``nn.Module`` to ONNX; see the module doc.

    ``precision`` (``fp32``, ``fp16``, ``int8-dynamic``, ``int8-static``): after the fp32 graph
    is verified, convert it (:mod:`edgeattn.export.precision`; ``keep_fp32`` node groups,
    ``calibration`` images for int8-static) and verify the result against fp32 PyTorch;
    ``allow_degraded`` writes a file outside its precision's tolerance (figures recorded).

    Raises :class:`ExportError` (bad request, exporter failure, opset, unwritable path),
    :class:`ModelError` (unknown model, bad override, a size the model cannot take),
    :class:`CheckpointError`, :class:`ToleranceError` (ORT differs from PyTorch) and
    :class:`AuditError` (``strict_softmax_free`` and a softmax was found).
    """
    # Its length is the signature and the mapping onto Request; the steps are one line each.
    t_start = time.perf_counter()
    req = Request(
        model_or_name,
        opset=opset,
        tokens=tokens,
        dim=dim,
        heads=heads,
        batch=batch,
        dynamic=dynamic,
        order=order,
        crossover=crossover,
        ckpt=Path(checkpoint) if checkpoint is not None else None,
        overrides=dict(overrides or {}),
        simplify=simplify,
        verify=verify,
        strict_softmax_free=strict_softmax_free,
        output=output,
        cache_dir=cache_dir,
        exporter=exporter,
        precision=precision,
        calibration=calibration,
        allow_degraded=allow_degraded,
    )
    req = validate(req, img_size, keep_fp32)
    dest = destination(req)
    if dest.cache_path is not None:
        hit = cache_lookup(dest.cache_path, dest.key, verify, strict_softmax_free, allow_degraded)
        if hit is not None:
            if dest.out_path != dest.cache_path:
                copy_pair(dest.cache_path, dest.out_path)
            hit.path, hit.sidecar_path = dest.out_path, sidecar_path(dest.out_path)
            hit.timings = {"total_s": time.perf_counter() - t_start}
            return hit

    from edgeattn.progress import StageTimings  # each stage reported as it ends (CLI progress)

    timings: dict[str, float] = StageTimings(what=model_or_name)
    t0 = time.perf_counter()
    built = build_model(req)
    timings["build_s"] = time.perf_counter() - t0
    plan = _plan(req, built, timings)
    proto = _graph(plan, req, timings)
    _invariants(proto, plan, req.opset)
    audit = _audit(proto, plan, req, timings)
    data = proto.SerializeToString()
    verification = _verify(proto, data, plan, req, timings) if verify else None
    proto, data, audit, precision_info = _precision(proto, data, audit, plan, req, timings)
    return _write(
        proto, data, plan, req, dest, audit, verification, precision_info, timings, t_start
    )


def _plan(req: Request, built: Any, timings: dict[str, float]) -> ExportPlan:
    """Input spec from the facts, the probe, the SimA order, the exporter and the test cases."""
    import torch

    from edgeattn.export.sima_order import dispatch_formula, dynamic_cases, plan_order

    plan = ExportPlan(
        built.name, built.family, built.facts, built.model,
        **input_spec(req, built.name, built.facts, built.model),
    )  # fmt: skip
    t0 = time.perf_counter()
    plan.x = torch.from_numpy(randn(plan.shape, SEED))
    plan.y, plan.seen = probe(plan.name, plan.model, plan.x)
    timings["probe_s"] = time.perf_counter() - t0
    plan.order = plan_order(plan.model, plan.seen, req.order, req.crossover, req.dynamic)
    if plan.order.runtime_if:
        plan.order.dispatch = dispatch_formula(
            plan.facts, plan.order.layers, plan.shape, req.crossover
        )
        plan.order.info["token_formula"] = plan.order.dispatch["formula"]
    plan.cases = [{"label": "export shape", "inputs": {plan.in_name: randn(plan.shape, SEED)}}]
    if req.dynamic:
        plan.cases += dynamic_cases(plan)
    if plan.facts.builder:
        plan.exporter = "onnx.helper"
    else:
        plan.exporter = choose_exporter(req.opset, req.exporter, plan.order.runtime_if)
    return plan


def _graph(plan: ExportPlan, req: Request, timings: dict[str, float]) -> Any:
    """The graph by the plan's exporter, simplified (census-guarded) unless it was already."""
    from edgeattn.attention.layout import for_integer
    from edgeattn.export.graph import repair_names

    t0 = time.perf_counter()
    # int8: the blocks' integer-GEMM evaluations (an enclosing for_integer() also holds)
    with for_integer() if req.precision.startswith("int8") else contextlib.nullcontext():
        proto, simplify_info = write_graph(plan, req, timings)
    timings["export_s"] = time.perf_counter() - t0 - timings.get("simplify_s", 0.0)
    repair_names(proto)
    if not simplify_info:
        simplify_info = {"applied": False, "reason": "not requested"}
        if req.simplify:
            from edgeattn.export.simplify import simplify_model

            t0 = time.perf_counter()
            proto, simplify_info = simplify_model(proto)
            timings["simplify_s"] = time.perf_counter() - t0
    plan.simplify_info = simplify_info
    repair_names(proto)
    return proto


def _invariants(proto: Any, plan: ExportPlan, opset: int) -> None:
    from edgeattn.export.graph import default_opset, iter_nodes
    from edgeattn.export.naming import has_module_path

    bad = [n.name or n.op_type for n in iter_nodes(proto.graph) if not has_module_path(n.name)]
    if bad:
        raise ExportError(f"internal: nodes without a module path in the final graph: {bad[:5]}")
    got = default_opset(proto)
    if got != opset:
        raise ExportError(
            f"the {plan.exporter} exporter wrote opset {got}, not the {opset} asked; refusing to "
            "write a file with another opset"
        )
    if plan.order.runtime_if and not any(n.op_type == "If" for n in iter_nodes(proto.graph)):
        raise ExportError("internal: order=auto with a dynamic token axis but no If in the graph")


def _audit(proto: Any, plan: ExportPlan, req: Request, timings: dict[str, float]) -> dict:
    from edgeattn.export.audit import audit_model, check_softmax_free

    t0 = time.perf_counter()
    audit = audit_model(proto)
    timings["audit_s"] = time.perf_counter() - t0
    if req.strict_softmax_free:
        check_softmax_free(audit, plan.name, plan.facts.strict_hint)
    return audit


def _verify(proto: Any, data: bytes, plan: ExportPlan, req: Request, timings: dict) -> dict:
    """Checker, shape inference, ORT vs eager PyTorch on every case at the facts' tolerance; with
    a runtime If, each case's branch must be the order eager PyTorch chose."""
    from edgeattn.export.sima_order import check_branches, make_reference
    from edgeattn.export.verify import check_onnx, tolerance_for, verify_runtime

    t0 = time.perf_counter()
    checks = check_onnx(proto)
    reference = make_reference(plan.model, plan.out_name, plan.order.layers, req.crossover)
    tol = tolerance_for(plan.facts.tolerance)
    verification = verify_runtime(data, proto, plan.cases, reference, tol)
    verification.update(checks)
    if plan.order.runtime_if:
        check_branches(verification)
    timings["verify_s"] = time.perf_counter() - t0
    return verification


def _precision(
    proto: Any, data: bytes, audit: dict, plan: ExportPlan, req: Request, timings: dict
) -> tuple[Any, bytes, dict, dict[str, Any]]:
    """fp32: unchanged. Else the converted graph, its census, and its error vs fp32 PyTorch."""
    if req.precision == "fp32":
        return proto, data, audit, {"precision": "fp32"}
    import torch

    from edgeattn.export.audit import audit_model, check_softmax_free
    from edgeattn.export.precision import convert, verify_precision

    t0 = time.perf_counter()
    proto, info = convert(
        proto,
        req.precision,
        keep_fp32=req.keep_fp32,
        in_name=plan.in_name,
        shape=plan.shape,
        calibration=req.calibration,
    )
    data = proto.SerializeToString()
    audit = audit_model(proto)  # the census of the file written (QDQ / integer ops)
    if req.strict_softmax_free:
        check_softmax_free(audit, plan.name)
    timings["precision_s"] = time.perf_counter() - t0
    if req.verify:
        t0 = time.perf_counter()
        model = plan.model

        def fp32_reference(xs: np.ndarray) -> np.ndarray:
            # the model is batch-independent: 16 inputs per forward, not one at a time
            with torch.no_grad():
                return np.concatenate(
                    [model(torch.from_numpy(xs[i : i + 16])).numpy() for i in range(0, len(xs), 16)]
                )

        info["verification"] = verify_precision(
            data,
            reference=fp32_reference,
            in_name=plan.in_name,
            shape=plan.shape,
            precision=req.precision,
            method=plan.facts.method,
            model_name=plan.name,
            classes=not plan.facts.is_tokens,
            allow_degraded=req.allow_degraded,
        )
        timings["precision_verify_s"] = time.perf_counter() - t0
    return proto, data, audit, info


def _write(
    proto: Any,
    data: bytes,
    plan: ExportPlan,
    req: Request,
    dest: Any,
    audit: dict,
    verification: dict | None,
    precision_info: dict,
    timings: dict[str, float],
    t_start: float,
) -> ExportResult:
    """Spec and sidecar, then the file and its sidecar at ``-o`` (and in the cache) atomically."""
    sha = hashlib.sha256(data).hexdigest()
    spec = make_spec(proto, plan, req, dest.key)
    vers = versions()
    timings["total_s"] = time.perf_counter() - t_start
    t0 = time.perf_counter()
    side = sidecar_bytes(
        proto, data, sha, dest.out_path, spec, vers, audit, verification, precision_info, timings
    )
    write_pair(dest.out_path, data, side)
    if dest.cache_path is not None and dest.out_path != dest.cache_path:
        write_pair(dest.cache_path, data, side)
    timings["write_s"] = time.perf_counter() - t0
    return ExportResult(
        path=dest.out_path,
        sidecar_path=sidecar_path(dest.out_path),
        spec=spec,
        audit=audit,
        verification=verification,
        timings=timings,
        cached=False,
        sha256=sha,
        size_bytes=len(data),
        versions=vers,
    )
