"""One rich Console factory for every command."""

from __future__ import annotations

import sys
from typing import Any


def console(stderr: bool = False, **kw: Any) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if not stream.isatty():
        # Piped output (CI logs, `| tee`, files) gets 120 columns rather than rich's 80 so tables
        # stay whole; a terminal keeps its own width.
        kw.setdefault("width", 120)
    return Console(stderr=stderr, **kw)
