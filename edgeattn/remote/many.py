"""One spec on several devices at once (:func:`run_many`): one thread and one connection per
host; a host that fails does not stop the others; an interrupt stops them all."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from edgeattn.remote.run import RemoteRunResult, run_remote
from edgeattn.remote.spec import prepare_spec
from edgeattn.remote.ssh import Host, SSHConnection, SSHOptions, parse_host
from edgeattn.signals import sigterm_as_interrupt


@dataclass
class HostOutcome:
    """One host of :func:`run_many`: a result, or the error that stopped it."""

    host: str
    result: RemoteRunResult | None = None
    error: BaseException | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.result is not None


def run_many(
    hosts: Iterable[str | Host],
    spec: Mapping[str, Any],
    model_files: Mapping[str, str | os.PathLike] | None = None,
    *,
    max_parallel: int | None = None,
    **kwargs: Any,
) -> list[HostOutcome]:
    """:func:`run_remote` on several hosts at once (one thread per host), in the given order.

    Keyword arguments are those of :func:`run_remote` (``out`` may be shared: appends are
    serialised; ``remote_python`` may also be a mapping host -> interpreter). A host that fails does not stop the others; its ``HostOutcome.error`` says why.
    On KeyboardInterrupt every host's ssh is stopped (the devices stop their runtimes) and the
    interrupt is re-raised.
    """
    parsed = [parse_host(x) for x in hosts]
    if not parsed:
        raise ValueError("no hosts given")
    specs = [p.spec for p in parsed]
    if len(set(specs)) != len(specs):
        raise ValueError("a host is listed twice")
    opts: SSHOptions = kwargs.pop("ssh", None) or SSHOptions()
    prepare_spec(
        spec, model_files, kwargs.get("base_dir")
    )  # bad spec / missing file: fail once, here
    conns = [SSHConnection(p, opts) for p in parsed]
    outcomes = [HostOutcome(p.spec) for p in parsed]
    # SIGTERM -> KeyboardInterrupt while hosts run, so `kill PID` cleans up like Ctrl-C (the devices
    # stop their runtimes and remove their run directories); a caller's own handler is kept
    with sigterm_as_interrupt(only_if_default=True):
        return _run_many(parsed, conns, outcomes, spec, model_files, opts, max_parallel, kwargs)


def _run_many(
    parsed: list[Host],
    conns: list[SSHConnection],
    outcomes: list[HostOutcome],
    spec: Mapping[str, Any],
    model_files: Mapping[str, str | os.PathLike] | None,
    opts: SSHOptions,
    max_parallel: int | None,
    kwargs: dict[str, Any],
) -> list[HostOutcome]:

    def work(i: int) -> None:
        kw = dict(kwargs)
        if isinstance(kw.get("remote_python"), Mapping):  # per host (an inventory's python)
            kw["remote_python"] = kw["remote_python"].get(parsed[i].spec)
        try:
            outcomes[i].result = run_remote(
                parsed[i], spec, model_files, ssh=opts, _conn=conns[i], **kw
            )
        except BaseException as exc:  # noqa: BLE001 - reported per host
            outcomes[i].error = exc
            from edgeattn import integrity

            integrity.mark_failed()  # a host failed: the run stays partial (no run_end)

    pool = ThreadPoolExecutor(
        max_workers=max_parallel or len(parsed), thread_name_prefix="edgeattn-ssh"
    )
    futures = [pool.submit(work, i) for i in range(len(parsed))]
    try:
        for f in futures:
            while not f.done():
                time.sleep(0.05)
    except BaseException:
        for c in conns:
            c.cancel()
        pool.shutdown(wait=True)
        raise
    finally:
        pool.shutdown(wait=True)
        for c in conns:
            c.close()
    return outcomes
