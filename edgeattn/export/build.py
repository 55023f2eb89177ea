"""The model an export works on: built from the registry by name (seeded, so the same request gives
the same file) or a copy of the module given, with the export facts its registry entry declares,
then probed once at the export shape."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from edgeattn.errors import CheckpointError, EdgeAttnError, ExportError, ModelError
from edgeattn.export.plan import Request
from edgeattn.export.util import first_line


@dataclass
class Built:
    name: str
    family: str
    facts: Any  # edgeattn.models.registry.ExportFacts
    model: Any  # in eval mode, export's own (a deep copy when a module was given)


def _overrides_for(req: Request, entry: Any) -> dict[str, Any]:
    """The registry overrides of a request: ``--set`` plus the shape and order options."""
    name = entry.name
    kw = dict(req.overrides)
    opts = set(entry.options)
    if entry.export.is_tokens:
        if req.img_hw is not None:
            raise ExportError(
                f"{name} is an attention block on (B, N, C) tokens: give --tokens/--dim/--heads, "
                "not --img-size"
            )
        for k in ("tokens", "dim", "heads"):
            v = getattr(req, k)
            if v is not None:
                if k in kw and kw[k] != v:
                    raise ExportError(f"{k}={v} and --set {k}={kw[k]} disagree")
                kw[k] = v
    else:
        given = [k for k in ("tokens", "dim", "heads") if getattr(req, k) is not None]
        if given:
            raise ExportError(
                f"--{given[0]} is for attention blocks; {name} is an image network: use --img-size"
            )
        hw = req.img_hw
        if hw is not None and "img_size" in opts and "img_size" not in kw and hw[0] == hw[1]:
            kw["img_size"] = hw[0]
    if "order" in opts and "order" not in kw:
        kw["order"] = req.order
    if "crossover" in opts and "crossover" not in kw and req.crossover is not None:
        kw["crossover"] = req.crossover
    return kw


def _from_module(req: Request) -> Built:
    from edgeattn.models.registry import ExportFacts, entry_of, get_entry

    model = req.target
    entry = entry_of(model)
    if entry is None:  # a module built by hand: its config may still name a registered model
        cfg = getattr(model, "config", None)
        cname = getattr(cfg, "name", None) or getattr(model, "name", None)
        if isinstance(cname, str):
            try:
                entry = get_entry(cname)
            except ModelError:
                entry = None
    if entry is not None:
        name, family, facts = entry.name, entry.family, entry.export
    else:
        name, family = type(model).__name__, "custom"
        facts = getattr(model, "export_facts", None) or ExportFacts()
    model = copy.deepcopy(model)  # export sets the SimA order on its own copy
    if req.ckpt is not None:
        from edgeattn.models.checkpoint import load_checkpoint

        load_checkpoint(model, str(req.ckpt))
    model.eval()
    return Built(name, family, facts, model)


def build_model(req: Request) -> Built:
    """The model of ``req``: raises ModelError / CheckpointError / ExportError naming the cause."""
    if not req.by_name:
        return _from_module(req)
    import torch

    from edgeattn.models.registry import create_model, get_entry

    name = req.target
    entry = get_entry(name)  # ModelError with close matches
    kw = _overrides_for(req, entry)
    ckpt = str(req.ckpt) if req.ckpt else None
    try:
        # random-init weights (no checkpoint) are seeded: the same request gives the same file
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = create_model(name, checkpoint=ckpt, **kw)
    except EdgeAttnError:
        raise
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint not found: {exc.filename or ckpt}") from None
    except Exception as exc:
        if ckpt is not None:
            raise CheckpointError(
                f"cannot load checkpoint {ckpt!r} into {name}: "
                f"{type(exc).__name__}: {first_line(exc)}"
            ) from None
        raise ModelError(f"cannot build {name}: {type(exc).__name__}: {first_line(exc)}") from None
    return Built(name, entry.family, entry.export, model)


def probe(name: str, model: Any, x: Any) -> tuple[Any, dict[int, int]]:
    """Eager forward at the export shape: the output and, per SimA module id, the token count it
    saw; a model that cannot take ``x`` or returns no single tensor is refused here."""
    import torch

    from edgeattn.export.sima_order import sima_modules

    seen: dict[int, int] = {}
    hooks = [
        m.register_forward_pre_hook(
            lambda mod, args: seen.__setitem__(id(mod), int(args[0].shape[1]))
        )
        for m in sima_modules(model)
    ]
    try:
        with torch.no_grad():
            y = model(x)
    except EdgeAttnError:
        raise
    except Exception as exc:
        raise ModelError(f"{name} cannot take input {list(x.shape)}: {first_line(exc)}") from None
    finally:
        for h in hooks:
            h.remove()
    if not isinstance(y, torch.Tensor):
        raise ExportError(f"{name} returns {type(y).__name__}, not one tensor; cannot export")
    return y, seen
