"""SSH transport through the system OpenSSH client (``ssh``), always as argument lists.

Why the system client: it honours ``~/.ssh/config``, ProxyJump, agents and known_hosts exactly as
the user's own ``ssh`` does (the Ansible approach). Rules kept here:

* Local side: ``subprocess`` argument lists only, never ``shell=True``. The host goes after ``--``
  and a host spec starting with ``-`` is rejected, so it can never become an ssh option.
* Remote side: ssh always hands the device a *string* for its login shell. We build it only as
  ``shlex.quote(word)`` joined by spaces, and the scripts we run there are fixed constants
  (``sh -c SCRIPT sh ARG...``): user data only ever arrives as quoted positional arguments.
* ``BatchMode=yes`` always (nothing waits on a prompt), ``ConnectTimeout``, keep-alives, and a
  per-command timeout. Host keys are never auto-accepted unless the caller asks
  (``accept_new_host_key`` -> ``StrictHostKeyChecking=accept-new``).
* Exit status 255 is ssh's own failure: :class:`SSHError` with a one-line reason parsed from stderr.
  Our remote scripts map a command's own 255 to 254, so any other status is the device command's
  (:class:`DeviceCommandError`).
* One connection per host and session: OpenSSH connection multiplexing (``ControlMaster``) with a
  control socket in a private temporary directory, closed with ``ssh -O exit`` at the end.
"""

from __future__ import annotations

import collections
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from edgeattn.errors import RemoteError

__all__ = [
    "CommandTimeout",
    "DeviceCommandError",
    "Host",
    "SSHConnection",
    "SSHError",
    "SSHOptions",
    "parse_host",
    "parse_ssh_option",
    "remote_command",
]

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


# --------------------------------------------------------------------------------------------------
# options and error classification
# --------------------------------------------------------------------------------------------------
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


def _noise(line: str) -> bool:
    low = line.lower()
    return (
        not line.strip()
        or low.startswith("warning: permanently added")
        or "pseudo-terminal will not be allocated" in low
    )


def classify_ssh_failure(stderr: str, host: str) -> SSHError:
    """An :class:`SSHError` with a one-line reason from ssh's stderr (exit status 255)."""
    lines = [ln.strip() for ln in stderr.replace("\r", "\n").splitlines() if not _noise(ln)]
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


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.replace("\r", "\n").splitlines() if not _noise(ln)]
    return lines[-1][:300] if lines else ""


# --------------------------------------------------------------------------------------------------
# a connection (one per host and session)
# --------------------------------------------------------------------------------------------------
@dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: str
    seconds: float


@dataclass(eq=False)
class _Running:
    proc: subprocess.Popen
    killed: threading.Event = field(default_factory=threading.Event)


class SSHConnection:
    """Runs commands on one host. Use as a context manager (closes the shared connection).

    All methods take the REMOTE command as a list of words; they are quoted here.
    ``cancel()`` (from any thread) kills the running ssh processes of this connection.
    """

    def __init__(self, host: str | Host, options: SSHOptions | None = None) -> None:
        self.host = parse_host(host)
        self.options = options or SSHOptions()
        self._mux_dir: str | None = None
        self._lock = threading.Lock()
        self._running: set[_Running] = set()
        self._cancelled = threading.Event()
        user_keys = self.options.user_keys
        self._multiplex = (
            self.options.multiplex
            and "controlmaster" not in user_keys
            and "controlpath" not in user_keys
        )
        if shutil.which(self.options.ssh_bin) is None:
            raise RemoteError(
                f"{self.options.ssh_bin!r} not found on this machine",
                hint="install the OpenSSH client (apt-get install openssh-client)",
            )

    # -- argv ------------------------------------------------------------------------------------
    def _mux_args(self) -> list[str]:
        if not self._multiplex:
            return []
        if self._mux_dir is None:
            # short path: unix socket paths are limited to ~104 bytes; %C is a 40-hex hash
            self._mux_dir = tempfile.mkdtemp(
                prefix="eassh-", dir="/tmp" if os.path.isdir("/tmp") else None
            )
        return [
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={self._mux_dir}/%C",
            "-o",
            "ControlPersist=15",
        ]

    def argv(self, words: Sequence[str] | None) -> list[str]:
        """The full local argument list for ``ssh`` running ``words`` on the device."""
        a = self.options.base_args() + self._mux_args() + ["-T"] + self.host.ssh_args()
        a += ["--", self.host.host]
        if words is not None:
            a.append(remote_command(words))
        return a

    def resolve(self) -> dict[str, Any]:
        """What ssh would connect to (``ssh -G``: config applied, no network): hostname, user, port."""
        a = self.options.base_args() + self.host.ssh_args() + ["-G", "--", self.host.host]
        try:
            res = subprocess.run(
                a, stdin=subprocess.DEVNULL, capture_output=True, timeout=10, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SSHError(f"{self.host.spec}: ssh -G failed: {exc}", kind="config") from exc
        if res.returncode != 0:
            err = res.stderr.decode(errors="replace")
            raise SSHError(
                f"{self.host.spec}: ssh configuration error: {_last_line(err)}",
                kind="config",
                host=self.host.spec,
                hint="check --ssh-config / --ssh-option",
            )
        out: dict[str, Any] = {}
        for line in res.stdout.decode(errors="replace").splitlines():
            k, _, v = line.partition(" ")
            if k in ("hostname", "user", "port"):
                out[k] = int(v) if k == "port" and v.isdigit() else v
        return out

    def target(self) -> str:
        """``user@hostname:port`` as resolved by ssh -G (for the records' host tag)."""
        r = self.resolve()
        hn = str(r.get("hostname", self.host.host))
        if ":" in hn:
            hn = f"[{hn}]"
        return f"{r.get('user', '')}@{hn}:{r.get('port', 22)}".lstrip("@")

    # -- running ---------------------------------------------------------------------------------
    def run(
        self,
        words: Sequence[str],
        *,
        stdin: bytes | Callable[[IO[bytes]], None] | None = None,
        timeout: float | None | str = "default",
        on_stderr_line: Callable[[str], None] | None = None,
        on_stdout_line: Callable[[bytes], None] | None = None,
        check: bool = True,
        what: str = "remote command",
        force: bool = False,
    ) -> Result:
        """Run ``words`` on the device; stream lines to the callbacks; classify failures.

        ``stdin``: bytes, a writer ``f(pipe)`` (streamed, e.g. a tar archive), or None. With None
        the remote side gets an *open* stdin that closes when this call ends or the local ssh dies
        (our run scripts watch it to stop the device process when the session drops).
        ``check``: raise :class:`SSHError` on 255, :class:`DeviceCommandError` on other non-zero.
        ``force``: run even after :meth:`cancel` (for the clean-up of a cancelled run).
        """
        if self._cancelled.is_set() and not force:
            raise KeyboardInterrupt
        tmo = self.options.timeout if timeout == "default" else timeout
        argv = self.argv(words)
        t0 = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=False,
            )
        except OSError as exc:
            raise SSHError(f"{self.host.spec}: cannot start ssh: {exc}", kind="ssh") from exc
        running = _Running(proc)
        with self._lock:
            self._running.add(running)
        err_tail: collections.deque[str] = collections.deque(maxlen=200)
        out_chunks: list[bytes] = []
        writer_error: list[BaseException] = []

        def read_stderr() -> None:
            assert proc.stderr is not None
            for raw in iter(proc.stderr.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                err_tail.append(line)
                if on_stderr_line is not None and not _noise(line):
                    try:
                        on_stderr_line(line)
                    except Exception:  # a console callback must not break the transfer
                        pass

        def write_stdin() -> None:
            assert proc.stdin is not None
            try:
                if isinstance(stdin, (bytes, bytearray)):
                    proc.stdin.write(stdin)
                else:
                    stdin(proc.stdin)  # type: ignore[misc]
                proc.stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass  # the remote side went away: the exit status says why
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                writer_error.append(exc)
                running.killed.set()
                proc.kill()

        threads = [threading.Thread(target=read_stderr, daemon=True)]
        if stdin is not None:
            threads.append(threading.Thread(target=write_stdin, daemon=True))
        for t in threads:
            t.start()

        timer: threading.Timer | None = None
        timed_out = threading.Event()
        if tmo is not None:

            def on_timeout() -> None:
                timed_out.set()
                running.killed.set()
                _kill(proc)

            timer = threading.Timer(tmo, on_timeout)
            timer.daemon = True
            timer.start()
        try:
            assert proc.stdout is not None
            for raw in iter(proc.stdout.readline, b""):
                if on_stdout_line is not None:
                    on_stdout_line(raw)
                else:
                    out_chunks.append(raw)
            rc = proc.wait()
        except BaseException:
            # KeyboardInterrupt, SystemExit, a callback's error: the local ssh must not outlive us
            running.killed.set()
            _kill(proc)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if proc.stdin is not None and stdin is None:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
            for t in threads:
                t.join(timeout=5)
            with self._lock:
                self._running.discard(running)
            for f in (proc.stdout, proc.stderr):
                if f is not None:
                    f.close()
        if writer_error:
            raise writer_error[0]
        stderr = "\n".join(err_tail)
        res = Result(rc, b"".join(out_chunks), stderr, time.monotonic() - t0)
        if timed_out.is_set():
            raise CommandTimeout(
                f"{self.host.spec}: {what} timed out after {tmo:g} s",
                returncode=None,
                stderr_tail=_last_line(stderr),
                host=self.host.spec,
                hint="raise --timeout; the device process was stopped with the session",
            )
        if self._cancelled.is_set() and running.killed.is_set() and not force:
            raise KeyboardInterrupt
        if check and rc == 255:
            raise classify_ssh_failure(stderr, self.host.spec)
        if check and rc != 0:
            last = _last_line(stderr)
            raise DeviceCommandError(
                f"{self.host.spec}: {what} failed with exit status {rc}"
                + (f": {last}" if last else ""),
                returncode=rc,
                stderr_tail=last,
                host=self.host.spec,
            )
        return res

    def cancel(self) -> None:
        """Kill this connection's running ssh processes (thread-safe); later calls raise."""
        self._cancelled.set()
        with self._lock:
            running = list(self._running)
        for r in running:
            r.killed.set()
            _kill(r.proc)

    def close(self) -> None:
        """Stop the shared master connection (if one was started) and remove its socket dir."""
        d, self._mux_dir = self._mux_dir, None
        if d is None:
            return
        try:
            sockets = os.listdir(d)
        except OSError:
            sockets = []
        if sockets:
            a = (
                self.options.base_args()
                + [
                    "-o",
                    f"ControlPath={d}/%C",
                    "-O",
                    "exit",
                ]
                + self.host.ssh_args()
                + ["--", self.host.host]
            )
            try:
                subprocess.run(
                    a,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=10,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(d, ignore_errors=True)

    def __enter__(self) -> SSHConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=2)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
    except OSError:
        pass
