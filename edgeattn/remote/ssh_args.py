"""What goes on ssh's command line: host specs (:func:`parse_host`), the ssh options
(:class:`SSHOptions`), and the remote command as quoted words (:func:`remote_command`,
:func:`sh_words`). Nothing here runs ssh (that is :mod:`edgeattn.remote.ssh`)."""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from edgeattn.errors import RemoteError

# --------------------------------------------------------------------------------------------------
# host specs
# --------------------------------------------------------------------------------------------------
_HOST_RE = re.compile(r"^[A-Za-z0-9_.%:\-]+$")
_USER_RE = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.@\\\-]*$")
_OPT_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


@dataclass(frozen=True)
class Host:
    """A parsed host spec. ``host`` may be an ssh-config alias; ssh resolves it."""

    spec: str
    host: str
    user: str | None = None
    port: int | None = None

    @property
    def label(self) -> str:
        return self.spec

    def ssh_args(self) -> list[str]:
        """``-p``/``-l`` options for this host (the host name itself goes after ``--``)."""
        args: list[str] = []
        if self.port is not None:
            args += ["-p", str(self.port)]
        if self.user is not None:
            args += ["-l", self.user]
        return args


def _bad_host(spec: str, why: str) -> RemoteError:
    return RemoteError(
        f"bad host {spec!r}: {why}",
        hint="use HOST, USER@HOST, HOST:PORT, USER@HOST:PORT, [IPv6]:PORT or an ssh-config alias",
    )


def parse_host(spec: str | Host) -> Host:
    """Parse ``user@host``, ``host:port``, ``user@host:port``, ``[::1]:2222``, ``ssh://...`` or an alias.

    Rejects anything that could be read as an option (a leading ``-``), whitespace, control
    characters and shell metacharacters, with a :class:`RemoteError` naming the problem.
    """
    if isinstance(spec, Host):
        return spec
    if not isinstance(spec, str) or not spec:
        raise _bad_host(str(spec), "empty")
    raw = spec
    if raw.startswith("-"):
        raise _bad_host(raw, "a host may not start with '-' (it would be read as an ssh option)")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in raw):
        raise _bad_host(raw, "whitespace or control characters")
    rest = raw[len("ssh://") :].rstrip("/") if raw.startswith("ssh://") else raw
    user: str | None = None
    if "@" in rest:
        user, _, rest = rest.rpartition("@")
        if not user or not _USER_RE.match(user):
            raise _bad_host(raw, f"bad user name {user!r}")
    port: int | None = None
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise _bad_host(raw, "unclosed '['")
        host, tail = rest[1:end], rest[end + 1 :]
        if tail:
            if not tail.startswith(":"):
                raise _bad_host(raw, f"unexpected {tail!r} after ']'")
            port = _port(raw, tail[1:])
    elif rest.count(":") == 1:
        host, p = rest.split(":")
        port = _port(raw, p)
    else:  # a name, IPv4, or a bare IPv6 address (several colons: no port)
        host = rest
    if not host:
        raise _bad_host(raw, "no host name")
    if host.startswith("-"):
        raise _bad_host(raw, "a host may not start with '-' (it would be read as an ssh option)")
    if not _HOST_RE.match(host):
        raise _bad_host(raw, "only letters, digits and . _ - : % are allowed in a host name")
    return Host(spec=raw, host=host, user=user, port=port)


def _port(raw: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise _bad_host(raw, f"bad port {text!r}")
    return int(text)


def parse_ssh_option(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (as for ``ssh -o``) -> (key, value); rejects what ssh would misread."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not _OPT_KEY_RE.match(key):
        raise RemoteError(
            f"bad --ssh-option {text!r}: expected KEY=VALUE", hint="e.g. --ssh-option Port=2222"
        )
    if "\n" in value or "\r" in value or "\0" in value:
        raise RemoteError(f"bad --ssh-option {key}: the value contains a line break")
    if key.lower() == "batchmode" and value.strip().lower() != "yes":
        raise RemoteError("BatchMode is always yes: edgeattn never waits on a password prompt")
    return key, value


def remote_command(words: Sequence[str]) -> str:
    """The string ssh sends to the remote login shell: every word ``shlex.quote``d."""
    for w in words:
        if not isinstance(w, str):
            raise TypeError(f"remote command words must be str, got {type(w).__name__}")
        if "\0" in w:
            raise RemoteError("a NUL byte cannot be passed to a remote command")
    return " ".join(shlex.quote(w) for w in words)


def sh_words(script: str, *args: str) -> list[str]:
    """``sh -c SCRIPT sh ARG...``: a fixed script, user data only as positional arguments."""
    if "\n" in script:  # some login shells (csh) mishandle a newline inside quotes
        raise ValueError("remote scripts are kept on one line")
    return ["sh", "-c", script, "sh", *args]


@dataclass(frozen=True)
class SSHOptions:
    """How to reach the devices. Frozen; validated on construction."""

    ssh_config: str | None = None  # -F
    identity: str | None = None  # -i
    options: tuple[str, ...] = ()  # each "KEY=VALUE" -> -o KEY=VALUE
    accept_new_host_key: bool = False  # StrictHostKeyChecking=accept-new
    connect_timeout: float = 10.0  # ConnectTimeout (s)
    timeout: float | None = None  # per remote command (s); None: no limit
    multiplex: bool = True  # one TCP/auth per host via ControlMaster
    ssh_bin: str = "ssh"
    server_alive_interval: int = 15

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", tuple(self.options))
        for o in self.options:
            parse_ssh_option(o)
        for name in ("ssh_config", "identity"):
            v = getattr(self, name)
            if v is not None:
                v = os.path.expanduser(str(v))
                if not os.path.isfile(v):
                    raise RemoteError(f"--{name.replace('_', '-')} {v}: no such file")
                object.__setattr__(self, name, v)
        if not self.connect_timeout or self.connect_timeout <= 0:
            raise ValueError(f"connect_timeout must be > 0, got {self.connect_timeout!r}")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"timeout must be > 0 or None, got {self.timeout!r}")

    @property
    def user_keys(self) -> set[str]:
        return {parse_ssh_option(o)[0].lower() for o in self.options}

    def base_args(self) -> list[str]:
        """Options common to every call, in precedence order (ssh keeps the FIRST value seen)."""
        a = [self.ssh_bin]
        if self.ssh_config:
            a += ["-F", self.ssh_config]
        if self.identity:
            a += ["-i", self.identity]
        a += ["-o", "BatchMode=yes"]
        if self.accept_new_host_key:
            a += ["-o", "StrictHostKeyChecking=accept-new"]
        for o in self.options:
            k, v = parse_ssh_option(o)
            a += ["-o", f"{k}={v}"]
        a += ["-o", f"ConnectTimeout={max(1, round(self.connect_timeout))}"]
        a += ["-o", f"ServerAliveInterval={self.server_alive_interval}"]
        a += ["-o", "ServerAliveCountMax=4"]
        return a
