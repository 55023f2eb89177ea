"""What an export will do, decided before any work: the request validated (:class:`Request`),
where it goes (:class:`Destination`: file stem, cache key, paths), which exporter writes it
(:func:`choose_exporter`), and, once the model is built, the :class:`ExportPlan`: input shape,
names and dynamic axes (from the model's export facts), the probe output and the SimA order."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeattn.defaults import OPSET
from edgeattn.errors import CheckpointError, ExportError, ModelError
from edgeattn.export.sidecar import check_writable_dir
from edgeattn.export.util import jsonable, sha256_file

#: Opsets edgeattn writes: TorchScript 13..20, dynamo 21..23 (and 18..20 for runtime order).
MIN_OPSET = 13
MAX_OPSET = 23
TORCHSCRIPT_MAX_OPSET = 20
DYNAMO_MIN_OPSET = 18
SUPPORTED_OPSETS = range(MIN_OPSET, MAX_OPSET + 1)
EXPORTERS = ("auto", "torchscript", "dynamo")


def check_opset(opset: object) -> int:
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise ExportError(f"opset must be an int, got {opset!r}")
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(
            f"opset {opset} is not supported: edgeattn exports opsets {MIN_OPSET}..{MAX_OPSET} "
            f"(TorchScript exporter {MIN_OPSET}..{TORCHSCRIPT_MAX_OPSET}, dynamo exporter "
            f"{DYNAMO_MIN_OPSET}..{MAX_OPSET})",
            hint=f"opset {OPSET} is the default and runs on every ONNX Runtime >= 1.14",
        )
    return opset


def choose_exporter(opset: int, exporter: str, runtime_order: bool) -> str:
    """The exporter used for ``opset`` (see :mod:`edgeattn.export.onnx`)."""
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter={exporter!r}; valid: {', '.join(EXPORTERS)}")
    if exporter == "torchscript":
        if opset > TORCHSCRIPT_MAX_OPSET:
            raise ExportError(
                f"the TorchScript exporter writes opsets up to {TORCHSCRIPT_MAX_OPSET}; "
                f"opset {opset} needs the dynamo exporter"
            )
        return "torchscript"
    if exporter == "dynamo":
        if opset < DYNAMO_MIN_OPSET:
            raise ExportError(
                f"the dynamo exporter emits opset {DYNAMO_MIN_OPSET} or newer and cannot convert "
                f"down to opset {opset} (its version converter fails on ReduceL1); use the "
                "TorchScript exporter"
            )
        return "dynamo"
    if opset > TORCHSCRIPT_MAX_OPSET:
        return "dynamo"
    if runtime_order and opset >= DYNAMO_MIN_OPSET:
        return "dynamo"
    return "torchscript"


def resolve_img_size(img_size: Any) -> tuple[int, int] | None:
    if img_size is None:
        return None
    if isinstance(img_size, (list, tuple)) and len(img_size) == 2:
        h, w = img_size
    else:
        h = w = img_size
    for v in (h, w):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ModelError(f"img_size={img_size!r} must be a positive int or (H, W)")
    return int(h), int(w)


@dataclass
class Request:
    """The arguments of ``export_onnx``, validated (see its docstring for each)."""

    target: Any
    opset: int = OPSET
    img_hw: tuple[int, int] | None = None
    tokens: int | None = None
    dim: int | None = None
    heads: int | None = None
    batch: int = 1
    dynamic: bool = False
    order: str = "auto"
    crossover: int | None = None
    ckpt: Path | None = None
    ckpt_sha: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    simplify: bool = True
    verify: bool = True
    strict_softmax_free: bool = False
    output: Path | None = None
    cache_dir: Path | None = None
    exporter: str = "auto"
    precision: str = "fp32"
    keep_fp32: list[str] | None = None
    calibration: str | os.PathLike | None = None
    allow_degraded: bool = False

    @property
    def by_name(self) -> bool:
        return isinstance(self.target, str)


def validate(req: Request, img_size: Any, keep_fp32: Any) -> Request:
    """Check every argument before any work; fills ``img_hw``, ``ckpt_sha``, ``keep_fp32``."""
    from edgeattn.attention.order import ORDERS, validate_crossover
    from edgeattn.export.precision import check_precision, resolve_keep_fp32

    req.opset = check_opset(req.opset)
    if req.order not in ORDERS:
        raise ExportError(f"order={req.order!r}; valid: {', '.join(ORDERS)}")
    try:
        req.crossover = validate_crossover(req.crossover)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    b = req.batch
    if isinstance(b, bool) or not isinstance(b, int) or b < 1:
        raise ExportError(f"batch={b!r} must be a positive int")
    if req.exporter not in EXPORTERS:
        raise ExportError(f"exporter={req.exporter!r}; valid: {', '.join(EXPORTERS)}")
    if req.exporter != "auto":  # the exporter's opset range, checked before any model is built
        choose_exporter(req.opset, req.exporter, runtime_order=False)
    for k in ("tokens", "dim", "heads"):
        v = getattr(req, k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ExportError(f"{k}={v!r} must be a positive int")
    req.img_hw = resolve_img_size(img_size)
    req.overrides = dict(req.overrides or {})
    if req.ckpt is not None:
        req.ckpt = Path(req.ckpt)
        if not req.ckpt.is_file():
            raise CheckpointError(f"checkpoint not found: {str(req.ckpt)!r}")
        req.ckpt_sha = sha256_file(str(req.ckpt))
    req.precision = check_precision(req.precision)
    req.keep_fp32 = resolve_keep_fp32(req.precision, keep_fp32)
    if req.calibration is not None:
        check_calibration(req.calibration, req.precision)
    return req


def check_calibration(calibration: str | os.PathLike, precision: str) -> None:
    """``--calibration``: int8-static only, and an existing directory holding images."""
    from edgeattn.export.precision_convert import IMAGE_SUFFIXES as CALIBRATION_SUFFIXES

    if precision != "int8-static":
        raise ExportError("--calibration applies to --precision int8-static only")
    d = Path(calibration)
    if not d.is_dir():
        why = "does not exist" if not os.path.lexists(d) else "is not a directory"
        raise ExportError(
            f"--calibration {str(d)!r} {why}; give a directory of images "
            f"({', '.join(CALIBRATION_SUFFIXES)})"
        )
    try:
        has_images = any(p.suffix.lower() in CALIBRATION_SUFFIXES for p in d.iterdir())
    except OSError as exc:
        raise ExportError(f"--calibration {str(d)!r}: cannot read it: {exc.strerror}") from None
    if not has_images:
        raise ExportError(
            f"--calibration {str(d)!r} holds no images ({', '.join(CALIBRATION_SUFFIXES)})"
        )


# ============================================================================ destination
@dataclass
class Destination:
    """Where the file goes: ``out_path`` always, ``cache_path`` too with a cache directory."""

    stem: str
    out_path: Path
    key: str | None = None
    cache_path: Path | None = None


def stem(name: str, img_hw, tokens, opset, dynamic, order) -> str:
    parts = [name]
    if img_hw is not None:
        parts.append(f"{img_hw[0]}" if img_hw[0] == img_hw[1] else f"{img_hw[0]}x{img_hw[1]}")
    if tokens is not None:
        parts.append(f"n{tokens}")
    if order != "auto":
        parts.append(order)
    parts.append(f"op{opset}")
    if dynamic:
        parts.append("dyn")
    return "_".join(parts)


#: Sub-packages whose source decides an exported file's bytes (the models, the attention modules
#: and the export itself); their code is part of the cache key.
GRAPH_SOURCES = ("attention", "models", "export")


def source_fingerprint(root: Path) -> str:
    """sha256 over the ``*.py`` files of :data:`GRAPH_SOURCES` under ``root`` (relative paths and
    bytes, sorted)."""
    h = hashlib.sha256()
    for sub in GRAPH_SOURCES:
        for f in sorted((root / sub).rglob("*.py")):
            h.update(f.relative_to(root).as_posix().encode() + b"\0")
            h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """:func:`source_fingerprint` of the running package, part of every export cache key.

    A cached export is reused only if the code that wrote it is the code running now: the package
    version does not change while a model's forward is edited, and a benchmark would then time
    the old graph without saying so."""
    return source_fingerprint(Path(__file__).resolve().parents[1])


def cache_key(*parts: Any) -> str:
    import onnx
    import torch

    import edgeattn

    blob = json.dumps(
        {
            "request": jsonable(list(parts)),
            "versions": [edgeattn.__version__, torch.__version__, onnx.__version__],
            "code": code_fingerprint(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _calibration_key(calibration: Any) -> Any:
    if calibration is None:
        return None
    cdir = Path(calibration)
    if not cdir.is_dir():
        return str(cdir)
    return sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in cdir.iterdir())


def destination(req: Request) -> Destination:
    """File stem, cache key and paths; checks the directories are writable (before any work)."""
    r = req
    name_hint = r.target if r.by_name else type(r.target).__name__
    st = stem(name_hint, r.img_hw, r.tokens, r.opset, r.dynamic, r.order)
    if r.precision != "fp32":
        st += "_" + r.precision.replace("-", "_")
    key = cache_path = None
    if r.cache_dir is not None and r.by_name:
        extra = []
        if r.precision != "fp32":
            calib = _calibration_key(r.calibration)
            extra = [{"precision": r.precision, "keep_fp32": r.keep_fp32, "calibration": calib}]
        key = cache_key(
            r.target, r.overrides, r.img_hw, r.tokens, r.dim, r.heads, r.batch, r.opset,
            r.dynamic, r.order, r.crossover, r.ckpt_sha, r.simplify, r.exporter, *extra,
        )  # fmt: skip
        cdir = Path(r.cache_dir)
        check_writable_dir(cdir, "cache")
        cache_path = cdir / f"{st}-{key[:16]}.onnx"
    if r.output is not None:
        out_path = Path(r.output)
        if out_path.is_dir():
            raise ExportError(f"output path {str(out_path)!r} is a directory; give a file name")
        check_writable_dir(out_path.parent if str(out_path.parent) else Path("."), "output")
    elif cache_path is not None:
        out_path = cache_path
    else:
        out_path = Path.cwd() / f"{st}.onnx"
        check_writable_dir(out_path.parent, "output")
    return Destination(st, out_path, key, cache_path)


# ============================================================================ the plan
@dataclass
class ExportPlan:
    """The built model and everything the exporters, the checks and the sidecar need of it."""

    name: str
    family: str
    facts: Any  # edgeattn.models.registry.ExportFacts
    model: Any  # export's own copy: nothing here changes the caller's module
    shape: tuple[int, ...]
    in_name: str
    out_name: str
    dyn_axes: dict[int, str]
    out_dyn: dict[int, str]
    img_hw: tuple[int, int] | None = None  # image input: the (H, W) exported
    x: Any = None  # the export-shape input (torch)
    y: Any = None  # the model's output on it
    seen: dict[int, int] = field(default_factory=dict)  # SimA module id -> tokens it saw
    order: Any = None  # edgeattn.export.sima_order.OrderPlan
    exporter: str = "torchscript"
    notes: list[str] = field(default_factory=list)  # the sidecar's exporter_notes (fallbacks)
    cases: list[dict[str, Any]] = field(default_factory=list)  # verification inputs
    simplify_info: dict[str, Any] = field(default_factory=dict)
    extra_spec: dict[str, Any] = field(default_factory=dict)  # a builder's own spec fields


def input_spec(req: Request, name: str, facts: Any, model: Any) -> dict[str, Any]:
    """The plan's input fields (shape, names, dynamic axes, ``img_hw``) from the export facts."""
    io = facts.io
    cfg = getattr(model, "config", None)
    hw = None
    if facts.is_tokens:
        shape: tuple[int, ...] = (req.batch, int(cfg.tokens), int(cfg.dim))
        if req.dynamic and facts.fixed_grid:
            raise ExportError(
                f"{name} cannot have a dynamic token axis: {facts.fixed_grid}; export it "
                "static, one file per token count"
            )
    else:
        hw = req.img_hw
        if hw is None:
            s = getattr(cfg, "img_size", 224)
            hw = (int(s), int(s)) if isinstance(s, int) else tuple(int(v) for v in s)
        in_ch = int(getattr(cfg, "in_chans", 3) or 3)
        shape = (req.batch, in_ch, hw[0], hw[1])
    dyn = dict(io.dynamic_axes) if req.dynamic else {}
    out_dyn = dict(io.output_dynamic_axes) if req.dynamic else {}
    return dict(
        shape=shape,
        in_name=io.input_name,
        out_name=io.output_name,
        dyn_axes=dyn,
        out_dyn=out_dyn,
        img_hw=hw,
    )
