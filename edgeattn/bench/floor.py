"""Matmul floors: graphs that hold only the matmuls of an attention block, at the block's shapes.

A block can be no faster than the matrix products its algebra needs. For each attention method the
*floor* is a graph of exactly those products, with the shapes the textbook evaluation gives them,
every operand already in the layout a GEMM wants (weights as initializers, so ONNX Runtime packs
them as it does a block's; activations as graph inputs) and every product a graph output, so
nothing is folded away. ``block / floor``, timed interleaved in one process, is what a block pays
on top of its matmuls: normalisation, layout copies, elementwise work. Built with
``onnx.helper``; not models (no registry entry), cached by content like the pure-op graphs.

Floors (B batch, N tokens, C channels, h heads, d = C/h, m landmarks):

- ``floor_qk``, the (QKᵀ)V order (softmax MSA, SimA ``qk_first``): x·W_qkv (N×C·C×3C);
  Q·Kᵀ per head (N×d·d×N); A·V per head (N×N·N×d); O·W_o (N×C·C×C).
- ``floor_kv``, the Q(KᵀV) order (SimA ``kv_first``, XCA's shapes): x·W_qkv; Kᵀ·V per head
  (d×N·N×d); Q·(KᵀV) per head (N×d·d×d); O·W_o.
- ``floor_soft``, SOFT (m landmarks, K = Q): x·W_q and x·W_v (N×C·C×C each); K1 = Q·Lᵀ per
  head (N×d·d×m); K1ᵀ·V (m×N·N×d); K1·pinv (N×m·m×m); (K1·pinv)·(K1ᵀV) (N×m·m×d); O·W_ff. The
  m×m Newton iterations (N-independent), the landmark pooling and the depthwise-conv skip are not
  matmuls of N-sized operands and are left out.

A block may come in *under* its floor when it evaluates fewer products than the textbook (SimA's
``kv_first`` from N ≥ C folds W_o into one (C×C) matrix: ``edgeattn.attention.sima``).

**int8 floors** (``floor_qk_int8``, ``floor_kv_int8``, ``floor_soft_int8``): the same products
quantised the way ``--precision int8-static`` quantises a block (``onnxruntime.quantization``,
QDQ format, :mod:`edgeattn.export.precision_convert`): activations uint8, asymmetric, per
tensor; weights int8, symmetric, per tensor (zero point 0); MinMax ranges. An activation x
activation product is therefore uint8 x uint8, as in a block: ONNX Runtime's CPU provider would
run uint8 x int8 faster (measured, ORT 1.31, 2 threads, D = 384: A·V at N = 1024 0.64 ms
against 2.6 ms; (N×C)·(C×C) 0.16 ms against 0.90 ms), but its QDQS8ToU8Transformer turns a
block's int8 activations back into uint8 on x86 unless the session sets
``session.qdqisint8allowed`` (which the bench does not), so no block could reach such a floor.
Each product is ``DequantizeLinear(a) · DequantizeLinear(b) -> QuantizeLinear``, which ONNX
Runtime fuses into one ``QLinearMatMul`` (integer GEMM, requantised uint8 output), as it does a quantised block's. The
activations are graph inputs *already in uint8* (inside a block they come from the previous
integer op) and the products are uint8 graph outputs: the floor holds no float work at all. A
block's own float input and output (one QuantizeLinear of x, one DequantizeLinear of y, O(N·C))
are left out, like its bias adds. Scales come from a MinMax calibration of standard-normal
operands (seed :data:`INT8_SEED`) on a slice of at most :data:`INT8_CALIBRATION_ROWS` rows and
columns of each product; a GEMM's speed does not depend on them, only the accuracy check does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FLOORS = ("floor_qk", "floor_kv", "floor_soft")
#: the int8 floors: the same products as QDQ'd integer matmuls (see the module doc)
INT8_SUFFIX = "_int8"
INT8_FLOORS = tuple(f + INT8_SUFFIX for f in FLOORS)
INT8_SEED = 0
INT8_CALIBRATION_ROWS = 256
SOFT_LANDMARKS = 49  # the bench's SOFT block: adaptive pooling to a 7 x 7 landmark grid


@dataclass(frozen=True)
class Product:
    """One matmul ``a (batch..., M, K) · b (batch..., K, P)``; ``b_const``: b is a weight."""

    name: str
    a: tuple[int, ...]
    b: tuple[int, ...]
    b_const: bool = False

    @property
    def macs(self) -> int:
        *batch, m, k = self.a
        n = 1
        for v in batch:
            n *= v
        return n * m * k * self.b[-1]


def base_kind(kind: str) -> tuple[str, bool]:
    """(the float32 floor, whether ``kind`` is its int8 form): ``floor_qk_int8`` -> (floor_qk, True)."""
    if kind in INT8_FLOORS:
        return kind[: -len(INT8_SUFFIX)], True
    if kind in FLOORS:
        return kind, False
    raise ValueError(f"unknown floor {kind!r}; valid: {', '.join(FLOORS + INT8_FLOORS)}")


def products(kind: str, batch: int, tokens: int, dim: int, heads: int) -> list[Product]:
    """The matmuls of ``kind`` (or of its int8 form) at this shape (see the module doc)."""
    kind, _ = base_kind(kind)
    B, N, C, h = batch, tokens, dim, heads
    d = C // h
    out = Product("out_proj", (B, N, C), (C, C), True)
    if kind == "floor_soft":
        m = SOFT_LANDMARKS
        return [
            Product("q_proj", (B, N, C), (C, C), True),
            Product("v_proj", (B, N, C), (C, C), True),
            Product("k1", (B, h, N, d), (B, h, d, m)),
            Product("k1t_v", (B, h, m, N), (B, h, N, d)),
            Product("k1_pinv", (B, h, N, m), (B, h, m, m)),
            Product("attend", (B, h, N, m), (B, h, m, d)),
            out,
        ]
    qkv = Product("qkv_proj", (B, N, C), (C, 3 * C), True)
    if kind == "floor_qk":
        mid = [
            Product("q_kt", (B, h, N, d), (B, h, d, N)),
            Product("a_v", (B, h, N, N), (B, h, N, d)),
        ]
    else:
        mid = [
            Product("kt_v", (B, h, d, N), (B, h, N, d)),
            Product("q_kv", (B, h, N, d), (B, h, d, d)),
        ]
    return [qkv, *mid, out]


def macs(kind: str, batch: int, tokens: int, dim: int, heads: int) -> int:
    """Multiply-adds of the floor (one multiply-add = one FLOP, as ``edgeattn.models.cost``)."""
    return sum(p.macs for p in products(kind, batch, tokens, dim, heads))


def build(kind: str, batch: int, tokens: int, dim: int, heads: int, opset: int):
    prods = products(kind, batch, tokens, dim, heads)
    if base_kind(kind)[1]:
        return graph_of_int8(kind, prods, opset, "edgeattn.bench.floor")
    return graph_of(kind, prods, opset, "edgeattn.bench.floor")


def graph_of(kind: str, prods: list[Product], opset: int, producer: str):
    """The floor graph of ``prods``: one MatMul per product, weights as initializers,
    activations as inputs, every product an output (also ``bench.floor_zoo``'s)."""
    from onnx import TensorProto, helper, numpy_helper

    weights = _weights(prods)
    inputs, outputs, inits, nodes = [], [], [], []
    for p in prods:
        a, b, y = f"{p.name}_a", f"{p.name}_b", p.name
        inputs.append(helper.make_tensor_value_info(a, TensorProto.FLOAT, list(p.a)))
        if p.b_const:
            inits.append(numpy_helper.from_array(weights[p.name], b))
        else:
            inputs.append(helper.make_tensor_value_info(b, TensorProto.FLOAT, list(p.b)))
        shape = list(p.a[:-1]) + [p.b[-1]]
        outputs.append(helper.make_tensor_value_info(y, TensorProto.FLOAT, shape))
        nodes.append(helper.make_node("MatMul", [a, b], [y], name=f"/floor/{p.name}/MatMul"))
    return _model(nodes, kind, inputs, outputs, inits, opset, producer)


def _model(nodes, kind: str, inputs, outputs, inits, opset: int, producer: str):
    """The checked ModelProto of a floor graph (IR 8: what ONNX Runtime 1.x reads)."""
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, kind, inputs, outputs, initializer=inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name=producer
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _weights(prods: list[Product]) -> dict[str, object]:
    """The float32 weights of the floor graphs (seeded; scaled like a default-initialised
    Linear, so values stay O(1))."""
    import numpy as np

    rng = np.random.default_rng(0)
    return {
        p.name: (rng.standard_normal(p.b) / np.sqrt(p.b[0])).astype(np.float32)
        for p in prods
        if p.b_const
    }


def u8_params(lo: float, hi: float) -> tuple[float, int]:
    """(scale, zero point) of an asymmetric uint8 MinMax range (widened to hold 0, as ORT's
    quantiser does)."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    scale = (hi - lo) / 255.0 or 1.0
    return scale, int(min(255, max(0, round(-lo / scale))))


def s8_scale(w) -> float:
    """Symmetric int8 per-tensor scale of a weight (zero point 0)."""
    import numpy as np

    return float(np.abs(w).max()) / 127.0 or 1.0


def graph_of_int8(kind: str, prods: list[Product], opset: int, producer: str):
    """The int8 floor graph of ``prods`` (module doc): per product, uint8 activation inputs (int8
    weight initializers), ``DQ · DQ -> MatMul -> Q`` with MinMax scales, a uint8 output."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weights = _weights(prods)
    rng = np.random.default_rng(INT8_SEED)
    r = INT8_CALIBRATION_ROWS
    inputs, outputs, inits, nodes = [], [], [], []

    def qparams(name: str, scale: float, zp: int, dtype) -> tuple[str, str]:
        inits.append(numpy_helper.from_array(np.asarray(scale, np.float32), f"{name}_scale"))
        inits.append(numpy_helper.from_array(np.asarray(zp, dtype), f"{name}_zero_point"))
        return f"{name}_scale", f"{name}_zero_point"

    for p in prods:
        a, b, y = f"{p.name}_a", f"{p.name}_b", p.name
        k = p.a[-1]
        a_cal = rng.standard_normal((min(p.a[-2], r), k)).astype(np.float32)
        sa, za = u8_params(a_cal.min(), a_cal.max())
        inputs.append(helper.make_tensor_value_info(a, TensorProto.UINT8, list(p.a)))
        a_q = qparams(a, sa, za, np.uint8)
        if p.b_const:
            w = weights[p.name]
            sb = s8_scale(w)
            wq = np.clip(np.rint(w / sb), -127, 127).astype(np.int8)
            inits.append(numpy_helper.from_array(wq, b))
            b_q = qparams(b, sb, 0, np.int8)
            b_cal = wq[..., : min(p.b[-1], r)].astype(np.float32) * sb
        else:  # an activation: uint8, asymmetric, like the left operand (module doc)
            b_cal = rng.standard_normal((k, min(p.b[-1], r))).astype(np.float32)
            inputs.append(helper.make_tensor_value_info(b, TensorProto.UINT8, list(p.b)))
            b_q = qparams(b, *u8_params(b_cal.min(), b_cal.max()), np.uint8)
        prod_cal = a_cal @ b_cal
        y_q = qparams(y, *u8_params(prod_cal.min(), prod_cal.max()), np.uint8)
        shape = list(p.a[:-1]) + [p.b[-1]]
        outputs.append(helper.make_tensor_value_info(y, TensorProto.UINT8, shape))
        scope = f"/floor/{p.name}"
        nodes += [
            helper.make_node("DequantizeLinear", [a, *a_q], [f"{a}_dq"], name=f"{scope}/DQ_a"),
            helper.make_node("DequantizeLinear", [b, *b_q], [f"{b}_dq"], name=f"{scope}/DQ_b"),
            helper.make_node("MatMul", [f"{a}_dq", f"{b}_dq"], [f"{y}_f"], name=f"{scope}/MatMul"),
            helper.make_node("QuantizeLinear", [f"{y}_f", *y_q], [y], name=f"{scope}/Q"),
        ]
    return _model(nodes, kind, inputs, outputs, inits, opset, producer)


def export(
    kind: str, batch: int, tokens: int, dim: int, heads: int, opset: int, cache_dir: Path
) -> Path:
    """Write (or reuse) the floor graph; the file name carries a hash of its bytes."""
    from edgeattn.bench.ops import write_cached

    model = build(kind, batch, tokens, dim, heads, opset)
    return write_cached(model, f"{kind}_B{batch}_N{tokens}_D{dim}_h{heads}_op{opset}", cache_dir)
