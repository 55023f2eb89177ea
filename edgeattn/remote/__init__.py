"""Measure on devices over SSH: ship the runtime zipapp and models, run, collect the records.

Host side only (never shipped to a device). The transport is the system OpenSSH client.
One job per file: ssh.py (the connection; ssh_args.py what goes on its command line,
ssh_errors.py what its failures mean), device_scripts.py (the sh programs run on the device),
bundle.py (the zipapp and the upload stream), spec.py (a spec made ready and checked here),
run.py (one host, step by step), many.py (several hosts at once), inventory.py, check.py, setup.py.

    from edgeattn.remote import SSHOptions, run_remote, run_many, remote_check
    result = run_remote("pi@raspberrypi", spec, base_dir="exports", out="results.jsonl")
"""

from __future__ import annotations

from edgeattn.remote.bundle import build_zipapp
from edgeattn.remote.check import remote_check
from edgeattn.remote.inventory import Inventory, load_inventory, read_inventory
from edgeattn.remote.many import HostOutcome, run_many
from edgeattn.remote.run import RemoteRunResult, run_remote
from edgeattn.remote.setup import remote_setup
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
