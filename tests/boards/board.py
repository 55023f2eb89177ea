#!/usr/bin/env python3
"""Emulated boards: a Debian ARM root filesystem under qemu-user, reached over its own sshd.

What a board is (``pi4``: Debian bookworm arm64, Python 3.11, numpy + onnxruntime pinned to the
host's versions, ``QEMU_CPU=cortex-a72`` ≈ a Raspberry Pi 4):

* a root filesystem built once with ``debootstrap --arch=...`` (dpkg runs emulated: minutes) and
  cached as a ``.tar.zst`` under ``$EDGEATTN_BOARD_CACHE`` (default ``/var/cache/edgeattn-boards``),
  keyed by suite, architecture, packages and :data:`RECIPE`; the device's wheels (numpy,
  onnxruntime for that platform and Python) are downloaded once by the host's pip into the same
  cache and installed into the unpacked tree with ``pip install --target`` (no device network);
* unpacked into a fresh temporary directory per board instance, with throwaway host and user keys;
* the device's own sshd (an ARM binary, run by qemu-user through binfmt_misc) as PID 1 of private
  PID/mount/UTS namespaces (``unshare --fork --pid --mount --uts --kill-child``) chrooted into the
  tree, listening on a free 127.0.0.1 port. Everything mounted for it (proc, sys, a small /dev, a
  fake ARM ``/proc/cpuinfo``: onnxruntime's cpuinfo crashes on the host's x86 one) lives in that
  mount namespace only, so it vanishes with the namespace;
* ``/etc/edgeattn-emulated`` in the tree says "emulated" to the device fingerprint, so records from
  a board are never mistaken for a real Pi's: emulated code is hundreds of times slower.

Teardown is by pid (the ``unshare`` process, checked against its start time), never by name: the
PID namespace dies with its PID 1, then the tree is removed once no mount of it is left.

Needs root (namespaces, chroot, mounts) and binfmt_misc; anything else missing (qemu-user-static,
binfmt-support, debootstrap, zstd) is installed with apt-get. :class:`BoardUnavailable` says why a
board cannot run here (tests skip on it); any other failure is a :class:`BoardError`.

Shell use::

    python tests/boards/board.py up pi4 --json     # prints host, ssh_config, args, pid, ...
    python tests/boards/board.py down pi4          # stops it, removes its tree
    python tests/boards/board.py build pi4         # only build/refresh the cached tarballs
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RECIPE = 1  # bump when the build steps below change: it is part of the cache key
MIRROR = os.environ.get("EDGEATTN_BOARD_MIRROR", "http://deb.debian.org/debian")
CACHE = Path(os.environ.get("EDGEATTN_BOARD_CACHE", "/var/cache/edgeattn-boards"))
RUN_DIR = Path(os.environ.get("EDGEATTN_BOARD_RUN", "/run/edgeattn-boards"))
WORK_BASE = os.environ.get("EDGEATTN_BOARD_WORK", "/var/tmp")
APT_TOOLS = ("qemu-user-static", "binfmt-support", "debootstrap", "zstd")
MARKER = "etc/edgeattn-emulated"
NICE = ["nice", "-n", "10"]
BASE_PACKAGES = ("openssh-server", "python3", "python3-venv", "python3-pip")


class BoardError(RuntimeError):
    """Bringing up or tearing down a board failed."""


class BoardUnavailable(BoardError):
    """This machine forbids boards (no root, no binfmt_misc, ...): a reason to skip, not a bug."""


def host_version(dist: str) -> str:
    return importlib.metadata.version(dist)


@dataclass(frozen=True)
class BoardSpec:
    name: str
    suite: str
    arch: str  # Debian architecture
    qemu: str  # qemu-user / binfmt name
    machine: str  # what uname -m says on the board
    cpu: str  # QEMU_CPU
    python: str  # the suite's python3 (X.Y)
    platforms: tuple[str, ...]  # pip --platform tags for the wheels (empty: no wheels)
    requirements: tuple[str, ...] = ()  # installed into the tree with pip --target
    packages: tuple[str, ...] = BASE_PACKAGES
    cpuinfo: str = ""
    description: str = ""

    @property
    def cache_key(self) -> str:
        blob = json.dumps(
            {
                "suite": self.suite,
                "arch": self.arch,
                "packages": sorted(self.packages),
                "r": RECIPE,
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def tarball(self) -> Path:
        return CACHE / f"rootfs-{self.suite}-{self.arch}-{self.cache_key}.tar.zst"

    @property
    def wheel_dir(self) -> Path | None:
        if not self.platforms or not self.requirements:
            return None
        blob = json.dumps([list(self.platforms), self.python, sorted(self.requirements)])
        key = hashlib.sha256(blob.encode()).hexdigest()[:16]
        arch = self.platforms[0].rsplit("_", 1)[-1]
        return CACHE / "wheels" / f"{arch}-cp{self.python.replace('.', '')}-{key}"

    def pip_platform_args(self) -> list[str]:
        """``--platform`` for each tag (pip does not widen manylinux_2_28 to older tags itself)."""
        out = []
        for p in self.platforms:
            out += ["--platform", p]
        return out + [
            "--only-binary=:all:",
            "--python-version",
            self.python,
            "--implementation",
            "cp",
        ]


def _a72_cpuinfo(n: int, hardware: str, revision: str, model: str) -> str:
    """/proc/cpuinfo as a Raspberry Pi 4 kernel writes it (Cortex-A72 = part 0xd08)."""
    cores = "".join(
        f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
        "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n"
        "CPU revision\t: 3\n\n"
        for i in range(n)
    )
    return cores + f"Hardware\t: {hardware}\nRevision\t: {revision}\nModel\t\t: {model}\n"


def _armv7_cpuinfo(n: int, hardware: str, revision: str, model: str) -> str:
    """/proc/cpuinfo of a Raspberry Pi 2 (Cortex-A7, part 0xc07) running a 32-bit kernel."""
    cores = "".join(
        f"processor\t: {i}\nmodel name\t: ARMv7 Processor rev 5 (v7l)\nBogoMIPS\t: 38.40\n"
        "Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae "
        "evtstrm\nCPU implementer\t: 0x41\nCPU architecture: 7\nCPU variant\t: 0x0\n"
        "CPU part\t: 0xc07\nCPU revision\t: 5\n\n"
        for i in range(n)
    )
    return cores + f"Hardware\t: {hardware}\nRevision\t: {revision}\nModel\t\t: {model}\n"


def _ncpu() -> int:
    return max(1, len(os.sched_getaffinity(0)))


def board_specs() -> dict[str, BoardSpec]:
    numpy_v, ort_v = host_version("numpy"), host_version("onnxruntime")
    n = _ncpu()
    pi_info = _a72_cpuinfo(n, "BCM2835", "c03114", "Raspberry Pi 4 Model B Rev 1.4")
    return {
        "pi4": BoardSpec(
            "pi4",
            "bookworm",
            "arm64",
            "aarch64",
            "aarch64",
            "cortex-a72",
            "3.11",
            ("manylinux_2_28_aarch64",),
            (f"numpy=={numpy_v}", f"onnxruntime=={ort_v}"),
            cpuinfo=pi_info,
            description="Raspberry Pi 4 stand-in: bookworm arm64, Python 3.11, host's numpy/ORT",
        ),
        # 32-bit Raspberry Pi OS: PyPI has no onnxruntime (nor numpy) wheel for armv7l; numpy
        # comes from Debian, onnxruntime from nowhere: `remote check` must say so and what to do
        "pi-32bit": BoardSpec(
            "pi-32bit",
            "bookworm",
            "armhf",
            "arm",
            "armv7l",
            "cortex-a7",
            "3.11",
            (),
            (),
            packages=(*BASE_PACKAGES, "python3-numpy"),
            cpuinfo=_armv7_cpuinfo(n, "BCM2835", "a21041", "Raspberry Pi 2 Model B Rev 1.1"),
            description="32-bit Pi OS stand-in: bookworm armhf, Python 3.11, Debian numpy, no ORT",
        ),
        # the oldest Python the runtime supports that an arm64 Debian ships, with an onnxruntime
        # of its time (1.19.2 is the last with cp39 aarch64 wheels)
        "old-python": BoardSpec(
            "old-python",
            "bullseye",
            "arm64",
            "aarch64",
            "aarch64",
            "cortex-a72",
            "3.9",
            ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"),
            ("numpy==1.26.4", "onnxruntime==1.19.2"),
            cpuinfo=pi_info,
            description="older Pi OS stand-in: bullseye arm64, Python 3.9, numpy 1.26, ORT 1.19",
        ),
    }


# --------------------------------------------------------------------------------------------------
# host preparation
# --------------------------------------------------------------------------------------------------
def _run(args: list[str], **kw: Any) -> subprocess.CompletedProcess:
    kw.setdefault("check", True)
    kw.setdefault("stdin", subprocess.DEVNULL)
    try:
        return subprocess.run(args, **kw)
    except subprocess.CalledProcessError as exc:
        out = exc.stderr or exc.stdout or b""
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        raise BoardError(
            f"{' '.join(args[:6])}... failed ({exc.returncode}): {out[-1500:]}"
        ) from None


def _say(msg: str) -> None:
    sys.stderr.write(f"[board] {msg}\n")
    sys.stderr.flush()


def prepare_host(spec: BoardSpec) -> None:
    """Root, the Debian tools, binfmt_misc and the qemu-<arch> handler; or BoardUnavailable."""
    if sys.platform != "linux":
        raise BoardUnavailable("emulated boards need Linux (namespaces, binfmt_misc)")
    if os.geteuid() != 0:
        raise BoardUnavailable("emulated boards need root (unshare, chroot, mounts)")
    for tool in ("unshare", "chroot", "mount", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            raise BoardUnavailable(f"{tool!r} not found on this machine")
    missing = [p for p in APT_TOOLS if not _dpkg_installed(p)]
    if missing:
        if shutil.which("apt-get") is None:
            raise BoardUnavailable(f"{', '.join(missing)} missing and no apt-get to install them")
        _say(f"apt-get install {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        _run(["apt-get", "update", "-qq"], capture_output=True, env=env)
        _run([*NICE, "apt-get", "install", "-y", "-qq", *missing], capture_output=True, env=env)
    bm = Path("/proc/sys/fs/binfmt_misc")
    if not (bm / "status").exists():
        res = subprocess.run(
            ["mount", "-t", "binfmt_misc", "binfmt_misc", str(bm)],
            capture_output=True,
            text=True,
            check=False,
        )
        if res.returncode != 0 or not (bm / "status").exists():
            raise BoardUnavailable(
                f"binfmt_misc is not available here (mount: {res.stderr.strip()[:200]})"
            )
    entry = bm / f"qemu-{spec.qemu}"
    if not entry.exists() or "enabled" not in entry.read_text():
        subprocess.run(
            ["update-binfmts", "--enable", f"qemu-{spec.qemu}"], capture_output=True, check=False
        )
    if not entry.exists() or "enabled" not in entry.read_text():
        raise BoardUnavailable(f"binfmt_misc has no enabled qemu-{spec.qemu} handler")
    flags = [ln for ln in entry.read_text().splitlines() if ln.startswith("flags:")]
    if not flags or "F" not in flags[0].split(":", 1)[1]:
        raise BoardError(
            f"qemu-{spec.qemu} is registered without the F flag: chroots cannot use it"
        )


def _dpkg_installed(pkg: str) -> bool:
    res = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True, check=False
    )
    return res.returncode == 0 and "install ok installed" in res.stdout


# --------------------------------------------------------------------------------------------------
# mounts and safe removal
# --------------------------------------------------------------------------------------------------
def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in THIS mount namespace, deepest first."""
    p = os.path.realpath(path)
    out = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        mp = line.split()[4].replace("\\040", " ")
        if mp == p or mp.startswith(p.rstrip("/") + "/"):
            out.append(mp)
    return sorted(out, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """rm -rf ``path``, first unmounting anything mounted below it; refuses while a mount stays."""
    if not path.exists():
        return
    for mp in _mounts_under(path):
        subprocess.run(["umount", "-l", mp], capture_output=True, check=False)
    left = _mounts_under(path)
    if left:
        raise BoardError(f"not removing {path}: still mounted: {', '.join(left)}")
    shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# cached artefacts: root filesystem tarball, wheels
# --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure_rootfs(spec: BoardSpec) -> Path:
    """The cached root filesystem tarball; built with debootstrap when missing."""
    tb = spec.tarball
    with _locked(CACHE / f".{tb.name}.lock"):
        if tb.is_file():
            return tb
        t0 = time.monotonic()
        # under the lock no one else builds this board: an earlier build dir is a dead one's
        for stale in Path(WORK_BASE).glob(f"eaboard-build-{spec.name}-*"):
            with contextlib.suppress(BoardError):
                remove_tree(stale)
        _say(f"building the {spec.suite}/{spec.arch} root filesystem (emulated dpkg: minutes)")
        work = Path(tempfile.mkdtemp(prefix=f"eaboard-build-{spec.name}-", dir=WORK_BASE))
        root = work / "rootfs"
        try:
            _run(
                [
                    *NICE,
                    "debootstrap",
                    f"--arch={spec.arch}",
                    "--variant=minbase",
                    f"--include={','.join(spec.packages)}",
                    spec.suite,
                    str(root),
                    MIRROR,
                ],
                capture_output=True,
            )
            finish_rootfs(root)
            pack_rootfs(root, tb)
        finally:
            remove_tree(work)
        _say(f"root filesystem cached: {tb} ({time.monotonic() - t0:.0f} s)")
        return tb


def finish_rootfs(root: Path) -> None:
    """After debootstrap: drop package caches and host keys, add the login user."""
    for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for p in (root / d).glob("*"):
            if p.is_file():
                p.unlink()
    for p in (root / "etc/ssh").glob("ssh_host_*"):
        p.unlink()  # every instance gets throwaway host keys
    _add_user(root, "pi", 1000)
    (root / "run/sshd").mkdir(parents=True, exist_ok=True)


def pack_rootfs(root: Path, tb: Path) -> None:
    """``tar | zstd`` into ``tb`` (through a .part file, renamed when complete)."""
    part = tb.with_name(tb.name + ".part")
    tb.parent.mkdir(parents=True, exist_ok=True)
    with open(part, "wb") as f:
        tar = subprocess.Popen(
            ["tar", "--numeric-owner", "-C", str(root), "-cf", "-", "."], stdout=subprocess.PIPE
        )
        _run([*NICE, "zstd", "-q", "-T0", "-6", "-c"], stdin=tar.stdout, stdout=f)
        if tar.wait() != 0:
            raise BoardError("tar of the root filesystem failed")
    os.replace(part, tb)


def _add_user(root: Path, user: str, uid: int) -> None:
    """An unprivileged login user, written straight into the tree's passwd/shadow/group."""
    passwd = root / "etc/passwd"
    if any(ln.startswith(f"{user}:") for ln in passwd.read_text().splitlines()):
        return
    with open(passwd, "a") as f:
        f.write(f"{user}:x:{uid}:{uid}:{user}:/home/{user}:/bin/bash\n")
    with open(root / "etc/group", "a") as f:
        f.write(f"{user}:x:{uid}:\n")
    with open(root / "etc/shadow", "a") as f:
        f.write(f"{user}:*:19000:0:99999:7:::\n")  # no password: keys only
    home = root / "home" / user
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, uid, uid)


def ensure_wheels(spec: BoardSpec) -> Path | None:
    """The device's wheels, downloaded once by the host's pip for the board's platform/Python."""
    wd = spec.wheel_dir
    if wd is None:
        return None
    with _locked(wd.parent / f".{wd.name}.lock"):
        if (wd / ".complete").is_file():
            return wd
        tmp = Path(tempfile.mkdtemp(prefix=".part-", dir=wd.parent))
        try:
            _run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "-q",
                    "--disable-pip-version-check",
                    "-d",
                    str(tmp),
                    *spec.pip_platform_args(),
                    *spec.requirements,
                ],
                capture_output=True,
            )
            (tmp / ".complete").write_text("\n".join(spec.requirements) + "\n")
            tmp.chmod(0o755)
            shutil.rmtree(wd, ignore_errors=True)
            os.replace(tmp, wd)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return wd


# --------------------------------------------------------------------------------------------------
# a running board
# --------------------------------------------------------------------------------------------------
# PID 1 of the new namespaces, before it becomes the device's sshd: private mounts for the tree
_PID1 = (
    'set -e; r=$1; hostname "$2"; mount --make-rprivate /; '
    'mount -t proc proc "$r/proc"; mount --bind "$r/etc/edgeattn-cpuinfo" "$r/proc/cpuinfo"; '
    'mount -t sysfs sysfs "$r/sys"; '
    'mount -t tmpfs -o mode=755,size=16m tmpfs "$r/dev"; '
    'for n in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do '
    'set -- "$r" $n; mknod -m 666 "$1/dev/$2" c "$3" "$4"; done; '
    'mkdir -p "$r/dev/shm" "$r/dev/pts"; mount -t tmpfs -o mode=1777 tmpfs "$r/dev/shm"; '
    'ln -s /proc/self/fd "$r/dev/fd"; '
    'mount -t tmpfs -o mode=755 tmpfs "$r/run"; mkdir -p "$r/run/sshd"; '
    'mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"; '
    'exec chroot "$r" /usr/sbin/sshd -D -e -f /etc/ssh/edgeattn_sshd_config'
)


def _proc_start(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # a zombie is gone (its parent may never reap it)
        return None
    return fields[19]  # field 22: start time in clock ticks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Board:
    """One running board. ``host`` is its ssh-config alias in ``ssh_config``."""

    name: str
    spec: BoardSpec
    work: Path
    port: int = 0
    pid: int | None = None
    pid_start: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    # paths -------------------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return self.work / "rootfs"

    @property
    def ssh_config(self) -> Path:
        return self.work / "ssh_config"

    @property
    def identity(self) -> Path:
        return self.work / "id_board"

    @property
    def known_hosts(self) -> Path:
        return self.work / "known_hosts"

    @property
    def log(self) -> Path:
        return self.work / "sshd.log"

    @property
    def host(self) -> str:
        return self.name

    @property
    def user(self) -> str:
        return "pi"

    def cli_args(self) -> list[str]:
        """``--host``/``--identity``/``--ssh-option`` for edgeattn without the ssh_config file."""
        return [
            "--host",
            f"{self.user}@127.0.0.1:{self.port}",
            "--identity",
            str(self.identity),
            "--ssh-option",
            f"UserKnownHostsFile={self.known_hosts}",
            "--ssh-option",
            "GlobalKnownHostsFile=/dev/null",
            "--ssh-option",
            "IdentitiesOnly=yes",
        ]

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "host": self.host,
            "ssh_config": str(self.ssh_config),
            "target": f"{self.user}@127.0.0.1:{self.port}",
            "port": self.port,
            "user": self.user,
            "identity": str(self.identity),
            "known_hosts": str(self.known_hosts),
            "args": self.cli_args(),
            "pid": self.pid,
            "pid_start": self.pid_start,
            "work": str(self.work),
            "root": str(self.root),
            "machine": self.spec.machine,
            "cpu": self.spec.cpu,
            "emulated": "qemu-user",
            "wheels_on_device": "/srv/wheels" if self.spec.wheel_dir else None,
            "python": self.spec.python,
            "timings_s": {k: round(v, 2) for k, v in self.timings.items()},
        }

    # life cycle --------------------------------------------------------------------------------
    def alive(self) -> bool:
        return self.pid is not None and _proc_start(self.pid) == self.pid_start

    def ssh(self, *words: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess:
        """Run a command on the board through its sshd (words are joined by the remote shell)."""
        return subprocess.run(
            ["ssh", "-F", str(self.ssh_config), "-T", self.host, *words],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=kw.pop("stdin", subprocess.DEVNULL),
            **kw,
        )

    def start(self, timeout: float = 180.0) -> Board:
        spec = self.spec
        t0 = time.monotonic()
        prepare_host(spec)
        tb = ensure_rootfs(spec)
        wheels = ensure_wheels(spec)
        self.timings["cache"] = time.monotonic() - t0
        t1 = time.monotonic()
        self.root.mkdir(parents=True)
        unpack = subprocess.Popen(["zstd", "-q", "-dc", str(tb)], stdout=subprocess.PIPE)
        _run(["tar", "--numeric-owner", "-C", str(self.root), "-xf", "-"], stdin=unpack.stdout)
        if unpack.wait() != 0:
            raise BoardError(f"cannot unpack {tb} (remove it to rebuild)")
        root = self.root
        if wheels is not None:
            site = root / f"usr/local/lib/python{spec.python}/dist-packages"
            _run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "--disable-pip-version-check",
                    "--no-index",
                    "--find-links",
                    str(wheels),
                    *spec.pip_platform_args(),
                    "--no-compile",
                    "--target",
                    str(site),
                    *spec.requirements,
                ],
                capture_output=True,
            )
            dest = root / "srv/wheels"  # for `remote setup --pip-arg=--find-links=/srv/wheels`
            shutil.copytree(wheels, dest, ignore=shutil.ignore_patterns(".*"))
            dest.chmod(0o755)
            for w in dest.iterdir():
                w.chmod(0o644)
        self.timings["unpack"] = time.monotonic() - t1
        (root / MARKER).write_text(
            f"qemu-user {spec.cpu}\n"
            "# edgeattn test board: emulated with qemu-user; its timings are not device speed\n"
        )
        (root / "etc/edgeattn-cpuinfo").write_text(spec.cpuinfo)
        (root / "etc/hostname").write_text(f"{self.name}\n")
        self._keys()
        self._start_sshd(timeout)
        self.timings["up"] = time.monotonic() - t0
        return self

    def _keys(self) -> None:
        root = self.root
        hk = root / "etc/ssh/ssh_host_ed25519_key"
        for key, comment in ((hk, f"{self.name}-host"), (self.identity, f"{self.name}-client")):
            _run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
                capture_output=True,
            )
        uid = 1000
        ssh_dir = root / "home" / self.user / ".ssh"
        ssh_dir.mkdir(parents=True, exist_ok=True)
        auth = ssh_dir / "authorized_keys"
        auth.write_text(Path(str(self.identity) + ".pub").read_text())
        envf = ssh_dir / "environment"
        envf.write_text(f"QEMU_CPU={self.spec.cpu}\n")
        for p in (ssh_dir, auth, envf):
            os.chown(p, uid, uid)
        ssh_dir.chmod(0o700)
        auth.chmod(0o600)

    def _write_configs(self) -> None:
        (self.root / "etc/ssh/edgeattn_sshd_config").write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    "HostKey /etc/ssh/ssh_host_ed25519_key",
                    "PidFile none",
                    "PermitRootLogin no",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "UsePAM no",
                    "MaxStartups 64",
                    "MaxSessions 64",
                    "LogLevel INFO",
                    "Subsystem sftp /usr/lib/openssh/sftp-server",
                    # sessions start with a clean environment and qemu reads QEMU_CPU in every
                    # process: ~/.ssh/environment sets it (SetEnv here needs OpenSSH >= 8.7)
                    "PermitUserEnvironment yes",
                    "",
                ]
            )
        )
        pub = Path(str(self.root / "etc/ssh/ssh_host_ed25519_key.pub")).read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {pub[0]} {pub[1]}\n")
        self.ssh_config.write_text(
            "\n".join(
                [
                    f"Host {self.name}",
                    "  HostName 127.0.0.1",
                    f"  Port {self.port}",
                    f"  User {self.user}",
                    f"  IdentityFile {self.identity}",
                    "  IdentitiesOnly yes",
                    f"  UserKnownHostsFile {self.known_hosts}",
                    "  GlobalKnownHostsFile /dev/null",
                    "  PasswordAuthentication no",
                    "  KbdInteractiveAuthentication no",
                    "",
                ]
            )
        )

    def _start_sshd(self, timeout: float) -> None:
        last = ""
        for _attempt in range(3):  # a probed free port can be taken before sshd binds it
            self.port = _free_port()
            self._write_configs()
            env = {
                "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                "QEMU_CPU": self.spec.cpu,
                "LANG": "C.UTF-8",
            }
            with open(self.log, "ab") as logf:
                proc = subprocess.Popen(
                    [
                        "unshare",
                        "--fork",
                        "--pid",
                        "--mount",
                        "--uts",
                        "--kill-child",
                        "--",
                        "/bin/sh",
                        "-c",
                        _PID1,
                        "sh",
                        str(self.root),
                        self.name,
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # a Ctrl-C of the caller's terminal is not the board's
                )
            self.pid, self.pid_start = proc.pid, _proc_start(proc.pid)
            self._proc = proc
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        pass
                except OSError:
                    time.sleep(0.2)
                    continue
                res = self.ssh("true", timeout=max(10.0, deadline - time.monotonic()))
                if res.returncode == 0:
                    return
                last = res.stderr
                time.sleep(0.5)
            last = (self.log.read_text(errors="replace")[-1500:] + "\n" + last).strip()
            self.stop_processes()
            if "Address already in use" not in last:
                break
        raise BoardError(f"{self.name}: the device sshd did not come up:\n{last}")

    def stop_processes(self, timeout: float = 20.0) -> None:
        """Stop the namespace (by the recorded pid and start time) and wait for it to go."""
        pid = self.pid
        if pid is None:
            return
        if _proc_start(pid) == self.pid_start:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # unshare dies; --kill-child SIGKILLs PID 1
        proc = getattr(self, "_proc", None)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc is not None:
                if proc.poll() is not None:
                    break
            elif _proc_start(pid) != self.pid_start:
                break
            time.sleep(0.1)
        else:
            if _proc_start(pid) == self.pid_start:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        # the namespace's processes die with its PID 1; wait until none is rooted in the tree
        deadline = time.monotonic() + timeout
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.pid = None

    def processes(self) -> list[int]:
        """Pids of processes whose root directory is this board's tree."""
        root = os.path.realpath(self.root)
        found = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    if os.readlink(f"/proc/{d}/root") == root:
                        found.append(int(d))
                except OSError:
                    pass
        return found

    def stop(self) -> None:
        self.stop_processes()
        left = self.processes()
        if left:
            raise BoardError(f"{self.name}: processes still running in the board: {left}")
        remove_tree(self.work)

    def __enter__(self) -> Board:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def prebuild(names: list[str]) -> list[Any]:
    """Start building the cached artefacts of several boards at once (one thread each).

    A cold cache means one debootstrap per board, mostly one emulated dpkg process at a time:
    building them side by side uses the cores that one build leaves idle. Returns the threads;
    a board that then comes up waits for its own build (the cache lock) and a build that failed
    here is simply tried again there, where its error is raised.
    """
    import threading

    specs = board_specs()
    todo = []
    for n in names:
        spec = specs[n]
        try:
            prepare_host(spec)
        except BoardError:
            continue  # up() reports it
        if not spec.tarball.is_file() or (spec.wheel_dir and not spec.wheel_dir.is_dir()):
            todo.append(spec)

    def build(spec: BoardSpec) -> None:
        with contextlib.suppress(Exception):
            ensure_rootfs(spec)
            ensure_wheels(spec)

    threads = [threading.Thread(target=build, args=(s,), daemon=True) for s in todo]
    for t in threads:
        t.start()
    return threads


def new_board(name: str, work: Path | None = None) -> Board:
    specs = board_specs()
    if name not in specs:
        raise BoardError(f"unknown board {name!r}; known: {', '.join(specs)}")
    w = work or Path(tempfile.mkdtemp(prefix=f"eaboard-{name}-", dir=WORK_BASE))
    return Board(name, specs[name], w)


def up(name: str) -> Board:
    b = new_board(name)
    try:
        return b.start()
    except BaseException:
        with contextlib.suppress(Exception):
            b.stop()
        raise


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------
def _state_file(name: str) -> Path:
    return RUN_DIR / f"{name}.json"


def _cli_up(args: argparse.Namespace) -> int:
    sf = _state_file(args.name)
    if sf.exists():
        st = json.loads(sf.read_text())
        if st.get("pid") and _proc_start(st["pid"]) == st.get("pid_start"):
            raise BoardError(
                f"{args.name} is already up (pid {st['pid']}): `down {args.name}` first"
            )
        sf.unlink()
    b = up(args.name)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    info = b.info()
    sf.write_text(json.dumps(info, indent=1) + "\n")
    if args.json:
        print(json.dumps(info, indent=1))
    else:
        print(f"{b.name} is up: ssh -F {b.ssh_config} {b.host}")
        print(f"  edgeattn remote check {b.host} --ssh-config {b.ssh_config}")
        print(f"  edgeattn bench --tokens 64 {' '.join(b.cli_args())}")
        print("  (emulated with qemu-user: its timings are NOT device speed)")
        print(f"  stop it: python {Path(__file__).resolve()} down {b.name}")
    return 0


def _cli_down(args: argparse.Namespace) -> int:
    sf = _state_file(args.name)
    if not sf.exists():
        print(f"{args.name} is not up (no {sf})", file=sys.stderr)
        return 1
    st = json.loads(sf.read_text())
    specs = board_specs()
    b = Board(
        st["name"], specs[st["name"]], Path(st["work"]), st["port"], st["pid"], st["pid_start"]
    )
    b.stop()
    sf.unlink()
    print(f"{args.name} is down")
    return 0


def _cli_build(args: argparse.Namespace) -> int:
    spec = board_specs()[args.name]
    prepare_host(spec)
    print(ensure_rootfs(spec))
    wd = ensure_wheels(spec)
    if wd:
        print(wd)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="board.py", description="emulated boards for edgeattn")
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="bring a board up (prints how to reach it)")
    u.add_argument("name")
    u.add_argument("--json", action="store_true")
    d = sub.add_parser("down", help="stop a board brought up with `up`")
    d.add_argument("name")
    b = sub.add_parser("build", help="only build the cached root filesystem and wheels")
    b.add_argument("name")
    sub.add_parser("list", help="the known boards")
    args = p.parse_args(argv)
    try:
        if args.cmd == "up":
            return _cli_up(args)
        if args.cmd == "down":
            return _cli_down(args)
        if args.cmd == "build":
            return _cli_build(args)
        for s in board_specs().values():
            print(f"{s.name}: {s.description}")
        return 0
    except BoardUnavailable as exc:
        print(f"board unavailable here: {exc}", file=sys.stderr)
        return 77
    except BoardError as exc:
        print(f"board error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
