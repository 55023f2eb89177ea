"""Shared test set-up: keep torch single-threaded-ish and deterministic on the 2-core CI box."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


class SmallDisk:
    """A tiny tmpfs mounted at ``path`` (the disk-full tests); :meth:`fill` fills it up."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fill(self) -> None:
        """Write zeros to ``fill`` until the disk is full; the mount keeps taking new (empty)
        files (tmpfs inodes are not blocks), so a later open still works and a write fails."""
        fd = os.open(self.path / "fill", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 512):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[..., SmallDisk]]:
    """``small_disk(size="64k")``: a tmpfs of that size under ``tmp_path`` (skips where mount is
    not allowed), unmounted after the test."""
    mounted: list[Path] = []

    def mount(size: str = "64k") -> SmallDisk:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode})")
        mounted.append(where)
        return SmallDisk(where)

    yield mount
    for where in mounted:
        subprocess.run(["umount", str(where)], check=False)
