"""Model registry: variants are data behind one decorator (timm-style), each with its export facts.

A registered entry point is a function ``fn(**overrides) -> nn.Module``. It receives only
overrides the user passed; unknown override names are rejected here, before construction, with
the list of valid ones.

Two ways in, one mechanism: :func:`register_model` registers one function;
:func:`register_variants` registers one entry per item of a dict of sizes behind a template
function, and sets each entry's ``__name__`` and ``__doc__``. Every entry carries
:class:`ExportFacts`: what :mod:`edgeattn.export` needs to know about the model (input kind and
names, dynamic axes, patch and extra tokens, a fixed token grid, the verification tolerance and
why, a hand-written graph builder), declared by the family, never guessed by the exporter.

Families register themselves: every public module of :mod:`edgeattn.models` is imported on the
first look-up, so a new family is a new file there and nothing else.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgeattn.errors import ModelError


@dataclass(frozen=True)
class PaperFigures:
    """A model's size and cost as its paper or official README states them (rounded there)."""

    params_m: float | None  # millions of parameters
    gflops: float | None  # GFLOPs at 224 x 224, 1 multiply-add = 1 FLOP
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"params_m": self.params_m, "gflops": self.gflops, "source": self.source}


@dataclass(frozen=True)
class InputSpec:
    """Names and dynamic axes of one input kind (the ONNX file's single input and output)."""

    input_name: str
    output_name: str
    dynamic_axes: Mapping[int, str]
    output_dynamic_axes: Mapping[int, str]


#: ``image``: ``(B, C, H, W) -> logits (B, classes)``; the model's ``config`` gives ``img_size``
#: (default 224) and ``in_chans`` (default 3). ``tokens``: ``(B, N, C) -> (B, N, C)``; the
#: model's ``config`` gives ``tokens``, ``dim`` and ``heads``.
INPUT_KINDS: dict[str, InputSpec] = {
    "image": InputSpec("image", "logits", {0: "batch", 2: "height", 3: "width"}, {0: "batch"}),
    "tokens": InputSpec("x", "y", {0: "batch", 1: "tokens"}, {0: "batch", 1: "tokens"}),
}


@dataclass(frozen=True)
class ExportFacts:
    """What export is told about a model (one declaration per family; see the module doc).

    * ``input``: a key of :data:`INPUT_KINDS` (names and dynamic axes follow from it).
    * ``method``: the attention method recorded in the export spec (``softmax``, ``sima`` ...).
    * ``tolerance``: the name of the verification bound in
      :data:`edgeattn.export.verify.TOLERANCES`; ``tolerance_reason`` says why that one.
    * ``patch`` and ``extra_tokens`` (image input): the SimA layers see
      ``N = (H // patch) * (W // patch) + extra_tokens`` tokens, which the runtime order ``If``
      computes from the input shape.
    * ``size_multiple`` (image input): the sides a dynamic export is checked at move by this
      (default: ``patch``, else 32).
    * ``fixed_grid``: why the token axis cannot be dynamic (the block holds a fixed grid);
      ``None`` when it can.
    * ``builder``: ``"module:function"`` writing the ONNX graph by hand instead of a torch
      exporter: ``fn(model, *, opset, batch, dynamic) -> (ModelProto, info)`` with ``info``
      ``{"implementation": str, "spec": {extra spec fields}}``.
    * ``strict_hint``: the hint given when ``--strict-softmax-free`` finds a softmax.
    """

    input: str = "image"
    method: str = "softmax"
    tolerance: str = "TOL_SOFTMAX"
    tolerance_reason: str = "float32 GEMMs and softmax: ORT and PyTorch differ by summation order"
    patch: int | None = None
    extra_tokens: int = 0
    size_multiple: int | None = None
    fixed_grid: str | None = None
    builder: str | None = None
    strict_hint: str | None = None

    def __post_init__(self) -> None:
        if self.input not in INPUT_KINDS:
            raise ValueError(f"input={self.input!r}; valid: {', '.join(INPUT_KINDS)}")

    @property
    def io(self) -> InputSpec:
        return INPUT_KINDS[self.input]

    @property
    def is_tokens(self) -> bool:
        return self.input == "tokens"

    @property
    def step(self) -> int:
        """Pixels an image side moves by between the sizes a dynamic export is verified at."""
        return self.size_multiple or self.patch or 32


@dataclass(frozen=True)
class ModelCost:
    """A model's parameters and multiply-adds at its default input, as :mod:`edgeattn.models.cost`
    counts them (:func:`cached_cost`: from its generated table). ``flops``: multiply-adds without
    SOFT's pseudo-inverse; ``newton_flops``: those of it."""

    name: str
    params: int
    flops: int
    newton_flops: int
    input_shape: tuple[int, ...]

    @property
    def gflops(self) -> float:
        return self.flops / 1e9

    @property
    def newton_gflops(self) -> float:
        return self.newton_flops / 1e9

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": self.params,
            "gflops": round(self.gflops, 4),
            "newton_gflops": round(self.newton_gflops, 4),
            "flops": self.flops,
            "newton_flops": self.newton_flops,
            "input_shape": list(self.input_shape),
        }


def cached_cost(name: str) -> ModelCost | None:
    """The figure from the generated table at the default input, or None if it has none."""
    from edgeattn.models._cost_table import COSTS

    row = COSTS.get(name)
    if row is None:
        return None
    params, flops, newton, shape = row
    return ModelCost(name, params, flops, newton, tuple(shape))


@dataclass(frozen=True)
class ModelEntry:
    name: str
    fn: Callable[..., Any]
    family: str
    description: str = ""
    paper: PaperFigures | None = None
    export: ExportFacts = field(default_factory=ExportFacts)

    @property
    def options(self) -> list[str]:
        """Names of the overrides this entry accepts."""
        sig = inspect.signature(self.fn)
        return sorted(p for p in sig.parameters if p not in ("kwargs",))

    @property
    def cost(self) -> Any:
        """Parameters and FLOPs at the default input (:class:`ModelCost`, from the generated
        table), or None if the table has no row for this model."""
        return cached_cost(self.name)


_REGISTRY: dict[str, ModelEntry] = {}
_LOADED = False


def register_model(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    family: str | None = None,
    description: str = "",
    paper: PaperFigures | None = None,
    export: ExportFacts | None = None,
) -> Any:
    """Register ``fn`` as a model entry point (usable bare or with keyword arguments).

    ``paper``: the published parameters / GFLOPs, shown beside edgeattn's own count.
    ``export``: the model's :class:`ExportFacts` (default: an image net with softmax bounds)."""

    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        key = name or f.__name__
        if key in _REGISTRY and _REGISTRY[key].fn is not f:
            raise ValueError(f"model {key!r} is registered twice")
        fam = family or f.__module__.rsplit(".", 1)[-1]
        _REGISTRY[key] = ModelEntry(
            key,
            f,
            fam,
            description or (f.__doc__ or "").strip().split("\n")[0],
            paper,
            export or ExportFacts(),
        )
        return f

    if fn is not None:
        return deco(fn)
    return deco


def _per_variant(value: Any, name: str, spec: Any) -> Any:
    return value(name, spec) if callable(value) else value


def register_variants(
    variants: Mapping[str, Any],
    *,
    family: str,
    doc: str | Callable[[str, Any], str],
    export: ExportFacts | Callable[[str, Any], ExportFacts] | None = None,
    paper: PaperFigures | Callable[[str, Any], PaperFigures | None] | None = None,
) -> Callable[[Callable[..., Any]], dict[str, Callable[..., Any]]]:
    """Decorator on a template ``fn(name, spec, **options) -> nn.Module``: registers one entry
    ``name`` per item of ``variants`` (``name -> spec``, the variant's sizes) taking ``**options``.

    The decorator sets each entry's ``__name__``/``__qualname__`` (the name) and ``__doc__``
    (``doc``, or ``doc(name, spec)``); ``export`` and ``paper`` are one value for the family or
    a function of ``(name, spec)``. Returns ``{name: entry}``."""

    def deco(template: Callable[..., Any]) -> dict[str, Callable[..., Any]]:
        sig = inspect.signature(template)
        params = list(sig.parameters.values())[2:]  # after (name, spec)
        entries = {}
        for vname, spec in variants.items():

            def entry(*, _n: str = vname, _s: Any = spec, **options: Any) -> Any:
                return template(_n, _s, **options)

            entry.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
            entry.__name__ = entry.__qualname__ = vname
            entry.__module__ = template.__module__
            entry.__doc__ = _per_variant(doc, vname, spec)
            register_model(
                entry,
                family=family,
                paper=_per_variant(paper, vname, spec),
                export=_per_variant(export, vname, spec),
            )
            entries[vname] = entry
        return entries

    return deco


def _load_all() -> None:
    """Import every public module of :mod:`edgeattn.models`: each family registers itself."""
    global _LOADED
    if _LOADED:
        return
    import importlib
    import pkgutil

    import edgeattn.models as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
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


def entry_of(model: Any) -> ModelEntry | None:
    """The registry entry a module was built from by :func:`create_model`, else None."""
    name = getattr(model, "registry_name", None)
    if not isinstance(name, str):
        return None
    _load_all()
    return _REGISTRY.get(name)


def create_model(name: str, checkpoint: str | None = None, **overrides: Any) -> Any:
    """Build a registered model in eval mode; optionally load an official checkpoint strictly.

    The module remembers its entry (``model.registry_name``), so export finds its facts."""
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
    model.registry_name = name
    if checkpoint is not None:
        from edgeattn.models.checkpoint import load_checkpoint

        model.checkpoint_info = load_checkpoint(model, checkpoint, name=name)
    model.eval()
    return model
