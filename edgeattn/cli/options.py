"""The options every command shares, defined once (``Annotated`` aliases), so ``--out/-o``,
``--device``, the SSH options and ``--set`` read and behave the same everywhere.

A command declares ``out: opts.RecordsOut = None``; the default stays in its own signature. Flags
get ``metavar=""`` so the help shows no ``<bool>``. The SSH/host options are one object,
:class:`RemoteOptions`, that a command takes whole (``@remote_options()``, ``remote: RemoteOptions``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

DEVICE_HELP = (
    "Execution provider: cpu, cuda, tensorrt, coreml, xnnpack, openvino, ... (must be available)."
)


def flag(*names: str, help: str) -> Any:
    """A boolean option (``--x`` or ``--x/--no-x``) without a ``<bool>`` metavar."""
    return typer.Option(*names, help=help, metavar="")


# -- where results go ------------------------------------------------------------------------------
RecordsOut = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        metavar="FILE",
        help="JSON Lines records file (appended atomically). Default: results/<command>-<time>.jsonl.",
    ),
]
OnnxOut = Annotated[
    str | None,
    typer.Option(
        "--out",
        "-o",
        "--output",
        metavar="FILE",
        help="Output .onnx path; its .onnx.json sidecar lands beside it. Default: in the "
        "current directory, named after the model and shape, e.g. soft_tiny_op17.onnx.",
    ),
]
Resume = Annotated[bool, flag("--resume", help="Skip measurements already in --out.")]
ForceOut = Annotated[
    bool,
    flag(
        "--force",
        help="Append to --out even when it exists and is not an edgeattn records file.",
    ),
]
Plot = Annotated[
    Path | None,
    typer.Option("--plot", metavar="FILE", help="Also write a plot (.png/.svg); needs matplotlib."),
]

# -- how to measure --------------------------------------------------------------------------------
Device = Annotated[str, typer.Option("--device", metavar="PROVIDER", help=DEVICE_HELP)]
Threads = Annotated[
    int, typer.Option("--threads", metavar="N", help="Intra-op threads (0 = ONNX Runtime default).")
]
Opset = Annotated[int, typer.Option("--opset", metavar="N", help="Exact ONNX opset (13..23).")]
Warmup = Annotated[int, typer.Option("--warmup", metavar="N", help="Untimed runs before timing.")]
MinRuns = Annotated[
    int, typer.Option("--min-runs", metavar="N", help="Minimum timed runs per measurement.")
]
MinTime = Annotated[
    float, typer.Option("--min-time", metavar="S", help="Minimum timed seconds per measurement.")
]
MaxTime = Annotated[
    float, typer.Option("--max-time", metavar="S", help="Maximum timed seconds per measurement.")
]
Tries = Annotated[
    int,
    typer.Option(
        "--tries",
        metavar="N",
        help="Stability rule: up to this many tries until two agree within ±5%.",
    ),
]
PairTime = Annotated[
    float,
    typer.Option(
        "--pair-time",
        metavar="S",
        help="Minimum seconds per paired try (rounds of all methods); extra rounds to tighten the "
        "intervals get 10× this.",
    ),
]
OptLevel = Annotated[
    str,
    typer.Option(
        "--opt-level",
        metavar="LEVEL",
        help="ORT graph optimisation level: disable, basic, extended, all.",
    ),
]
NoMemoryGuard = Annotated[
    bool,
    flag("--no-memory-guard", help="Measure even what looks too big for the memory here."),
]
# -- device conditions (issue 23) ------------------------------------------------------------------
Cpus = Annotated[
    str | None,
    typer.Option(
        "--cpus",
        metavar="LIST",
        help="Pin the runtime to these cores (0,2-3) or a cluster (big, little, all; resolved on "
        "the device); ORT's intra-op threads default to their count.",
    ),
]
Cooldown = Annotated[
    float | None,
    typer.Option(
        "--cooldown",
        metavar="SECONDS",
        help="Wait this long before each paired try (with --cooldown-within: the longest wait).",
    ),
]
CooldownWithin = Annotated[
    float | None,
    typer.Option(
        "--cooldown-within",
        metavar="C",
        help="Before each paired try, wait until the temperature is back within C °C of the start.",
    ),
]
Sustained = Annotated[
    str | None,
    typer.Option(
        "--sustained",
        metavar="DURATION",
        help="Run the methods paired, back to back, for DURATION (90s, 2m, 1.5m): latency over "
        "time, retention ratio, time to first throttle, and a plot.",
    ),
]
FreqFloor = Annotated[
    float | None,
    typer.Option(
        "--freq-floor",
        metavar="F",
        help="Mark rounds run below F × the cores' max frequency (default 0.9; 0 disables).",
    ),
]


def _method_help() -> str:
    from edgeattn.bench.methods import help_text  # the method table (light: no torch, no onnx)

    return help_text()


Methods = Annotated[
    str | None,
    typer.Option(
        "--methods",
        metavar="LIST",
        help=_method_help(),
    ),
]
Set = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Model override (repeatable); true/false/none, numbers and JSON are parsed.",
    ),
]
ImgSize = Annotated[
    int | None,
    typer.Option(
        "--img-size", metavar="PX", help="Input resolution for nets (default: the model's)."
    ),
]

# -- SSH and the device (bench --host, remote check/setup/run) -------------------------------------
Hosts = Annotated[
    list[str] | None,
    typer.Argument(metavar="HOST", help="USER@HOST[:PORT], [IPv6]:PORT or an ssh-config alias."),
]
HostOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--host",
        metavar="HOST",
        help="Measure on this SSH host instead (repeatable): user@host, host:port, ssh-config alias.",
    ),
]
Inventory = Annotated[
    Path | None,
    typer.Option(
        "--inventory",
        metavar="FILE",
        help="Hosts from a file: one per line (# starts a comment), or an Ansible inventory (INI "
        "or YAML; needs ansible-core: pip install 'edgeattn[ansible]').",
    ),
]
Group = Annotated[
    str | None,
    typer.Option(
        "--hosts", metavar="GROUP", help="Only this group of the Ansible --inventory (e.g. pis)."
    ),
]
SshOption = Annotated[
    list[str] | None,
    typer.Option(
        "--ssh-option", metavar="KEY=VALUE", help="Passed to ssh as -o KEY=VALUE (repeatable)."
    ),
]
Identity = Annotated[
    Path | None, typer.Option("--identity", metavar="FILE", help="Private key file (ssh -i).")
]
SshConfig = Annotated[
    Path | None,
    typer.Option("--ssh-config", metavar="FILE", help="ssh_config file to use (ssh -F)."),
]
AcceptNewHostKey = Annotated[
    bool,
    flag(
        "--accept-new-host-key",
        help="Trust a device's host key the first time it is seen (StrictHostKeyChecking=accept-new).",
    ),
]
RemotePython = Annotated[
    str | None,
    typer.Option(
        "--remote-python",
        metavar="PATH",
        help="Python on the device (default: ~/.cache/edgeattn/venv/bin/python3 if `remote setup` "
        "made it, else python3).",
    ),
]
RemoteDir = Annotated[
    str | None,
    typer.Option(
        "--remote-dir",
        metavar="DIR",
        help="Device directory that holds the per-run directories (default ~/.cache/edgeattn/runs).",
    ),
]
RemoteCache = Annotated[
    str | None,
    typer.Option(
        "--remote-cache",
        metavar="DIR",
        help="Device directory caching the runtime zipapp, models and venv (default "
        "~/.cache/edgeattn).",
    ),
]
KeepRemote = Annotated[
    bool, flag("--keep-remote", help="Keep the device's run directory (for debugging).")
]
ConnectTimeout = Annotated[
    float,
    typer.Option("--connect-timeout", metavar="S", help="Seconds to wait for a connection."),
]
Timeout = Annotated[
    float | None,
    typer.Option(
        "--timeout", metavar="S", help="Seconds each remote command may take (default: no limit)."
    ),
]
Quiet = Annotated[bool, flag("--quiet", help="No progress lines (the devices' included).")]


@dataclass(frozen=True)
class RemoteOptions:
    """How to reach the devices: the SSH/host options of ``bench --host`` and ``remote
    check|setup|run``, declared once. Each field is one option (its annotation says which, its
    default is the option's); a command takes them with :func:`remote_options` and receives them
    whole. A new SSH option is one field here and its word in :meth:`ssh`."""

    inventory: Inventory = None
    group: Group = None
    ssh_option: SshOption = None
    identity: Identity = None
    ssh_config: SshConfig = None
    accept_new_host_key: AcceptNewHostKey = False
    remote_python: RemotePython = None
    remote_dir: RemoteDir = None
    remote_cache: RemoteCache = None
    keep_remote: KeepRemote = False
    connect_timeout: ConnectTimeout = 10.0
    timeout: Timeout = None

    def targets(self, hosts: Sequence[str] | None) -> Any:
        """``edgeattn.targets.Targets``: ``hosts`` and those of ``--inventory`` (``--hosts``)."""
        from edgeattn.targets import resolve_hosts

        return resolve_hosts(hosts, self.inventory, self.group, self.ssh_config)

    def ssh(self, targets: Any = None) -> Any:
        """``edgeattn.remote.SSHOptions``; with ``targets``, their ssh_config (an Ansible
        inventory's generated one includes ``--ssh-config``)."""
        from edgeattn.remote.ssh import SSHOptions

        config = targets.ssh_config if targets is not None else self.ssh_config
        return SSHOptions(
            ssh_config=str(config) if config else None,
            identity=str(self.identity) if self.identity else None,
            options=tuple(self.ssh_option or ()),
            accept_new_host_key=self.accept_new_host_key,
            connect_timeout=self.connect_timeout,
            timeout=self.timeout,
        )

    def python_for(self, targets: Any) -> Any:
        """The device python: ``--remote-python``, else each host's from the inventory, else None."""
        return self.remote_python or (
            {h: targets.python[h] for h in targets.hosts if h in targets.python} or None
        )


def remote_options(*, without: Sequence[str] = ()) -> Callable[[F], F]:
    """Give a command the :class:`RemoteOptions` (less ``without``) in place of its ``remote``
    parameter, and hand them to it whole as ``remote``. Typer reads the command's signature: the
    options are listed where ``remote`` stands, in the order of the fields."""
    fields = {f.name: f for f in dataclasses.fields(RemoteOptions) if f.name not in without}
    hints = typing.get_type_hints(RemoteOptions, include_extras=True)
    shown = [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=hints[n])
        for n, f in fields.items()
    ]

    def wrap(fn: F) -> F:
        sig = inspect.signature(fn, eval_str=True)
        params = []
        for p in sig.parameters.values():
            if p.name == "remote":
                params += shown
            else:
                params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            given = {n: kwargs.pop(n) for n in fields if n in kwargs}
            return fn(remote=RemoteOptions(**given), **kwargs)

        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command  # type: ignore[return-value]

    return wrap


def examples(*lines: str) -> str:
    """The ``Examples:`` paragraph every command's help ends with (kept unwrapped)."""
    return "\n\nExamples:\n\n\b\n" + "\n".join(f"  {x}" for x in lines)
