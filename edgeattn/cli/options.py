"""The options every command shares, defined once (``Annotated`` aliases), so ``--out/-o``,
``--device``, the SSH options and ``--set`` read and behave the same everywhere.

A command declares ``out: opts.RecordsOut = None``; the default stays in its own signature. Flags
get ``metavar=""`` so the help shows no ``<bool>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

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
        "--pair-time", metavar="S", help="Minimum seconds per paired try (rounds of all methods)."
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
Methods = Annotated[
    str | None,
    typer.Option(
        "--methods",
        metavar="LIST",
        help=(
            "Comma list: softmax, softmax_fused, sima_qk, sima_kv, sima, soft, xca, all; ops "
            "(Softmax vs l1 alone); floors (floor_qk, floor_kv, floor_soft: each block's matmuls "
            "alone, for block / floor ratios)."
        ),
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


def examples(*lines: str) -> str:
    """The ``Examples:`` paragraph every command's help ends with (kept unwrapped)."""
    return "\n\nExamples:\n\n\b\n" + "\n".join(f"  {x}" for x in lines)
