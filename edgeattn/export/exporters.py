"""The graph writers behind :func:`edgeattn.export.onnx.export_onnx`: the two torch exporters
(TorchScript, dynamo), a builder named by the model's export facts (a hand-written graph), and
:func:`write_graph`, which runs the plan's exporter with its fallbacks. The SimA order ``If`` is
built in :mod:`edgeattn.export.sima_order`."""

from __future__ import annotations

import io
import logging
import warnings
from typing import Any

from edgeattn.errors import ExportError
from edgeattn.export._capture import captured_fds
from edgeattn.export.util import first_line


def wrap_export_error(exc: Exception, opset: int, exporter: str) -> ExportError:
    msg = first_line(exc, 500).split(" [Caused by")[0]
    msg = msg.replace(
        " Please feel free to request support or submit a pull request on PyTorch GitHub: "
        "https://github.com/pytorch/pytorch/issues",
        "",
    )
    try:
        from torch.onnx.errors import UnsupportedOperatorError

        if isinstance(exc, UnsupportedOperatorError):
            return ExportError(f"opset {opset}: {msg}", hint="ask for a newer opset with --opset")
    except Exception:  # pragma: no cover
        pass
    return ExportError(f"{exporter} export failed at opset {opset}: {type(exc).__name__}: {msg}")


def export_torchscript(
    model: Any,
    example: Any,
    opset: int,
    in_name: str,
    out_name: str,
    dyn_axes: dict[int, str],
    out_dyn_axes: dict[int, str],
) -> Any:
    import onnx
    import torch

    buf = io.BytesIO()
    dynamic_axes = {in_name: dict(dyn_axes), out_name: dict(out_dyn_axes)} if dyn_axes else None
    try:
        with warnings.catch_warnings(), torch.no_grad(), captured_fds():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                buf,
                dynamo=False,
                opset_version=opset,
                input_names=[in_name],
                output_names=[out_name],
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
    except Exception as exc:
        raise wrap_export_error(exc, opset, "TorchScript") from exc
    return onnx.load_from_string(buf.getvalue())


class Specialized(Exception):
    pass


def export_dynamo(
    model: Any,
    example: Any,
    opset: int,
    in_name: str,
    out_name: str,
    dyn_axes: dict[int, str],
    out_dyn_axes: dict[int, str],
) -> Any:
    import torch
    from torch.export import Dim

    from edgeattn.export.graph import rename_from_torch_metadata

    dynamic_shapes = ({k: Dim.AUTO for k in dyn_axes},) if dyn_axes else None
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), torch.no_grad(), captured_fds():
            warnings.simplefilter("ignore")
            prog = torch.onnx.export(
                model,
                (example,),
                None,
                dynamo=True,
                opset_version=opset,
                input_names=[in_name],
                output_names=[out_name],
                dynamic_shapes=dynamic_shapes,
                verbose=False,
                report=False,
                verify=False,
            )
    except Exception as exc:
        raise wrap_export_error(exc, opset, "dynamo") from exc
    finally:
        for lg, lv in zip(loggers, levels, strict=True):
            lg.setLevel(lv)
    proto = prog.model_proto
    # dimension names: ours instead of torch.export's s0, s1 ...
    for vi, axes in ((proto.graph.input[0], dyn_axes), (proto.graph.output[0], out_dyn_axes)):
        dims = vi.type.tensor_type.shape.dim
        for k, name in axes.items():
            if k < len(dims):
                if dims[k].HasField("dim_value") and vi is proto.graph.input[0]:
                    raise Specialized(
                        f"torch.export specialised axis {name!r} to {dims[k].dim_value}: the "
                        "model turns that size into a Python constant"
                    )
                dims[k].ClearField("dim_value")
                dims[k].dim_param = name

    def tags(node: Any) -> tuple[str, str]:
        meta = {p.key: p.value for p in node.metadata_props}
        if "SimA" in meta.get("pkg.torch.onnx.class_hierarchy", ""):
            return "qk_first", "kv_first"  # SimA.attend: torch.cond(N < thr, qk_first, kv_first)
        return "then", "else"

    rename_from_torch_metadata(proto, tags)
    _strip_node_metadata(proto)
    return proto


def _strip_node_metadata(proto: Any) -> None:
    """The dynamo exporter stores stack traces (local file paths) on every node; drop them."""
    from edgeattn.export.graph import iter_nodes

    for n in iter_nodes(proto.graph):
        del n.metadata_props[:]


def run_builder(plan: Any, opset: int, batch: int, dynamic: bool) -> tuple[Any, dict[str, Any]]:
    """The hand-written graph of ``plan.facts.builder`` (``"module:function"``)."""
    import importlib

    mod, _, fn = plan.facts.builder.partition(":")
    build = getattr(importlib.import_module(mod), fn)
    return build(plan.model, opset=opset, batch=batch, dynamic=dynamic)


def write_graph(plan: Any, req: Any, timings: dict[str, float]) -> tuple[Any, dict[str, Any]]:
    """The ONNX graph of ``plan`` by its exporter, falling back where the other one can write
    the opset (recorded in ``plan.notes``); returns it and the simplify facts when the path
    simplified on its own (the two-branch If), else ``{}``."""
    import torch

    from edgeattn.export.plan import DYNAMO_MIN_OPSET, TORCHSCRIPT_MAX_OPSET
    from edgeattn.export.util import SEED, randn

    opset, order = req.opset, plan.order
    if plan.exporter == "onnx.helper":
        proto, info = run_builder(plan, opset, req.batch, req.dynamic)
        order.info["implementation"] = info.get("implementation")
        plan.extra_spec = dict(info.get("spec") or {})
        return proto, {"applied": False, "reason": "hand-built graph, nothing to simplify"}
    example = plan.x
    if req.dynamic and req.batch == 1:
        # torch.export specialises a size-1 dim; trace with batch 2 to keep the batch symbolic
        example = torch.from_numpy(randn((2, *plan.shape[1:]), SEED))
    names = (plan.in_name, plan.out_name, plan.dyn_axes, plan.out_dyn)
    if plan.exporter == "dynamo":
        try:
            proto = export_dynamo(plan.model, example, opset, *names)
            if order.runtime_if:
                order.info["implementation"] = "dynamo torch.cond: one If per SimA layer"
            return proto, {}
        except (ExportError, Specialized) as exc:
            if req.exporter == "dynamo" or opset > TORCHSCRIPT_MAX_OPSET:
                raise ExportError(str(exc)) from None
            plan.notes.append(f"dynamo export failed, fell back to TorchScript: {first_line(exc)}")
            plan.exporter = "torchscript"
    if order.runtime_if:
        from edgeattn.export.sima_order import export_both_orders, splice_orders

        branches, sinfo = export_both_orders(
            plan.model,
            req.crossover,
            lambda m: export_torchscript(m, example, opset, *names),
            req.simplify,
            timings,
        )
        order.info["implementation"] = (
            "TorchScript twice (qk_first, kv_first) spliced under one If on the token count"
        )
        return splice_orders(branches, order.dispatch, plan.in_name), sinfo
    try:
        return export_torchscript(plan.model, example, opset, *names), {}
    except ExportError as exc:
        if req.exporter != "auto" or opset < DYNAMO_MIN_OPSET:
            if opset < DYNAMO_MIN_OPSET and exc.hint is None:
                exc.hint = (
                    f"the dynamo exporter may export it at opset {DYNAMO_MIN_OPSET} or "
                    f"newer (--opset {DYNAMO_MIN_OPSET})"
                )
            raise
        plan.notes.append(f"TorchScript export failed, used dynamo: {exc}")
        plan.exporter = "dynamo"
        return export_dynamo(plan.model, example, opset, *names), {}
