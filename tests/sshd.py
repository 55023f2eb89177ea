"""A throwaway OpenSSH server for the remote tests: its own config, keys, port and pid file.

Nothing outside the given work directory is touched except ``/run/sshd`` (the privilege separation
directory that Debian's sshd insists on when started as root; created empty if missing). The
server runs as the current user on 127.0.0.1, with public-key authentication only.

``SSHD.client_config`` is an ``ssh_config`` file for ``ssh -F`` with these host aliases:

* ``<name>``          HostName 127.0.0.1, Port, the trusted client key, a known_hosts that knows it
* ``<name>-newkey``   the same server, but an empty known_hosts (host key unknown)
* ``<name>-wrongkey`` the same server, but a client key that is not authorised
* ``127.0.0.1``       the trusted key and known_hosts, so ``127.0.0.1:PORT`` specs work too
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD_BIN = os.environ.get("EDGEATTN_TEST_SSHD", "/usr/sbin/sshd")
INSTALL_HINT = (
    "the SSH tests need OpenSSH: `apt-get install -y openssh-server openssh-client` "
    "(./dev.sh test installs it)"
)


def require_openssh() -> None:
    """Fail (not skip) with an install hint when sshd or the ssh client is missing."""
    missing = [b for b in (SSHD_BIN,) if not os.path.exists(b)]
    missing += [b for b in ("ssh", "ssh-keygen") if shutil.which(b) is None]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not found: {INSTALL_HINT}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, comment: str) -> Path:
    if not path.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            stdin=subprocess.DEVNULL,
        )
    return path


class SSHD:
    """One sshd on 127.0.0.1:<free port>. Use as a context manager or call start()/stop()."""

    def __init__(self, workdir: Path, name: str = "dev") -> None:
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.user = getpass.getuser()
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.client_key = self.dir / "id_client"
        self.wrong_key = self.dir / "id_wrong"
        self.known_hosts = self.dir / "known_hosts"
        self.empty_known_hosts = self.dir / "known_hosts_empty"
        self.client_config = self.dir / "ssh_config"
        self.log = self.dir / "sshd.log"
        self.home = self.dir / "home"  # $HOME of the sessions (their cwd stays the real home)

    # -- life cycle --------------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> SSHD:
        require_openssh()
        self.home.mkdir(exist_ok=True)
        keygen(self.host_key, "edgeattn-test-host")
        keygen(self.client_key, "edgeattn-test-client")
        keygen(self.wrong_key, "edgeattn-test-wrong")
        (self.dir / "authorized_keys").write_text(Path(str(self.client_key) + ".pub").read_text())
        if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        last_err = ""
        for _attempt in range(3):  # a free port can be taken between probe and bind: retry
            self.port = free_port()
            self._write_configs()
            self._logf = open(self.log, "ab")  # noqa: SIM115 - closed in stop()
            self.proc = subprocess.Popen(
                [SSHD_BIN, "-D", "-e", "-f", str(self.dir / "sshd_config")],
                stdin=subprocess.DEVNULL,
                stdout=self._logf,
                stderr=subprocess.STDOUT,
            )
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                        return self
                except OSError:
                    time.sleep(0.05)
            self.stop()
            last_err = self.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"sshd did not start on 127.0.0.1; its log:\n{last_err}")

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
            self.proc = None
        if getattr(self, "_logf", None) is not None:
            self._logf.close()
            self._logf = None

    def __enter__(self) -> SSHD:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- configs -----------------------------------------------------------------------------------
    def _write_configs(self) -> None:
        d = self.dir
        (d / "sshd_config").write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {self.host_key}",
                    f"PidFile {d / 'sshd.pid'}",
                    f"AuthorizedKeysFile {d / 'authorized_keys'}",
                    "PermitRootLogin prohibit-password",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "StrictModes no",
                    "UsePAM no",
                    "MaxStartups 64",
                    "MaxSessions 64",
                    "LogLevel INFO",
                    # sessions get their own HOME, so they skip the machine's ~/.bashrc (slow or
                    # chatty rc files are not what these tests are about); cwd stays the real home
                    f"SetEnv HOME={self.home}",
                    "",
                ]
            )
        )
        pub = Path(str(self.host_key) + ".pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n")
        self.empty_known_hosts.write_text("")
        common = [
            "  HostName 127.0.0.1",
            f"  Port {self.port}",
            f"  User {self.user}",
            "  IdentitiesOnly yes",
            "  GlobalKnownHostsFile /dev/null",
            "  PasswordAuthentication no",
            "  KbdInteractiveAuthentication no",
        ]
        lines = [f"Host {self.name}", *common, f"  IdentityFile {self.client_key}"]
        lines += [f"  UserKnownHostsFile {self.known_hosts}", ""]
        lines += [f"Host {self.name}-newkey", *common, f"  IdentityFile {self.client_key}"]
        lines += [f"  UserKnownHostsFile {self.empty_known_hosts}", ""]
        lines += [f"Host {self.name}-wrongkey", *common, f"  IdentityFile {self.wrong_key}"]
        lines += [f"  UserKnownHostsFile {self.known_hosts}", ""]
        # IdentityFile accumulates over matching blocks: never put one under ``Host *``.
        lines += ["Host 127.0.0.1 localhost ::1", *common[2:], f"  IdentityFile {self.client_key}"]
        lines += [f"  UserKnownHostsFile {self.known_hosts}", ""]
        self.client_config.write_text("\n".join(lines))


def write_combined_config(path: Path, servers: list[SSHD]) -> Path:
    """One ssh_config holding the named aliases of several servers."""
    blocks = [s.client_config.read_text().split("Host 127.0.0.1")[0] for s in servers]
    path.write_text("".join(blocks))
    return path
