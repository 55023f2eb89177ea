"""SIGTERM handled like Ctrl-C: one context manager for the CLI, the bench and the remote helper.

``kill PID`` then runs the same clean-up as Ctrl-C (runtime subprocesses killed, device runs
stopped, run directories removed, the "records kept" line printed). :class:`Terminated` is a
:class:`KeyboardInterrupt`, so code that handles Ctrl-C handles it too, and the CLI can still
tell the two apart for the exit status (130 vs 143, ``edgeattn.errors``).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C so the same clean-up runs."""


@contextlib.contextmanager
def sigterm_as_interrupt(*, only_if_default: bool = False) -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated` in the main thread.

    ``only_if_default``: leave a handler someone else installed (a CLI that reports what was
    kept) as it is, and take over only from the default action. Outside the main thread (where
    Python cannot install handlers) this does nothing.
    """

    def handler(signum: int, frame: Any) -> None:
        raise Terminated()

    try:
        if only_if_default and signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            yield
            return
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
