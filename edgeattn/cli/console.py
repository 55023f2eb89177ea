"""One rich Console factory for every command, and the progress of long steps."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any


def console(stderr: bool = False, **kw: Any) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if not stream.isatty():
        # Piped output (CI logs, `| tee`, files) gets 120 columns rather than rich's 80 so tables
        # stay whole; a terminal keeps its own width.
        kw.setdefault("width", 120)
    return Console(stderr=stderr, **kw)


def interactive() -> bool:
    """A person watches stdout (a terminal), rather than a pipe, a file or a CI log."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def plain_line(message: str, err: bool = False) -> None:
    """One progress line, flushed at once (a pipe would otherwise buffer it to the end)."""
    stream = sys.stderr if err else sys.stdout
    stream.write(message.rstrip("\n") + "\n")
    stream.flush()


@contextlib.contextmanager
def progress(
    con: Any, title: str, quiet: bool = False, err: bool = False
) -> Iterator[Callable[[str], None]]:
    """Yields ``step(message)`` for a long command's steps (each export and export stage, each
    measurement, each sweep point, each host's lines).

    In a terminal: one live rich status line (``title``, then the current step). Piped (not a
    terminal): one plain line per step, on stdout with the tables (CI logs, ``| tee``), or on
    stderr with ``err`` (a command whose stdout is JSON), so a log shows what runs.
    The library's :func:`edgeattn.progress.say` (the export stages) reaches the same ``step``.
    """
    from edgeattn.progress import listening

    if quiet:
        with listening(None):
            yield lambda message: None
        return
    if not interactive():  # no header line: a request refused at once stays one error line

        def line(message: str) -> None:
            plain_line(message, err)

        with listening(line):
            yield line
        return
    with con.status(f"{title}...") as status:

        def step(message: str) -> None:
            status.update(message)

        with listening(step):
            yield step
