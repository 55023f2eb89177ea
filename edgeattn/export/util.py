"""Small host-side helpers the export modules share: one ``first_line`` for error messages, the
one sha256 of a file (:func:`edgeattn.runtime.records.sha256_file`), seeded inputs, JSON."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from edgeattn.runtime.records import sha256_file  # noqa: F401 - the one file hash, re-exported

#: Seed of every random input an export draws (the same request gives the same file).
SEED = 0


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (its type name if it has none), cut at ``limit``."""
    s = str(exc).strip().splitlines()
    return (s[0] if s else type(exc).__name__)[:limit]


def randn(shape: tuple[int, ...], seed: int = SEED) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def jsonable(obj: Any) -> Any:
    """``obj`` with dataclasses, tuples, numpy scalars and paths turned into JSON types."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)
