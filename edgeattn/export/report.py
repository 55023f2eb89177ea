"""Rich tables for an export: the per-block op census and the ORT-vs-PyTorch verification."""

from __future__ import annotations

from typing import Any

from edgeattn.export.audit import CATEGORIES

_SHORT = {"fused_attention": "fused attn", "ReduceL1": "ReduceL1", "ReduceSum": "ReduceSum"}


def audit_table(audit: dict[str, Any], title: str = "op census per block") -> Any:
    from rich.table import Table

    t = Table(title=title, show_footer=True)
    t.add_column("block", footer="total")
    totals = audit["totals"]
    for c in CATEGORIES:
        t.add_column(_SHORT.get(c, c), justify="right", footer=str(totals[c]))
    for block, counts in audit["blocks"].items():
        cells = []
        for c in CATEGORIES:
            v = counts[c]
            s = str(v) if v else "·"
            if v and c in ("Softmax", "fused_attention"):
                s = f"[bold red]{v}[/]"
            elif v and c == "Exp":
                s = f"[yellow]{v}[/]"
            cells.append(s)
        t.add_row(block, *cells)
    return t


def audit_summary(audit: dict[str, Any]) -> str:
    if audit["softmax_free"]:
        s = "[bold green]softmax-free[/]: no Softmax and no fused attention op"
    else:
        b = audit["softmax_blocks"]
        s = f"[bold red]not softmax-free[/]: softmax in {len(b)} block(s): " + ", ".join(b[:8])
        if len(b) > 8:
            s += f", … (+{len(b) - 8})"
        if audit["fused_attention_ops"]:
            ops = ", ".join(f"{n}× {op}" for op, n in audit["fused_attention_ops"].items())
            s += f" (fused attention op, softmax inside: {ops})"
    if audit["exp_blocks"]:
        s += f"; Exp in {len(audit['exp_blocks'])} block(s)"
    if audit["branches"]:
        s += f"; If branches: {', '.join(audit['branches'])}"
    return s


def verification_table(verification: dict[str, Any]) -> Any:
    from rich.table import Table

    tol = verification["tolerance"]
    t = Table(
        title=f"ONNX Runtime vs PyTorch ({tol['name']}: atol {tol['atol']:g} + rtol {tol['rtol']:g}·max|ref|)"
    )
    for col, j in (
        ("case", "left"),
        ("input", "left"),
        ("order / branch", "left"),
        ("max abs", "right"),
        ("max rel", "right"),
        ("bound", "right"),
        ("ok", "center"),
    ):
        t.add_column(col, justify=j)
    for c in verification["cases"]:
        shapes = " ".join(f"{k}{tuple(v)}" for k, v in c["inputs"].items())
        order = c.get("order") or ""
        br = c.get("branch")
        if br:
            order = f"{order} / If→{br}"
        for _name, o in c["outputs"].items():
            ok = "[green]✓[/]" if o.get("ok") else "[red]✗[/]"
            t.add_row(
                c["label"],
                shapes,
                order,
                f"{o.get('max_abs', float('nan')):.2e}",
                f"{o.get('max_rel', float('nan')):.2e}",
                f"{o.get('bound', float('nan')):.2e}",
                ok,
            )
    return t
