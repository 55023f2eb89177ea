"""Capture what native code prints on file descriptors 1 and 2 (the TorchScript exporter dumps
the whole Torch IR graph on stdout when it fails; onnxsim's constant folder reports every node it
cannot evaluate). Python-level ``redirect_stdout`` does not see either."""

from __future__ import annotations

import io
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def captured_fds() -> Iterator[io.StringIO]:
    """Capture what native code prints on fds 1 and 2 (onnxsim's constant folder reports every
    node it cannot evaluate, e.g. shape-dependent ones in a dynamic graph, on stdout)."""
    buf = io.StringIO()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = []
    try:
        with tempfile.TemporaryFile(mode="w+b") as tmp:
            for fd in (1, 2):
                saved.append((fd, os.dup(fd)))
                os.dup2(tmp.fileno(), fd)
            try:
                yield buf
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                for fd, old in saved:
                    os.dup2(old, fd)
                    os.close(old)
                saved.clear()
                tmp.seek(0)
                buf.write(tmp.read().decode(errors="replace"))
    finally:
        for fd, old in saved:  # pragma: no cover - only if dup2 itself failed
            os.dup2(old, fd)
            os.close(old)
