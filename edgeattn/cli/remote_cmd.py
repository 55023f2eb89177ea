"""`edgeattn remote check|setup|run`: measure on devices over SSH (the system ssh client)."""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import typer

remote_app = typer.Typer(
    name="remote",
    help="Measure on devices over SSH: preflight, set up numpy+onnxruntime, run a spec.",
    no_args_is_help=True,
)

# -- shared options (typer has no option groups: the same defaults are reused per command) ---------
_HOSTS = typer.Argument(None, help="USER@HOST[:PORT], [IPv6]:PORT or an ssh-config alias.")
_INVENTORY = typer.Option(
    None,
    "--inventory",
    help="Hosts from a file: one per line (# starts a comment), or an Ansible inventory (INI or "
    "YAML; needs ansible-core: pip install 'edgeattn[ansible]').",
)
_GROUP = typer.Option(
    None, "--hosts", help="Only this group of the Ansible --inventory (e.g. --hosts pis)."
)
_SSH_OPTION = typer.Option(None, "--ssh-option", help="Passed to ssh as -o KEY=VALUE (repeatable).")
_IDENTITY = typer.Option(None, "--identity", help="Private key file (ssh -i).")
_SSH_CONFIG = typer.Option(None, "--ssh-config", help="ssh_config file to use (ssh -F).")
_ACCEPT_NEW = typer.Option(
    False,
    "--accept-new-host-key",
    help="Trust a device's host key the first time it is seen (StrictHostKeyChecking=accept-new).",
)
_REMOTE_PYTHON = typer.Option(
    None,
    "--remote-python",
    help="Python on the device (default: ~/.cache/edgeattn/venv/bin/python3 if `remote setup` "
    "made it, else python3).",
)
_REMOTE_DIR = typer.Option(
    None,
    "--remote-dir",
    help="Device directory that holds the per-run directories (default ~/.cache/edgeattn/runs).",
)
_REMOTE_CACHE = typer.Option(
    None,
    "--remote-cache",
    help="Device directory caching the runtime zipapp, models and venv (default ~/.cache/edgeattn).",
)
_KEEP_REMOTE = typer.Option(
    False, "--keep-remote", help="Keep the device's run directory (for debugging)."
)
_CONNECT_TIMEOUT = typer.Option(10.0, "--connect-timeout", help="Seconds to wait for a connection.")
_TIMEOUT = typer.Option(
    None, "--timeout", help="Seconds each remote command may take (default: no limit)."
)


def _ssh_options(
    ssh_option: list[str] | None,
    identity: Path | None,
    ssh_config: Path | None,
    accept_new_host_key: bool,
    connect_timeout: float,
    timeout: float | None,
) -> Any:
    from edgeattn.remote.ssh import SSHOptions

    return SSHOptions(
        ssh_config=str(ssh_config) if ssh_config else None,
        identity=str(identity) if identity else None,
        options=tuple(ssh_option or ()),
        accept_new_host_key=accept_new_host_key,
        connect_timeout=connect_timeout,
        timeout=timeout,
    )


def _inventory(
    hosts: list[str] | None,
    inventory: Path | None,
    group: str | None,
    ssh_config: Path | None,
) -> tuple[list[str], Path | None, dict[str, str]]:
    """(host names, the ssh_config to use, host -> device python) from the arguments: an Ansible
    inventory's hosts become aliases in a generated ssh_config that includes ``ssh_config``."""
    from edgeattn.errors import RemoteError
    from edgeattn.remote.deploy import load_inventory

    if inventory is None:
        if group is not None:
            raise RemoteError("--hosts GROUP needs --inventory FILE")
        return _hosts(hosts, None), ssh_config, {}
    inv = load_inventory(inventory, group, str(ssh_config) if ssh_config else None)
    names = _hosts(list(hosts or []) + inv.hosts, None)
    return names, Path(inv.ssh_config) if inv.ssh_config else ssh_config, inv.python


def _hosts(hosts: list[str] | None, inventory: Path | None) -> list[str]:
    from edgeattn.errors import RemoteError
    from edgeattn.remote.deploy import read_inventory
    from edgeattn.remote.ssh import parse_host

    out = list(hosts or [])
    if inventory is not None:
        out += read_inventory(inventory)
    if not out:
        raise RemoteError("no host given", hint="name one or more hosts, or --inventory FILE")
    for h in out:
        parse_host(h)  # fail early, before any connection
    seen: list[str] = []
    for h in out:
        if h not in seen:
            seen.append(h)
    return seen


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


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM -> KeyboardInterrupt, so a killed CLI still stops the device runs and cleans up."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _fmt(v: Any) -> str:
    return "-" if v is None or v == "" else str(v)


# -- check ----------------------------------------------------------------------------------------
@remote_app.command("check")
def check_cmd(
    hosts: list[str] = _HOSTS,
    inventory: Path = _INVENTORY,
    group: str = _GROUP,
    ssh_option: list[str] = _SSH_OPTION,
    identity: Path = _IDENTITY,
    ssh_config: Path = _SSH_CONFIG,
    accept_new_host_key: bool = _ACCEPT_NEW,
    remote_python: str = _REMOTE_PYTHON,
    remote_cache: str = _REMOTE_CACHE,
    connect_timeout: float = _CONNECT_TIMEOUT,
    timeout: float = _TIMEOUT,
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON."),
) -> None:
    """Preflight: reachable? python, numpy, onnxruntime, providers, CPU, disk; how to fix gaps."""
    from concurrent.futures import ThreadPoolExecutor

    from rich.table import Table

    from edgeattn.cli.console import console
    from edgeattn.remote.deploy import remote_check

    names, ssh_config, pythons = _inventory(hosts, inventory, group, ssh_config)
    opts = _ssh_options(
        ssh_option, identity, ssh_config, accept_new_host_key, connect_timeout, timeout
    )
    progress = _Progress(len(names) > 1)
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        reports = list(
            pool.map(
                lambda h: remote_check(
                    h,
                    ssh=opts,
                    remote_python=remote_python or pythons.get(h),
                    remote_cache=remote_cache,
                    on_progress=progress,
                ),
                names,
            )
        )
    if as_json:
        print(json.dumps(reports, indent=1, default=str))
    else:
        con = console()
        table = Table(title="edgeattn remote check")
        for col in ("host", "ok", "python", "numpy", "onnxruntime", "providers", "cpu", "disk MB"):
            table.add_column(col)
        for r in reports:
            cpu = r.get("cpu") or {}
            cpu_text = " ".join(
                x
                for x in (
                    _fmt(cpu.get("model")),
                    f"{cpu.get('cores_logical')} cores" if cpu.get("cores_logical") else "",
                    f"[yellow]emulated ({r['emulated']})[/]" if r.get("emulated") else "",
                    f"gov={cpu['governor']}" if cpu.get("governor") else "",
                    f"{cpu['temperature_c']}°C" if cpu.get("temperature_c") is not None else "",
                )
                if x
            )
            table.add_row(
                r["host"],
                "[green]yes[/]" if r.get("ok") else "[red]no[/]",
                _fmt(r.get("python_version")) if r.get("reachable") else "unreachable",
                _fmt(r.get("numpy_version")),
                _fmt(r.get("onnxruntime_version")),
                ", ".join(p.replace("ExecutionProvider", "") for p in r.get("providers") or [])
                or "-",
                cpu_text or "-",
                _fmt(r.get("disk_free_mb")),
            )
        con.print(table)
        for r in reports:
            for p in r.get("problems", []):
                text = p if p.startswith(f"{r['host']}: ") else f"{r['host']}: {p}"
                con.print(text, soft_wrap=True, markup=False, highlight=False, style="red")
            for f in r.get("fixes", []):
                con.print(f"  fix: {f}", soft_wrap=True, markup=False, highlight=False)
            for n in r.get("notes", []):
                con.print(f"  note: {n}", soft_wrap=True, markup=False, highlight=False)
    bad = [r["host"] for r in reports if not r.get("ok")]
    if bad:
        from edgeattn.errors import RemoteError

        raise RemoteError(
            f"{len(bad)} of {len(reports)} host(s) not ready: {', '.join(bad)}",
            hint="run the fix commands listed above, then check again",
        )


# -- setup ----------------------------------------------------------------------------------------
@remote_app.command("setup")
def setup_cmd(
    host: str = typer.Argument(..., help="The device."),
    ssh_option: list[str] = _SSH_OPTION,
    identity: Path = _IDENTITY,
    ssh_config: Path = _SSH_CONFIG,
    accept_new_host_key: bool = _ACCEPT_NEW,
    remote_python: str = typer.Option(
        None, "--remote-python", help="Python that creates the venv (default python3)."
    ),
    venv: str = typer.Option(
        None, "--venv", help="Venv directory on the device (default ~/.cache/edgeattn/venv)."
    ),
    upgrade_pip: bool = typer.Option(False, "--upgrade-pip", help="Upgrade pip in the venv first."),
    package: list[str] = typer.Option(
        None,
        "--package",
        help="pip requirement to install instead of the defaults, e.g. onnxruntime==1.31.0 "
        "(repeatable; default: numpy onnxruntime).",
    ),
    pip_arg: list[str] = typer.Option(
        None,
        "--pip-arg",
        help="Extra argument for the device's pip install (repeatable), e.g. --pip-arg=--no-index "
        "--pip-arg=--find-links=/srv/wheels or --pip-arg=--index-url=URL.",
    ),
    match_host: bool = typer.Option(
        False,
        "--match-host",
        help="Pin numpy and onnxruntime to this host's versions (a --package naming one wins).",
    ),
    remote_cache: str = _REMOTE_CACHE,
    connect_timeout: float = _CONNECT_TIMEOUT,
    timeout: float = _TIMEOUT,
) -> None:
    """Create a venv on the device and pip install numpy and onnxruntime into it (atomically:
    it replaces the old one only once both import; a failure changes nothing)."""
    from edgeattn.cli.console import console
    from edgeattn.remote.deploy import remote_setup

    opts = _ssh_options(
        ssh_option, identity, ssh_config, accept_new_host_key, connect_timeout, timeout
    )
    with _sigterm_as_interrupt():
        report = remote_setup(
            host,
            ssh=opts,
            python=remote_python,
            venv=venv,
            upgrade_pip=upgrade_pip,
            packages=list(package or ()) or (() if match_host else ("numpy", "onnxruntime")),
            pip_args=list(pip_arg or ()),
            match_host=match_host,
            remote_cache=remote_cache,
            on_progress=_Progress(False),
        )
    con = console()
    con.print(
        f"{host}: venv {report.get('venv')}: python {_fmt(report.get('python_version'))}, "
        f"numpy {_fmt(report.get('numpy_version'))}, "
        f"onnxruntime {_fmt(report.get('onnxruntime_version'))}",
        markup=False,
        highlight=False,
    )
    for p in report.get("problems", []):
        con.print(f"{host}: {p}", markup=False, highlight=False)
    if not report.get("ok"):
        from edgeattn.errors import RemoteError

        raise RemoteError(
            f"{host}: set up, but the device is not ready",
            hint=" ".join(report.get("fixes", [])) or None,
        )


# -- run ------------------------------------------------------------------------------------------
@remote_app.command("run")
def run_cmd(
    hosts: list[str] = _HOSTS,
    spec: Path = typer.Option(
        ..., "--spec", help="Runtime spec JSON; model paths relative to its folder."
    ),
    out: Path = typer.Option(
        None, "--out", help="JSON Lines file the records are appended to (default: a new file)."
    ),
    inventory: Path = _INVENTORY,
    group: str = _GROUP,
    ssh_option: list[str] = _SSH_OPTION,
    identity: Path = _IDENTITY,
    ssh_config: Path = _SSH_CONFIG,
    accept_new_host_key: bool = _ACCEPT_NEW,
    remote_python: str = _REMOTE_PYTHON,
    remote_dir: str = _REMOTE_DIR,
    remote_cache: str = _REMOTE_CACHE,
    keep_remote: bool = _KEEP_REMOTE,
    connect_timeout: float = _CONNECT_TIMEOUT,
    timeout: float = _TIMEOUT,
    quiet: bool = typer.Option(False, "--quiet", help="No device progress lines."),
) -> None:
    """Measure a ready spec and its .onnx files on one or more devices (in parallel)."""
    from rich.table import Table

    from edgeattn.cli.console import console
    from edgeattn.errors import RemoteError
    from edgeattn.remote.deploy import run_many

    names, ssh_config, pythons = _inventory(hosts, inventory, group, ssh_config)
    opts = _ssh_options(
        ssh_option, identity, ssh_config, accept_new_host_key, connect_timeout, timeout
    )
    try:
        spec_obj = json.loads(spec.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{spec}: not JSON ({exc})") from None
    if out is None:
        out = Path(f"edgeattn-remote-{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
    with _sigterm_as_interrupt():
        outcomes = run_many(
            names,
            spec_obj,
            base_dir=spec.resolve().parent,
            out=out,
            ssh=opts,
            remote_python=remote_python or {h: pythons[h] for h in names if h in pythons},
            remote_dir=remote_dir,
            remote_cache=remote_cache,
            keep_remote=keep_remote,
            on_progress=_Progress(len(names) > 1, quiet),
        )
    con = console()
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
    errors = []
    failed_runs = 0
    for o in outcomes:
        if o.result is None:
            errors.append(o)
            table.add_row(o.host, "[red]error[/]", "-", "-", "-", "-", "-", "-")
            continue
        r = o.result
        failed_runs += r.failed
        t = r.timings
        table.add_row(
            o.host,
            str(r.ok),
            str(r.failed),
            f"{sum(v for k, v in r.bytes_sent.items() if k != 'stream') / 1024:.1f}",
            *(f"{t.get(k, 0.0):.2f}" for k in ("connect", "deploy", "run", "total")),
        )
    con.print(table)
    if len(names) > 1:  # one host: its error is the command's error, shown once by main()
        for o in errors:
            text = str(o.error).splitlines()[0] if str(o.error) else type(o.error).__name__
            con.print(text, markup=False, soft_wrap=True, highlight=False, style="red")
            hint = getattr(o.error, "hint", None)
            if hint:
                con.print(f"  hint: {hint}", markup=False, soft_wrap=True, highlight=False)
    if errors:
        first = errors[0].error
        if len(names) == 1 and first is not None:
            raise first
        raise RemoteError(f"{len(errors)} of {len(names)} host(s) failed")
    if failed_runs:
        raise typer.Exit(3)


def register(app: typer.Typer) -> None:
    app.add_typer(remote_app, name="remote")
