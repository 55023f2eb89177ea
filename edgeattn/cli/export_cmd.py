"""`edgeattn export`: one model to one verified, audited .onnx file (+ .onnx.json sidecar)."""

from __future__ import annotations

import typer

from edgeattn.cli import options as opts
from edgeattn.defaults import OPSET
from edgeattn.overrides import parse_set  # the one --set parser (kept importable from here)

EXPORT_EXAMPLES = opts.examples(
    "edgeattn export soft_tiny",
    "edgeattn export block_sima --tokens 1024 --dim 384 --heads 6 -o sima.onnx",
    "edgeattn export sima_tiny_12_p16 --precision int8-dynamic -o sima_int8.onnx",
)


def check_overwrite(output: str) -> None:
    """Refuse to replace a file that is not an edgeattn export (one has an ``.onnx.json`` sidecar
    of the export schema beside it); ``--force`` skips this."""
    import json
    from pathlib import Path

    from edgeattn.errors import ExportError
    from edgeattn.export.onnx import SIDECAR_SCHEMA

    p = Path(output)
    if not p.exists() or p.is_dir():
        return  # a directory is export_onnx's error
    side = p.with_name(p.name + ".json")
    try:
        ours = json.loads(side.read_text(encoding="utf-8")).get("schema") == SIDECAR_SCHEMA
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise ExportError(
            f"-o {output!r} exists and is not an edgeattn export (no {side.name} sidecar "
            "beside it); refusing to overwrite it",
            hint="choose another -o path, or pass --force to replace it",
        )


def export_cmd(
    name: str = typer.Argument(..., help="Registered model (see `edgeattn list`)."),
    opset: int = typer.Option(OPSET, "--opset", help="Exact ONNX opset of the file (13..23)."),
    img_size: int = typer.Option(
        None, "--img-size", help="Image side for nets (default: the model's)."
    ),
    tokens: int = typer.Option(None, "--tokens", help="Token count N for attention blocks."),
    dim: int = typer.Option(None, "--dim", help="Embedding dim C for attention blocks."),
    heads: int = typer.Option(None, "--heads", help="Heads for attention blocks."),
    batch: int = typer.Option(1, "--batch", help="Batch size of the export shape."),
    dynamic: bool = typer.Option(
        False,
        "--dynamic/--static",
        help="Dynamic batch and resolution / token count.",
        metavar="",
    ),
    order: str = typer.Option("auto", "--order", help="SimA QKᵀV order: auto, qk_first, kv_first."),
    crossover: int = typer.Option(
        None, "--crossover", help="SimA auto threshold (default: head dim)."
    ),
    checkpoint: str = typer.Option(
        None, "--checkpoint", help="Official checkpoint to load strictly."
    ),
    simplify: bool = typer.Option(
        True, "--simplify/--no-simplify", help="Run onnxsim (census-guarded).", metavar=""
    ),
    verify: bool = typer.Option(
        True,
        "--verify/--no-verify",
        help="Checker, shape inference, ORT vs PyTorch.",
        metavar="",
    ),
    strict_softmax_free: bool = typer.Option(
        False,
        "--strict-softmax-free",
        help="Fail if any block holds a Softmax or fused attention.",
        metavar="",
    ),
    output: opts.OnnxOut = None,
    cache_dir: str = typer.Option(
        None, "--cache-dir", help="Re-use identical exports from here.", metavar="DIR"
    ),
    exporter: str = typer.Option("auto", "--exporter", help="auto, torchscript or dynamo."),
    set_: opts.Set = None,
    force: bool = typer.Option(
        False,
        "--force",
        help="Overwrite -o even when it is not an edgeattn export.",
        metavar="",
    ),
    precision: str = typer.Option(
        "fp32",
        "--precision",
        help="fp32, fp16 (float32 I/O), int8-dynamic or int8-static (QDQ, calibrated); "
        "verified against fp32 PyTorch with named tolerances.",
    ),
    keep_fp32: str = typer.Option(
        "auto",
        "--keep-fp32",
        help="Node groups kept in float32: auto (measured defaults), none, or a list of "
        "sima_l1, soft_newton, cls_tail, softmax, softmax_long, litemla_att, output_bias.",
    ),
    calibration: str = typer.Option(
        None, "--calibration", help="int8-static: a directory of images to calibrate on."
    ),
    allow_degraded: bool = typer.Option(
        False,
        "--allow-degraded",
        help="Write a precision variant outside its tolerance (figures still recorded).",
        metavar="",
    ),
    no_memory_guard: opts.NoMemoryGuard = False,
) -> None:
    """Export NAME to ONNX at an exact opset; audit the ops per block; verify against PyTorch.

    Writes NAME_op<opset>.onnx (with _<size>, _n<tokens>, _<order>, _dyn, _<precision> as
    asked) in the current directory, or -o FILE, and beside it FILE.json: the sidecar with
    the export spec, versions, op audit, verification figures and stage timings.
    """
    # Long because of its option list (typer reads the signature) and the summary it prints; one
    # library call.
    from edgeattn.cli.console import console, progress
    from edgeattn.export.onnx import export_onnx

    if output is not None and not force:
        check_overwrite(output)
    overrides = parse_set(set_)
    if not no_memory_guard:
        from edgeattn.bench.preflight import check_model_memory

        check_model_memory(
            name, img_size=img_size, tokens=tokens, dim=dim, heads=heads, batch=batch,
            overrides=overrides, order=order, crossover=crossover,
            fix="a smaller --img-size / --tokens / --batch",
        )  # fmt: skip
    con = console(highlight=False)
    with progress(con, f"export {name}"):
        res = export_onnx(
            name,
            opset=opset,
            img_size=img_size,
            tokens=tokens,
            dim=dim,
            heads=heads,
            batch=batch,
            dynamic=dynamic,
            order=order,
            crossover=crossover,
            checkpoint=checkpoint,
            overrides=overrides,
            simplify=simplify,
            verify=verify,
            strict_softmax_free=strict_softmax_free,
            output=output,
            cache_dir=cache_dir,
            exporter=exporter,
            precision=precision,
            keep_fp32=keep_fp32,
            calibration=calibration,
            allow_degraded=allow_degraded,
        )
    _print_export(con, res)


def _print_export(con, res) -> None:
    """The op census, verification, order/precision notes, the path and the stage timings."""
    import json

    from edgeattn.export.report import audit_summary, audit_table, verification_table

    spec = res.spec
    con.print(audit_table(res.audit, title=f"{spec['model']}: op census per block"))
    con.print(audit_summary(res.audit))
    if res.verification:
        con.print(verification_table(res.verification))
    o = spec.get("order", {})
    if o.get("applies"):
        con.print(
            f"SimA order: policy {o['policy']}, mode {o.get('mode')}, threshold "
            f"{o.get('threshold')}"
            + (f", resolved {o['resolved']}" if o.get("resolved") else "")
            + (f"; {o['implementation']}" if o.get("implementation") else "")
        )
    if spec.get("precision", "fp32") != "fp32":
        from edgeattn.export.precision import precision_summary

        con.print(precision_summary(json.loads(res.sidecar_path.read_text())))
    if spec["simplify"].get("reason") and spec["simplify"].get("reason") != "not requested":
        con.print(f"[yellow]simplify skipped:[/] {spec['simplify']['reason']}")
    t = res.timings
    steps = [k for k in t if k.endswith("_s") and k != "total_s"] + ["total_s"]
    timing = ", ".join(f"{k[:-2]} {t[k]:.2f}s" for k in steps if k in t)
    con.print(
        f"[bold]{res.path}[/] ({res.size_bytes / 1e6:.2f} MB, opset {spec['opset']}, "
        f"{spec['exporter']}{', cached' if res.cached else ''}; sha256 {res.sha256[:12]}…)"
    )
    con.print(f"[dim]{timing}; sidecar {res.sidecar_path.name}[/]")


def register(app: typer.Typer) -> None:
    app.command(
        "export", epilog=EXPORT_EXAMPLES, short_help="One model to a verified, audited .onnx file."
    )(export_cmd)
