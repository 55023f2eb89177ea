"""`edgeattn list`: the model registry, with each model's parameters and FLOPs."""

from __future__ import annotations

import json

import typer

from edgeattn.cli import options as opts

LIST_EXAMPLES = opts.examples(
    "edgeattn list",
    "edgeattn list 'sima_*'",
    "edgeattn list --family soft --json",
)


def families() -> list[str]:
    """Every registered model family, sorted."""
    from edgeattn.models.registry import get_entry, list_models

    return sorted({get_entry(n).family for n in list_models()})


def list_rows(pattern: str | None = None, family: str | None = None) -> list[dict]:
    """One dict per registered model: name, family, description, cost and published figures."""
    from edgeattn.errors import ModelError
    from edgeattn.models.registry import get_entry, list_models

    if family is not None and family not in families():
        raise ModelError(
            f"--family {family!r} is not a model family; valid: {', '.join(families())}"
        )
    rows = []
    for n in list_models(pattern, family=family):
        e = get_entry(n)
        cost = e.cost
        row: dict = {"name": n, "family": e.family, "description": e.description}
        if cost is not None:
            row.update({k: v for k, v in cost.to_dict().items() if k != "name"})
        else:  # a model registered after the table was generated: tools/model_costs.py
            row.update({"params": None, "gflops": None, "newton_gflops": None, "input_shape": None})
        row["paper"] = e.paper.to_dict() if e.paper is not None else None
        rows.append(row)
    return rows


def _paper_cell(paper: dict | None) -> str:
    if not paper:
        return ""
    parts = []
    if paper["params_m"] is not None:
        parts.append(f"{paper['params_m']:g}M")
    if paper["gflops"] is not None:
        parts.append(f"{paper['gflops']:.1f}G")
    return " ".join(parts)


def list_cmd(
    pattern: str = typer.Argument(None, metavar="PATTERN", help="Glob filter, e.g. 'sima_*'."),
    family: str = typer.Option(
        None,
        "--family",
        metavar="FAMILY",
        help="Only this family: soft, sima, xcit, deit or block.",
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print JSON: the counting convention and one object per model.",
        metavar="",
    ),
) -> None:
    """List registered models with parameters and GFLOPs at the default input.

    1 multiply-add = 1 FLOP (as the papers count); SOFT's Newton iterations are shown
    separately, since the papers leave them out.
    """
    from edgeattn.models.cost import CONVENTION, format_cost
    from edgeattn.models.registry import get_entry

    rows = list_rows(pattern, family=family)
    if as_json:
        typer.echo(json.dumps({"convention": CONVENTION, "models": rows}, indent=1))
        return
    from rich.table import Table

    from edgeattn.cli.console import console

    table = Table(title=f"edgeattn models ({len(rows)})", caption=CONVENTION)
    table.add_column("name")
    table.add_column("family")
    table.add_column("params", justify="right")
    table.add_column("GFLOPs", justify="right")
    table.add_column("paper", justify="right")
    table.add_column("description")
    for r in rows:
        params, flops = format_cost(get_entry(r["name"]).cost)
        table.add_row(
            r["name"], r["family"], params, flops, _paper_cell(r["paper"]), r["description"]
        )
    console().print(table)


def register(app: typer.Typer) -> None:
    app.command(
        "list", epilog=LIST_EXAMPLES, short_help="Registered models with parameters and GFLOPs."
    )(list_cmd)
