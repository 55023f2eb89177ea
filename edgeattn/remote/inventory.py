"""Which hosts an inventory file names: the plain format (one host per line) or an Ansible
inventory (INI or YAML, read by ``ansible-inventory --list``), whose connection variables become
a generated ssh_config so the inventory names work as ssh aliases."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeattn.errors import RemoteError
from edgeattn.remote.ssh_args import parse_host
from edgeattn.remote.ssh_errors import last_line


def read_inventory(path: str | os.PathLike) -> list[str]:
    """Hosts of a plain inventory file: one per line, ``#`` starts a comment, blank lines ignored."""
    hosts = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if len(text.split()) != 1:
            raise ValueError(f"{path}:{n}: one host per line, got {text!r}")
        parse_host(text)
        hosts.append(text)
    return hosts


@dataclass
class Inventory:
    """Hosts from an inventory file, ready for edgeattn.

    ``ssh_config``: for an Ansible inventory, a generated ssh_config (``ssh -F``) with one ``Host``
    block per inventory host (``ansible_host``/``ansible_port``/``ansible_user``/
    ``ansible_ssh_private_key_file``) that then includes the user's own configuration, so the
    inventory names work as aliases; None for a plain file. ``python``: host -> the device's
    interpreter (``ansible_python_interpreter``).
    """

    hosts: list[str]
    ssh_config: str | None = None
    python: dict[str, str] = field(default_factory=dict)
    source: str = "plain"


_INI_GROUP_RE = re.compile(r"^\[[A-Za-z0-9_.\-]+(:[a-z]+)?\]$")


def is_ansible_inventory(path: str | os.PathLike) -> bool:
    """An Ansible inventory (INI groups, ``key=value`` host vars, or YAML) rather than a plain list."""
    p = Path(path)
    if p.suffix in (".yml", ".yaml"):
        return True
    for line in p.read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if not text or text.startswith(";"):
            continue
        if text == "---" or text.endswith(":") or _INI_GROUP_RE.match(text) or "=" in text:
            return True
    return False


def _ansible_list(path: str | os.PathLike) -> dict[str, Any]:
    import shutil
    import subprocess

    exe = shutil.which("ansible-inventory")
    if exe is None:
        raise RemoteError(
            f"{path} is an Ansible inventory, and ansible-inventory is not installed here",
            hint="pip install 'edgeattn[ansible]' (ansible-core) so Ansible itself parses it, or "
            "use the plain format: one USER@HOST[:PORT] or ssh-config alias per line",
        )
    res = subprocess.run(
        [exe, "-i", os.fspath(path), "--list"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if res.returncode != 0:
        raise RemoteError(f"ansible-inventory -i {path} failed: {last_line(res.stderr)}")
    data = json.loads(res.stdout)
    warn = [ln for ln in res.stderr.splitlines() if "Unable to parse" in ln or "No inventory" in ln]
    if warn:
        raise RemoteError(f"ansible-inventory could not parse {path}: {warn[0].strip()[:200]}")
    return data


def _group_hosts(data: Mapping[str, Any], group: str, seen: set[str] | None = None) -> list[str]:
    seen = seen if seen is not None else set()
    if group in seen:
        return []
    seen.add(group)
    g = data.get(group)
    if not isinstance(g, dict):
        groups = sorted(k for k in data if k != "_meta")
        raise RemoteError(
            f"no group {group!r} in the inventory", hint=f"groups: {', '.join(groups)}"
        )
    out = list(g.get("hosts") or [])
    for child in g.get("children") or []:
        out += _group_hosts(data, child, seen)
    return out


def _ssh_value(v: Any, what: str) -> str:
    text = str(v)
    if not text or any(c in text for c in '\n\r\0"') or text.startswith("-"):
        raise RemoteError(f"inventory: bad {what} {text!r}")
    return f'"{text}"' if any(c.isspace() for c in text) else text


def load_inventory(
    path: str | os.PathLike, group: str | None = None, ssh_config: str | None = None
) -> Inventory:
    """Hosts of ``path``: the plain format, or an Ansible inventory (INI or YAML) parsed by
    ``ansible-inventory --list`` (ansible-core, an optional extra), optionally only ``group``.

    For Ansible, each host's connection variables become a ``Host`` block of a generated
    ssh_config that ends by including ``ssh_config`` (the user's ``--ssh-config``; by default
    ``~/.ssh/config`` and ``/etc/ssh/ssh_config``), so the rest of the user's settings apply.
    """
    if not is_ansible_inventory(path):
        if group is not None:
            raise RemoteError(
                f"--hosts {group}: {path} is a plain host list, it has no groups",
                hint="groups need an Ansible inventory (INI [group] sections or YAML)",
            )
        return Inventory(read_inventory(path))
    data = _ansible_list(path)
    if group is None:
        hosts = _group_hosts(data, "all")
        hosts += [h for h in (data.get("_meta") or {}).get("hostvars", {}) if h not in hosts]
    else:
        hosts = _group_hosts(data, group)
    uniq: list[str] = []
    for h in hosts:
        if h not in uniq:
            uniq.append(h)
    if not uniq:
        raise RemoteError(f"no hosts in {path}" + (f" group {group!r}" if group else ""))
    hostvars = (data.get("_meta") or {}).get("hostvars") or {}
    blocks: list[str] = ["# generated by edgeattn from an Ansible inventory: " + os.fspath(path)]
    pythons: dict[str, str] = {}
    for h in uniq:
        parse_host(h)  # the inventory name becomes an ssh alias: the same rules as a host spec
        v = hostvars.get(h) or {}
        lines = [f"Host {h}"]
        hn = v.get("ansible_host") or v.get("ansible_ssh_host")
        if hn:
            lines.append(f"  HostName {_ssh_value(hn, 'ansible_host')}")
        port = v.get("ansible_port") or v.get("ansible_ssh_port")
        if port:
            if not str(port).isdigit():
                raise RemoteError(f"inventory: {h}: bad ansible_port {port!r}")
            lines.append(f"  Port {int(port)}")
        user = v.get("ansible_user") or v.get("ansible_ssh_user")
        if user:
            lines.append(f"  User {_ssh_value(user, 'ansible_user')}")
        key = v.get("ansible_ssh_private_key_file")
        if key:
            key = os.path.expanduser(str(key))
            lines.append(f"  IdentityFile {_ssh_value(key, 'ansible_ssh_private_key_file')}")
        py = v.get("ansible_python_interpreter")
        if py and "{{" not in str(py) and str(py) != "auto" and not str(py).startswith("auto_"):
            pythons[h] = str(py)
        blocks.append("\n".join(lines))
    # the user's configuration after the inventory's blocks (ssh keeps the first value it sees)
    if ssh_config:
        includes = [os.path.abspath(os.path.expanduser(ssh_config))]
    else:
        includes = ["~/.ssh/config", "/etc/ssh/ssh_config"]
    blocks.append(
        "Match all\n" + "\n".join(f"  Include {_ssh_value(i, 'Include')}" for i in includes)
    )
    import atexit
    import tempfile

    fd, cfg = tempfile.mkstemp(prefix="edgeattn-inventory-", suffix=".ssh_config")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n\n".join(blocks) + "\n")
    atexit.register(lambda: os.path.exists(cfg) and os.unlink(cfg))
    return Inventory(uniq, cfg, pythons, source="ansible")
