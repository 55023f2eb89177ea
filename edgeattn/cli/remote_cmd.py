"""`edgeattn remote check|setup|run`: measure on devices over SSH (the system ssh client).

Each command parses the shared SSH options (``edgeattn.cli.options``), calls one library
function (``edgeattn.targets`` / ``edgeattn.remote``) and prints its reports."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from edgeattn.cli import options as opts
from edgeattn.errors import EXIT_RUN_FAILED, RemoteError

remote_app = typer.Typer(
    name="remote",
    help="Measure on devices over SSH: preflight, set up numpy+onnxruntime, run a spec.",
    short_help="Measure on devices over SSH (check, setup, run).",
    no_args_is_help=True,
    epilog=opts.examples(
        "edgeattn remote check pi@raspberrypi.local",
        "edgeattn remote run pi4 --spec spec.json",
    ),
)


class _Progress:
    """Device progress lines on stderr, prefixed with the host when there are several."""

    def __init__(self, many: bool, quiet: bool = False) -> None:
        self.many = many
        self.quiet = quiet
        self.lock = threading.Lock()

    def __call__(self, host: str, line: str) -> None:
        if self.quiet:
            return
        with self.lock:
            sys.stderr.write(f"[{host}] {line}\n" if self.many else f"{line}\n")
            sys.stderr.flush()


def _fmt(v: Any) -> str:
    return "-" if v is None or v == "" else str(v)


def _say(con: Any, text: str, **kw: Any) -> None:
    con.print(text, soft_wrap=True, markup=False, highlight=False, **kw)


# -- check ----------------------------------------------------------------------------------------
CHECK_EXAMPLES = opts.examples(
    "edgeattn remote check pi@raspberrypi.local",
    "edgeattn remote check --inventory hosts.ini --hosts pis --json",
)


@remote_app.command(
    "check",
    epilog=CHECK_EXAMPLES,
    short_help="Preflight: python, numpy, onnxruntime, CPU, disk; fixes.",
)
@opts.remote_options(without=("remote_dir", "keep_remote"))
def check_cmd(
    remote: opts.RemoteOptions = opts.RemoteOptions(),
    hosts: opts.Hosts = None,
    as_json: Annotated[bool, opts.flag("--json", help="Print the reports as JSON.")] = False,
) -> None:
    """Preflight: reachable? python, numpy, onnxruntime, providers, CPU, disk; how to fix gaps."""
    import json

    from edgeattn.cli.console import console
    from edgeattn.targets import check_all

    t = remote.targets(hosts)
    progress = _Progress(len(t.hosts) > 1)
    reports = check_all(
        t,
        remote.ssh(t),
        remote_python=remote.remote_python,
        remote_cache=remote.remote_cache,
        on_progress=progress,
    )
    if as_json:
        print(json.dumps(reports, indent=1, default=str))
    else:
        _print_check(console(), reports)
    bad = [r["host"] for r in reports if not r.get("ok")]
    if bad:
        raise RemoteError(
            f"{len(bad)} of {len(reports)} host(s) not ready: {', '.join(bad)}",
            hint="run the fix commands listed above, then check again",
        )


def _cpu_cell(r: dict) -> str:
    cpu = r.get("cpu") or {}
    parts = (
        _fmt(cpu.get("model")),
        f"{cpu.get('cores_logical')} cores" if cpu.get("cores_logical") else "",
        f"[yellow]emulated ({r['emulated']})[/]" if r.get("emulated") else "",
        f"gov={cpu['governor']}" if cpu.get("governor") else "",
        f"{cpu['temperature_c']}°C" if cpu.get("temperature_c") is not None else "",
    )
    return " ".join(x for x in parts if x) or "-"


def _print_check(con: Any, reports: list[dict]) -> None:
    from rich.table import Table

    table = Table(title="edgeattn remote check")
    for col in ("host", "ok", "python", "numpy", "onnxruntime", "providers", "cpu", "disk MB"):
        table.add_column(col)
    for r in reports:
        providers = [p.replace("ExecutionProvider", "") for p in r.get("providers") or []]
        table.add_row(
            r["host"],
            "[green]yes[/]" if r.get("ok") else "[red]no[/]",
            _fmt(r.get("python_version")) if r.get("reachable") else "unreachable",
            _fmt(r.get("numpy_version")),
            _fmt(r.get("onnxruntime_version")),
            ", ".join(providers) or "-",
            _cpu_cell(r),
            _fmt(r.get("disk_free_mb")),
        )
    con.print(table)
    for r in reports:
        for p in r.get("problems", []):
            _say(con, p if p.startswith(f"{r['host']}: ") else f"{r['host']}: {p}", style="red")
        for f in r.get("fixes", []):
            _say(con, f"  fix: {f}")
        for n in r.get("notes", []):
            _say(con, f"  note: {n}")


# -- setup ----------------------------------------------------------------------------------------
SETUP_EXAMPLES = opts.examples(
    "edgeattn remote setup pi@raspberrypi.local",
    "edgeattn remote setup pi4 --match-host",
    "edgeattn remote setup pi4 --pip-arg=--no-index --pip-arg=--find-links=/srv/wheels",
)


@remote_app.command(
    "setup", epilog=SETUP_EXAMPLES, short_help="A venv with numpy and onnxruntime on the device."
)
@opts.remote_options(without=("inventory", "group", "remote_python", "remote_dir", "keep_remote"))
def setup_cmd(
    host: Annotated[str, typer.Argument(metavar="HOST", help="The device.")],
    remote: opts.RemoteOptions = opts.RemoteOptions(),
    remote_python: Annotated[
        str | None,
        typer.Option(
            "--remote-python",
            metavar="PATH",
            help="Python that creates the venv (default python3).",
        ),
    ] = None,
    venv: Annotated[
        str | None,
        typer.Option(
            "--venv",
            metavar="DIR",
            help="Venv directory on the device (default ~/.cache/edgeattn/venv).",
        ),
    ] = None,
    upgrade_pip: Annotated[
        bool, opts.flag("--upgrade-pip", help="Upgrade pip in the venv first.")
    ] = False,
    package: Annotated[
        list[str] | None,
        typer.Option(
            "--package",
            metavar="REQ",
            help="pip requirement to install instead of the defaults, e.g. onnxruntime==1.31.0 "
            "(repeatable; default: numpy onnxruntime).",
        ),
    ] = None,
    pip_arg: Annotated[
        list[str] | None,
        typer.Option(
            "--pip-arg",
            metavar="ARG",
            help="Extra argument for the device's pip install (repeatable), e.g. "
            "--pip-arg=--no-index --pip-arg=--find-links=/srv/wheels or --pip-arg=--index-url=URL.",
        ),
    ] = None,
    match_host: Annotated[
        bool,
        opts.flag(
            "--match-host",
            help="Pin numpy and onnxruntime to this host's versions (a --package naming one wins).",
        ),
    ] = False,
) -> None:
    """Create a venv on the device and pip install numpy and onnxruntime into it (atomically:
    it replaces the old one only once both import; a failure changes nothing)."""
    # Long for its own options, declared in the signature where typer reads them; the body is short.
    from edgeattn.cli.console import console
    from edgeattn.remote.setup import remote_setup
    from edgeattn.signals import sigterm_as_interrupt

    with sigterm_as_interrupt():
        report = remote_setup(
            host,
            ssh=remote.ssh(),
            python=remote_python,
            venv=venv,
            upgrade_pip=upgrade_pip,
            packages=list(package or ()) or (() if match_host else ("numpy", "onnxruntime")),
            pip_args=list(pip_arg or ()),
            match_host=match_host,
            remote_cache=remote.remote_cache,
            on_progress=_Progress(False),
        )
    con = console()
    _say(
        con,
        f"{host}: venv {report.get('venv')}: python {_fmt(report.get('python_version'))}, "
        f"numpy {_fmt(report.get('numpy_version'))}, "
        f"onnxruntime {_fmt(report.get('onnxruntime_version'))}",
    )
    for p in report.get("problems", []):
        _say(con, f"{host}: {p}")
    if not report.get("ok"):
        raise RemoteError(
            f"{host}: set up, but the device is not ready",
            hint=" ".join(report.get("fixes", [])) or None,
        )


# -- run ------------------------------------------------------------------------------------------
RUN_EXAMPLES = opts.examples(
    "edgeattn remote run pi@raspberrypi.local --spec spec.json -o results/pi.jsonl",
    "edgeattn remote run pi4 jetson --spec spec.json --timeout 600",
)


@remote_app.command(
    "run", epilog=RUN_EXAMPLES, short_help="Measure a ready spec on one or more devices."
)
@opts.remote_options()
def run_cmd(
    spec: Annotated[
        Path,
        typer.Option(
            "--spec",
            metavar="FILE",
            help="Runtime spec JSON (format: docs/spec.schema.json); model paths relative to its "
            "folder.",
        ),
    ],
    hosts: opts.Hosts = None,
    out: opts.RecordsOut = None,
    remote: opts.RemoteOptions = opts.RemoteOptions(),
    quiet: opts.Quiet = False,
) -> None:
    """Measure a ready spec and its .onnx files on one or more devices (in parallel)."""
    from edgeattn.bench.run import default_out
    from edgeattn.cli.console import console
    from edgeattn.targets import run_spec

    check_spec_file(spec)  # here, before any host is resolved or contacted
    t = remote.targets(hosts)
    out = out or default_out("remote")
    from edgeattn import integrity

    with integrity.run(out, "remote run"):  # the records' run id, and run_end if all hosts ran
        outcomes = run_spec(
            t, spec, remote.ssh(t), out=out, remote_python=remote.remote_python,
            remote_dir=remote.remote_dir, remote_cache=remote.remote_cache,
            keep_remote=remote.keep_remote, on_progress=_Progress(len(t.hosts) > 1, quiet),
        )  # fmt: skip
    failed_runs = _print_run(console(), outcomes, out)
    errors = [o for o in outcomes if o.result is None]
    if errors:
        first = errors[0].error
        if len(t.hosts) == 1 and first is not None:
            raise first  # one host: its error is the command's error, shown once by main()
        raise RemoteError(f"{len(errors)} of {len(t.hosts)} host(s) failed")
    if failed_runs:
        raise typer.Exit(EXIT_RUN_FAILED)


def check_spec_file(spec: Path) -> None:
    """``--spec``: a JSON file the device runtime accepts (its fields, types, ids and paired
    groups: the runtime's own checks, run here), with every model file present and, unless
    absolute, inside the spec's folder. ``RemoteError`` naming the file and the bad value."""
    from edgeattn.remote.spec import prepare_spec
    from edgeattn.targets import load_spec

    p = Path(spec)
    if not p.is_file():
        why = "no such file" if not os.path.lexists(p) else "not a regular file"
        raise RemoteError(f"--spec {str(p)!r}: {why}", hint="give a JSON spec file")
    try:
        prepare_spec(load_spec(p), base_dir=p.resolve().parent)
    except (ValueError, OSError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, OSError) and exc.strerror:
            text = f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
        raise RemoteError(
            f"--spec {str(p)!r}: {text}", hint="format: docs/spec.schema.json"
        ) from None


def _print_run(con: Any, outcomes: list, out: Path) -> int:
    """The per-host table (and, for several hosts, each failed host's error); returns how many
    runs failed on the hosts that answered."""
    from rich.table import Table

    table = Table(title=f"edgeattn remote run -> {out}")
    for col in (
        "host",
        "runs ok",
        "failed",
        "sent KB",
        "connect s",
        "deploy s",
        "run s",
        "total s",
    ):
        table.add_column(col)
    failed_runs = 0
    for o in outcomes:
        if o.result is None:
            table.add_row(o.host, "[red]error[/]", *["-"] * 6)
            continue
        r, t = o.result, o.result.timings
        failed_runs += r.failed
        sent = sum(v for k, v in r.bytes_sent.items() if k != "stream") / 1024
        times = (f"{t.get(k, 0.0):.2f}" for k in ("connect", "deploy", "run", "total"))
        table.add_row(o.host, str(r.ok), str(r.failed), f"{sent:.1f}", *times)
    con.print(table)
    errors = [o for o in outcomes if o.result is None]
    if len(outcomes) > 1:
        for o in errors:
            _say(
                con,
                str(o.error).splitlines()[0] if str(o.error) else type(o.error).__name__,
                style="red",
            )
            hint = getattr(o.error, "hint", None)
            if hint:
                _say(con, f"  hint: {hint}")
    return failed_runs


def register(app: typer.Typer) -> None:
    app.add_typer(remote_app, name="remote")
