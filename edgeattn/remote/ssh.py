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
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from edgeattn.errors import RemoteError
from edgeattn.remote.ssh_args import (
    Host,
    SSHOptions,
    parse_host,
    parse_ssh_option,
    remote_command,
    sh_words,
)
from edgeattn.remote.ssh_errors import (
    REMAPPED_255,
    CommandTimeout,
    DeviceCommandError,
    SSHError,
    classify_ssh_failure,
    last_line,
    noise,
)

# the transport's whole face: its own names and those of the files it is made of
__all__ = [
    "REMAPPED_255",
    "CommandTimeout",
    "DeviceCommandError",
    "Host",
    "Result",
    "SSHConnection",
    "SSHError",
    "SSHOptions",
    "classify_ssh_failure",
    "parse_host",
    "parse_ssh_option",
    "remote_command",
    "sh_words",
]


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


class _Streams:
    """The side streams of one ssh process: its stderr read line by line (kept, and passed to
    ``on_line``) and its stdin written from ``data`` (bytes, or a writer ``f(pipe)``), each in
    a thread; a writer's error is re-raised by :meth:`finish` in the caller's thread."""

    def __init__(
        self,
        running: _Running,
        data: bytes | Callable[[IO[bytes]], None] | None,
        on_line: Callable[[str], None] | None,
    ) -> None:
        self.running, self.data, self.on_line = running, data, on_line
        self.tail: collections.deque[str] = collections.deque(maxlen=200)
        self.writer_error: list[BaseException] = []
        self.threads = [threading.Thread(target=self._read_stderr, daemon=True)]
        if data is not None:
            self.threads.append(threading.Thread(target=self._write_stdin, daemon=True))
        for t in self.threads:
            t.start()

    def _read_stderr(self) -> None:
        proc = self.running.proc
        assert proc.stderr is not None
        for raw in iter(proc.stderr.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            self.tail.append(line)
            if self.on_line is not None and not noise(line):
                try:
                    self.on_line(line)
                except Exception:  # a console callback must not break the transfer
                    pass

    def _write_stdin(self) -> None:
        proc = self.running.proc
        assert proc.stdin is not None
        try:
            if isinstance(self.data, (bytes, bytearray)):
                proc.stdin.write(self.data)
            else:
                self.data(proc.stdin)  # type: ignore[misc]
            proc.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the remote side went away: the exit status says why
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self.writer_error.append(exc)
            self.running.killed.set()
            proc.kill()

    def finish(self, close_stdin: bool, interrupted: bool) -> None:
        """Close our end of stdin (when we held it open), wait for the threads, close the pipes.
        Interrupted: no waiting on the readers (a multiplexing master holds the pipes until the
        device command ends); the caller closes the session next."""
        proc = self.running.proc
        if proc.stdin is not None and close_stdin:
            try:
                proc.stdin.close()
            except OSError:
                pass
        for t in self.threads:
            t.join(timeout=0.2 if interrupted else 5)
        for f in (proc.stdout, proc.stderr):
            if f is not None:
                f.close()
        if self.writer_error and not interrupted:
            raise self.writer_error[0]

    def stderr(self) -> str:
        return "\n".join(self.tail)


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
                f"{self.host.spec}: ssh configuration error: {last_line(err)}",
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
        t0 = time.monotonic()
        running = self._start(self.argv(words))
        proc = running.proc
        streams = _Streams(running, stdin, on_stderr_line)
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
        out_chunks: list[bytes] = []
        interrupted = False
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
            interrupted = True
            running.killed.set()
            _kill(proc)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            with self._lock:
                self._running.discard(running)
            streams.finish(stdin is None, interrupted)  # re-raises a stdin writer's error
        stderr = streams.stderr()
        res = Result(rc, b"".join(out_chunks), stderr, time.monotonic() - t0)
        if timed_out.is_set():
            raise CommandTimeout(
                f"{self.host.spec}: {what} timed out after {tmo:g} s",
                returncode=None,
                stderr_tail=last_line(stderr),
                host=self.host.spec,
                hint="raise --timeout; the device process was stopped with the session",
            )
        if self._cancelled.is_set() and running.killed.is_set() and not force:
            raise KeyboardInterrupt
        if check and rc != 0:
            raise self._failure(rc, stderr, what)
        return res

    def _start(self, argv: list[str]) -> _Running:
        """The local ssh, started and registered (so :meth:`cancel` can kill it)."""
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
        return running

    def _failure(self, rc: int, stderr: str, what: str) -> RemoteError:
        """ssh's own failure (255) or the device command's (any other non-zero status)."""
        if rc == 255:
            return classify_ssh_failure(stderr, self.host.spec)
        last = last_line(stderr)
        return DeviceCommandError(
            f"{self.host.spec}: {what} failed with exit status {rc}"
            + (f": {last}" if last else ""),
            returncode=rc,
            stderr_tail=last,
            host=self.host.spec,
        )

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
