"""Which devices a command talks to: hosts (names, inventories), resolved the same way for
``bench --host`` and ``remote check|setup|run``, and the library calls those commands make on
them. The SSH options themselves are one object, ``edgeattn.cli.options.RemoteOptions``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeattn.errors import RemoteError


def unique_hosts(hosts: Sequence[str] | None) -> list[str]:
    """The hosts in order, each once, each parsed (a bad one fails here, before connecting)."""
    from edgeattn.remote.ssh import parse_host

    out: list[str] = []
    for h in hosts or ():
        parse_host(h)
        if h not in out:
            out.append(h)
    if not out:
        raise RemoteError("no host given", hint="name one or more hosts, or --inventory FILE")
    return out


@dataclass
class Targets:
    """Resolved hosts: their names, the ssh_config to use, and each host's device python."""

    hosts: list[str]
    ssh_config: Path | None = None
    python: dict[str, str] = field(default_factory=dict)


def resolve_hosts(
    hosts: Sequence[str] | None,
    inventory: str | os.PathLike | None = None,
    group: str | None = None,
    ssh_config: str | os.PathLike | None = None,
) -> Targets:
    """Hosts named and from an inventory: an Ansible inventory's hosts become aliases in a
    generated ssh_config that includes ``ssh_config``."""
    cfg = Path(ssh_config) if ssh_config else None
    if inventory is None:
        if group is not None:
            raise RemoteError("--hosts GROUP needs --inventory FILE")
        return Targets(unique_hosts(hosts), cfg)
    from edgeattn.remote.inventory import load_inventory

    inv = load_inventory(Path(inventory), group, str(cfg) if cfg else None)
    names = unique_hosts(list(hosts or []) + inv.hosts)
    return Targets(names, Path(inv.ssh_config) if inv.ssh_config else cfg, dict(inv.python))


def check_all(
    targets: Targets,
    ssh: Any,
    *,
    remote_python: str | None = None,
    remote_cache: str | None = None,
    on_progress: Any = None,
) -> list[dict[str, Any]]:
    """``remote_check`` on every host at once (one thread each); reports in host order."""
    from concurrent.futures import ThreadPoolExecutor

    from edgeattn.remote.check import remote_check

    def one(h: str) -> dict[str, Any]:
        return remote_check(
            h,
            ssh=ssh,
            remote_python=remote_python or targets.python.get(h),
            remote_cache=remote_cache,
            on_progress=on_progress,
        )

    with ThreadPoolExecutor(max_workers=len(targets.hosts)) as pool:
        return list(pool.map(one, targets.hosts))


def load_spec(path: str | os.PathLike) -> dict[str, Any]:
    """A ``remote run --spec`` file (format: docs/spec.schema.json); one-line error if not JSON."""
    import json

    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{p}: not JSON ({exc})") from None


def run_spec(
    targets: Targets,
    spec_path: str | os.PathLike,
    ssh: Any,
    *,
    out: str | os.PathLike,
    remote_python: str | None = None,
    on_progress: Any = None,
    **kwargs: Any,
) -> list[Any]:
    """``remote run``: the spec at ``spec_path`` (model paths relative to its folder) on every
    host in parallel; records appended to ``out``. ``kwargs``: ``run_many``'s (remote_dir,
    remote_cache, keep_remote)."""
    from edgeattn.remote.many import run_many
    from edgeattn.signals import sigterm_as_interrupt

    spec = load_spec(spec_path)
    py: Any = remote_python or {h: targets.python[h] for h in targets.hosts if h in targets.python}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with sigterm_as_interrupt():
        return run_many(
            targets.hosts,
            spec,
            base_dir=Path(spec_path).resolve().parent,
            out=out,
            ssh=ssh,
            remote_python=py,
            on_progress=on_progress,
            **kwargs,
        )
