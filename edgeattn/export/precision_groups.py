"""Node groups of a float32 ONNX graph that a precision conversion can keep in float32.

Each group is found by a graph pattern, not by class names (:data:`GROUPS`): SimA's l1
normalisation, SOFT's Newton inverse, a late class token's tail, every Softmax, every Softmax over
a long axis, EfficientViT LiteMLA's ReLU attention, the bias add that writes the output. Which groups each precision keeps by default is :data:`DEFAULT_KEEP_FP32` (decided
by measurement; the figures are in its comment); :func:`resolve_keep_fp32` turns ``--keep-fp32`` into group names and
:func:`select_nodes` into node names. Used by :mod:`edgeattn.export.precision`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import onnx

from edgeattn.errors import ExportError


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    """{tensor name: the node that outputs it}."""
    return {o: n for n in graph.node for o in n.output if o}


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
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
        names += sima_l1_in(g)
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


def sima_l1_in(g: onnx.GraphProto) -> list[str]:
    """Node names of SimA's l1 normalisations in graph ``g`` (one level, no subgraphs): each
    Abs, token sum and Clip of a norm, and the reshapes and divisions that use it."""
    prod = producers(g)
    cons = consumers(g)
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
    prod = producers(g)
    cons = consumers(g)
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


def constant_tensor(
    name: str, inits: dict[str, onnx.TensorProto], prod: dict[str, onnx.NodeProto]
) -> onnx.TensorProto | None:
    """The tensor behind ``name`` when it is a constant (an initializer, or a ``Constant``
    node's ``value``), else None."""
    t = inits.get(name)
    p = prod.get(name)
    if t is None and p is not None and p.op_type == "Constant":
        t = next((a.t for a in p.attribute if a.name == "value"), None)
    return t


#: LiteMLA's division guard is an eps this small (the official 1e-15); the pattern asks for a
#: scalar constant at most this, so a bias or a larger guard does not match
LITEMLA_EPS_MAX = 1e-12


def litemla_att_in(g: onnx.GraphProto) -> list[str]:
    """LiteMLA's ReLU-kernel attention in graph ``g`` (one level): each ``Div(num, Add(den,
    eps))`` with a tiny constant eps whose ``num`` and ``den`` come from products (directly, or
    through a ReduceSum of one: the quadratic form's column sums). For the linear form (``num``
    and ``den`` both MatMuls) the group is every node from the head split (the Slices) to the
    Div: the ReLUs, both products, the sums and the division, as the official code runs the
    whole linear form in float32 under float16; for the quadratic form, the column sum, the eps
    Add and the Div (the official float32 division of the N × N map)."""
    from onnx import numpy_helper

    prod = producers(g)
    cons = consumers(g)
    inits = {t.name: t for t in g.initializer}
    names: list[str] = []
    for div in g.node:
        if div.op_type != "Div" or len(div.input) < 2:
            continue
        add = prod.get(div.input[1])
        num = prod.get(div.input[0])
        if add is None or num is None or add.op_type != "Add" or num.op_type != "MatMul":
            continue
        eps = [
            None if t is None else numpy_helper.to_array(t)
            for t in (constant_tensor(i, inits, prod) for i in add.input)
        ]
        if not any(e is not None and e.size == 1 and 0 < float(e) <= LITEMLA_EPS_MAX for e in eps):
            continue
        den = next((prod.get(i) for i, e in zip(add.input, eps, strict=True) if e is None), None)
        if den is not None and den.op_type == "ReduceSum":  # quadratic: the map's column sums
            names += [den.name, add.name, div.name]
        elif den is not None and den.op_type == "MatMul":  # linear: from the head split on
            anc = _ancestors(div, prod)
            splits = [n for n in g.node if n.name in anc and n.op_type in ("Slice", "Split")]
            inner = _descendants(splits, cons) & anc
            names += [n.name for n in g.node if n.name in inner or n in splits] + [div.name]
    return names


def group_litemla_att(model: onnx.ModelProto) -> list[str]:
    """EfficientViT LiteMLA's attention (:func:`litemla_att_in`), in the main graph and inside
    If branches (the run-time order dispatch)."""
    from edgeattn.export.graph import iter_graphs

    names: list[str] = []
    for g in iter_graphs(model.graph):
        names += litemla_att_in(g)
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
    prod = producers(g)
    cons = consumers(g)
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


#: softmax_long: a Softmax over at least this many entries. ORT's quantiser gives every QDQ'd
#: Softmax output the fixed range [0, 1] (scale 1/255, whatever the calibration), so a probability
#: under half a step (1/510) rounds to 0; over N entries the typical probability is 1/N, so from
#: N = 511 most of a row vanishes.
SOFTMAX_LONG_AXIS = 511


def group_softmax_long(model: onnx.ModelProto) -> list[str]:
    """Every Softmax whose reduced axis is static and at least :data:`SOFTMAX_LONG_AXIS` long
    (token softmax at N >= 511); a dynamic or shorter axis is left to the quantiser."""
    from onnx import shape_inference

    g = shape_inference.infer_shapes(model).graph
    dims = {
        v.name: [
            d.dim_value if d.HasField("dim_value") else 0 for d in v.type.tensor_type.shape.dim
        ]
        for v in list(g.value_info) + list(g.input)
        if v.type.tensor_type.HasField("shape")
    }
    names = []
    for n in model.graph.node:
        if n.op_type not in ("Softmax", "LogSoftmax") or n.input[0] not in dims:
            continue
        shape = dims[n.input[0]]
        axis = next((a.i for a in n.attribute if a.name == "axis"), -1)
        if shape and -len(shape) <= axis < len(shape) and shape[axis] >= SOFTMAX_LONG_AXIS:
            names.append(n.name)
    return names


def group_output_bias(model: onnx.ModelProto) -> list[str]:
    """Every Add that reads a constant (a bias: an initializer or a Constant node's output) and
    writes a graph output, directly or through a chain of shape ops (SOFT's channels-first
    ``W_ff·X + b`` is transposed to tokens last), with that chain. Kept in float32 at int8, the
    last integer product's output is dequantised once and the bias added in float, instead of
    a QLinearAdd that requantises the output and a DequantizeLinear after it."""
    g = model.graph
    outs = {o.name for o in g.output}
    inits, prod, cons = {t.name: t for t in g.initializer}, producers(g), consumers(g)
    names = []
    for n in g.node:
        if n.op_type != "Add" or all(constant_tensor(i, inits, prod) is None for i in n.input):
            continue
        chain, cur = [n.name], n
        while cur.output[0] not in outs:
            users = cons.get(cur.output[0], [])
            if len(users) != 1 or users[0].op_type not in _SHAPE_OPS:
                break
            cur = users[0]
            chain.append(cur.name)
        if cur.output[0] in outs:
            names += chain
    return names


#: Node groups that can be kept in float32, by name, each found by a graph pattern.
GROUPS: dict[str, Callable[[onnx.ModelProto], list[str]]] = {
    "sima_l1": group_sima_l1,
    "soft_newton": group_soft_newton,
    "cls_tail": group_cls_tail,
    "softmax": group_softmax,
    "softmax_long": group_softmax_long,
    "litemla_att": group_litemla_att,
    "output_bias": group_output_bias,
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
#:   quantises the probabilities with a calibrated scale instead of the QDQ softmax's);
#:   re-measured 2026-12-05: the same at @64 (N = 17), and @224 (N = 197) cos min 0.876 QDQ'd
#:   vs 0.857 kept (mean 0.910 vs 0.911, top-1 66 % vs 62 %).
#: * softmax_long, int8-static: kept: the softmax MSA block at N = 1024 (D 384, h 6), cosine of
#:   the output minus the projection bias (the plain cosine is bias-dominated) 0.35 with the
#:   QDQ'd Softmax (plain 0.785), 0.98 kept fp32 (plain 0.993), at the same speed (fp32 time /
#:   int8 time 0.79-0.80x both, paired, three runs; benchmarks/int8_recipes.py); at N = 4096
#:   -0.06 vs 0.98, 0.61x vs 0.60-0.61x. ORT fuses the kept Softmax's DQ -> Softmax -> Q back
#:   into a QLinearSoftmax, now with the calibrated output scale: the same kernel, the accuracy
#:   back. Short rows (DeiT above) are not in the group, so their default is unchanged.
#: * int8-dynamic quantises weight MatMuls only (activation x activation MatMuls such as
#:   Newton's stay float32 by construction): block_soft identical with and without soft_newton.
#: * litemla_att, fp16: kept, as the official code does (``qkv.float()`` in ``relu_linear_att``,
#:   a float32 division in ``relu_quadratic_att``). ORT's CPU provider hides the hazard (it
#:   casts to float32: block_litemla N = 1024 fp16 cosine 1.00000 with or without the group,
#:   inputs x1..x64), so it was measured in true half arithmetic (benchmarks/litemla_fp16.py,
#:   one head, d = 16): the linear form's denominator ``(1ᵀKᵀ)·Q`` (the map's column sums)
#:   grows as N·rms², exceeds 65504 at rms 4 for N = 1024 (error 0.54, then inf at rms 8) and
#:   at rms 8 for N = 196 (inf); below that the half error is 1e-3, the float32-kept one 2e-7.
#:   int8 quantises by calibrated ranges (no overflow): not kept (block_litemla int8-static
#:   cosine 0.9993 without it).
#: * output_bias, int8-static: kept. Quantised, the block's output bias is a QLinearAdd that
#:   requantises the output, then a DequantizeLinear; kept, the last product's output is
#:   dequantised once and the bias added in float. At N = 1024, D = 384 (2026-12-05, the block
#:   exported with and without the group, interleaved in one process, both orders, two runs
#:   each): block_sima max abs error 4.3e-4 -> 5.0e-5, time 0.91-0.95x; block_hydra 0.89-0.92x;
#:   block_mobilevitv2 0.85-0.92x; block_soft 0.94-0.97x (its output Transpose kept with the
#:   Add); block_msa no difference (its QLinearSoftmax dominates; the file timed first ran
#:   2-4 % slower, whichever it was). LiteMLA ends in a Conv: no match. The kept Add then reads
#:   the last product in float (precision_convert.float_product_outputs: no requantisation
#:   at all, ORT's MatMulIntegerToFloat), a further 0.86-0.96x on these blocks.
DEFAULT_KEEP_FP32: dict[str, tuple[str, ...]] = {
    "fp32": (),
    "fp16": ("soft_newton", "litemla_att"),
    "int8-dynamic": (),
    "int8-static": ("soft_newton", "cls_tail", "softmax_long", "output_bias"),
}


def resolve_keep_fp32(precision: str, keep_fp32: str | Sequence[str] | None) -> list[str]:
    """``None``/``"auto"``: the precision's default groups; ``"none"``: none; else a list."""
    if keep_fp32 is None or keep_fp32 == "auto":
        return list(DEFAULT_KEEP_FP32[precision.partition(":")[0]])  # int8-static:<recipe>
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
