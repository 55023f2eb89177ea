"""Precision variants of a verified float32 export: fp16, int8 (dynamic), int8 (static, QDQ).

Built on the ecosystem's own tools, no hand-written graph rewriting of the arithmetic:

* ``fp16``: ``onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True)``: the
  file takes and returns float32 (a drop-in for the fp32 file), everything inside is float16
  except the nodes kept in float32 (below) and the converter's own op block list.
* ``int8-dynamic``: ``onnxruntime.quantization.quantize_dynamic``: int8 weights, activations
  quantised at run time (DynamicQuantizeLinear + MatMulInteger/ConvInteger).
* ``int8-static``: ``quant_pre_process`` then ``quantize_static`` in QDQ format
  (QuantizeLinear/DequantizeLinear pairs around each quantised op, so ORT fuses them into
  integer kernels where it has them and the file stays readable by every backend), u8
  activations / s8 per-tensor weights, MinMax calibration on a reproducible, seeded input
  source (standard normal, seed :data:`CALIBRATION_SEED`, distinct from the verification
  inputs' seed), or on a directory of images (``calibration=DIR``, ImageNet normalisation).
  A weight-on-the-left MatMul is rewritten activation-first beforehand (ORT's QLinearMatMul takes uint8 x
  int8 only: ``precision_convert.activation_first_matmuls``). ``int8-static:<recipe>`` picks
  another quantiser recipe (``per_channel``, ``matmuls``, ``entropy``, ``percentile``:
  :data:`INT8_RECIPES`; compared in ``benchmarks/int8_recipes.py``).

**Kept in float32** (fp16: the converter's ``node_block_list``; int8: ``nodes_to_exclude``):
named node groups found by graph pattern, not by class names (see :data:`GROUPS`). Which group
each precision excludes by default is :data:`DEFAULT_KEEP_FP32`, decided by measurement (figures
in the comments there: exports with ``keep_fp32="none"`` vs each group); ``keep_fp32=`` /
``--keep-fp32`` overrides it (``none`` or a comma list of group names).

**Verification** (:func:`verify_precision`): the converted file in ONNX Runtime against the
float32 PyTorch model on the same seeded inputs (:data:`SAMPLES_NET` images for nets, so
top-1 / top-5 agreement mean something; :data:`SAMPLES_BLOCK` for single blocks): max abs and
relative error, cosine similarity per sample (mean and min), top-1 / top-5 agreement. Each
precision has named tolerances (:data:`PRECISION_TOLERANCES`) with their reasons; exceeding one
raises :class:`~edgeattn.errors.ToleranceError` (one line) unless ``allow_degraded``, which
writes the file and records the figures with ``degraded: true``. Models are random-init unless a
checkpoint is given: the agreement figures then say how much the precision perturbs *this*
network, not ImageNet accuracy (which needs real weights and images).

**Where**: this module holds the precision names and :func:`convert`, the entry point, and
re-exports the rest: the node groups and the keep-fp32 policy
(:mod:`~edgeattn.export.precision_groups`), the seeded inputs and the fp16 / int8 tools
(:mod:`~edgeattn.export.precision_convert`), the tolerances, verification and summary
(:mod:`~edgeattn.export.precision_verify`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import onnx

from edgeattn.errors import ExportError
from edgeattn.export.precision_convert import (
    CALIBRATION_SAMPLES,
    CALIBRATION_SEED,
    FP16_L1_FLOOR,
    IMAGE_SUFFIXES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INT8_RECIPES,
    VERIFY_SEED,
    QuantSettings,
    image_inputs,
    seeded_inputs,
    to_fp16,
    to_int8,
)
from edgeattn.export.precision_groups import (
    CLS_TAIL_MAX_SHARE,
    DEFAULT_KEEP_FP32,
    GROUPS,
    group_cls_tail,
    group_sima_l1,
    group_soft_newton,
    group_softmax,
    resolve_keep_fp32,
    select_nodes,
)
from edgeattn.export.precision_verify import (
    METHOD_TOLERANCES,
    PRECISION_TOLERANCES,
    SAMPLES_BLOCK,
    SAMPLES_NET,
    TOL_FP16,
    TOL_FP32,
    TOL_INT8_DYNAMIC,
    TOL_INT8_STATIC,
    PrecisionTolerance,
    check_tolerance,
    metrics,
    precision_summary,
    precision_tolerance,
    run_ort,
    verify_precision,
)

__all__ = [
    "CALIBRATION_SAMPLES",
    "CALIBRATION_SEED",
    "CLS_TAIL_MAX_SHARE",
    "DEFAULT_KEEP_FP32",
    "FP16_L1_FLOOR",
    "GROUPS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_SUFFIXES",
    "INT8_RECIPES",
    "METHOD_TOLERANCES",
    "PRECISIONS",
    "PRECISION_TOLERANCES",
    "SAMPLES_BLOCK",
    "SAMPLES_NET",
    "TOL_FP16",
    "TOL_FP32",
    "TOL_INT8_DYNAMIC",
    "TOL_INT8_STATIC",
    "VERIFY_SEED",
    "PrecisionTolerance",
    "RECIPE_SEP",
    "QuantSettings",
    "check_precision",
    "check_tolerance",
    "convert",
    "group_cls_tail",
    "group_sima_l1",
    "group_soft_newton",
    "group_softmax",
    "image_inputs",
    "metrics",
    "parse_precisions",
    "precision_summary",
    "precision_tolerance",
    "resolve_keep_fp32",
    "run_ort",
    "seeded_inputs",
    "select_nodes",
    "split_precision",
    "to_fp16",
    "to_int8",
    "verify_precision",
]

PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static")
#: ``int8-static:<recipe>``: int8-static with another quantiser recipe (:data:`INT8_RECIPES`)
RECIPE_SEP = ":"


def split_precision(precision: str) -> tuple[str, str | None]:
    """``"int8-static:matmuls"`` -> ``("int8-static", "matmuls")``; no recipe -> ``(p, None)``."""
    base, sep, recipe = str(precision).partition(RECIPE_SEP)
    return base, (recipe if sep else None)


def check_precision(precision: object) -> str:
    base, recipe = split_precision(str(precision))
    recipes = [f"int8-static{RECIPE_SEP}{r}" for r in INT8_RECIPES if r != "default"]
    if (
        not isinstance(precision, str)
        or base not in PRECISIONS
        or (recipe is not None and (base != "int8-static" or recipe not in INT8_RECIPES))
    ):
        raise ExportError(
            f"precision={precision!r}; valid: {', '.join(PRECISIONS)}, {', '.join(recipes)}"
        )
    return str(precision)


def parse_precisions(spec: str | Sequence[str] | None) -> list[str]:
    """``"fp32,int8-static"`` -> ``["fp32", "int8-static"]`` (validated, deduplicated)."""
    if spec is None:
        return ["fp32"]
    items = spec.split(",") if isinstance(spec, str) else [s for x in spec for s in x.split(",")]
    out: list[str] = []
    for it in (s.strip() for s in items):
        if it and it not in out:
            out.append(check_precision(it))
    return out or ["fp32"]


def convert(
    model: onnx.ModelProto,
    precision: str,
    *,
    keep_fp32: str | Sequence[str] | None = None,
    in_name: str = "x",
    shape: Sequence[int] = (),
    calibration: str | os.PathLike | None = None,
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The fp32 ``model`` at ``precision``; returns it and the sidecar's ``conversion`` facts."""
    precision = check_precision(precision)
    base, recipe = split_precision(precision)
    groups = resolve_keep_fp32(precision, keep_fp32)
    if base == "fp32":
        return model, {"precision": "fp32", "keep_fp32": []}
    if calibration is not None and base != "int8-static":
        raise ExportError("--calibration applies to --precision int8-static only")
    if base.startswith("int8") and any(n.op_type == "If" for n in model.graph.node):
        # measured: block_sima --dynamic at int8 came out bit-identical to fp32 (error 1e-7)
        raise ExportError(
            f"{precision}: onnxruntime.quantization does not quantise inside ONNX If branches, "
            "and this graph keeps SimA's order choice as a runtime If (order=auto with a "
            "dynamic token axis); the file would be float32 under an int8 name",
            hint="export it with --order qk_first or --order kv_first, or --static",
        )
    t0 = time.perf_counter()
    info: dict[str, Any] = {"precision": precision, "keep_fp32": groups}
    try:
        if base == "fp16":
            sel = select_nodes(model, groups)
            out, facts = to_fp16(model, [n for v in sel.values() for n in v])
            info.update(facts)
            info["kept_nodes"] = {k: len(v) for k, v in sel.items()}
        else:
            counts: dict[str, int] = {}

            def keep(m: onnx.ModelProto) -> list[str]:
                sel = select_nodes(m, groups)
                counts.update({k: len(v) for k, v in sel.items()})
                return [n for v in sel.values() for n in v]

            out, facts, settings, _ = to_int8(
                model, base, keep, in_name, shape, calibration, recipe=recipe or "default"
            )
            info.update(facts)
            info["kept_nodes"] = counts
            info["quantization"] = asdict(settings)
    except ExportError:
        raise
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"{precision} conversion failed: {msg[:300]}") from None
    for k, v in info.get("kept_nodes", {}).items():
        if not v:
            info.setdefault("notes", []).append(f"group {k} matched no node in this graph")
    info["seconds"] = time.perf_counter() - t0
    return out, info
