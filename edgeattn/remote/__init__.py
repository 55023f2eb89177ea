"""Measure on devices over SSH: ship the runtime zipapp and models, run, collect the records.

Host side only (never shipped to a device). The transport is the system OpenSSH client.

    from edgeattn.remote import SSHOptions, run_remote, run_many, remote_check
    result = run_remote("pi@raspberrypi", spec, base_dir="exports", out="results.jsonl")
"""

from __future__ import annotations

from edgeattn.remote.deploy import (
    HostOutcome,
    Inventory,
    RemoteRunResult,
    build_zipapp,
    load_inventory,
    read_inventory,
    remote_check,
    remote_setup,
    run_many,
    run_remote,
)
from edgeattn.remote.ssh import (
    CommandTimeout,
    DeviceCommandError,
    Host,
    SSHError,
    SSHOptions,
    parse_host,
)

__all__ = [
    "CommandTimeout",
    "DeviceCommandError",
    "Host",
    "HostOutcome",
    "Inventory",
    "RemoteRunResult",
    "SSHError",
    "SSHOptions",
    "build_zipapp",
    "load_inventory",
    "parse_host",
    "read_inventory",
    "remote_check",
    "remote_setup",
    "run_many",
    "run_remote",
]
