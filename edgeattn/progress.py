"""Progress of long steps, reported by the library and shown by whoever listens (the CLI).

The library calls a plain ``on_progress(message)`` callback where it has one (``bench.core``,
``bench.sweep``, ``remote``), and :func:`say` where threading a callback through would mean
changing many signatures (the export stages): :func:`listening` sets the callback that
:func:`say` reaches, for the current context. Nothing listens by default: a library user sees
nothing unless they ask.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

ProgressFn = Callable[[str], None]

_LISTENER: contextvars.ContextVar[ProgressFn | None] = contextvars.ContextVar(
    "edgeattn_progress", default=None
)


@contextlib.contextmanager
def listening(fn: ProgressFn | None) -> Iterator[None]:
    """Within this block, :func:`say` messages go to ``fn`` (None: nowhere)."""
    token = _LISTENER.set(fn)
    try:
        yield
    finally:
        _LISTENER.reset(token)


def say(message: str) -> None:
    """Report one step to the current listener, if any."""
    fn = _LISTENER.get()
    if fn is not None:
        fn(message)


class StageTimings(dict):
    """A ``{"stage_s": seconds}`` dict that reports each stage as its time is recorded.

    The export keeps its stage timings in one of these, so a listener hears ``export block_msa:
    build 0.21s`` as each stage ends; ``total_s`` is not a stage.
    """

    def __init__(self, *args: Any, what: Any = "", **kw: Any) -> None:
        super().__init__(*args, **kw)  # copies (dataclasses.asdict) keep the items
        self.what = what if isinstance(what, str) else type(what).__name__

    def __setitem__(self, key: str, value: float) -> None:
        super().__setitem__(key, value)
        if key.endswith("_s") and key != "total_s":
            say(f"export {self.what}: {key[:-2]} {value:.2f}s")
