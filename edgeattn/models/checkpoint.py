"""Load checkpoints (.pth/.pt from torch.save, or .safetensors) strictly, on CPU.

Official formats: SOFT's timm train script stores ``state_dict`` and ``state_dict_ema`` (its eval
path reads ``state_dict_ema``); SimA's DeiT script stores ``model``. A bare state_dict works too, and a
``module.`` prefix (DistributedDataParallel) is stripped. ``.safetensors`` files (the model hubs'
format) hold one flat state_dict.

timm's layouts are recognised and converted (:func:`map_timm_layout`), then loaded strictly:

* XCiT / SimA-XCiT: timm names the positional encoder ``pos_embed.token_projection.*`` (official:
  ``pos_embeder.token_projection.*``) and splits class attention's fused ``qkv`` into
  ``cls_attn_blocks.{i}.attn.{q,k,v}.{weight,bias}``; they are renamed and concatenated back
  (``qkv = cat([q, k, v])``, the inverse of timm's ``checkpoint_filter_fn`` split).
* DeiT: timm's ``deit_*`` keys and shapes are edgeattn's (checked against timm 1.0.31), so nothing
  is mapped.

Anything else that does not match is an error listing the missing, unexpected and mis-shaped keys.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgeattn.errors import CheckpointError
from edgeattn.runtime.records import sha256_file  # the one file hash, importable from here too

log = logging.getLogger(__name__)

# Preference when a file holds several: the EMA weights are what the official SOFT eval uses.
CHECKPOINT_KEYS = ("state_dict_ema", "model_ema", "model", "state_dict")


def _is_safetensors(head: bytes) -> bool:
    """safetensors: an 8-byte little-endian header length, then the JSON header ``{...``."""
    return (
        len(head) >= 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < 1 << 30
    )


def _read_safetensors(p: Path, key: str | None) -> dict[str, Any]:
    try:
        from safetensors.torch import load_file
    except ImportError:  # pragma: no cover - safetensors is a dependency
        raise CheckpointError(
            f"{str(p)!r} is a .safetensors file but the safetensors package is missing",
            hint="pip install safetensors",
        ) from None
    if key is not None:
        raise CheckpointError(
            f"checkpoint {str(p)!r} is a .safetensors file (one flat state_dict): "
            f"it has no key {key!r}"
        )
    try:
        return load_file(str(p), device="cpu")
    except Exception as exc:  # noqa: BLE001 - a corrupt file is reported the same way
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {str(p)!r}: {first[:200]}") from None


def read_state_dict(path: str | Path, key: str | None = None) -> dict[str, Any]:
    import torch

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist or is not a file")
    with open(p, "rb") as f:
        head = f.read(9)
    if _is_safetensors(head):
        sd: Any = _read_safetensors(p, key)
        if not sd:
            raise CheckpointError(f"checkpoint {str(p)!r} holds no state_dict")
        return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in sd.items()}
    # torch.save writes a zip archive (PK..) since 1.6, a pickle (protocol 2+: 0x80) before
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        kind = "empty" if not head else f"it starts with {head[:4]!r}"
        raise CheckpointError(
            f"not a PyTorch checkpoint: {str(p)} (not a torch.save zip archive, pickle or "
            f"safetensors file; {kind})",
            hint="give the .pth/.pt file saved by torch.save (e.g. the official release asset) "
            "or a .safetensors file",
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


_TIMM_CLS_QKV = re.compile(r"(cls_attn_blocks\.\d+\.attn)\.([qkv])\.(weight|bias)")


def map_timm_layout(sd: dict[str, Any], model_keys: set[str]) -> tuple[dict[str, Any], str | None]:
    """Convert timm's XCiT/SimA-XCiT layout to the official one the models use.

    Returns (state_dict, note): ``note`` says in one line what was mapped, None if nothing was.
    Only renames the model asks for (it has the official key and the file lacks it), so a
    checkpoint of another family is left alone and fails the strict check with the key report.
    """
    import torch

    notes = []
    if any(k.startswith("pos_embeder.") for k in model_keys) and not any(
        k.startswith("pos_embeder.") for k in sd
    ):
        renamed = {
            k: "pos_embeder." + k[len("pos_embed.") :]
            for k in sd
            if k.startswith("pos_embed.token_projection.")
        }
        if renamed:
            sd = {renamed.get(k, k): v for k, v in sd.items()}
            notes.append("pos_embed.token_projection.* -> pos_embeder.token_projection.*")
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for k, v in sd.items():
        m = _TIMM_CLS_QKV.fullmatch(k)
        if m and f"{m.group(1)}.qkv.{m.group(3)}" in model_keys:
            groups.setdefault((m.group(1), m.group(3)), {})[m.group(2)] = v
    fused = {
        f"{prefix}.qkv.{kind}": torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
        for (prefix, kind), parts in groups.items()
        if set(parts) == {"q", "k", "v"} and f"{prefix}.qkv.{kind}" not in sd
    }
    if fused:
        gone = {
            f"{k.rsplit('.qkv.', 1)[0]}.{c}.{k.rsplit('.', 1)[1]}" for k in fused for c in "qkv"
        }
        sd = {k: v for k, v in sd.items() if k not in gone}
        sd.update(fused)
        blocks = sorted({int(k.split(".")[1]) for k in fused})
        notes.append(
            f"cls_attn_blocks.{{{','.join(map(str, blocks))}}}.attn.{{q,k,v}} -> qkv (cat)"
        )
    if not notes:
        return sd, None
    return sd, "timm layout mapped: " + "; ".join(notes)


def load_checkpoint(
    model: Any, path: str | Path, key: str | None = None, name: str | None = None
) -> dict[str, Any]:
    """Load ``path`` into ``model`` strictly.

    Returns {path, sha256, entries, mapped}: ``mapped`` is the one-line note of the timm-layout
    conversion (:func:`map_timm_layout`), or None; it is also logged at INFO."""
    sd = read_state_dict(path, key)
    own = model.state_dict()
    sd, mapped = map_timm_layout(sd, set(own))
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
    if mapped:
        log.info("%s: %s", path, mapped)
    return {"path": str(path), "sha256": sha256_file(path), "entries": len(sd), "mapped": mapped}
