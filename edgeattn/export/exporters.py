"""The two torch exporters behind :func:`edgeattn.export.onnx.export_onnx`, and the SimA order
dispatcher that splices two fixed-order TorchScript exports under one ONNX ``If``."""

from __future__ import annotations

import io
import logging
import warnings
from typing import Any

from edgeattn.errors import ExportError
from edgeattn.export._capture import captured_fds

DISPATCH_SCOPE = "/order_dispatch"


def _first_line(exc: BaseException, limit: int = 300) -> str:
    s = str(exc).strip().splitlines()
    return (s[0] if s else type(exc).__name__)[:limit]


def wrap_export_error(exc: Exception, opset: int, exporter: str) -> ExportError:
    msg = _first_line(exc, 500).split(" [Caused by")[0]
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


def dispatch_formula(
    model: Any, is_block: bool, sima: list[dict[str, Any]], shape: tuple[int, ...], crossover
) -> dict[str, Any]:
    """How the token count N of the SimA layers follows from the input shape."""
    from edgeattn.attention.order import order_threshold

    toks = {s["tokens"] for s in sima}
    hds = {s["head_dim"] for s in sima}
    if len(toks) != 1 or len(hds) != 1:
        raise ExportError(
            "order=auto with a dynamic token axis needs every SimA layer to see the same token "
            f"count and head dim (got tokens {sorted(toks)}, head dims {sorted(hds)}); "
            "use --order qk_first/kv_first or a static shape"
        )
    n = toks.pop()
    thr = order_threshold(hds.pop(), crossover)
    if is_block:
        if n != shape[1]:
            raise ExportError(f"internal: SimA saw {n} tokens for an input of {shape[1]}")
        return {"kind": "block", "threshold": thr, "formula": "N = x.shape[1]"}
    H, W = shape[2], shape[3]
    cfg = getattr(model, "config", None)
    cands = [getattr(cfg, "patch_size", None)] + [4, 8, 14, 16, 32, 1, 2]
    for p in cands:
        if not isinstance(p, int) or p <= 0 or H % p or W % p:
            continue
        extra = n - (H // p) * (W // p)
        if 0 <= extra <= 2:
            return {
                "kind": "net",
                "patch": p,
                "extra": extra,
                "threshold": thr,
                "formula": f"N = (H//{p})*(W//{p})" + (f" + {extra}" if extra else ""),
            }
    raise ExportError(
        f"cannot relate the SimA token count {n} to the image {H}x{W}; use --order or --static"
    )


def splice_orders(branches: list[tuple[str, Any]], dispatch: dict[str, Any], in_name: str) -> Any:
    from onnx import TensorProto, helper

    from edgeattn.export.graph import splice_if

    def const(name: str, v: int) -> Any:
        return helper.make_tensor(name, TensorProto.INT64, [], [int(v)])

    s = DISPATCH_SCOPE
    p = "order_dispatch/"
    nodes = [helper.make_node("Shape", [in_name], [p + "shape"], name=f"{s}/Shape")]
    inits = [const(p + "threshold", dispatch["threshold"])]
    if dispatch["kind"] == "block":
        inits.append(const(p + "axis_tokens", 1))
        nodes.append(
            helper.make_node(
                "Gather",
                [p + "shape", p + "axis_tokens"],
                [p + "tokens"],
                name=f"{s}/Gather",
                axis=0,
            )
        )
    else:
        inits += [
            const(p + "axis_h", 2),
            const(p + "axis_w", 3),
            const(p + "patch", dispatch["patch"]),
            const(p + "extra", dispatch["extra"]),
        ]
        nodes += [
            helper.make_node(
                "Gather", [p + "shape", p + "axis_h"], [p + "h"], name=f"{s}/Gather", axis=0
            ),
            helper.make_node(
                "Gather", [p + "shape", p + "axis_w"], [p + "w"], name=f"{s}/Gather_1", axis=0
            ),
            helper.make_node("Div", [p + "h", p + "patch"], [p + "hp"], name=f"{s}/Div"),
            helper.make_node("Div", [p + "w", p + "patch"], [p + "wp"], name=f"{s}/Div_1"),
            helper.make_node("Mul", [p + "hp", p + "wp"], [p + "grid"], name=f"{s}/Mul"),
            helper.make_node("Add", [p + "grid", p + "extra"], [p + "tokens"], name=f"{s}/Add"),
        ]
    nodes.append(
        helper.make_node(
            "Less", [p + "tokens", p + "threshold"], [p + "use_qk_first"], name=f"{s}/Less"
        )
    )
    return splice_if(branches, nodes, inits, p + "use_qk_first", f"{s}/If")
