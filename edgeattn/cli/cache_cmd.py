"""`edgeattn cache`: where the export cache is, how big, and clearing it (``edgeattn.cache``)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from edgeattn.cli import options as opts

CACHE_EXAMPLES = opts.examples(
    "edgeattn cache",
    "edgeattn cache --clear",
    "EDGEATTN_CACHE=/tmp/exports edgeattn cache --json",
)


def cache_cmd(
    clear: Annotated[
        bool, opts.flag("--clear", help="Remove every cached export (they are rebuilt on demand).")
    ] = False,
    as_json: Annotated[bool, opts.flag("--json", help="Print path and size as JSON.")] = False,
) -> None:
    """The export cache of bench, sweep and profile: its path, size, and --clear.

    Path: $EDGEATTN_CACHE, else $XDG_CACHE_HOME/edgeattn/exports, else
    ~/.cache/edgeattn/exports. Each entry is <stem>-<content hash>.onnx and its .onnx.json
    sidecar; `export` uses it only with --cache-dir.
    """
    from edgeattn.cache import cache_info, clear_cache, human_bytes

    info = clear_cache() if clear else cache_info()
    if as_json:
        typer.echo(json.dumps(dict(info.as_dict(), cleared=clear), indent=1))
        return
    size = f"{info.models} model(s), {info.files} file(s), {human_bytes(info.bytes)}"
    if not info.exists:
        typer.echo(f"export cache: {info.path} (empty: not created yet)")
    elif clear:
        typer.echo(f"export cache: {info.path}: cleared {size}")
    else:
        typer.echo(f"export cache: {info.path}: {size}")


def register(app: typer.Typer) -> None:
    app.command(
        "cache", epilog=CACHE_EXAMPLES, short_help="The export cache: path, size, --clear."
    )(cache_cmd)
