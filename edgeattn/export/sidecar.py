"""The ``.onnx.json`` sidecar beside every export: its schema, the :class:`ExportResult` read
from it, the cache look-up, and the atomic writer of a file and its sidecar together.

Schema ``edgeattn.export/1``: ``spec`` (what was asked and decided: model, family, method, config,
opset, exporter, inputs/outputs with dynamic axes, order, simplify, tolerance, cache key,
precision), ``versions``, ``onnx`` (file, sha256, bytes, IR version, opset imports), ``audit``,
``verification``, ``precision`` and ``timings``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeattn.errors import ExportError
from edgeattn.export.util import jsonable, sha256_file

SIDECAR_SCHEMA = "edgeattn.export/1"


@dataclass
class ExportResult:
    """What :func:`~edgeattn.export.onnx.export_onnx` wrote. ``spec`` is the sidecar's ``spec``."""

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


def sidecar_path(path: str | os.PathLike) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    p = Path(path)
    return p.with_name(p.name + ".json")


def read_sidecar(path: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar of the ONNX file ``path`` as a dict, or None when it is missing or unreadable."""
    side = sidecar_path(path)
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def versions() -> dict[str, str]:
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


def check_writable_dir(d: Path, what: str) -> None:
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


def write_pair(path: Path, data: bytes, side_bytes: bytes) -> None:
    """Write ``path`` and its sidecar: both to temporary siblings first, then rename both, so a
    failure leaves neither (the single-file form is :func:`edgeattn.runtime.records.write_atomic`)."""
    items = [(path, data), (sidecar_path(path), side_bytes)]
    tmps: list[tuple[Path, str]] = []
    umask = os.umask(0)
    os.umask(umask)
    try:
        for p, blob in items:
            fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
            tmps.append((p, tmp))
            os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
        for p, tmp in tmps:
            os.replace(tmp, p)
    except OSError as exc:
        raise ExportError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    finally:
        for _, tmp in tmps:
            if os.path.exists(tmp):
                os.unlink(tmp)


def copy_pair(src: Path, dst: Path) -> None:
    """Copy an export and its sidecar (a cache hit delivered to ``-o``)."""
    write_pair(dst, src.read_bytes(), sidecar_path(src).read_bytes())


def cache_lookup(
    path: Path, key: str, verify: bool, strict: bool, allow_degraded: bool = False
) -> ExportResult | None:
    """The cached export at ``path`` if its sidecar holds ``key``, its bytes match the recorded
    sha256 and it passed what this request asks (verification, precision tolerance)."""
    if not path.is_file():
        return None
    meta = read_sidecar(path)
    if meta is None or meta.get("spec", {}).get("cache_key") != key:
        return None
    if meta.get("onnx", {}).get("sha256") != sha256_file(str(path)):
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
        sidecar_path=sidecar_path(path),
        spec=meta["spec"],
        audit=meta["audit"],
        verification=meta.get("verification"),
        timings={},
        cached=True,
        sha256=meta["onnx"]["sha256"],
        size_bytes=int(meta["onnx"]["bytes"]),
        versions=meta.get("versions", {}),
    )


def sidecar_bytes(
    proto: Any,
    data: bytes,
    sha: str,
    out_path: Path,
    spec: dict[str, Any],
    vers: dict[str, str],
    audit: dict[str, Any],
    verification: dict[str, Any] | None,
    precision_info: dict[str, Any],
    timings: dict[str, float],
) -> bytes:
    """The sidecar document of one export, serialised."""
    sidecar = {
        "schema": SIDECAR_SCHEMA,
        "spec": spec,
        "versions": vers,
        "onnx": {
            "file": out_path.name,
            "sha256": sha,
            "bytes": len(data),
            "ir_version": int(proto.ir_version),
            "opset_imports": {o.domain or "ai.onnx": int(o.version) for o in proto.opset_import},
        },
        "audit": audit,
        "verification": verification,
        "precision": jsonable(precision_info),
        "timings": timings,
    }
    return json.dumps(jsonable(sidecar), indent=2).encode()


def _dims(vi: Any) -> list[Any]:
    return [d.dim_param if d.dim_param else int(d.dim_value) for d in vi.type.tensor_type.shape.dim]


def make_spec(proto: Any, plan: Any, req: Any, key: str | None) -> dict[str, Any]:
    """The sidecar's ``spec`` section of an export (``plan``: an ExportPlan, ``req``: its Request)."""
    from edgeattn.export.verify import tolerance_for

    cfg = getattr(plan.model, "config", None)
    tokens_in = plan.facts.is_tokens
    spec = {
        "model": plan.name,
        "family": plan.family,
        "method": plan.facts.method,
        "config": jsonable(cfg) if dataclasses.is_dataclass(cfg) else {},
        "overrides": jsonable(req.overrides),
        "opset": req.opset,
        "exporter": plan.exporter,
        "exporter_requested": req.exporter,
        "exporter_notes": plan.notes,
        "inputs": [
            {
                "name": plan.in_name,
                "shape": list(plan.shape),
                "onnx_shape": _dims(proto.graph.input[0]),
                "dynamic_axes": {str(k): v for k, v in plan.dyn_axes.items()},
            }
        ],
        "outputs": [
            {
                "name": plan.out_name,
                "shape": list(plan.y.shape),
                "onnx_shape": _dims(proto.graph.output[0]),
                "dynamic_axes": {str(k): v for k, v in plan.out_dyn.items()},
            }
        ],
        "dynamic": bool(req.dynamic),
        "batch": req.batch,
        "img_size": list(plan.img_hw) if plan.img_hw and not tokens_in else None,
        "tokens": plan.shape[1] if tokens_in else None,
        "dim": plan.shape[2] if tokens_in else None,
        "heads": getattr(cfg, "heads", None) if tokens_in else None,
        "order": jsonable(plan.order.info),
        "simplify": jsonable(plan.simplify_info),
        "tolerance": dataclasses.asdict(tolerance_for(plan.facts.tolerance)),
        "checkpoint": {"path": str(req.ckpt), "sha256": req.ckpt_sha} if req.ckpt else None,
        "cache_key": key,
        "precision": req.precision,
    }
    spec.update(plan.extra_spec)
    return spec
