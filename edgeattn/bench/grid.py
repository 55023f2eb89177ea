"""The token grid a block that works on an image (SOFT's pooling, LiteMLA's depthwise conv) needs:
the most square H × W with H·W = N. A leaf module: the method table's graph builders and the bench
core both read it."""

from __future__ import annotations


def grid_for(tokens: int) -> tuple[int, int] | None:
    """The most square (H, W) with H*W == tokens and H, W >= 2, else None (SOFT needs a grid)."""
    best = None
    h = 1
    while h * h <= tokens:
        if tokens % h == 0:
            best = (h, tokens // h)
        h += 1
    if best is None or best[0] < 2:
        return None
    return best
