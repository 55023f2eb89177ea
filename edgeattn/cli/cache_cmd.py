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
        bool,
        opts.flag(
            "--clear",
            help="Remove the cached exports (rebuilt on demand); other files stay.",
        ),
    ] = False,
    as_json: Annotated[bool, opts.flag("--json", help="Print path and size as JSON.")] = False,
) -> None:
    """The export cache of bench, sweep and profile: its path, size, and --clear.

    Path: $EDGEATTN_CACHE, else $XDG_CACHE_HOME/edgeattn/exports, else
    ~/.cache/edgeattn/exports. Each entry is <stem>-<content hash>.onnx and its .onnx.json
    sidecar; `export` uses it only with --cache-dir. --clear removes those entries (and the
    bench's own graphs) and nothing else: it says how many other files it left.
    """
    from edgeattn.cache import cache_info, clear_cache, human_bytes

    if clear:
        done = clear_cache()
        if as_json:
            typer.echo(json.dumps(dict(done.as_dict(), cleared=True), indent=1))
            return
        if not done.exists:
            typer.echo(f"export cache: {done.path} (empty: not created yet)")
            return
        left = f"; left {done.left} file(s) that edgeattn did not write" if done.left else ""
        typer.echo(
            f"export cache: {done.path}: cleared {done.models} model(s), {done.files} file(s), "
            f"{human_bytes(done.bytes)}{left}"
        )
        return
    info = cache_info()
    if as_json:
        typer.echo(json.dumps(dict(info.as_dict(), cleared=False), indent=1))
        return
    size = f"{info.models} model(s), {info.files} file(s), {human_bytes(info.bytes)}"
    if not info.exists:
        typer.echo(f"export cache: {info.path} (empty: not created yet)")
    else:
        foreign = (
            f" ({info.foreign} of them not written by edgeattn: --clear leaves those)"
            if info.foreign
            else ""
        )
        typer.echo(f"export cache: {info.path}: {size}{foreign}")


def register(app: typer.Typer) -> None:
    app.command(
        "cache", epilog=CACHE_EXAMPLES, short_help="The export cache: path, size, --clear."
    )(cache_cmd)
