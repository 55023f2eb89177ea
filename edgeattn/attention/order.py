"""QKᵀV ordering policy and cost model for softmax-free attention.

Without a softmax between the two products, ``Q̂ K̂ᵀ V`` is associative and can be evaluated as

* ``qk_first``: ``(Q̂ K̂ᵀ) V``, an (N × N) matrix per head, about ``2·N²·C`` multiply-adds;
* ``kv_first``: ``Q̂ (K̂ᵀ V)``, a (d_h × d_h) matrix per head, about ``2·N·C·d_h`` multiply-adds,

with ``C = heads · d_h``. The two are equal in exact arithmetic; only cost and rounding differ.
The costs cross at ``N = d_h``, which is the rule of the official SimA code (``qk_first`` when
``N < C // num_heads``). ``auto`` applies that rule, or a measured ``crossover`` in its place.
"""

from __future__ import annotations

ORDERS: tuple[str, ...] = ("auto", "qk_first", "kv_first")


def validate_order(order: object) -> str:
    """Return ``order`` if it is one of :data:`ORDERS`, else raise ``ValueError`` naming it."""
    if not isinstance(order, str) or order not in ORDERS:
        raise ValueError(f"invalid order {order!r}; valid orders: {', '.join(ORDERS)}")
    return order


def validate_crossover(crossover: object) -> int | None:
    """``None`` (use the head dimension) or a positive ``int`` token count."""
    if crossover is None:
        return None
    if isinstance(crossover, bool) or not isinstance(crossover, int) or crossover < 1:
        raise ValueError(f"invalid crossover {crossover!r}; expected None or a positive int")
    return crossover


def order_threshold(head_dim: int, crossover: int | None = None) -> int:
    """Token count from which ``auto`` switches to ``kv_first``."""
    crossover = validate_crossover(crossover)
    return head_dim if crossover is None else crossover


def choose_order(n_tokens: int, head_dim: int, crossover: int | None = None) -> str:
    """The order ``auto`` picks: ``qk_first`` if ``n_tokens < threshold`` else ``kv_first``,
    with ``threshold = crossover or head_dim`` (the official rule is ``N < d_h``)."""
    return "qk_first" if n_tokens < order_threshold(head_dim, crossover) else "kv_first"


def cost_macs(n_tokens: int, dim: int, heads: int, order: str, crossover: int | None = None) -> int:
    """Multiply-accumulates of the two attention products of one layer (batch 1), for ``order``.

    ``qk_first``: ``h·N·N·d`` for Q̂K̂ᵀ plus the same for the product with V, i.e. ``2·N²·C``.
    ``kv_first``: ``h·d·N·d`` for K̂ᵀV plus the same for the product with Q̂, i.e. ``2·N·C·d``.
    ``auto``: the cost of the order :func:`choose_order` picks. Projections are not included.
    """
    validate_order(order)
    if heads < 1 or dim % heads:
        raise ValueError(f"dim={dim} must be a positive multiple of heads={heads}")
    head_dim = dim // heads
    if order == "auto":
        order = choose_order(n_tokens, head_dim, crossover)
    if order == "qk_first":
        return 2 * n_tokens * n_tokens * dim
    return 2 * n_tokens * dim * head_dim
