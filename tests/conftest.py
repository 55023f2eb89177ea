"""Shared test set-up: keep torch single-threaded-ish and deterministic on the 2-core CI box."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
