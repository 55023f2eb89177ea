"""`edgeattn list`: the model registry, with each model's parameters and FLOPs."""

from __future__ import annotations

import json
from typing import Any

import typer

from edgeattn.cli import options as opts

LIST_EXAMPLES = opts.examples(
    "edgeattn list",
    "edgeattn list 'sima_*'",
    "edgeattn list soft_tiny --details",
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


def _shape_cell(shape: list[int] | None) -> str:
    """The default input without its batch dimension: ``3×224×224`` (an image), ``4096×384``."""
    return "×".join(str(d) for d in shape[1:]) if shape else "?"


def _print_prose(con: Any, text: str, indent: str = "", style: str | None = None) -> None:
    """Free text as plain lines wrapped at spaces to the console width: a word (a name, a path)
    is never broken, even when it is wider than the console; no trailing padding."""
    import textwrap

    lines = textwrap.wrap(
        text,
        width=max(20, con.width),
        initial_indent=indent,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )
    for line in lines:
        con.print(line, style=style, soft_wrap=True, markup=False, highlight=False)


def _print_lines(con: Any, rows: list[dict]) -> None:
    """One line per model (no borders, greppable), then the counting convention and a hint."""
    from rich.table import Table

    from edgeattn.cli.console import keep_whole
    from edgeattn.models.cost import CONVENTION, format_cost
    from edgeattn.models.registry import get_entry

    table = Table(box=None, pad_edge=False)
    table.add_column("name")
    table.add_column("family", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("GFLOPs", justify="right", no_wrap=True)
    table.add_column("paper", justify="right", no_wrap=True)
    for r in rows:
        params, flops = format_cost(get_entry(r["name"]).cost)
        table.add_row(r["name"], r["family"], params, flops, _paper_cell(r["paper"]))
    con.print(keep_whole(table, "name"))
    note = (
        f"{len(rows)} model(s). GFLOPs: {CONVENTION}. "
        "--details (-v): input shapes, descriptions, sources of the paper figures."
    )
    _print_prose(con, note, style="dim")


def _print_details(con: Any, rows: list[dict]) -> None:
    """Each model: its name on a line of its own, then its facts and description, indented."""
    from edgeattn.models.cost import CONVENTION, format_cost
    from edgeattn.models.registry import get_entry

    _print_prose(con, f"edgeattn models ({len(rows)}). GFLOPs: {CONVENTION}.")
    for r in rows:
        params, flops = format_cost(get_entry(r["name"]).cost)
        facts = f"family {r['family']} · params {params} · GFLOPs {flops}"
        facts += f" · input {_shape_cell(r['input_shape'])}"
        lines = [facts]
        paper = r["paper"]
        if paper:
            lines.append(f"paper: {_paper_cell(paper) or '-'} ({paper['source']})")
        lines.append(r["description"])
        con.print(r["name"], soft_wrap=True, markup=False, highlight=False)  # always whole
        for line in lines:
            _print_prose(con, line, indent="    ")


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
    details: bool = typer.Option(
        False,
        "--details",
        "-v",
        help="Each model with its input shape, description and published sources.",
        metavar="",
    ),
) -> None:
    """List registered models, one line each, with parameters and GFLOPs at the default input.

    1 multiply-add = 1 FLOP (as the papers count); SOFT's Newton iterations are shown
    separately, since the papers leave them out.
    """
    from edgeattn.models.cost import CONVENTION

    rows = list_rows(pattern, family=family)
    if as_json:
        typer.echo(json.dumps({"convention": CONVENTION, "models": rows}, indent=1))
        return
    from edgeattn.cli.console import console

    if not rows:
        what = repr(pattern) if pattern else "*"
        where = f" in family {family}" if family else ""
        typer.echo(f"no registered model matches {what}{where}; edgeattn list shows them all")
        return
    (_print_details if details else _print_lines)(console(), rows)


def register(app: typer.Typer) -> None:
    app.command(
        "list", epilog=LIST_EXAMPLES, short_help="Registered models with parameters and GFLOPs."
    )(list_cmd)
