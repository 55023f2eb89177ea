"""Load official checkpoints (.pth) strictly, on CPU.

Official formats: SOFT's timm train script stores ``state_dict`` and ``state_dict_ema`` (its eval
path reads ``state_dict_ema``); SimA's DeiT script stores ``model``. A bare state_dict works too, and a
``module.`` prefix (DistributedDataParallel) is stripped. timm-converted XCiT checkpoints name the
positional encoder ``pos_embed.`` where the official code says ``pos_embeder.``; that one prefix is
mapped. Anything else that does not match is an error listing the missing and unexpected keys.
"""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeattn.errors import CheckpointError

# Preference when a file holds several: the EMA weights are what the official SOFT eval uses.
CHECKPOINT_KEYS = ("state_dict_ema", "model_ema", "model", "state_dict")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_state_dict(path: str | Path, key: str | None = None) -> dict[str, Any]:
    import torch

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist or is not a file")
    with open(p, "rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive (PK..) since 1.6, a pickle (protocol 2+: 0x80) before
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        kind = "empty" if not head else f"it starts with {head!r}"
        raise CheckpointError(
            f"not a PyTorch checkpoint: {str(p)} (not a torch.save zip archive or pickle; {kind})",
            hint="give the .pth/.pt file saved by torch.save (e.g. the official release asset)",
        )
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is reported the same way
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot read checkpoint {str(p)!r}: {first[:200]}",
            hint="edgeattn loads checkpoints with torch.load(weights_only=True); re-save the "
            "state_dict alone (torch.save(ckpt['model'], path)) if it holds other pickled objects",
        ) from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"checkpoint {str(p)!r} holds a {type(obj).__name__}, not a state_dict"
        )
    if key is not None:
        if key not in obj:
            raise CheckpointError(
                f"checkpoint {str(p)!r} has no key {key!r}; top-level keys: {', '.join(map(str, obj))}"
            )
        sd = obj[key]
    else:
        sd = next((obj[k] for k in CHECKPOINT_KEYS if isinstance(obj.get(k), Mapping)), obj)
    if not isinstance(sd, Mapping) or not sd:
        raise CheckpointError(f"checkpoint {str(p)!r} holds no state_dict")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in sd.items()}


def _map_aliases(sd: dict[str, Any], model_keys: set[str]) -> dict[str, Any]:
    if any(k.startswith("pos_embeder.") for k in model_keys) and not any(
        k.startswith("pos_embeder.") for k in sd
    ):
        sd = {
            (
                "pos_embeder." + k[len("pos_embed.") :]
                if k.startswith("pos_embed.token_projection")
                else k
            ): v
            for k, v in sd.items()
        }
    return sd


def load_checkpoint(
    model: Any, path: str | Path, key: str | None = None, name: str | None = None
) -> dict[str, Any]:
    """Load ``path`` into ``model`` strictly. Returns {path, sha256, entries}."""
    sd = read_state_dict(path, key)
    own = model.state_dict()
    sd = _map_aliases(sd, set(own))
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shape_bad = sorted(
        f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(sd)
        if hasattr(sd[k], "shape") and tuple(sd[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shape_bad:

        def few(xs: list[str]) -> str:
            return ", ".join(xs[:6]) + (f" (+{len(xs) - 6} more)" if len(xs) > 6 else "")

        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {few(unexpected)}")
        if shape_bad:
            parts.append(f"shape mismatch {len(shape_bad)}: {few(shape_bad)}")
        name = name or type(model).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not match {name}: " + "; ".join(parts),
            hint="check the model name (e.g. soft_tiny vs soft_norm_tiny, _p16 vs _p8) and overrides",
        )
    model.load_state_dict(sd, strict=True)
    return {"path": str(path), "sha256": sha256_file(path), "entries": len(sd)}
