"""Model registry: variants are data behind ``@register_model`` (timm-style).

A registered entry point is a function ``fn(**overrides) -> nn.Module``. It receives only
overrides the user passed; unknown override names are rejected here, before construction, with
the list of valid ones.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgeattn.errors import ModelError

_FAMILY_MODULES = (
    "edgeattn.models.soft",
    "edgeattn.models.sima",
    "edgeattn.models.xcit",
    "edgeattn.models.deit",
    "edgeattn.models.block",
)


@dataclass(frozen=True)
class PaperFigures:
    """A model's size and cost as its paper or official README states them (rounded there)."""

    params_m: float | None  # millions of parameters
    gflops: float | None  # GFLOPs at 224 x 224, 1 multiply-add = 1 FLOP
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"params_m": self.params_m, "gflops": self.gflops, "source": self.source}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: Callable[..., Any]
    family: str
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    paper: PaperFigures | None = None

    @property
    def options(self) -> list[str]:
        """Names of the overrides this entry accepts."""
        sig = inspect.signature(self.fn)
        return sorted(p for p in sig.parameters if p not in ("kwargs",))

    @property
    def cost(self) -> Any:
        """Parameters and FLOPs at the default input (:class:`~edgeattn.models.cost.ModelCost`,
        from the generated table), or None if the table has no row for this model."""
        from edgeattn.models.cost import cached_cost

        return cached_cost(self.name)


_REGISTRY: dict[str, ModelEntry] = {}
_LOADED = False


def register_model(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    family: str | None = None,
    defaults: dict[str, Any] | None = None,
    description: str = "",
    paper: PaperFigures | None = None,
) -> Any:
    """Register ``fn`` as a model entry point (usable bare or with keyword arguments).

    ``paper``: the published parameters / GFLOPs, shown beside edgeattn's own count."""

    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        key = name or f.__name__
        if key in _REGISTRY and _REGISTRY[key].fn is not f:
            raise ValueError(f"model {key!r} is registered twice")
        fam = family or f.__module__.rsplit(".", 1)[-1]
        _REGISTRY[key] = ModelEntry(
            key,
            f,
            fam,
            dict(defaults or {}),
            description or (f.__doc__ or "").strip().split("\n")[0],
            paper,
        )
        return f

    if fn is not None:
        return deco(fn)
    return deco


def _load_all() -> None:
    global _LOADED
    if _LOADED:
        return
    import importlib

    for mod in _FAMILY_MODULES:
        importlib.import_module(mod)
    _LOADED = True


def list_models(pattern: str | None = None, family: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a glob ``pattern`` and ``family``."""
    _load_all()
    names = sorted(_REGISTRY)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    if family:
        names = [n for n in names if _REGISTRY[n].family == family]
    return names


def get_entry(name: str) -> ModelEntry:
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"did you mean: {', '.join(close)}?" if close else "see `edgeattn list`"
        raise ModelError(
            f"unknown model {name!r}; {hint}", hint="run `edgeattn list` for all names"
        ) from None


def model_info(name: str) -> ModelEntry:
    return get_entry(name)


def create_model(name: str, checkpoint: str | None = None, **overrides: Any) -> Any:
    """Build a registered model in eval mode; optionally load an official checkpoint strictly."""
    entry = get_entry(name)
    sig = inspect.signature(entry.fn)
    accepts_var = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    if not accepts_var:
        bad = [k for k in overrides if k not in sig.parameters]
        if bad:
            valid = entry.options
            sugg = difflib.get_close_matches(bad[0], valid, n=3, cutoff=0.5)
            extra = f" (did you mean {', '.join(sugg)}?)" if sugg else ""
            raise ModelError(
                f"unknown override {bad[0]!r} for model {name!r}{extra}; valid: {', '.join(valid)}"
            )
    model = entry.fn(**overrides)
    if checkpoint is not None:
        from edgeattn.models.checkpoint import load_checkpoint

        model.checkpoint_info = load_checkpoint(model, checkpoint, name=name)
    model.eval()
    return model
