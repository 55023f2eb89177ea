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


def _one_line(exc: BaseException) -> str:
    """An error's own first line, never prefixed with its Python class name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _os_error_line(exc: OSError) -> str:
    """``cannot write '/x.csv': No space left on device [ENOSPC]``: the path and the reason
    (the temporary name of an atomic write is shown as the file it stood for)."""
    import errno
    import re

    why = exc.strerror or _one_line(exc)
    if exc.errno in errno.errorcode:
        why += f" [{errno.errorcode[exc.errno]}]"
    name = exc.filename
    if name is None:
        return why
    name = str(name)
    # records.write_atomic / sidecar.write_pair write ".<name>.<random>.tmp" beside <name>
    m = re.match(r"^(.*/)?\.(.+)\.[A-Za-z0-9_]+\.tmp$", name)
    if m:
        name = (m.group(1) or "") + m.group(2)
    return f"{name}: {why}"


def _os_error_hint(exc: OSError) -> str | None:
    import errno

    return {
        errno.ENOSPC: "free some space or write somewhere else",
        errno.EROFS: "that file system is read-only: write somewhere else",
        errno.EACCES: "check the permissions, or write somewhere else",
        errno.EPERM: "check the permissions, or write somewhere else",
    }.get(exc.errno or 0)


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
    except ValueError as exc:
        if debug:
            raise
        _err(_one_line(exc))
        return EXIT_ERROR
    except OSError as exc:  # a file or the disk (no space, read-only, no permission, ...)
        if debug:
            raise
        _err(_os_error_line(exc), _os_error_hint(exc))
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
        if isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc):
            _err(  # PyTorch's allocator ("DefaultCPUAllocator: can't allocate memory: ...")
                "out of memory: " + str(exc).split("can't allocate memory", 1)[1].strip(": \n"),
                "use a smaller shape (--img-size, --tokens, --batch); the memory guard "
                "(unless --no-memory-guard) refuses what it knows to be too big",
            )
            return EXIT_ERROR
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
