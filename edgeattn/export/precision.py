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
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeattn.errors import ExportError, ToleranceError

PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8-static")

#: Seeds of the calibration inputs and of the verification batch (different on purpose: a
#: quantiser calibrated on the very inputs it is checked on would look better than it is).
CALIBRATION_SEED = 1234
VERIFY_SEED = 4321
#: Calibration inputs for int8-static (MinMax needs a handful; more only slows the export).
CALIBRATION_SAMPLES = 16
#: Verification batch: >= 64 for image nets (top-1/top-5 agreement over 64 inputs has a
#: resolution of 1.6 points), 8 for single blocks (no classes; error and cosine only).
SAMPLES_NET = 64
SAMPLES_BLOCK = 8

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")

#: fp16: a graph-level safe floor for SimA's l1 clamp. The model's eps (1e-12, F.normalize's)
#: underflows to 0 in float16 (smallest subnormal 6e-8), and an all-zero column then gives
#: 0/0 = NaN. The fp16 graph's Clip min becomes float16's smallest *normal* number (6.1e-5,
#: ``np.finfo(np.float16).tiny``): a column whose l1 sum is below it is numerically zero in
#: float16 anyway, and dividing by a normal number keeps the result exact (0) instead of
#: relying on subnormal arithmetic, which some fp16 units flush to zero.
FP16_L1_FLOOR = float(np.finfo(np.float16).tiny)


# ============================================================================ settings
@dataclass(frozen=True)
class QuantSettings:
    """What shaped an int8 file; recorded in the sidecar and the bench records."""

    format: str
    activation_type: str
    weight_type: str
    per_channel: bool
    reduce_range: bool
    calibrate_method: str | None
    calibration: str | None
    calibration_samples: int | None
    calibration_seed: int | None


def check_precision(precision: object) -> str:
    if precision not in PRECISIONS:
        raise ExportError(f"precision={precision!r}; valid: {', '.join(PRECISIONS)}")
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


# ============================================================================ node groups
def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output if o}


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            if i:
                out.setdefault(i, []).append(n)
    return out


def _scope(name: str) -> str:
    return name.rsplit("/", 1)[0] if "/" in name else ""


def group_sima_l1(model: onnx.ModelProto) -> list[str]:
    """SimA's (and its class attention's) l1 normalisation: ``Clip(reduce(Abs(t)))`` with its
    divisions (see ``edgeattn.attention.sima``): the nodes of each, in the main graph and inside
    If branches (SimA's runtime order dispatch)."""
    from edgeattn.export.graph import iter_graphs

    names: list[str] = []
    for g in iter_graphs(model.graph):
        names += _sima_l1_in(g)
    return names


#: Ops that only move or view a norm between its Clip and the Div that uses it.
_SHAPE_OPS = frozenset({"Reshape", "Transpose", "Unsqueeze", "Squeeze", "Flatten"})


def _token_sum(node: onnx.NodeProto | None, prod: dict[str, onnx.NodeProto]) -> str | None:
    """The Abs output summed over tokens by ``node``: a ReduceSum of it, or the product of a
    ones row with it (``edgeattn.attention.sima.token_l1_norm_flat``); else None."""
    if node is None or node.op_type not in ("ReduceSum", "MatMul"):
        return None
    src = node.input[0] if node.op_type == "ReduceSum" else node.input[-1]
    ab = prod.get(src)
    return ab.name if ab is not None and ab.op_type == "Abs" else None


def _sima_l1_in(g: onnx.GraphProto) -> list[str]:
    prod = _producers(g)
    cons = _consumers(g)
    names: list[str] = []
    for clip in g.node:
        if clip.op_type != "Clip":
            continue
        red = prod.get(clip.input[0])
        ab = _token_sum(red, prod)
        if ab is None:
            continue
        found: list[str] = []
        divs = 0
        stack = [clip.output[0]]
        while stack:  # the divisions by this norm, through reshapes/transposes
            t = stack.pop()
            for c in cons.get(t, []):
                if c.op_type in _SHAPE_OPS:
                    found.append(c.name)
                    stack.append(c.output[0])
                elif c.op_type == "Div" and c.input[1] == t:
                    found.append(c.name)
                    divs += 1
        if divs:
            names += [ab, red.name, clip.name] + found
    return names


def _descendants(starts: list[onnx.NodeProto], cons: dict[str, list[onnx.NodeProto]]) -> set:
    seen: set[str] = set()
    stack = list(starts)
    while stack:
        n = stack.pop()
        for o in n.output:
            for c in cons.get(o, []):
                if c.name not in seen:
                    seen.add(c.name)
                    stack.append(c)
    return seen


def _ancestors(node: onnx.NodeProto, prod: dict[str, onnx.NodeProto]) -> set:
    seen: set[str] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        for i in n.input:
            p = prod.get(i)
            if p is not None and p.name not in seen:
                seen.add(p.name)
                stack.append(p)
    return seen


def group_soft_newton(model: onnx.ModelProto) -> list[str]:
    """SOFT's bottleneck inverse: per SOFT kernel scope, the landmark kernel ``K2 = exp(..)``
    (the Exp that feeds the Newton step size, a ReduceMax) and every node of that scope that
    depends on K2 but not on the token kernel K1: the step size, ``P = K2 + 0.01 I`` and the
    Newton-Raphson iterations (SOFT-Norm: also its ``D^-1/2`` scaling and the halving steps)."""
    g = model.graph
    prod = _producers(g)
    cons = _consumers(g)
    by_scope: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        by_scope.setdefault(_scope(n.name), []).append(n)
    names: list[str] = []
    for nodes in by_scope.values():
        exps = [n for n in nodes if n.op_type == "Exp"]
        rmax = [n for n in nodes if n.op_type == "ReduceMax"]
        if len(exps) < 2 or not rmax:
            continue
        anc = set().union(*(_ancestors(r, prod) for r in rmax))
        k2 = [e for e in exps if e.name in anc]
        k1 = [e for e in exps if e.name not in anc]
        if not k2 or not k1:
            continue
        inv = (_descendants(k2, cons) | {e.name for e in k2}) - _descendants(k1, cons)
        names += [n.name for n in nodes if n.name in inv]
    return names


#: cls_tail matches only a *late* class token (CaiT-style: SimA, XCiT join it after the patch
#: blocks): a tail over this share of the graph's nodes (DeiT's class token joins before every
#: block) would keep the whole net in float32, and the group then matches nothing.
CLS_TAIL_MAX_SHARE = 0.5


def group_cls_tail(model: onnx.ModelProto) -> list[str]:
    """The class-token tail: the ``Concat(cls_token, tokens)`` whose one input depends on no
    graph input *values* (a parameter, expanded by a shape) and every node downstream of it
    (class-attention blocks, final norm, head). The class token rides in tensors whose range
    the patch tokens set; one per-tensor int8 scale for both crushes it, and it is the only
    token the head reads."""
    g = model.graph
    prod = _producers(g)
    cons = _consumers(g)
    inputs = {i.name for i in g.input}
    memo: dict[str, bool] = {}

    def value_free(t: str) -> bool:  # computable from parameters and shapes alone
        if t in memo:
            return memo[t]
        memo[t] = False  # cycle guard (graphs are acyclic; this only bounds the recursion)
        p = prod.get(t)
        if p is None:
            r = t not in inputs
        elif p.op_type == "Shape":
            r = True
        else:
            r = all(value_free(i) for i in p.input if i)
        memo[t] = r
        return r

    names: list[str] = []
    for n in g.node:
        ins = [i for i in n.input if i]
        if n.op_type != "Concat" or len(ins) < 2:
            continue
        free = [value_free(i) for i in ins]
        if not any(free) or all(free):
            continue
        tail = _descendants([n], cons) | {n.name}
        if len(tail) > CLS_TAIL_MAX_SHARE * len(g.node):
            continue  # an early class token (DeiT): not a tail
        names += [x.name for x in g.node if x.name in tail and x.name not in names]
    return names


def group_softmax(model: onnx.ModelProto) -> list[str]:
    """Every Softmax node (the softmax baselines' normalisation; SOFT's stage 4)."""
    return [n.name for n in model.graph.node if n.op_type in ("Softmax", "LogSoftmax")]


#: Node groups that can be kept in float32, by name, each found by a graph pattern.
GROUPS: dict[str, Callable[[onnx.ModelProto], list[str]]] = {
    "sima_l1": group_sima_l1,
    "soft_newton": group_soft_newton,
    "cls_tail": group_cls_tail,
    "softmax": group_softmax,
}

#: Groups kept in float32 by default, per precision: decided by measurement on this project's
#: nets (random init, seeded inputs), error vs the fp32 PyTorch model with and without each
#: group (max rel = max|err| / max|ref|; cos = min per-sample cosine over 64 inputs):
#:
#: * soft_newton, int8-static: soft_tiny@224 none: cos 0.688, max rel 0.78, top-1 81 %;
#:   kept fp32: cos 0.990, max rel 0.13, top-1 92 %, top-5 100 %. The Newton inverse alone
#:   (49 landmarks, ONNX, int8 QDQ vs the fp32 iterate): 0.4 % at cond(K2 + 0.01 I) 1.4,
#:   11 % at cond 2e2, 28 % at 4.4e3. It costs ~0.1 % of the net's FLOPs (m x m matmuls).
#: * soft_newton, fp16: ORT's CPU provider computes it in float32 anyway (casts), but a native
#:   fp16 device does not: torch half arithmetic gives 5e-4 (cond 1.4), 1.5e-3 (2e2),
#:   2.3e-2 (4.4e3) vs the fp32 iterate; trained landmarks cluster (high cond), so it is kept.
#: * cls_tail, int8-static: sima_tiny_12_p16@224 none: cos 0.701, top-1 0 % (16 inputs);
#:   class-token tail fp32 (80 of 660 nodes): cos 0.9999, top-1 100 %, max rel 0.016.
#:   xcit_tiny_12_p16@224: 0.746 -> 0.9995. Narrower sets did not help at 224: the
#:   class-attention Adds only 0.701 (0.62 -> 0.83 on sima_nano@64), all class-attention
#:   nodes 0.692, final norm + head (+ the class-token Gather) 0.703.
#: * sima_l1: not kept: fp16 sima_tiny@224 max rel 8.5e-4 without, 8.9e-4 with; int8-static
#:   identical figures with and without (the l1 output is re-quantised either way). Its
#:   fp16 hazard (eps 1e-12 -> 0) is fixed by the clamp floor instead (FP16_L1_FLOOR).
#: * softmax: not kept: deit_tiny_patch16_224@64 int8-static cos 0.917, top-1 50 % with its
#:   Softmax QDQ'd; 0.625, top-1 20 % with the Softmax kept fp32 (its MatMul consumer then
#:   quantises the probabilities with a calibrated scale instead of the QDQ softmax's).
#: * int8-dynamic quantises weight MatMuls only (activation x activation MatMuls such as
#:   Newton's stay float32 by construction): block_soft identical with and without soft_newton.
DEFAULT_KEEP_FP32: dict[str, tuple[str, ...]] = {
    "fp32": (),
    "fp16": ("soft_newton",),
    "int8-dynamic": (),
    "int8-static": ("soft_newton", "cls_tail"),
}


def resolve_keep_fp32(precision: str, keep_fp32: str | Sequence[str] | None) -> list[str]:
    """``None``/``"auto"``: the precision's default groups; ``"none"``: none; else a list."""
    if keep_fp32 is None or keep_fp32 == "auto":
        return list(DEFAULT_KEEP_FP32[precision])
    items = keep_fp32.split(",") if isinstance(keep_fp32, str) else list(keep_fp32)
    items = [s.strip() for s in items if s and s.strip()]
    if items == ["none"]:
        return []
    bad = [s for s in items if s not in GROUPS]
    if bad:
        raise ExportError(
            f"--keep-fp32 {bad[0]!r}: unknown node group; valid: auto, none, {', '.join(GROUPS)}"
        )
    return items


def select_nodes(model: onnx.ModelProto, groups: Sequence[str]) -> dict[str, list[str]]:
    return {gname: GROUPS[gname](model) for gname in groups}


# ============================================================================ inputs
def seeded_inputs(shape: Sequence[int], count: int, seed: int) -> list[np.ndarray]:
    """``count`` standard-normal float32 arrays of ``shape`` from one seeded generator."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(shape)).astype(np.float32) for _ in range(count)]


def image_inputs(directory: str | os.PathLike, shape: Sequence[int], count: int) -> list:
    """Images of ``directory`` (sorted by name, at most ``count``) as (B, 3, H, W) float32
    batches of the export shape: shorter side resized to fit, centre crop, ImageNet mean/std."""
    d = Path(directory)
    if not d.is_dir():
        raise ExportError(f"--calibration {str(d)!r} is not a directory of images")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ExportError(f"--calibration {str(d)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    try:
        from PIL import Image
    except ImportError:
        raise ExportError(
            "--calibration DIR needs Pillow to read images", hint="pip install pillow"
        ) from None
    _, c, h, w = shape
    if c != 3:
        raise ExportError(f"--calibration images are RGB, the model takes {c} channels")
    mean = np.asarray(IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.asarray(IMAGENET_STD, np.float32)[:, None, None]
    out = []
    for p in files[:count]:
        try:
            im = Image.open(p).convert("RGB")
        except Exception as exc:
            raise ExportError(f"cannot read calibration image {str(p)!r}: {exc}") from None
        s = max(h / im.height, w / im.width)
        im = im.resize((max(w, round(im.width * s)), max(h, round(im.height * s))))
        left, top = (im.width - w) // 2, (im.height - h) // 2
        im = im.crop((left, top, left + w, top + h))
        a = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0
        out.append(((a - mean) / std)[None].astype(np.float32))
    b = int(shape[0])
    if b > 1:  # the export's batch: consecutive images, one batch per calibration input
        if len(out) < b:
            raise ExportError(f"--calibration {str(d)!r}: {len(out)} image(s) for a batch of {b}")
        out = [np.concatenate(out[i : i + b]) for i in range(0, len(out) - b + 1, b)]
    return out


class _Reader:
    """A ``CalibrationDataReader`` over a list of arrays (ORT duck-types get_next/rewind)."""

    def __init__(self, in_name: str, arrays: list[np.ndarray]) -> None:
        self.in_name, self.arrays = in_name, arrays
        self._it: Iterator[np.ndarray] = iter(arrays)

    def get_next(self) -> dict[str, np.ndarray] | None:
        a = next(self._it, None)
        return None if a is None else {self.in_name: a}

    def rewind(self) -> None:
        self._it = iter(self.arrays)


# ============================================================================ conversion
def _fp16_floor_l1(model: onnx.ModelProto) -> int:
    """Raise the min of every fp16 l1 Clip (SimA) to :data:`FP16_L1_FLOOR`; return how many."""
    from onnx import numpy_helper

    from edgeattn.export.graph import iter_graphs

    graphs = list(iter_graphs(model.graph))
    prod: dict[str, onnx.NodeProto] = {}
    inits: dict[str, onnx.TensorProto] = {}
    for g in graphs:  # outer-scope names are visible inside If branches
        prod.update(_producers(g))
        inits.update({t.name: t for t in g.initializer})
    count = 0
    for g in graphs:
        l1 = set(_sima_l1_in(g))
        for n in g.node:
            if n.name not in l1 or n.op_type != "Clip" or len(n.input) < 2 or not n.input[1]:
                continue
            src = n.input[1]
            t = inits.get(src)
            if t is None and src in prod and prod[src].op_type == "Constant":
                t = next((a.t for a in prod[src].attribute if a.name == "value"), None)
            if t is None or t.data_type != onnx.TensorProto.FLOAT16:
                continue  # kept in float32 (sima_l1 excluded): the model's eps is representable
            v = numpy_helper.to_array(t)
            if float(v.max()) < FP16_L1_FLOOR:
                # a fresh constant in this graph (the old one may be shared with other nodes)
                new = onnx.helper.make_node(
                    "Constant",
                    [],
                    [f"{n.name}_fp16_floor"],
                    name=f"{n.name}_fp16_floor",
                    value=numpy_helper.from_array(
                        np.asarray(FP16_L1_FLOOR, np.float16).reshape(v.shape)
                    ),
                )
                g.node.insert(list(g.node).index(n), new)
                n.input[1] = new.output[0]
                count += 1
    return count


def to_fp16(model: onnx.ModelProto, keep_nodes: Sequence[str]) -> tuple[onnx.ModelProto, dict]:
    # min_positive_val: the converter clamps tiny constants to it; 6e-8 (fp16's smallest
    # subnormal) rather than its 1e-7 default so no constant is changed more than rounding
    # needs (the l1 clamp gets its explicit floor below, not this side effect).
    import warnings

    from onnxconverter_common import float16

    # Cast(to=float) nodes of the traced graph (DeiT has one) keep their `to` through the
    # converter, whose output then fails ORT's type check (float16 declared, float produced):
    # block them, so the converter wraps them in casts instead
    casts = [
        n.name
        for n in model.graph.node
        if n.op_type == "Cast"
        and any(a.name == "to" and a.i == onnx.TensorProto.FLOAT for a in n.attribute)
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the float32 number .. will be truncated": expected
        out = float16.convert_float_to_float16(
            model,
            min_positive_val=float(np.float16(2**-24)),
            max_finite_val=float(np.finfo(np.float16).max),
            keep_io_types=True,
            node_block_list=list(keep_nodes) + casts,
        )
    floored = _fp16_floor_l1(out)
    return out, {
        "tool": "onnxconverter_common.float16.convert_float_to_float16",
        "keep_io_types": True,
        "l1_clamp_floor": FP16_L1_FLOOR if floored else None,
        "l1_clamps_floored": floored,
    }


def _quant_settings(precision: str, calibration: str | None, samples: int) -> QuantSettings:
    if precision == "int8-dynamic":
        return QuantSettings(
            format="dynamic (DynamicQuantizeLinear + integer ops)",
            activation_type="uint8 (dynamic, per tensor)",
            weight_type="int8",
            per_channel=False,
            reduce_range=False,
            calibrate_method=None,
            calibration=None,
            calibration_samples=None,
            calibration_seed=None,
        )
    return QuantSettings(
        format="QDQ",
        activation_type="uint8",
        weight_type="int8",
        # per tensor: ORT's CPU QLinearMatMul (what DQ->MatMul->Q fuses into) rejects
        # per-channel weight zero points for (K, N) weights ("weight zero point must be a
        # scalar ..."; measured on deit_tiny_patch16_224)
        per_channel=False,
        reduce_range=False,
        calibrate_method="MinMax",
        calibration=str(calibration) if calibration else "seeded standard normal",
        calibration_samples=samples,
        calibration_seed=None if calibration else CALIBRATION_SEED,
    )


def to_int8(
    model: onnx.ModelProto,
    precision: str,
    keep: Callable[[onnx.ModelProto], list[str]],
    in_name: str,
    shape: Sequence[int],
    calibration: str | os.PathLike | None,
) -> tuple[onnx.ModelProto, dict, QuantSettings, list[str]]:
    """(quantised model, info, settings, excluded node names) via onnxruntime.quantization."""
    import logging

    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
    with tempfile.TemporaryDirectory(prefix="edgeattn-quant-") as td:
        src = Path(td) / "fp32.onnx"
        pre = Path(td) / "pre.onnx"
        dst = Path(td) / "int8.onnx"
        onnx.save(model, str(src))
        notes = []
        try:
            # symbolic shape inference, as ORT recommends; its ORT-optimisation step is skipped:
            # it renames fused nodes (MatMulAddFusion, gemm_input_reshape), losing the module
            # paths the audit and the per-block profile rely on
            quant_pre_process(str(src), str(pre), skip_optimization=True)
        except Exception as exc:
            notes.append(f"quant_pre_process failed, quantising the plain graph: {exc}")
            pre = src
        prepared = onnx.load(str(pre))
        excluded = keep(prepared)
        if precision == "int8-dynamic":
            settings = _quant_settings(precision, None, 0)
            quantize_dynamic(
                str(pre),
                str(dst),
                weight_type=QuantType.QInt8,
                per_channel=False,
                reduce_range=False,
                # MatMul only (ORT's advice for transformers): its dynamic Conv quantiser
                # needs initializer weights, and SimA's patch embedding conv (BatchNorm folded
                # by onnxsim) has computed ones ("Expected .. to be an initializer")
                op_types_to_quantize=["MatMul"],
                nodes_to_exclude=excluded,
            )
        else:
            if calibration is not None:
                arrays = image_inputs(calibration, shape, CALIBRATION_SAMPLES)
            else:
                arrays = seeded_inputs(shape, CALIBRATION_SAMPLES, CALIBRATION_SEED)
            settings = _quant_settings(precision, calibration, len(arrays))
            quantize_static(
                str(pre),
                str(dst),
                _Reader(in_name, arrays),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=settings.per_channel,
                reduce_range=False,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=excluded,
                extra_options={"CalibTensorRangeSymmetric": False},
            )
        out = onnx.load(str(dst))
    tool = "onnxruntime.quantization." + (
        "quantize_dynamic" if precision == "int8-dynamic" else "quantize_static"
    )
    return (
        out,
        {"tool": tool, "pre_process": "quant_pre_process", "notes": notes},
        settings,
        excluded,
    )


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
    groups = resolve_keep_fp32(precision, keep_fp32)
    if precision == "fp32":
        return model, {"precision": "fp32", "keep_fp32": []}
    if calibration is not None and precision != "int8-static":
        raise ExportError("--calibration applies to --precision int8-static only")
    if precision.startswith("int8") and any(n.op_type == "If" for n in model.graph.node):
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
        if precision == "fp16":
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

            out, facts, settings, _ = to_int8(model, precision, keep, in_name, shape, calibration)
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


# ============================================================================ verification
@dataclass(frozen=True)
class PrecisionTolerance:
    """Bounds for a converted file against the float32 PyTorch model (over the seeded batch).

    ``max_rel``: max|out - ref| / max|ref| over all samples; ``min_cosine``: the smallest
    per-sample cosine similarity; ``min_top1``: top-1 agreement (image nets only)."""

    name: str
    max_rel: float
    min_cosine: float
    min_top1: float | None = None


#: fp32: the file is the verified fp32 export; these only restate export's TOL_* bounds.
TOL_FP32 = PrecisionTolerance("TOL_FP32", max_rel=1e-3, min_cosine=0.99999, min_top1=1.0)
#: fp16: 11-bit mantissa (rounding 4.9e-4 relative) through ~12 blocks of LayerNorm + GEMMs:
#: measured max rel (see DEFAULT_KEEP_FP32 figures) stays below 1e-2; 3e-2 leaves room for
#: other inputs, and a graph with a NaN or a dropped constant is off by O(1) and fails.
TOL_FP16 = PrecisionTolerance("TOL_FP16", max_rel=3e-2, min_cosine=0.999, min_top1=0.9)
#: int8: 8-bit activations carry ~0.4 % of a tensor's range per step, and one per-tensor scale
#: serves values of very different sizes. Measured (random init, default keep_fp32, min cosine
#: / max rel over the seeded batch, benchmarks/precision_table.py): int8-static sima_tiny@224
#: 0.9999 / 0.016, xcit_tiny 0.9995 / 0.035, soft_tiny 0.99 / 0.12, deit_tiny 0.876 / 0.53
#: (its QDQ softmax), SimA and SOFT blocks >= 0.9995; the softmax block 0.991 at N=196 but
#: 0.785 at N=1024 (probabilities ~1/N under the u8 step 1/256: the int8 softmax cliff, which
#: this bound reports as degraded) and 0.804 at 4096; int8-dynamic >= 0.9987 everywhere. The
#: bounds (cosine >= 0.8, max rel <= 1) fail a broken quantisation (soft_tiny with its Newton
#: inverse in int8: 0.69; class-token nets without cls_tail: 0.70; NaN; saturation) and that
#: cliff, not the ordinary int8 loss, which the sidecar records.
TOL_INT8_DYNAMIC = PrecisionTolerance("TOL_INT8_DYNAMIC", max_rel=1.0, min_cosine=0.8)
TOL_INT8_STATIC = PrecisionTolerance("TOL_INT8_STATIC", max_rel=1.0, min_cosine=0.8)

PRECISION_TOLERANCES: dict[str, PrecisionTolerance] = {
    "fp32": TOL_FP32,
    "fp16": TOL_FP16,
    "int8-dynamic": TOL_INT8_DYNAMIC,
    "int8-static": TOL_INT8_STATIC,
}
#: Per (precision, method) overrides, each with its reason.
METHOD_TOLERANCES: dict[tuple[str, str], PrecisionTolerance] = {}


def precision_tolerance(precision: str, method: str) -> PrecisionTolerance:
    return METHOD_TOLERANCES.get((precision, method), PRECISION_TOLERANCES[precision])


def metrics(outs: np.ndarray, refs: np.ndarray, classes: bool) -> dict[str, Any]:
    """Error figures of ``outs`` against ``refs`` (both (S, ...), one row per sample)."""
    o = np.asarray(outs, np.float64).reshape(len(outs), -1)
    r = np.asarray(refs, np.float64).reshape(len(refs), -1)
    finite = bool(np.isfinite(o).all())
    diff = np.abs(o - r)
    ref_max = float(np.abs(r).max()) if r.size else 0.0
    max_abs = float(diff.max()) if finite else float("inf")
    on = np.linalg.norm(o, axis=1)
    rn = np.linalg.norm(r, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (o * r).sum(axis=1) / np.maximum(on * rn, 1e-30)
    cos = np.where(np.isfinite(cos), cos, -1.0)
    m: dict[str, Any] = {
        "samples": int(len(o)),
        "finite": finite,
        "max_abs": max_abs,
        "max_rel": max_abs / ref_max if ref_max > 0 else max_abs,
        "mean_abs": float(diff.mean()) if finite else float("inf"),
        "ref_max_abs": ref_max,
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
    }
    if classes and o.shape[1] >= 5:
        top1_ref = r.argmax(axis=1)
        top1 = o.argmax(axis=1)
        top5 = np.argsort(-o, axis=1)[:, :5]
        ref5 = np.argsort(-r, axis=1)[:, :5]
        m["top1_agreement"] = float((top1 == top1_ref).mean())
        # top-5: the fp32 model's top-1 class is among the converted model's top 5
        m["top5_agreement"] = float((top5 == top1_ref[:, None]).any(axis=1).mean())
        m["top5_overlap"] = float(
            np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top5, ref5, strict=True)])
        )
    return m


def check_tolerance(m: dict[str, Any], tol: PrecisionTolerance) -> list[str]:
    """The failed bounds, as short phrases (empty: passed)."""
    bad = []
    if not m["finite"]:
        bad.append("non-finite outputs")
    if m["max_rel"] > tol.max_rel:
        bad.append(f"max rel error {m['max_rel']:.3g} > {tol.max_rel:g}")
    if m["cosine_min"] < tol.min_cosine:
        bad.append(f"min cosine {m['cosine_min']:.4f} < {tol.min_cosine:g}")
    if tol.min_top1 is not None and "top1_agreement" in m and m["top1_agreement"] < tol.min_top1:
        bad.append(f"top-1 agreement {m['top1_agreement']:.3f} < {tol.min_top1:g}")
    return bad


def run_ort(model_bytes: bytes, in_name: str, inputs: list[np.ndarray]) -> np.ndarray:
    from edgeattn.export.verify import ort_session

    sess = ort_session(model_bytes)
    out = sess.get_outputs()[0].name
    return np.concatenate([sess.run([out], {in_name: x})[0] for x in inputs])


def verify_precision(
    model_bytes: bytes,
    *,
    reference: Callable[[np.ndarray], np.ndarray],
    in_name: str,
    shape: Sequence[int],
    precision: str,
    method: str,
    model_name: str,
    classes: bool,
    allow_degraded: bool = False,
    samples: int | None = None,
) -> dict[str, Any]:
    """Figures of the converted file vs ``reference`` (fp32 PyTorch, (S, ...) in -> out)."""
    t0 = time.perf_counter()
    n = samples or (SAMPLES_NET if classes else SAMPLES_BLOCK)
    inputs = seeded_inputs(shape, n, VERIFY_SEED)
    outs = run_ort(model_bytes, in_name, inputs)
    refs = reference(np.concatenate(inputs))
    m = metrics(outs, refs, classes)
    tol = precision_tolerance(precision, method)
    bad = check_tolerance(m, tol)
    res = {
        "reference": "float32 PyTorch model, same inputs",
        "inputs": f"{n} seeded standard-normal inputs (seed {VERIFY_SEED}) of shape {list(shape)}",
        "weights_caveat": "random-init weights unless a checkpoint was loaded: agreement says "
        "how much the precision perturbs this network, not its ImageNet accuracy",
        **m,
        "tolerance": asdict(tol),
        "failed": bad,
        "passed": not bad,
        "degraded": bool(bad),
        "seconds": time.perf_counter() - t0,
    }
    if bad and not allow_degraded:
        err = ToleranceError(
            f"{model_name} at {precision} is outside {tol.name}: {'; '.join(bad)} "
            f"(vs fp32 PyTorch over {n} seeded inputs)",
            hint="pass --allow-degraded to write it anyway with the figures recorded, or "
            "--keep-fp32 GROUPS to keep fragile nodes in float32",
        )
        err.verification = res  # type: ignore[attr-defined]
        raise err
    return res


# ============================================================================ report
def precision_summary(sidecar: dict[str, Any]) -> str:
    """Lines for ``edgeattn export``: the conversion, what stayed fp32, the figures vs fp32."""
    p = sidecar.get("precision") or {}
    prec = p.get("precision", "fp32")
    lines = []
    kept = p.get("kept_nodes") or {}
    keep = ", ".join(f"{k} ({v} nodes)" for k, v in kept.items()) or "none"
    q = p.get("quantization") or {}
    qs = ""
    if q:
        qs = (
            f"; {q['format']}, activations {q['activation_type']}, weights {q['weight_type']}"
            f"{' per channel' if q.get('per_channel') else ''}"
            + (
                f", calibration {q['calibration']} ×{q['calibration_samples']}"
                if q.get("calibrate_method")
                else ""
            )
        )
    lines.append(f"[bold]{prec}[/] via {p.get('tool', '?')}{qs}; kept in float32: {keep}")
    if p.get("l1_clamps_floored"):
        lines.append(
            f"SimA l1 clamp floored to float16 tiny {p['l1_clamp_floor']:.3g} "
            f"({p['l1_clamps_floored']} Clip nodes; the model's eps 1e-12 is 0 in float16)"
        )
    qa = (sidecar.get("audit") or {}).get("quantization", {}).get("totals") or {}
    if any(qa.values()):
        lines.append("census: " + ", ".join(f"{v} {k}" for k, v in qa.items() if v))
    v = p.get("verification")
    if v:
        fig = (
            f"vs fp32 PyTorch over {v['samples']} seeded inputs: max abs {v['max_abs']:.3g}, "
            f"max rel {v['max_rel']:.3g}, cosine mean {v['cosine_mean']:.5f} / min "
            f"{v['cosine_min']:.5f}"
        )
        if "top1_agreement" in v:
            fig += f", top-1 agreement {v['top1_agreement']:.1%}, top-5 {v['top5_agreement']:.1%}"
        tol = v["tolerance"]["name"]
        verdict = (
            f"[green]within {tol}[/]"
            if v["passed"]
            else f"[bold red]DEGRADED[/] ({tol}: {'; '.join(v['failed'])})"
        )
        lines.append(f"{fig}: {verdict}")
        lines.append(f"[dim]{v['weights_caveat']}[/]")
    if prec == "fp16":
        lines.append(
            "[dim]fp16 on this CPU is emulated unless it has native fp16 arithmetic: ONNX "
            "Runtime's CPU provider casts most fp16 ops to float32 (errors and times here are "
            "not a native fp16 device's)[/]"
        )
    return "\n".join(lines)
