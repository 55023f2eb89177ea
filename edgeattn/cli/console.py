"""One rich Console factory for every command, and the progress of long steps."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

#: the width of piped output when ``COLUMNS`` does not say (rich's own default, 80, cuts tables)
PIPE_WIDTH = 120


def piped_width(environ: Mapping[str, str] | None = None) -> int:
    """Columns for output that is not a terminal: ``$COLUMNS`` if a positive integer, else 120."""
    raw = (os.environ if environ is None else environ).get("COLUMNS", "")
    try:
        width = int(raw.strip())
    except ValueError:
        return PIPE_WIDTH
    return width if width > 0 else PIPE_WIDTH


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def console(stderr: bool = False, **kw: Any) -> Any:
    """The rich Console of every command.

    A terminal keeps its own width and rich's word wrapping. Piped output (CI logs, ``| tee``,
    files, tests) is ``$COLUMNS`` wide (:func:`piped_width`) for tables, and printed text is
    soft-wrapped: one logical line stays one line, so a sentence, a path or a file name is never
    broken by a hard line break (the pager or the terminal showing the log wraps it). Tables still
    fit the width; :func:`keep_whole` keeps their name and path columns uncut.
    """
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if not _is_terminal(stream):
        kw.setdefault("width", piped_width())
        kw.setdefault("soft_wrap", True)
    return Console(stderr=stderr, **kw)


def keep_whole(table: Any, *columns: int | str) -> Any:
    """Never wrap or cut the cells of these columns of a rich ``Table`` (names, paths).

    Each column (by index or header) gets ``no_wrap`` and a minimum width of its widest cell, so
    rich narrows and wraps the other columns instead; when even that is not enough the table grows
    wider than the console rather than print "cls_attn_blo…". Call it after the rows are added.
    Returns the table.
    """
    from rich.cells import cell_len
    from rich.text import Text

    def width(cell: Any) -> int:
        if isinstance(cell, str):
            try:
                cell = Text.from_markup(cell)
            except Exception:  # not valid markup: rich prints it as it is
                cell = Text(cell)
        if isinstance(cell, Text):
            return max((cell_len(line) for line in cell.plain.splitlines()), default=0)
        return 0

    for key in columns:
        if isinstance(key, int):
            column = table.columns[key]
        else:
            column = next(c for c in table.columns if str(c.header) == key)
        widest = max([width(column.header), *(width(c) for c in column.cells)])
        column.no_wrap = True
        column.overflow = "ignore"
        column.min_width = max(column.min_width or 0, widest)
    return table


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
