"""``--set KEY=VALUE`` model overrides: the one parser behind ``export``, ``profile`` and the rest.

A value is read, in this order, as: ``true``/``false`` (any case) -> bool; ``none``/``null`` ->
None; an int; a float; JSON (``[1,2]``, ``{"a": 1}``, ``"quoted"``); else the text as a string.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from edgeattn.errors import ModelError


def parse_value(text: str) -> Any:
    """One ``--set`` value (see the module doc)."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for conv in (int, float, json.loads):
        try:
            return conv(text)
        except ValueError:
            continue
    return text


def parse_set(items: Iterable[str] | None, option: str = "--set") -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: value}``; raises :class:`ModelError` on an item without ``=``."""
    out: dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise ModelError(
                f"{option} {item!r}: expected KEY=VALUE", hint="e.g. --set drop_path=0.1"
            )
        k, v = item.split("=", 1)
        k = k.strip()
        if not k:
            raise ModelError(f"{option} {item!r}: empty KEY", hint="e.g. --set drop_path=0.1")
        out[k] = parse_value(v)
    return out
