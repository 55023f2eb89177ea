"""The SimA QKᵀV order in an export: where the ONNX ``If`` is built.

* :func:`plan_order` resolves the policy on export's own copy of the model, through the model's
  :func:`~edgeattn.attention.sima.set_sima_order`: ``order`` fixed, or ``auto`` resolved per
  layer at a static shape, or ``auto`` kept for a runtime ``If`` with a dynamic token axis.
* :func:`dispatch_formula`: how the SimA token count follows from the input shape (blocks:
  ``N = x.shape[1]``; nets: ``N = (H//p)*(W//p) + extra`` with ``p`` and ``extra`` told by the
  model's export facts and checked against what the layers saw).
* :func:`export_both_orders` + :func:`splice_orders`: below opset 18, the TorchScript exporter
  once per fixed order (each on a copy), both graphs spliced under one ``If`` on that formula.
* :func:`dynamic_cases` (inputs on both sides of the crossover) and :func:`make_reference` (eager
  PyTorch, with the order it chose) for the verification, :func:`check_branches` after it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeattn.errors import ExportError
from edgeattn.export.util import SEED, first_line, randn

DISPATCH_SCOPE = "/order_dispatch"
ORDERS_SPLICED = ("qk_first", "kv_first")


def sima_modules(model: Any) -> list[Any]:
    from edgeattn.attention.sima import SimA

    return [m for m in model.modules() if isinstance(m, SimA)]


@dataclass
class SimaLayer:
    module: str  # qualified name in the model
    mod: Any
    tokens: int | None  # what it saw at the export shape
    head_dim: int


@dataclass
class OrderPlan:
    info: dict[str, Any]  # the sidecar's spec["order"]
    layers: list[SimaLayer] = field(default_factory=list)
    runtime_if: bool = False
    dispatch: dict[str, Any] | None = None


def plan_order(
    model: Any, seen: dict[int, int], order: str, crossover: int | None, dynamic: bool
) -> OrderPlan:
    """Resolve the order policy and set it on ``model`` (export's copy) with set_sima_order."""
    from edgeattn.attention.order import choose_order, order_threshold
    from edgeattn.attention.sima import SimA, set_sima_order

    layers = [
        SimaLayer(qual, m, seen.get(id(m)), m.head_dim)
        for qual, m in model.named_modules()
        if isinstance(m, SimA)
    ]
    info: dict[str, Any] = {"policy": order, "crossover": crossover, "applies": bool(layers)}
    plan = OrderPlan(info, layers)
    if not layers:
        info["mode"] = "n/a"
        return plan
    thresholds = sorted({order_threshold(s.head_dim, crossover) for s in layers})
    info["threshold"] = thresholds[0] if len(thresholds) == 1 else thresholds
    info["rule"] = "qk_first if N < threshold else kv_first; threshold = crossover or head_dim"
    info["sima_layers"] = len(layers)
    if order != "auto":
        set_sima_order(model, order, crossover)
        info.update(mode="fixed", resolved=order)
    elif not dynamic:
        resolved = set()
        for s in layers:
            o = choose_order(s.tokens, s.head_dim, crossover)
            set_sima_order(s.mod, o, crossover)
            resolved.add(o)
        info.update(
            mode="static",
            resolved=resolved.pop() if len(resolved) == 1 else sorted(resolved),
            tokens=sorted({s.tokens for s in layers}),
        )
    else:
        set_sima_order(model, "auto", crossover)
        info.update(mode="runtime_if")
        plan.runtime_if = True
    return plan


def dispatch_formula(
    facts: Any, layers: list[SimaLayer], shape: tuple[int, ...], crossover: int | None
) -> dict[str, Any]:
    """How the token count N of the SimA layers follows from the input shape (see module doc)."""
    from edgeattn.attention.order import order_threshold

    toks = {s.tokens for s in layers}
    hds = {s.head_dim for s in layers}
    if len(toks) != 1 or len(hds) != 1:
        raise ExportError(
            "order=auto with a dynamic token axis needs every SimA layer to see the same token "
            f"count and head dim (got tokens {sorted(toks)}, head dims {sorted(hds)}); "
            "use --order qk_first/kv_first or a static shape"
        )
    n = toks.pop()
    thr = order_threshold(hds.pop(), crossover)
    if facts.is_tokens:
        if n != shape[1]:
            raise ExportError(f"internal: SimA saw {n} tokens for an input of {shape[1]}")
        return {"kind": "tokens", "threshold": thr, "formula": "N = x.shape[1]"}
    H, W = shape[2], shape[3]
    p, extra = facts.patch, facts.extra_tokens
    if not p:
        raise ExportError(
            "order=auto with a dynamic image size needs the model's export facts to give its "
            "patch (N = (H//patch)*(W//patch) + extra_tokens); use --order or --static"
        )
    if H % p or W % p or (H // p) * (W // p) + extra != n:
        raise ExportError(
            f"the export facts (patch {p}, extra_tokens {extra}) do not match the model: its SimA "
            f"layers saw {n} tokens on a {H}x{W} image; use --order or --static"
        )
    return {
        "kind": "image",
        "patch": p,
        "extra": extra,
        "threshold": thr,
        "formula": f"N = (H//{p})*(W//{p})" + (f" + {extra}" if extra else ""),
    }


def export_both_orders(
    model: Any,
    crossover: int | None,
    export_one: Callable[[Any], Any],
    simplify: bool,
    timings: dict[str, float],
) -> tuple[list[tuple[str, Any]], dict[str, Any]]:
    """One export per fixed order, each on a copy set by set_sima_order (and simplified apart);
    returns the branches and the simplify facts."""
    from edgeattn.attention.sima import set_sima_order
    from edgeattn.export.graph import repair_names

    branches = []
    sinfos: dict[str, Any] = {}
    for o in ORDERS_SPLICED:
        fixed = copy.deepcopy(model)
        set_sima_order(fixed, o, crossover)
        p = export_one(fixed)
        repair_names(p)
        if simplify:
            from edgeattn.export.simplify import simplify_model

            t1 = time.perf_counter()
            p, sinfos[o] = simplify_model(p)
            timings["simplify_s"] = timings.get("simplify_s", 0.0) + time.perf_counter() - t1
        branches.append((o, p))
    info: dict[str, Any] = {"applied": False, "reason": "not requested"}
    if simplify:
        info = {
            "applied": all(v["applied"] for v in sinfos.values()),
            "reason": "; ".join(f"{k}: {v['reason']}" for k, v in sinfos.items() if v["reason"])
            or None,
            "per_branch": sinfos,
        }
    return branches, info


def splice_orders(branches: list[tuple[str, Any]], dispatch: dict[str, Any], in_name: str) -> Any:
    """One graph: ``If (N < threshold)`` then the ``qk_first`` branch else ``kv_first``."""
    from onnx import TensorProto, helper

    from edgeattn.export.graph import splice_if

    def const(name: str, v: int) -> Any:
        return helper.make_tensor(name, TensorProto.INT64, [], [int(v)])

    s = DISPATCH_SCOPE
    p = "order_dispatch/"
    nodes = [helper.make_node("Shape", [in_name], [p + "shape"], name=f"{s}/Shape")]
    inits = [const(p + "threshold", dispatch["threshold"])]
    if dispatch["kind"] == "tokens":
        inits.append(const(p + "axis_tokens", 1))
        nodes.append(
            helper.make_node(
                "Gather",
                [p + "shape", p + "axis_tokens"],
                [p + "tokens"],
                name=f"{s}/Gather",
                axis=0,
            )  # fmt: skip
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


# ============================================================================ verification
def _case_shapes(plan: Any) -> list[tuple[int, ...]]:
    """Other input shapes for a dynamic export: both sides of the crossover first when the order
    is decided at run time, then steps of the facts' size multiple (nets) or token counts."""
    shape, dispatch = plan.shape, plan.order.dispatch
    out: list[tuple[int, ...]] = []
    B = shape[0]
    if plan.facts.is_tokens:
        N = shape[1]
        cands: list[int] = []
        if dispatch is not None:
            thr = dispatch["threshold"]
            cands += [max(1, thr // 2), thr + max(1, thr // 2)]
        cands += [64, 1024, 4096]
        seen_n = {N}
        for n in cands:
            if n not in seen_n and len(out) < (4 if dispatch is not None else 2):
                seen_n.add(n)
                out.append((B, n, shape[2]))
    else:
        H, W = shape[2], shape[3]
        m = plan.facts.step
        cands2: list[tuple[int, int]] = []
        if dispatch is not None:
            p, extra, thr = dispatch["patch"], dispatch["extra"], dispatch["threshold"]
            s = p
            small = None
            while (s // p) ** 2 + extra < thr and s <= 4096:
                small = s
                s += p
            if small is not None:
                cands2.append((small, small))
            cands2.append((s, s))  # the first size with N >= threshold
        cands2 += [(H + m, W), (max(m, H - m), max(m, W - m)), (H + 2 * m, W + 2 * m)]
        seen_hw = {(H, W)}
        for hw in cands2:
            if hw not in seen_hw and len(out) < 3:
                seen_hw.add(hw)
                out.append((B, shape[1], hw[0], hw[1]))
    if out:  # one case with another batch size
        out[0] = (B + 1, *out[0][1:])
    return out


def dynamic_cases(plan: Any) -> list[dict[str, Any]]:
    """Verification cases at other shapes (each checked to be accepted by the model)."""
    import torch

    cases = []
    shape = plan.shape
    for k, shp in enumerate(_case_shapes(plan)):
        if not plan.facts.is_tokens:
            try:  # the model must take this size (e.g. SOFT: multiples of 32)
                with torch.no_grad():
                    plan.model(torch.zeros((1, *shp[1:])))
            except Exception as exc:
                raise ExportError(
                    f"{plan.name} cannot take a {shp[2]}x{shp[3]} input besides "
                    f"{shape[2]}x{shape[3]} ({first_line(exc)}), so height/width cannot be "
                    "dynamic; export it static"
                ) from None
        cases.append(
            {"label": f"dynamic shape {k + 1}", "inputs": {plan.in_name: randn(shp, SEED + k + 1)}}
        )
    return cases


def make_reference(
    model: Any, out_name: str, layers: list[SimaLayer], crossover: int | None
) -> Callable[[dict[str, np.ndarray]], tuple[dict[str, np.ndarray], dict[str, Any]]]:
    """Eager PyTorch on a case: its output, and the token count and order the first SimA saw."""
    import torch

    from edgeattn.attention.order import choose_order

    def ref(feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        x = torch.from_numpy(next(iter(feeds.values())))
        seen: dict[int, int] = {}
        hooks = [
            s.mod.register_forward_pre_hook(
                lambda mod, args: seen.__setitem__(id(mod), int(args[0].shape[1]))
            )
            for s in layers
        ]
        try:
            with torch.no_grad():
                y = model(x)
        finally:
            for h in hooks:
                h.remove()
        facts: dict[str, Any] = {}
        if layers:
            s0 = layers[0]
            n = seen.get(id(s0.mod))
            facts["tokens"] = n
            o = s0.mod.order
            facts["order"] = choose_order(n, s0.head_dim, crossover) if o == "auto" else o
        return {out_name: y.detach().cpu().numpy()}, facts

    return ref


def check_branches(verification: dict[str, Any]) -> None:
    """Every case's If branch must be the order eager PyTorch chose at that token count."""
    for c in verification["cases"]:
        if c.get("branch") != c.get("order"):
            raise ExportError(
                f"the order dispatcher took {c.get('branch')} at {c['inputs']} but "
                f"eager PyTorch chose {c.get('order')} (N={c.get('tokens')})"
            )
