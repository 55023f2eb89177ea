"""The ``edgeattn`` command line: thin. Each command parses, calls one library function, prints.

Typed errors (``edgeattn.errors.EdgeAttnError``) are caught once, in :func:`main`, and shown as one
line plus a hint; ``--debug`` (or ``EDGEATTN_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

app = typer.Typer(
    name="edgeattn",
    help="Softmax-free ViT attention (SOFT, SimA): export to ONNX and measure on edge devices.",
    epilog="Examples:\n\n\b\n  edgeattn list\n  edgeattn export soft_tiny\n"
    "  edgeattn bench --tokens 1024 --methods softmax,sima",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    # click's plain help, in a terminal and piped alike: it wraps at the width and never cuts an
    # option name, and flags show no <bool>; rich stays for the tables and the progress lines
    rich_markup_mode=None,
)

# One module per command group; each defines ``register(app)``. Keeps this file free of logic.
_COMMAND_MODULES = (
    "edgeattn.cli.models_cmd",
    "edgeattn.cli.export_cmd",
    "edgeattn.cli.bench_cmd",
    "edgeattn.cli.remote_cmd",
    "edgeattn.cli.cache_cmd",
)

_DEBUG = {"on": False}
_ARGV: dict[str, list[str]] = {}


def invocation() -> list[str] | None:
    """The arguments this ``edgeattn`` run was given (for messages such as the --resume line)."""
    return _ARGV.get("argv")


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
) -> None:
    _DEBUG["on"] = debug or os.environ.get("EDGEATTN_DEBUG") == "1"


for _mod in _COMMAND_MODULES:
    try:
        _m = importlib.import_module(_mod)
    except ModuleNotFoundError as exc:  # a command group not built yet
        if exc.name != _mod:
            raise
        continue
    _m.register(app)


def _err(msg: str, hint: str | None = None) -> None:
    from edgeattn.cli.console import console

    con = console(stderr=True, highlight=False)
    con.print(f"[bold red]error:[/] {msg}", markup=True, soft_wrap=True)
    if hint:
        con.print(f"[dim]hint: {hint}[/]", soft_wrap=True)


def main(argv: list[str] | None = None) -> int:
    from edgeattn.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED, EdgeAttnError
    from edgeattn.signals import Terminated

    debug = (
        "--debug" in (argv if argv is not None else sys.argv[1:])
        or os.environ.get("EDGEATTN_DEBUG") == "1"
    )
    _ARGV["argv"] = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--debug"]
    try:
        rc = app(args=argv, standalone_mode=False)
    except EdgeAttnError as exc:
        if debug:
            raise
        _err(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, exc.hint)
        return EXIT_ERROR
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        if debug:
            raise
        _err(f"{type(exc).__name__}: {exc}".splitlines()[0])
        return EXIT_ERROR
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        _err(
            f"{'terminated' if terminated else 'interrupted'}; results measured so far are kept on disk"
        )
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except MemoryError as exc:
        if debug:
            raise
        _err(
            f"out of memory{': ' + str(exc) if str(exc) else ''}".splitlines()[0],
            "use a smaller shape (--tokens, --batch, --dim) or fewer --methods",
        )
        return EXIT_ERROR
    except SystemExit as exc:  # typer/click exit paths
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_ERROR
    except Exception as exc:
        # Usage errors (typer's vendored click) arrive here in non-standalone mode: they know how
        # to show themselves. Anything else is a bug: one line, traceback with --debug.
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            return int(exc.exit_code)
        if debug:
            raise
        _err(
            f"internal error: {type(exc).__name__}: {exc}".splitlines()[0],
            "this is a bug in edgeattn; rerun with --debug for the traceback and report it",
        )
        return EXIT_ERROR
    return rc if isinstance(rc, int) else 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
