"""The bench's method table: every attention the bench can time, declared once, as data.

A *method* is one bench entry: which graph it times (a registered block model, or a graph the bench
builds itself: a pure op, a matmul floor), with which overrides, how tables name its evaluation
order, which sweep regimes it joins, whether it needs a token grid or holds an N×N map (memory),
its matmul floor, which ops do its normalisation (the op-level table), its keep-fp32 precision
group, and whether it is profiled for the op table. A *named ratio* is a headline line between two
methods (``exp vs l1 at fixed (QKᵀ)V order: softmax / SimA``), declared here with the regimes it
answers for.

``bench``, ``sweep``, ``pairs``, ``report``, ``preflight``, plots and the CLI's help read this table;
none of them names a method. Adding an attention to the bench = its attention module + its
registry entry (``edgeattn.models``) + one :func:`register_method` call (and, if it takes part in
a headline, one :func:`register_ratio`), like timm's ``default_cfgs`` or optimum's per-model export
configs. Like those, entries are registered at import time by this module; a plugin (or a test)
calls :func:`register_method` itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

#: the kinds of graph a method times
KINDS = ("block", "op", "floor")
#: the sweep regimes: tokens (N grows past D) and channels (D grows past N)
REGIMES = ("tokens", "channels")
#: the ops that do each normaliser's work in ORT's profile (decomposed forms included); a method
#: may name its own (``norm_ops``)
NORM_OPS: dict[str, tuple[str, ...]] = {
    "exp": ("Softmax", "Exp", "ReduceMax", "Sub"),
    "l1": ("Abs", "ReduceSum", "ReduceL1", "Clip", "Max", "Div"),
    "gaussian": ("Exp",),
    # ReLU linear attention (LiteMLA): the kernel, the official [V;1] ones row (a Pad; ours is
    # a product), the quadratic form's column sums, the eps and the division
    "relu": ("Relu", "Pad", "ReduceSum", "Div", "Add"),
    # per-token l2 (Hydra): ORT's fused RMS-norm form, or its parts unfused; no Mul (Hydra's
    # Muls are φ(K) ⊙ V and diag(kv)·W_oᵀ, not normalisation)
    "l2": (
        "SimplifiedLayerNormalization",
        "LpNormalization",
        "ReduceL2",
        "ReduceSumSquare",
        "Pow",
        "ReduceMean",
        "Sqrt",
        "Clip",
        "Max",
        "Div",
    ),
    "none": (),
}


@dataclass(frozen=True)
class BenchMethod:
    """One bench method (see the module doc). ``order``: the order text tables print; with
    ``order_policy="auto"`` the export's resolved order is printed instead, marked ``auto``."""

    key: str
    model: str
    label: str
    normaliser: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    kind: str = "block"
    order: str = ""
    order_policy: str | None = None
    regimes: tuple[str, ...] = ()
    default: bool = False
    needs_grid: bool = False
    #: holds the N×N map: True, False, or "auto" (only when its order resolves to (QKᵀ)V)
    nxn_map: bool | str = False
    floor: str | None = None
    norm_ops: tuple[str, ...] | None = None
    #: {precision: keep-fp32 groups (``export --keep-fp32``)} where this method needs other than
    #: the precision's default groups (``edgeattn.export.precision_groups``)
    keep_fp32: Mapping[str, str] | None = None
    profiled: bool = False
    #: the named sets (``--methods zoo``) this method belongs to
    sets: tuple[str, ...] = ()
    #: in an order crossover sweep: ``(pair, side)``, side "qk" (the (QKᵀ)V / quadratic side) or
    #: "kv" (the Q(KᵀV) / linear side; "quadratic" and "linear" are aliases); a bare side names
    #: the pair after the block (``block_sima`` -> "sima"). Normalised to ``(pair, side)``.
    crossover: str | tuple[str, str] | None = None
    #: the official order rule of the crossover pair: token count from which the block's
    #: ``auto`` takes Q(KᵀV), from the head width (default: head_dim, SimA's ``N < d_h``)
    crossover_rule: Callable[[int], int] | None = field(default=None, compare=False, repr=False)
    #: graph methods: ``build(method, shape, opset, cache_dir) -> (path, macs or None)``
    build: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"method {self.key!r}: kind {self.kind!r} is not one of {KINDS}")
        bad = [r for r in self.regimes if r not in REGIMES]
        if bad:
            raise ValueError(f"method {self.key!r}: regime {bad[0]!r} is not one of {REGIMES}")
        if self.kind != "block" and self.build is None:
            raise ValueError(f"method {self.key!r}: a {self.kind} graph needs a build function")
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))
        if self.crossover is not None:
            side = _crossover_side(self.key, self.model, self.crossover)
            object.__setattr__(self, "crossover", side)

    @property
    def is_graph(self) -> bool:
        """Built by the bench (pure op, matmul floor), not an exported model: float32 only."""
        return self.kind != "block"

    def ops(self) -> tuple[str, ...]:
        return self.norm_ops if self.norm_ops is not None else NORM_OPS.get(self.normaliser, ())

    def order_text(self, resolved: str | None) -> str:
        """The order a table prints: the declared text, else the order the export resolved,
        else the one the overrides fix; ``auto`` marks a run-time choice."""
        fixed = resolved or self.overrides.get("order")
        if self.order_policy == "auto":
            return f"{ORDER_TEXT.get(resolved or '', resolved or '')} auto".strip()
        return self.order or ORDER_TEXT.get(fixed or "", fixed or "?")


ORDER_TEXT = {"qk_first": "(QKᵀ)V", "kv_first": "Q(KᵀV)"}
#: the sides of an order crossover pair, and their aliases
CROSSOVER_SIDES = {"qk": "qk", "kv": "kv", "quadratic": "qk", "linear": "kv"}


def _crossover_side(key: str, model: str, value: object) -> tuple[str, str]:
    pair, side = (model.removeprefix("block_"), value) if isinstance(value, str) else (None, None)
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, str) for v in value):
        pair, side = value
    if not pair or side not in CROSSOVER_SIDES:
        raise ValueError(
            f"method {key!r}: crossover {value!r} is not a side ({', '.join(CROSSOVER_SIDES)}) "
            "or a (pair, side) tuple"
        )
    return str(pair), CROSSOVER_SIDES[str(side)]


@dataclass(frozen=True)
class NamedRatio:
    """A headline line: ``num`` time / ``den`` time (> 1: ``den`` faster). ``regimes``: the sweep
    regimes it is plotted along; ``summary``: printed as a line by ``bench`` and ``report``."""

    name: str
    num: str
    den: str
    label: str
    regimes: tuple[str, ...] = ()
    summary: bool = False


_METHODS: dict[str, BenchMethod] = {}
_RATIOS: dict[str, NamedRatio] = {}
#: read-only views: ``METHODS[key]``, ``RATIOS[name]``
METHODS: Mapping[str, BenchMethod] = MappingProxyType(_METHODS)
RATIOS: Mapping[str, NamedRatio] = MappingProxyType(_RATIOS)


def register_method(m: BenchMethod, *, replace: bool = False) -> BenchMethod:
    if m.key in _METHODS and not replace:
        raise ValueError(f"bench method {m.key!r} is already registered")
    _METHODS[m.key] = m
    return m


def register_ratio(r: NamedRatio, *, replace: bool = False) -> NamedRatio:
    if r.name in _RATIOS and not replace:
        raise ValueError(f"named ratio {r.name!r} is already registered")
    _RATIOS[r.name] = r
    return r


def unregister(key: str) -> None:
    """Remove a method and the named ratios it takes part in (tests, plugins), those naming it
    at a precision (``key@int8-static``) too."""
    _METHODS.pop(key, None)
    base = {n: (r.num.split("@", 1)[0], r.den.split("@", 1)[0]) for n, r in _RATIOS.items()}
    for name in [n for n, ends in base.items() if key in ends]:
        _RATIOS.pop(name)


# ------------------------------------------------------------------------------------ queries


def method(key: str) -> BenchMethod:
    return _METHODS[key.split("@", 1)[0]]


def get(key: str | None) -> BenchMethod | None:
    return _METHODS.get(str(key or "").split("@", 1)[0])


def default_methods() -> tuple[str, ...]:
    return tuple(k for k, m in _METHODS.items() if m.default)


def of_kind(kind: str) -> tuple[str, ...]:
    return tuple(k for k, m in _METHODS.items() if m.kind == kind)


def graph_models() -> tuple[str, ...]:
    """The ``model`` names of the graphs the bench builds itself."""
    return tuple(m.model for m in _METHODS.values() if m.is_graph)


def in_regime(regime: str) -> tuple[str, ...]:
    return tuple(k for k, m in _METHODS.items() if regime in m.regimes)


def regime_ratios(regime: str) -> tuple[str, ...]:
    return tuple(n for n, r in _RATIOS.items() if regime in r.regimes)


def summary_ratios() -> tuple[str, ...]:
    return tuple(n for n, r in _RATIOS.items() if r.summary)


def profiled() -> tuple[str, ...]:
    return tuple(k for k, m in _METHODS.items() if m.profiled)


def crossover_pairs() -> dict[str, tuple[str, str]]:
    """{pair: ((QKᵀ)V method, Q(KᵀV) method)} of every complete crossover pair, in table order."""
    sides: dict[str, dict[str, str]] = {}
    for k, m in _METHODS.items():
        if m.crossover is None:
            continue
        pair, side = m.crossover
        got = sides.setdefault(pair, {})
        if side in got:
            raise LookupError(f"crossover pair {pair!r}: {got[side]!r} and {k!r} both on {side}")
        got[side] = k
    return {p: (s["qk"], s["kv"]) for p, s in sides.items() if "qk" in s and "kv" in s}


def crossover_pair(pair: str | None = None) -> tuple[str, str]:
    """The (QKᵀ)V and Q(KᵀV) methods of crossover pair ``pair`` (default: the table's first)."""
    pairs = crossover_pairs()
    if not pairs:
        raise LookupError("no method declares both sides of a crossover pair ('qk' and 'kv')")
    if pair is None:
        return next(iter(pairs.values()))
    if pair not in pairs:
        raise LookupError(f"unknown crossover pair {pair!r}; valid: {', '.join(pairs)}")
    return pairs[pair]


def crossover_pair_name(pair: str | None = None) -> str:
    """``pair``, or the name of the table's first crossover pair."""
    return pair if pair is not None else next(iter(crossover_pairs()), "")


def crossover_ratio(pair: str | None = None) -> str | None:
    """The named ratio (QKᵀ)V method / Q(KᵀV) method of ``pair``, if the table declares one."""
    qk, kv = crossover_pair(pair)
    return next((n for n, r in _RATIOS.items() if (r.num, r.den) == (qk, kv)), None)


def crossover_rule(pair: str | None, head_dim: int) -> int:
    """The official order rule's threshold of ``pair`` at ``head_dim`` (:attr:`BenchMethod.crossover_rule`)."""
    for k in crossover_pair(pair):
        if _METHODS[k].crossover_rule is not None:
            return int(_METHODS[k].crossover_rule(head_dim))
    return head_dim


def crossover_needs_grid(pair: str | None = None) -> bool:
    return any(_METHODS[k].needs_grid for k in crossover_pair(pair))


def ratios_between(keys: Iterable[str]) -> list[NamedRatio]:
    have = set(keys)
    return [r for r in _RATIOS.values() if r.num in have and r.den in have]


def help_text() -> str:
    """The ``--methods`` help: every method, the sets, and what the graphs are."""
    blocks = ", ".join(k for k, m in _METHODS.items() if m.kind == "block")
    ops = ", ".join(of_kind("op"))
    floors = ", ".join(of_kind("floor"))
    return (
        f"Comma list: {blocks}; all (every block); "
        + "".join(f"{n} ({','.join(ks)}); " for n, ks in sets().items())
        + f"ops ({ops}: the normalisation ops alone); "
        f"floors ({floors}: each block's matmuls alone, the floor it is measured against). "
        f"Default: {','.join(default_methods())}."
    )


# ------------------------------------------------------------------------ the graph builders


def _op_graph(m: BenchMethod, shape: Any, opset: int, cache: Any) -> tuple[Any, int | None]:
    from edgeattn.bench import ops

    return ops.export(m.model, shape.batch, shape.heads, shape.tokens, opset, cache), None


def _floor_graph(m: BenchMethod, shape: Any, opset: int, cache: Any) -> tuple[Any, int | None]:
    from edgeattn.bench import floor

    s = shape
    path = floor.export(m.model, s.batch, s.tokens, s.dim, s.heads, opset, cache)
    return path, floor.macs(m.model, s.batch, s.tokens, s.dim, s.heads)


def _zoo_floor_graph(m: BenchMethod, shape: Any, opset: int, cache: Any) -> tuple[Any, int | None]:
    from edgeattn.bench import floor_zoo

    s = shape
    path = floor_zoo.export(m.model, s.batch, s.tokens, s.dim, s.heads, opset, cache)
    return path, floor_zoo.macs(m.model, s.batch, s.tokens, s.dim, s.heads)


def sets() -> dict[str, tuple[str, ...]]:
    """The named method sets the table declares (``--methods zoo``), in table order."""
    out: dict[str, list[str]] = {}
    for k, m in _METHODS.items():
        for name in m.sets:
            out.setdefault(name, []).append(k)
    return {k: tuple(v) for k, v in out.items()}


def op_inputs(shape: Any) -> dict[str, list[int]]:
    return {"x": [shape.batch, shape.heads, shape.tokens, shape.tokens]}


def _litemla_rule(head_dim: int) -> int:
    """LiteMLA's official rule: linear when H·W > dim (:func:`edgeattn.attention.litemla.litemla_threshold`)."""
    from edgeattn.attention.litemla import litemla_threshold

    return litemla_threshold(head_dim)


# ----------------------------------------------------------------------------------- the table

for _m in (
    BenchMethod(
        "softmax", "block_msa", "softmax MSA, (QKᵀ)V", "exp", order="(QKᵀ)V",
        regimes=("tokens",), default=True, nxn_map=True, floor="floor_qk", profiled=True,
        sets=("zoo",),
    ),
    BenchMethod(
        "softmax_fused", "block_msa_fused", "softmax, ORT fused MultiHeadAttention", "exp",
        order="(QKᵀ)V", default=True, nxn_map=True, floor="floor_qk", sets=("zoo",),
        norm_ops=(),  # the softmax runs inside the fused op, with the matmuls: not separable
    ),
    BenchMethod(
        "sima_qk", "block_sima", "SimA, (QKᵀ)V fixed", "l1", {"order": "qk_first"},
        regimes=("tokens",), default=True, nxn_map=True, floor="floor_qk", profiled=True,
        crossover="qk",
    ),
    BenchMethod(
        "sima_kv", "block_sima", "SimA, Q(KᵀV) fixed", "l1", {"order": "kv_first"},
        regimes=("channels",), floor="floor_kv", crossover="kv",
    ),
    BenchMethod(
        "sima", "block_sima", "SimA, dynamic order", "l1", {"order": "auto"},
        order_policy="auto", regimes=("tokens", "channels"), default=True, nxn_map="auto",
        sets=("zoo",),
    ),
    BenchMethod(
        "soft", "block_soft", "SOFT, Gaussian kernel, m=49 landmarks", "exp", order="Nyström",
        regimes=("tokens",), default=True, needs_grid=True, floor="floor_soft", sets=("zoo",),
    ),
    BenchMethod(
        "xca", "block_xca", "XCA (XCiT), softmax over d×d", "exp", order="V(KᵀQ) d×d",
        regimes=("channels",), default=True, floor="floor_kv", sets=("zoo",),
        # the d×d softmax and the l2 normalisation of q and k over tokens
        norm_ops=("Softmax", "Exp", "ReduceMax", "Sub", "ReduceSum", "Sqrt", "Clip", "Max", "Div"),
    ),
    BenchMethod(
        "mobilevitv2", "block_mobilevitv2", "MobileViTv2 separable attention, softmax over N",
        "exp", order="separable", floor="floor_mobilevitv2", sets=("zoo",),
    ),
    BenchMethod(
        "litemla", "block_litemla", "EfficientViT LiteMLA, ReLU linear attention, dynamic order",
        "relu", {"order": "auto"}, order_policy="auto", needs_grid=True, nxn_map="auto",
        floor="floor_litemla", sets=("zoo",),
    ),
    BenchMethod(
        "litemla_quadratic", "block_litemla", "EfficientViT LiteMLA, (ReLU(Q)ReLU(K)ᵀ)V fixed",
        "relu", {"order": "qk_first"}, needs_grid=True, nxn_map=True,
        crossover=("litemla", "quadratic"), crossover_rule=_litemla_rule,
    ),
    BenchMethod(
        "litemla_linear", "block_litemla", "EfficientViT LiteMLA, ReLU(Q)(ReLU(K)ᵀV) fixed",
        "relu", {"order": "kv_first"}, needs_grid=True, crossover=("litemla", "linear"),
    ),
    BenchMethod(
        "hydra", "block_hydra", "Hydra attention, cosine kernel, heads = channels", "l2",
        order="Q(KᵀV) per channel", floor="floor_hydra", sets=("zoo",),
    ),
    # pure-op micro-bench graphs (edgeattn.bench.ops), input (B, h, N, N): not models
    BenchMethod(
        "op_softmax", "op_softmax", "Softmax over (B,h,N,N), op alone", "exp", kind="op",
        order="op", regimes=("tokens",), nxn_map=True, build=_op_graph,
    ),
    BenchMethod(
        "op_l1", "op_l1", "l1-normalise over (B,h,N,N), op alone", "l1", kind="op",
        order="op", regimes=("tokens",), nxn_map=True, build=_op_graph,
    ),
    # matmul floors (edgeattn.bench.floor): only the block's matmuls, at its shapes
    BenchMethod(
        "floor_qk", "floor_qk", "matmuls of (QKᵀ)V attention alone", "none", kind="floor",
        order="(QKᵀ)V matmuls", nxn_map=True, build=_floor_graph,
    ),
    BenchMethod(
        "floor_kv", "floor_kv", "matmuls of Q(KᵀV) attention alone", "none", kind="floor",
        order="Q(KᵀV) matmuls", build=_floor_graph,
    ),
    BenchMethod(
        "floor_soft", "floor_soft", "matmuls of SOFT attention alone", "none", kind="floor",
        order="SOFT matmuls", build=_floor_graph,
    ),
    # int8 matmul floors (edgeattn.bench.floor): the same products as integer matmuls, quantised
    # as int8-static quantises a block; against the blocks at --precision int8-static
    BenchMethod(
        "floor_qk_int8", "floor_qk_int8", "int8 matmuls of (QKᵀ)V attention alone", "none",
        kind="floor", order="(QKᵀ)V int8 matmuls", nxn_map=True, build=_floor_graph,
    ),
    BenchMethod(
        "floor_kv_int8", "floor_kv_int8", "int8 matmuls of Q(KᵀV) attention alone", "none",
        kind="floor", order="Q(KᵀV) int8 matmuls", build=_floor_graph,
    ),
    BenchMethod(
        "floor_soft_int8", "floor_soft_int8", "int8 matmuls of SOFT attention alone", "none",
        kind="floor", order="SOFT int8 matmuls", build=_floor_graph,
    ),
    BenchMethod(
        "floor_mobilevitv2", "floor_mobilevitv2", "matmuls of MobileViTv2 attention alone",
        "none", kind="floor", order="separable matmuls", build=_zoo_floor_graph,
    ),
    BenchMethod(
        "floor_hydra", "floor_hydra", "matmuls of Hydra attention alone", "none", kind="floor",
        order="Hydra matmuls", build=_zoo_floor_graph,
    ),
    BenchMethod(
        "floor_litemla", "floor_litemla", "products of LiteMLA attention alone (its order)",
        "none", kind="floor", order="LiteMLA products", needs_grid=True, build=_zoo_floor_graph,
    ),
):  # fmt: skip
    register_method(_m)

for _r in (
    NamedRatio(
        "exp_vs_l1_fixed_order", "softmax", "sima_qk",
        "exp vs l1 at fixed (QKᵀ)V order: softmax / SimA", ("tokens",), True,
    ),
    NamedRatio(
        "dynamic_order_speedup", "sima_qk", "sima", "dynamic ordering: SimA (QKᵀ)V / SimA auto",
        ("tokens",), True,
    ),
    NamedRatio(
        "fused_softmax_vs_sima_dynamic", "softmax_fused", "sima", "ORT fused softmax / SimA auto",
        summary=True,
    ),
    NamedRatio("softmax_vs_fused_softmax", "softmax", "softmax_fused", "softmax MSA / ORT fused softmax"),
    NamedRatio("softmax_vs_soft", "softmax", "soft", "softmax / SOFT", ("tokens",), True),
    NamedRatio("xca_vs_sima_kv", "xca", "sima_kv", "XCA / SimA Q(KᵀV)", ("channels",), True),
    NamedRatio("xca_vs_sima_dynamic", "xca", "sima", "XCA / SimA auto", ("channels",), True),
    NamedRatio("qk_vs_kv_order", "sima_qk", "sima_kv", "SimA (QKᵀ)V / SimA Q(KᵀV)"),
    NamedRatio(
        "litemla_quadratic_vs_linear", "litemla_quadratic", "litemla_linear",
        "LiteMLA quadratic / LiteMLA linear",
    ),
    NamedRatio(
        "op_softmax_vs_l1", "op_softmax", "op_l1",
        "pure op over (B,h,N,N): Softmax / l1-normalise", ("tokens",), True,
    ),
    # each block against its matmuls alone (edgeattn.bench.floor)
    NamedRatio("softmax_vs_floor", "softmax", "floor_qk", "softmax MSA / its matmul floor"),
    NamedRatio("sima_qk_vs_floor", "sima_qk", "floor_qk", "SimA (QKᵀ)V / its matmul floor"),
    NamedRatio("sima_kv_vs_floor", "sima_kv", "floor_kv", "SimA Q(KᵀV) / its matmul floor"),
    NamedRatio("xca_vs_floor", "xca", "floor_kv", "XCA / the Q(KᵀV) matmul floor"),
    NamedRatio("soft_vs_floor", "soft", "floor_soft", "SOFT / its matmul floor"),
    NamedRatio(
        "mobilevitv2_vs_floor", "mobilevitv2", "floor_mobilevitv2",
        "MobileViTv2 / its matmul floor",
    ),
    NamedRatio(
        "litemla_order_speedup", "litemla_quadratic", "litemla",
        "dynamic ordering: LiteMLA quadratic / LiteMLA auto", summary=True,
    ),
    NamedRatio("hydra_vs_floor", "hydra", "floor_hydra", "Hydra / its matmul floor"),
    NamedRatio("litemla_vs_floor", "litemla", "floor_litemla", "LiteMLA auto / its matmul floor"),
    # the blocks at int8-static (pair key method@precision) against their int8 matmul floors
    NamedRatio(
        "softmax_int8_vs_floor", "softmax@int8-static", "floor_qk_int8",
        "softmax MSA int8 / its int8 matmul floor",
    ),
    NamedRatio(
        "sima_qk_int8_vs_floor", "sima_qk@int8-static", "floor_qk_int8",
        "SimA (QKᵀ)V int8 / its int8 matmul floor",
    ),
    NamedRatio(
        "sima_kv_int8_vs_floor", "sima_kv@int8-static", "floor_kv_int8",
        "SimA Q(KᵀV) int8 / its int8 matmul floor",
    ),
    NamedRatio(
        "soft_int8_vs_floor", "soft@int8-static", "floor_soft_int8",
        "SOFT int8 / its int8 matmul floor",
    ),
):  # fmt: skip
    register_ratio(_r)
