"""torch → ONNX for every registered model, at the exact opset asked, verified, audited.

Exporter per case (see :func:`choose_exporter`):

* opsets 13–20: the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``). It writes
  exactly the opset asked and names nodes by module path (``/blocks.0/attn/MatMul``).
* opsets 21–23: the dynamo exporter, the only one that reaches them (TorchScript stops at 20).
* SimA ``order="auto"`` with a dynamic token axis keeps both QKᵀV orders and picks one at run
  time with an ONNX ``If`` on the token count (``N < threshold``, threshold = ``crossover`` or
  the head dimension):

  - opset >= 18: the dynamo exporter, where :class:`~edgeattn.attention.sima.SimA` turns the
    choice into ``torch.cond`` -> one ``If`` per SimA layer;
  - opset < 18 (the dynamo exporter cannot write those: it emits 18 and its down-converter
    fails on ``ReduceL1``): the TorchScript exporter twice, once per fixed order, both graphs
    spliced under one ``If`` whose condition is computed from the input shape (blocks:
    ``N = x.shape[1]``; nets: ``N = (H//p)*(W//p) + extra`` with ``p`` and ``extra`` (class
    tokens) measured on the model). The two branches share every weight.

  With a static shape the order is resolved at export (``choose_order``) and no ``If`` is left.
  ``exporter="torchscript"|"dynamo"`` forces one (within what it can write).

Every file: the opset is asserted on the final model; node names carry module paths after
simplification and surgery (also inside If branches); the file and its ``.onnx.json`` sidecar
are written to temporary files and renamed at the end, so a failure leaves neither.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeattn.errors import CheckpointError, EdgeAttnError, ExportError, ModelError
from edgeattn.export.exporters import (
    Specialized,
    dispatch_formula,
    export_dynamo,
    export_torchscript,
    splice_orders,
)

#: Opsets edgeattn writes: TorchScript 13..20, dynamo 21..23 (and 18..20 for runtime order).
MIN_OPSET = 13
MAX_OPSET = 23
TORCHSCRIPT_MAX_OPSET = 20
DYNAMO_MIN_OPSET = 18
SUPPORTED_OPSETS = range(MIN_OPSET, MAX_OPSET + 1)
EXPORTERS = ("auto", "torchscript", "dynamo")
SIDECAR_SCHEMA = "edgeattn.export/1"

_SEED = 0


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote. ``spec`` is the sidecar's ``spec`` section."""

    path: Path
    sidecar_path: Path
    spec: dict[str, Any]
    audit: dict[str, Any]
    verification: dict[str, Any] | None
    timings: dict[str, float]
    cached: bool = False
    sha256: str = ""
    size_bytes: int = 0
    versions: dict[str, str] = field(default_factory=dict)


# ============================================================================ small helpers
def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    import edgeattn

    v = {
        "edgeattn": edgeattn.__version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
    }
    try:
        import onnxsim

        v["onnxsim"] = str(getattr(onnxsim, "__version__", "?"))
    except Exception:  # pragma: no cover - optional
        pass
    return v


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
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


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _first_line(exc: BaseException, limit: int = 300) -> str:
    s = str(exc).strip().splitlines()
    return (s[0] if s else type(exc).__name__)[:limit]


def _check_writable_dir(d: Path, what: str) -> None:
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(
            f"cannot create {what} directory {str(d)!r}: {exc.strerror or exc}"
        ) from None
    if not d.is_dir():
        raise ExportError(f"{what} directory {str(d)!r} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".edgeattn-probe-", dir=d)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ExportError(
            f"{what} path {str(d)!r} is not writable: {exc.strerror or exc}"
        ) from None


def _atomic_write_many(items: list[tuple[Path, bytes]]) -> None:
    """Write every file to a temporary sibling, then rename them all; on failure remove temps."""
    tmps: list[tuple[Path, str]] = []
    umask = os.umask(0)
    os.umask(umask)
    try:
        for path, data in items:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            tmps.append((path, tmp))
            os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        for path, tmp in tmps:
            os.replace(tmp, path)
    except OSError as exc:
        raise ExportError(f"cannot write {str(items[0][0])!r}: {exc.strerror or exc}") from None
    finally:
        for _, tmp in tmps:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _randn(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ============================================================================ validation
def check_opset(opset: object) -> int:
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise ExportError(f"opset must be an int, got {opset!r}")
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(
            f"opset {opset} is not supported: edgeattn exports opsets {MIN_OPSET}..{MAX_OPSET} "
            f"(TorchScript exporter {MIN_OPSET}..{TORCHSCRIPT_MAX_OPSET}, dynamo exporter "
            f"{DYNAMO_MIN_OPSET}..{MAX_OPSET})",
            hint="opset 17 is the default and runs on every ONNX Runtime >= 1.14",
        )
    return opset


def choose_exporter(opset: int, exporter: str, runtime_order: bool) -> str:
    """The exporter used for ``opset`` (see the module docstring)."""
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


# ============================================================================ model facts
def _sima_class() -> type | None:
    try:
        from edgeattn.attention.sima import SimA

        return SimA
    except Exception:  # pragma: no cover - SimA not available
        return None


def _is_block(model: Any) -> bool:
    cfg = getattr(model, "config", None)
    return hasattr(cfg, "tokens") and hasattr(cfg, "dim") and hasattr(cfg, "kind")


def _method_of(model: Any, fused: bool) -> str:
    """Attention method, for the tolerance: fused, soft, sima, xca or softmax."""
    if fused:
        return "fused"
    names = {type(m).__name__ for m in model.modules()}
    mods = {type(m).__module__ for m in model.modules()}
    if "edgeattn.attention.soft" in mods or any("Soft" in n and "max" not in n for n in names):
        return "soft"
    if "SimA" in names:
        return "sima"
    if "XCA" in names:
        return "xca"
    return "softmax"


def _config_dict(model: Any) -> dict[str, Any]:
    cfg = getattr(model, "config", None)
    if cfg is not None and dataclasses.is_dataclass(cfg):
        return _jsonable(cfg)
    return {}


def _size_multiple(model: Any) -> int:
    cfg = getattr(model, "config", None)
    p = getattr(cfg, "patch_size", None)
    if isinstance(p, int) and p > 0:
        if type(model).__module__.endswith(".soft"):
            return max(p, 32)
        return p
    import sys

    mod = sys.modules.get(type(model).__module__)
    m = getattr(mod, "SIZE_MULTIPLE", None)
    return int(m) if isinstance(m, int) and m > 0 else 32


# ============================================================================ exporters
# ============================================================================ the export
def _resolve_img_size(img_size: Any) -> tuple[int, int] | None:
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


def _build_model(
    model_or_name: Any,
    *,
    img_hw: tuple[int, int] | None,
    tokens: int | None,
    dim: int | None,
    heads: int | None,
    order: str,
    crossover: int | None,
    checkpoint: str | None,
    overrides: dict[str, Any],
) -> tuple[str, str, Any]:
    """(name, family, model) in eval mode."""
    from edgeattn.models.registry import create_model, get_entry

    if not isinstance(model_or_name, str):
        model = model_or_name
        cfg = getattr(model, "config", None)
        name = getattr(cfg, "name", None) or getattr(model, "name", None)
        if not isinstance(name, str):
            name = f"block_{cfg.kind}" if _is_block(model) else type(model).__name__
        family = "block" if _is_block(model) else "custom"
        try:
            family = get_entry(name).family
        except Exception:
            pass
        if checkpoint is not None:
            from edgeattn.models.checkpoint import load_checkpoint

            load_checkpoint(model, checkpoint)
        model.eval()
        return name, family, model
    name = model_or_name
    entry = get_entry(name)  # ModelError with close matches
    kw = dict(overrides)
    opts = set(entry.options)
    if entry.family == "block":
        if img_hw is not None:
            raise ExportError(
                f"{name} is an attention block on (B, N, C) tokens: give --tokens/--dim/--heads, "
                "not --img-size"
            )
        for k, v in (("tokens", tokens), ("dim", dim), ("heads", heads)):
            if v is not None:
                if k in kw and kw[k] != v:
                    raise ExportError(f"{k}={v} and --set {k}={kw[k]} disagree")
                kw[k] = v
    else:
        given = [
            k for k, v in (("tokens", tokens), ("dim", dim), ("heads", heads)) if v is not None
        ]
        if given:
            raise ExportError(
                f"--{given[0]} is for attention blocks; {name} is an image network: use --img-size"
            )
        if img_hw is not None and "img_size" in opts and "img_size" not in kw:
            if img_hw[0] == img_hw[1]:
                kw["img_size"] = img_hw[0]
    if "order" in opts and "order" not in kw:
        kw["order"] = order
    if "crossover" in opts and "crossover" not in kw and crossover is not None:
        kw["crossover"] = crossover
    import torch

    try:
        # random-init weights (no checkpoint) are seeded: the same request gives the same file
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = create_model(name, checkpoint=checkpoint, **kw)
    except EdgeAttnError:
        raise
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint not found: {exc.filename or checkpoint}") from None
    except Exception as exc:
        if checkpoint is not None:
            raise CheckpointError(
                f"cannot load checkpoint {str(checkpoint)!r} into {name}: "
                f"{type(exc).__name__}: {_first_line(exc)}"
            ) from None
        raise ModelError(f"cannot build {name}: {type(exc).__name__}: {_first_line(exc)}") from None
    return name, entry.family, model


def _probe(model: Any, x: Any, sima_cls: type | None) -> tuple[Any, dict[int, int]]:
    """Eager forward; returns the output and, per SimA module id, the token count it saw."""
    import torch

    seen: dict[int, int] = {}
    hooks = []
    if sima_cls is not None:
        for m in model.modules():
            if isinstance(m, sima_cls):
                hooks.append(
                    m.register_forward_pre_hook(
                        lambda mod, args: seen.__setitem__(id(mod), int(args[0].shape[1]))
                    )
                )
    try:
        with torch.no_grad():
            y = model(x)
    finally:
        for h in hooks:
            h.remove()
    return y, seen


def export_onnx(
    model_or_name: Any,
    *,
    opset: int = 17,
    img_size: int | tuple[int, int] | None = None,
    tokens: int | None = None,
    dim: int | None = None,
    heads: int | None = None,
    batch: int = 1,
    dynamic: bool = False,
    order: str = "auto",
    crossover: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    overrides: dict[str, Any] | None = None,
    simplify: bool = True,
    verify: bool = True,
    strict_softmax_free: bool = False,
    output: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    exporter: str = "auto",
    precision: str = "fp32",
    keep_fp32: str | list[str] | None = None,
    calibration: str | os.PathLike | None = None,
    allow_degraded: bool = False,
) -> ExportResult:
    """Export a registered model (by name) or an ``nn.Module`` to ONNX; see the module doc.

    ``precision`` (``fp32``, ``fp16``, ``int8-dynamic``, ``int8-static``): after the fp32 graph
    is verified, convert it (:mod:`edgeattn.export.precision`; ``keep_fp32`` node groups,
    ``calibration`` images for int8-static) and verify the result against fp32 PyTorch;
    ``allow_degraded`` writes a file outside its precision's tolerance (figures recorded).

    Raises :class:`ExportError` (bad request, exporter failure, opset, unwritable path),
    :class:`ModelError` (unknown model, bad override, a size the model cannot take),
    :class:`CheckpointError`, :class:`ToleranceError` (ORT differs from PyTorch) and
    :class:`AuditError` (``strict_softmax_free`` and a softmax was found).
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    opset = check_opset(opset)
    from edgeattn.attention.order import ORDERS, validate_crossover

    if order not in ORDERS:
        raise ExportError(f"order={order!r}; valid: {', '.join(ORDERS)}")
    try:
        crossover = validate_crossover(crossover)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ExportError(f"batch={batch!r} must be a positive int")
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter={exporter!r}; valid: {', '.join(EXPORTERS)}")
    for k, v in (("tokens", tokens), ("dim", dim), ("heads", heads)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ExportError(f"{k}={v!r} must be a positive int")
    img_hw = _resolve_img_size(img_size)
    overrides = dict(overrides or {})
    by_name = isinstance(model_or_name, str)
    from edgeattn.export.fused import FUSED_NAME

    is_fused = by_name and model_or_name == FUSED_NAME
    ckpt = Path(checkpoint) if checkpoint is not None else None
    ckpt_sha = None
    if ckpt is not None:
        if not ckpt.is_file():
            raise CheckpointError(f"checkpoint not found: {str(ckpt)!r}")
        ckpt_sha = _sha256_file(ckpt)

    # ------------------------------------------------------------------ destination first
    name_hint = model_or_name if by_name else type(model_or_name).__name__
    from edgeattn.export.precision import check_precision, resolve_keep_fp32

    precision = check_precision(precision)
    keep_groups = resolve_keep_fp32(precision, keep_fp32)
    calib_key = None
    if calibration is not None:
        cdir = Path(calibration)
        calib_key = (
            sorted((p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in cdir.iterdir())
            if cdir.is_dir()
            else str(cdir)
        )
    stem = _stem(name_hint, img_hw, tokens, opset, dynamic, order)
    if precision != "fp32":
        stem += "_" + precision.replace("-", "_")
    key = None
    cache_path = None
    if cache_dir is not None and by_name:
        key = _cache_key(
            model_or_name,
            overrides,
            img_hw,
            tokens,
            dim,
            heads,
            batch,
            opset,
            dynamic,
            order,
            crossover,
            ckpt_sha,
            simplify,
            exporter,
            *(
                [{"precision": precision, "keep_fp32": keep_groups, "calibration": calib_key}]
                if precision != "fp32"
                else []
            ),
        )
        cdir = Path(cache_dir)
        _check_writable_dir(cdir, "cache")
        cache_path = cdir / f"{stem}-{key[:16]}.onnx"
    if output is not None:
        out_path = Path(output)
        if out_path.is_dir():
            raise ExportError(f"output path {str(out_path)!r} is a directory; give a file name")
        _check_writable_dir(out_path.parent if str(out_path.parent) else Path("."), "output")
    elif cache_path is not None:
        out_path = cache_path
    else:
        out_path = Path.cwd() / f"{stem}.onnx"
        _check_writable_dir(out_path.parent, "output")

    if cache_path is not None:
        hit = _cache_lookup(cache_path, key, verify, strict_softmax_free, allow_degraded)
        if hit is not None:
            if out_path != cache_path:
                _atomic_write_many(
                    [
                        (out_path, cache_path.read_bytes()),
                        (_sidecar(out_path), _sidecar(cache_path).read_bytes()),
                    ]
                )
            hit.path, hit.sidecar_path = out_path, _sidecar(out_path)
            hit.timings = {"total_s": time.perf_counter() - t_start}
            return hit

    # ------------------------------------------------------------------ build
    t0 = time.perf_counter()
    fused_op = None
    if is_fused:
        from edgeattn.export.fused import DEFAULT_FUSED_OP, FUSED_OPS

        fused_op = overrides.pop("fused_op", DEFAULT_FUSED_OP)
        if fused_op not in FUSED_OPS:
            raise ExportError(f"fused_op={fused_op!r}; valid: {', '.join(FUSED_OPS)}")
        if order != "auto" or crossover is not None:
            raise ExportError(
                "block_msa_fused is softmax attention: --order/--crossover do not apply"
            )
        _, _, model = _build_model(
            "block_msa",
            img_hw=img_hw,
            tokens=tokens,
            dim=dim,
            heads=heads,
            order=order,
            crossover=crossover,
            checkpoint=str(ckpt) if ckpt else None,
            overrides=overrides,
        )
        name, family = FUSED_NAME, "block"
    else:
        name, family, model = _build_model(
            model_or_name,
            img_hw=img_hw,
            tokens=tokens,
            dim=dim,
            heads=heads,
            order=order,
            crossover=crossover,
            checkpoint=str(ckpt) if ckpt else None,
            overrides=overrides,
        )
    timings["build_s"] = time.perf_counter() - t0

    sima_cls = _sima_class()
    saved = []
    if sima_cls is not None:
        saved = [(m, m.order, m.crossover) for m in model.modules() if isinstance(m, sima_cls)]
    try:
        return _export_built(
            name=name,
            family=family,
            model=model,
            is_fused=is_fused,
            fused_op=fused_op,
            img_hw=img_hw,
            batch=batch,
            dynamic=dynamic,
            order=order,
            crossover=crossover,
            opset=opset,
            exporter=exporter,
            precision=precision,
            keep_fp32=keep_groups,
            calibration=calibration,
            allow_degraded=allow_degraded,
            simplify=simplify,
            verify=verify,
            strict_softmax_free=strict_softmax_free,
            out_path=out_path,
            cache_path=cache_path,
            key=key,
            ckpt=ckpt,
            ckpt_sha=ckpt_sha,
            overrides=overrides,
            timings=timings,
            t_start=t_start,
            sima_cls=sima_cls,
        )
    finally:
        for m, o, c in saved:
            m.order, m.crossover = o, c


def _stem(name: str, img_hw, tokens, opset, dynamic, order) -> str:
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


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _cache_key(*parts: Any) -> str:
    import onnx
    import torch

    import edgeattn

    blob = json.dumps(
        {
            "request": _jsonable(list(parts)),
            "versions": [edgeattn.__version__, torch.__version__, onnx.__version__],
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def _cache_lookup(
    path: Path, key: str, verify: bool, strict: bool, allow_degraded: bool = False
) -> ExportResult | None:
    side = _sidecar(path)
    if not (path.is_file() and side.is_file()):
        return None
    try:
        meta = json.loads(side.read_text())
    except (OSError, ValueError):
        return None
    if meta.get("spec", {}).get("cache_key") != key:
        return None
    if meta.get("onnx", {}).get("sha256") != _sha256_file(path):
        return None
    if verify and not (meta.get("verification") or {}).get("passed"):
        return None
    pv = (meta.get("precision") or {}).get("verification") or {}
    if verify and pv.get("degraded") and not allow_degraded:
        return None  # re-export: it raises the tolerance error with fresh figures
    if strict:
        from edgeattn.export.audit import check_softmax_free

        check_softmax_free(meta["audit"], meta["spec"].get("model", "model"))
    return ExportResult(
        path=path,
        sidecar_path=side,
        spec=meta["spec"],
        audit=meta["audit"],
        verification=meta.get("verification"),
        timings={},
        cached=True,
        sha256=meta["onnx"]["sha256"],
        size_bytes=int(meta["onnx"]["bytes"]),
        versions=meta.get("versions", {}),
    )


def _export_built(
    *,
    name: str,
    family: str,
    model: Any,
    is_fused: bool,
    fused_op: str | None,
    img_hw: tuple[int, int] | None,
    batch: int,
    dynamic: bool,
    order: str,
    crossover: int | None,
    opset: int,
    exporter: str,
    simplify: bool,
    verify: bool,
    strict_softmax_free: bool,
    out_path: Path,
    cache_path: Path | None,
    key: str | None,
    ckpt: Path | None,
    ckpt_sha: str | None,
    overrides: dict[str, Any],
    timings: dict[str, float],
    t_start: float,
    sima_cls: type | None,
    precision: str = "fp32",
    keep_fp32: list[str] | None = None,
    calibration: str | os.PathLike | None = None,
    allow_degraded: bool = False,
) -> ExportResult:
    import torch

    from edgeattn.attention.order import choose_order, order_threshold
    from edgeattn.export.audit import audit_model, check_softmax_free
    from edgeattn.export.graph import default_opset, iter_nodes, repair_names
    from edgeattn.export.naming import has_module_path
    from edgeattn.export.verify import check_onnx, tolerance_for, verify_runtime

    model.eval()
    is_block = _is_block(model)
    method = _method_of(model, is_fused)
    # ------------------------------------------------------------------ input spec + probe
    if is_block:
        cfg = model.config
        in_name, out_name = "x", "y"
        N, C = int(cfg.tokens), int(cfg.dim)
        shape: tuple[int, ...] = (batch, N, C)
        dyn_axes = {0: "batch", 1: "tokens"} if dynamic else {}
        out_dyn = dict(dyn_axes)
        if dynamic and getattr(model, "needs_grid", False):
            H, W = model.grid
            raise ExportError(
                f"{name} cannot have a dynamic token axis: SOFT attention lays the tokens out on "
                f"the fixed ({H}, {W}) grid stored in the block (landmark conv and the depthwise "
                "conv on V need it); export it static, one file per token count"
            )
    else:
        in_name, out_name = "image", "logits"
        cfg = getattr(model, "config", None)
        if img_hw is None:
            s = getattr(cfg, "img_size", 224)
            img_hw = (int(s), int(s)) if isinstance(s, int) else tuple(int(v) for v in s)
        in_ch = int(getattr(cfg, "in_chans", 3) or 3)
        shape = (batch, in_ch, img_hw[0], img_hw[1])
        dyn_axes = {0: "batch", 2: "height", 3: "width"} if dynamic else {}
        out_dyn = {0: "batch"} if dynamic else {}
    t0 = time.perf_counter()
    x = torch.from_numpy(_randn(shape, _SEED))
    try:
        y, seen = _probe(model, x, sima_cls)
    except EdgeAttnError:
        raise
    except Exception as exc:
        raise ModelError(f"{name} cannot take input {list(shape)}: {_first_line(exc)}") from None
    if not isinstance(y, torch.Tensor):
        raise ExportError(f"{name} returns {type(y).__name__}, not one tensor; cannot export")
    timings["probe_s"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ SimA order policy
    sima = []
    if sima_cls is not None:
        for qual, m in model.named_modules():
            if isinstance(m, sima_cls):
                sima.append(
                    {"module": qual, "mod": m, "tokens": seen.get(id(m)), "head_dim": m.head_dim}
                )
    order_info: dict[str, Any] = {"policy": order, "crossover": crossover, "applies": bool(sima)}
    runtime_if = False
    if sima:
        thresholds = sorted({order_threshold(s["head_dim"], crossover) for s in sima})
        order_info["threshold"] = thresholds[0] if len(thresholds) == 1 else thresholds
        order_info["rule"] = (
            "qk_first if N < threshold else kv_first; threshold = crossover or head_dim"
        )
        order_info["sima_layers"] = len(sima)
        if order != "auto":
            for s in sima:
                s["mod"].order, s["mod"].crossover = order, crossover
            order_info.update(mode="fixed", resolved=order)
        elif not dynamic:
            resolved = set()
            for s in sima:
                o = choose_order(s["tokens"], s["head_dim"], crossover)
                s["mod"].order, s["mod"].crossover = o, crossover
                resolved.add(o)
            order_info.update(
                mode="static",
                resolved=resolved.pop() if len(resolved) == 1 else sorted(resolved),
                tokens=sorted({s["tokens"] for s in sima}),
            )
        else:
            runtime_if = True
            for s in sima:
                s["mod"].order, s["mod"].crossover = "auto", crossover
            order_info.update(mode="runtime_if")
    else:
        order_info["mode"] = "n/a"

    # ------------------------------------------------------------------ verification cases
    cases = [{"label": "export shape", "inputs": {in_name: _randn(shape, _SEED)}}]
    dispatch = None
    if runtime_if:
        dispatch = dispatch_formula(model, is_block, sima, shape, crossover)
        order_info["token_formula"] = dispatch["formula"]
    if dynamic:
        cases += _dynamic_cases(model, name, is_block, is_fused, shape, in_name, dispatch, sima_cls)

    # ------------------------------------------------------------------ export
    t0 = time.perf_counter()
    chosen = "onnx.helper" if is_fused else choose_exporter(opset, exporter, runtime_if)
    notes: list[str] = []
    simplify_info: dict[str, Any] = {"applied": False, "reason": "not requested"}
    example = x
    if dynamic and batch == 1 and not is_fused:
        # torch.export specialises a size-1 dim; trace with batch 2 to keep the batch symbolic
        example = torch.from_numpy(_randn((2, *shape[1:]), _SEED))
    proto = None
    if is_fused:
        from edgeattn.export.fused import build_fused_msa

        proto = build_fused_msa(model, opset=opset, batch=batch, dynamic=dynamic, fused_op=fused_op)
        simplify_info = {"applied": False, "reason": "hand-built graph, nothing to simplify"}
        order_info["implementation"] = f"com.microsoft::{fused_op}"
    elif chosen == "dynamo":
        try:
            proto = export_dynamo(model, example, opset, in_name, out_name, dyn_axes, out_dyn)
            if runtime_if:
                order_info["implementation"] = "dynamo torch.cond: one If per SimA layer"
        except (ExportError, Specialized) as exc:
            if exporter == "dynamo" or opset > TORCHSCRIPT_MAX_OPSET:
                raise ExportError(str(exc)) from None
            notes.append(f"dynamo export failed, fell back to TorchScript: {_first_line(exc)}")
            chosen = "torchscript"
    if proto is None and chosen == "torchscript":
        if runtime_if:
            branches = []
            sinfos = {}
            for o in ("qk_first", "kv_first"):
                for s in sima:
                    s["mod"].order = o
                p = export_torchscript(model, example, opset, in_name, out_name, dyn_axes, out_dyn)
                repair_names(p)
                if simplify:
                    from edgeattn.export.simplify import simplify_model

                    t1 = time.perf_counter()
                    p, sinfos[o] = simplify_model(p)
                    timings["simplify_s"] = (
                        timings.get("simplify_s", 0.0) + time.perf_counter() - t1
                    )
                branches.append((o, p))
            for s in sima:
                s["mod"].order = "auto"
            proto = splice_orders(branches, dispatch, in_name)
            order_info["implementation"] = (
                "TorchScript twice (qk_first, kv_first) spliced under one If on the token count"
            )
            if simplify:
                simplify_info = {
                    "applied": all(v["applied"] for v in sinfos.values()),
                    "reason": "; ".join(
                        f"{k}: {v['reason']}" for k, v in sinfos.items() if v["reason"]
                    )
                    or None,
                    "per_branch": sinfos,
                }
        else:
            try:
                proto = export_torchscript(
                    model, example, opset, in_name, out_name, dyn_axes, out_dyn
                )
            except ExportError as exc:
                if exporter != "auto" or opset < DYNAMO_MIN_OPSET:
                    if opset < DYNAMO_MIN_OPSET and exc.hint is None:
                        exc.hint = (
                            f"the dynamo exporter may export it at opset {DYNAMO_MIN_OPSET} or "
                            f"newer (--opset {DYNAMO_MIN_OPSET})"
                        )
                    raise
                notes.append(f"TorchScript export failed, used dynamo: {exc}")
                chosen = "dynamo"
                proto = export_dynamo(model, example, opset, in_name, out_name, dyn_axes, out_dyn)
    timings["export_s"] = time.perf_counter() - t0 - timings.get("simplify_s", 0.0)

    repair_names(proto)
    if simplify and not is_fused and not (runtime_if and chosen == "torchscript"):
        from edgeattn.export.simplify import simplify_model

        t0 = time.perf_counter()
        proto, simplify_info = simplify_model(proto)
        timings["simplify_s"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ invariants
    repair_names(proto)
    bad = [n.name or n.op_type for n in iter_nodes(proto.graph) if not has_module_path(n.name)]
    if bad:
        raise ExportError(f"internal: nodes without a module path in the final graph: {bad[:5]}")
    got = default_opset(proto)
    if got != opset:
        raise ExportError(
            f"the {chosen} exporter wrote opset {got}, not the {opset} asked; refusing to write "
            "a file with another opset"
        )
    if runtime_if and not any(n.op_type == "If" for n in iter_nodes(proto.graph)):
        raise ExportError("internal: order=auto with a dynamic token axis but no If in the graph")

    # ------------------------------------------------------------------ audit
    t0 = time.perf_counter()
    audit = audit_model(proto)
    timings["audit_s"] = time.perf_counter() - t0
    if strict_softmax_free:
        hint = None
        if family == "soft":
            hint = (
                "the released SOFT nets keep softmax attention in stage 4; "
                "--set softmax_free_stage4=true builds the fully softmax-free variant"
            )
        check_softmax_free(audit, name, hint)

    data = proto.SerializeToString()
    # ------------------------------------------------------------------ verify
    verification = None
    tol = tolerance_for(method)
    if verify:
        t0 = time.perf_counter()
        checks = check_onnx(proto)
        reference = _make_reference(model, out_name, sima, crossover)
        verification = verify_runtime(data, proto, cases, reference, tol)
        verification.update(checks)
        if runtime_if:
            for c in verification["cases"]:
                if c.get("branch") != c.get("order"):
                    raise ExportError(
                        f"the order dispatcher took {c.get('branch')} at {c['inputs']} but "
                        f"eager PyTorch chose {c.get('order')} (N={c.get('tokens')})"
                    )
        timings["verify_s"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ precision
    precision_info: dict[str, Any] = {"precision": "fp32"}
    if precision != "fp32":
        from edgeattn.export.precision import convert, verify_precision

        t0 = time.perf_counter()
        proto, precision_info = convert(
            proto,
            precision,
            keep_fp32=keep_fp32,
            in_name=in_name,
            shape=shape,
            calibration=calibration,
        )
        data = proto.SerializeToString()
        audit = audit_model(proto)  # the census of the file written (QDQ / integer ops)
        if strict_softmax_free:
            check_softmax_free(audit, name)
        timings["precision_s"] = time.perf_counter() - t0
        if verify:
            t0 = time.perf_counter()

            def fp32_reference(xs: np.ndarray) -> np.ndarray:
                # the model is batch-independent: 16 inputs per forward, not one at a time
                with torch.no_grad():
                    return np.concatenate(
                        [
                            model(torch.from_numpy(xs[i : i + 16])).numpy()
                            for i in range(0, len(xs), 16)
                        ]
                    )

            precision_info["verification"] = verify_precision(
                data,
                reference=fp32_reference,
                in_name=in_name,
                shape=shape,
                precision=precision,
                method=method,
                model_name=name,
                classes=not is_block,
                allow_degraded=allow_degraded,
            )
            timings["precision_verify_s"] = time.perf_counter() - t0

    # ------------------------------------------------------------------ spec + write
    sha = hashlib.sha256(data).hexdigest()
    in_vi = proto.graph.input[0]
    out_vi = proto.graph.output[0]

    def dims(vi: Any) -> list[Any]:
        return [
            d.dim_param if d.dim_param else int(d.dim_value) for d in vi.type.tensor_type.shape.dim
        ]

    spec = {
        "model": name,
        "family": family,
        "method": method,
        "config": _config_dict(model),
        "overrides": _jsonable(overrides),
        "opset": opset,
        "exporter": chosen,
        "exporter_requested": exporter,
        "exporter_notes": notes,
        "inputs": [
            {
                "name": in_name,
                "shape": list(shape),
                "onnx_shape": dims(in_vi),
                "dynamic_axes": {str(k): v for k, v in dyn_axes.items()},
            }
        ],
        "outputs": [
            {
                "name": out_name,
                "shape": list(y.shape),
                "onnx_shape": dims(out_vi),
                "dynamic_axes": {str(k): v for k, v in out_dyn.items()},
            }
        ],
        "dynamic": bool(dynamic),
        "batch": batch,
        "img_size": list(img_hw) if img_hw and not is_block else None,
        "tokens": shape[1] if is_block else None,
        "dim": shape[2] if is_block else None,
        "heads": getattr(getattr(model, "config", None), "heads", None) if is_block else None,
        "order": _jsonable(order_info),
        "simplify": _jsonable(simplify_info),
        "tolerance": dataclasses.asdict(tol),
        "checkpoint": {"path": str(ckpt), "sha256": ckpt_sha} if ckpt else None,
        "cache_key": key,
        "precision": precision,
    }
    if is_fused:
        spec["fused_op"] = f"com.microsoft::{fused_op}"
    versions = _versions()
    timings["total_s"] = time.perf_counter() - t_start
    sidecar = {
        "schema": SIDECAR_SCHEMA,
        "spec": spec,
        "versions": versions,
        "onnx": {
            "file": out_path.name,
            "sha256": sha,
            "bytes": len(data),
            "ir_version": int(proto.ir_version),
            "opset_imports": {o.domain or "ai.onnx": int(o.version) for o in proto.opset_import},
        },
        "audit": audit,
        "verification": verification,
        "precision": _jsonable(precision_info),
        "timings": timings,
    }
    t0 = time.perf_counter()
    side_bytes = json.dumps(_jsonable(sidecar), indent=2).encode()
    _atomic_write_many([(out_path, data), (_sidecar(out_path), side_bytes)])
    if cache_path is not None and out_path != cache_path:
        _atomic_write_many([(cache_path, data), (_sidecar(cache_path), side_bytes)])
    timings["write_s"] = time.perf_counter() - t0
    return ExportResult(
        path=out_path,
        sidecar_path=_sidecar(out_path),
        spec=spec,
        audit=audit,
        verification=verification,
        timings=timings,
        cached=False,
        sha256=sha,
        size_bytes=len(data),
        versions=versions,
    )


# ============================================================================ verification
def _dynamic_cases(
    model: Any,
    name: str,
    is_block: bool,
    is_fused: bool,
    shape: tuple[int, ...],
    in_name: str,
    dispatch: dict[str, Any] | None,
    sima_cls: type | None,
) -> list[dict[str, Any]]:
    """Other input shapes for a dynamic export (checked to be accepted by the model)."""
    out: list[tuple[int, ...]] = []
    B = shape[0]
    if is_block:
        N = shape[1]
        cands: list[int] = []
        if dispatch is not None:
            thr = dispatch["threshold"]
            cands += [max(1, thr // 2), thr + max(1, thr // 2)]
        cands += [64, 1024, 4096]
        seen_n = {N}
        for n in cands:
            if n not in seen_n and len(out) < (4 if dispatch is not None else 2):
                seen_n.add(n)
                out.append((B, n, shape[2]))
    else:
        H, W = shape[2], shape[3]
        m = _size_multiple(model)
        cands2: list[tuple[int, int]] = []
        if dispatch is not None:
            p, extra, thr = dispatch["patch"], dispatch["extra"], dispatch["threshold"]
            s = p
            small = None
            while (s // p) ** 2 + extra < thr and s <= 4096:
                small = s
                s += p
            big = s  # first size with N >= thr
            if small is not None:
                cands2.append((small, small))
            cands2.append((big, big))
        cands2 += [(H + m, W), (max(m, H - m), max(m, W - m)), (H + 2 * m, W + 2 * m)]
        seen_hw = {(H, W)}
        for hw in cands2:
            if hw not in seen_hw and len(out) < 3:
                seen_hw.add(hw)
                out.append((B, shape[1], hw[0], hw[1]))
    # one case with another batch size
    if out:
        out[0] = (B + 1, *out[0][1:])
    cases = []
    import torch

    for k, shp in enumerate(out):
        if not is_block:
            # the model must take this size (e.g. SOFT: multiples of 32)
            try:
                with torch.no_grad():
                    model(torch.zeros((1, *shp[1:])))
            except Exception as exc:
                raise ExportError(
                    f"{name} cannot take a {shp[2]}x{shp[3]} input besides {shape[2]}x{shape[3]} "
                    f"({_first_line(exc)}), so height/width cannot be dynamic; export it static"
                ) from None
        cases.append(
            {"label": f"dynamic shape {k + 1}", "inputs": {in_name: _randn(shp, _SEED + k + 1)}}
        )
    return cases


def _make_reference(
    model: Any, out_name: str, sima: list[dict[str, Any]], crossover: int | None
) -> Callable[[dict[str, np.ndarray]], tuple[dict[str, np.ndarray], dict[str, Any]]]:
    import torch

    from edgeattn.attention.order import choose_order

    def ref(feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        x = torch.from_numpy(next(iter(feeds.values())))
        seen: dict[int, int] = {}
        hooks = [
            s["mod"].register_forward_pre_hook(
                lambda mod, args: seen.__setitem__(id(mod), int(args[0].shape[1]))
            )
            for s in sima
        ]
        try:
            with torch.no_grad():
                y = model(x)
        finally:
            for h in hooks:
                h.remove()
        facts: dict[str, Any] = {}
        if sima:
            s0 = sima[0]
            n = seen.get(id(s0["mod"]))
            facts["tokens"] = n
            o = s0["mod"].order
            facts["order"] = choose_order(n, s0["head_dim"], crossover) if o == "auto" else o
        return {out_name: y.detach().cpu().numpy()}, facts

    return ref
