"""`edgeattn list` and `edgeattn info`: the model registry."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("list")
    def list_cmd(
        pattern: str = typer.Argument(None, help="Glob filter, e.g. 'sima_*'."),
        family: str = typer.Option(None, "--family", help="soft, sima, xcit, deit or block."),
    ) -> None:
        """List registered models (name, family, parameter count with --params)."""
        from rich.table import Table

        from edgeattn.cli.console import console
        from edgeattn.models.registry import get_entry, list_models

        names = list_models(pattern, family=family)
        table = Table(title=f"edgeattn models ({len(names)})")
        table.add_column("name")
        table.add_column("family")
        table.add_column("description")
        for n in names:
            e = get_entry(n)
            table.add_row(n, e.family, e.description)
        console().print(table)
