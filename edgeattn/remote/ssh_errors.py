"""What an ssh call's failure means: ssh's own (exit 255, :class:`SSHError` with a one-line
reason read from its stderr) or the device command's (:class:`DeviceCommandError`)."""

from __future__ import annotations

import re

from edgeattn.errors import RemoteError

# exit status our remote scripts use instead of 255 (which belongs to ssh)
REMAPPED_255 = 254


class SSHError(RemoteError):
    """ssh itself failed (exit 255): unreachable, refused, auth, host key, timeout, DNS...

    ``kind`` is one of: ``refused``, ``timeout``, ``unreachable``, ``resolve``, ``auth``,
    ``hostkey``, ``closed``, ``config``, ``ssh``.
    """

    def __init__(
        self, message: str, *, kind: str = "ssh", host: str = "", hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.kind = kind
        self.host = host


class DeviceCommandError(RemoteError):
    """The connection worked but the command on the device failed (non-zero exit)."""

    def __init__(
        self,
        message: str,
        *,
        returncode: int | None,
        stderr_tail: str = "",
        host: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        self.host = host


class CommandTimeout(DeviceCommandError):
    """A remote command ran past its timeout; the local ssh was killed (and with it the command)."""


_PATTERNS: tuple[tuple[str, str, str | None], ...] = (
    # (regex on stderr, kind, hint)
    (
        r"host key verification failed|remote host identification has changed|"
        r"no \S+ host key is known|host key for .* has changed",
        "hostkey",
        "the device's host key is not trusted yet: connect once with `ssh HOST` and check its "
        "fingerprint, or pass --accept-new-host-key to trust a first-seen key",
    ),
    (
        r"permission denied|too many authentication failures|no supported authentication",
        "auth",
        "check the user name, --identity KEY or your ssh-agent (`ssh HOST true` must work "
        "without a password prompt)",
    ),
    (r"connection refused", "refused", "is sshd running on the device, on that port?"),
    (
        r"could not resolve hostname|name or service not known|nodename nor servname|"
        r"temporary failure in name resolution|no address associated",
        "resolve",
        "check the host name or add it to ~/.ssh/config",
    ),
    (
        r"timed out|operation timed out|connection timeout",
        "timeout",
        "the device did not answer: is it powered, on this network? (--connect-timeout)",
    ),
    (
        r"no route to host|network is unreachable|host is down|network unreachable",
        "unreachable",
        "the device is not reachable from here: check the network",
    ),
    (
        r"connection closed by|connection reset|kex_exchange_identification|broken pipe|"
        r"closed by remote host|connection to .* closed",
        "closed",
        "the device closed the connection (sshd limits, firewall, or it rebooted)",
    ),
    (
        r"bad configuration option|terminating, \d+ bad configuration|"
        r"no such file or directory|can't open user config",
        "config",
        "check --ssh-config / --ssh-option",
    ),
)

_REASONS = {
    "hostkey": "host key verification failed",
    "auth": "permission denied (authentication failed)",
    "refused": "connection refused",
    "resolve": "could not resolve host name",
    "timeout": "connection timed out",
    "unreachable": "host unreachable",
    "closed": "connection closed by the device",
    "config": "ssh configuration error",
}


def noise(line: str) -> bool:
    """A line of ssh's stderr that says nothing about a failure (known-host notes, tty warnings)."""
    low = line.lower()
    return (
        not line.strip()
        or low.startswith("warning: permanently added")
        or "pseudo-terminal will not be allocated" in low
    )


def classify_ssh_failure(stderr: str, host: str) -> SSHError:
    """An :class:`SSHError` with a one-line reason from ssh's stderr (exit status 255)."""
    lines = [ln.strip() for ln in stderr.replace("\r", "\n").splitlines() if not noise(ln)]
    text = "\n".join(lines)
    for pattern, kind, hint in _PATTERNS:
        m = re.search(pattern, text, flags=re.IGNORECASE)
        if m:
            # the ssh line that matched, shortened, as the detail
            detail = next((ln for ln in lines if re.search(pattern, ln, re.IGNORECASE)), "")
            detail = detail.removeprefix("ssh: ")
            msg = f"{host}: {_REASONS[kind]}"
            if detail and detail.lower() != _REASONS[kind]:
                msg += f" ({detail[:200]})"
            return SSHError(msg, kind=kind, host=host, hint=hint)
    last = lines[-1][:200] if lines else "ssh exited with status 255 and no message"
    return SSHError(f"{host}: ssh failed: {last}", kind="ssh", host=host)


def last_line(text: str) -> str:
    """The last line of ``text`` that is not :func:`noise`, cut to 300 characters."""
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if not noise(ln)]
    return lines[-1][:300] if lines else ""
