"""Set a device up (:func:`remote_setup`): a venv with numpy and onnxruntime, made atomically, and
what a failed setup's pip/venv output means (:func:`setup_failure`: reason and fix, one line each)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from edgeattn.errors import RemoteError
from edgeattn.remote.check import remote_check
from edgeattn.remote.device_scripts import (
    DEFAULT_CACHE,
    SCRIPT_ERRORS,
    SETUP_FIXUP,
    SETUP_SH,
    VENV_SUBDIR,
    parse_kv_lines,
    remote_path,
)
from edgeattn.remote.run import ProgressFn, say
from edgeattn.remote.ssh import (
    DeviceCommandError,
    Host,
    SSHConnection,
    SSHOptions,
    parse_host,
    sh_words,
)

_SETUP_DEVICE_RE = re.compile(r"^edgeattn-setup: device (\S+), python (\S+)")
# (regex on pip's output, reason, hint); {pkg} {machine} {python} are filled in; first match wins
_SETUP_FAILURES: tuple[tuple[str, str, str], ...] = (
    (
        r"No space left on device|\[Errno 28\]|Disk quota exceeded",
        "the device's disk is full",
        "free space on the device (df -h ~/.cache), or put the venv on a bigger disk: "
        "--venv /path/with/space/venv",
    ),
    (
        r"CERTIFICATE_VERIFY_FAILED|certificate verify failed|SSLError|SSL: |TLSV1_ALERT|"
        r"SSLCertVerificationError",
        "the device's pip cannot verify TLS to the package index",
        "check the device clock (`date`; a Pi without RTC or network time starts in the past) and "
        "its CA certificates (sudo apt-get install --reinstall ca-certificates); behind a proxy: "
        "--pip-arg=--cert=/path/ca.pem; or install from local wheels: "
        "--pip-arg=--no-index --pip-arg=--find-links=/dir/with/wheels",
    ),
    (
        r"No matching distribution found for (?P<pkg>\S+)|"
        r"Could not find a version that satisfies the requirement (?P<pkg2>\S+)",
        "no {pkg} wheel for this device ({machine}, Python {python}) on the index pip used",
        "{wheel_hint}",
    ),
    (
        r"Failed to establish a new connection|Temporary failure in name resolution|"
        r"Network is unreachable|Read timed out|ConnectTimeoutError|Max retries exceeded",
        "the device cannot reach the package index",
        "check the device's network/proxy (pip's --proxy), or install from local wheels: "
        "--pip-arg=--no-index --pip-arg=--find-links=/dir/with/wheels",
    ),
    (
        r"\[Errno 13\] Permission denied",
        "pip was denied access to a path on the device",
        "check the permissions of the venv's parent directory and of any --find-links directory "
        "for the login user (or pass --venv DIR in a directory it owns)",
    ),
    (
        r"No module named venv|No module named ensurepip|ensurepip is not available|"
        r"No module named pip",
        "the device's python has no venv/pip module",
        "on the device: sudo apt-get install -y python3-venv python3-pip",
    ),
)


def setup_failure(returncode: int | None, output: Sequence[str]) -> tuple[str, str | None]:
    """(reason, hint) for a failed ``remote setup``, from what its pip/venv output says failed."""
    text = "\n".join(output)
    machine = python = "?"
    for line in output:
        m = _SETUP_DEVICE_RE.match(line)
        if m:
            machine, python = m.group(1), m.group(2)
    for pattern, reason, hint in _SETUP_FAILURES:
        m = re.search(pattern, text)
        if not m:
            continue
        pkg = next((g for g in m.groups() if g), "") if m.groups() else ""
        name = re.split(r"[<>=!~\[; ]", pkg, maxsplit=1)[0] if pkg else "package"
        arm32 = machine.startswith(("armv6", "armv7", "armv8l", "arm")) and machine != "arm64"
        if name.lower() == "onnxruntime" and arm32:
            wheel_hint = (
                f"onnxruntime publishes no wheels for 32-bit ARM ({machine}): install the 64-bit "
                "(aarch64) OS on the board, or build onnxruntime from source for armv7l"
            )
        else:
            wheel_hint = (
                f"pin a {name} version that has a wheel for Python {python} on {machine} "
                f"(--package '{name}==X.Y'), or point pip at a wheel directory "
                "(--pip-arg=--no-index --pip-arg=--find-links=/dir/with/wheels)"
            )
        detail = next((ln.strip() for ln in output if re.search(pattern, ln)), "")
        reason = reason.format(pkg=name, machine=machine, python=python)
        if detail and detail not in reason:
            reason += f": {detail[:200]}"
        return reason, hint.format(wheel_hint=wheel_hint)
    if returncode == 92:
        return SCRIPT_ERRORS[92], "on the device: sudo apt-get install -y python3-venv"
    if returncode == 89:
        last = next((ln for ln in reversed(output) if "Error" in ln), "")
        return (
            SCRIPT_ERRORS[89] + (f": {last.strip()[:200]}" if last else ""),
            "pin versions that go together (--match-host pins the host's numpy and onnxruntime)",
        )
    last = next((ln.strip() for ln in reversed(output) if ln.strip().startswith("ERROR")), "")
    msg = SCRIPT_ERRORS.get(returncode or 0, f"setup failed with exit status {returncode}")
    return msg + (f": {last[:200]}" if last else ""), "see the pip output above"


def _setup_error(exc: DeviceCommandError, output: Sequence[str]) -> DeviceCommandError:
    if exc.returncode not in SCRIPT_ERRORS:
        return exc
    reason, hint = setup_failure(exc.returncode, output)
    return DeviceCommandError(
        f"{exc.host}: setup: {reason} (nothing was changed on the device)",
        returncode=exc.returncode,
        stderr_tail=exc.stderr_tail,
        host=exc.host,
        hint=hint,
    )


def host_pins() -> list[str]:
    """``numpy==X`` and ``onnxruntime==Y`` at this host's versions (``remote setup --match-host``)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for dist in ("numpy", "onnxruntime"):
        try:
            pins.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            raise RemoteError(
                f"--match-host: {dist} is not installed on this host", hint="pip install " + dist
            ) from None
    return pins


def _requirements(packages: Sequence[str], pip_args: Sequence[str], match_host: bool) -> list[str]:
    """The pip requirements to install, checked (and ``pip_args`` with them): with
    ``match_host`` bare numpy/onnxruntime become this host's pins; a versioned one wins."""
    packages = list(packages)
    for p in packages:
        if not p or p.startswith("-") or any(c.isspace() for c in p):
            raise ValueError(f"bad package requirement {p!r}")
    if match_host:
        packages = [p for p in packages if p.lower() not in ("numpy", "onnxruntime")]
        named = {re.split(r"[<>=!~\[; ]", p, maxsplit=1)[0].lower() for p in packages}
        packages += [pin for pin in host_pins() if pin.split("==")[0] not in named]
    for a in pip_args:
        if not isinstance(a, str) or not a or "\n" in a or "\0" in a:
            raise ValueError(f"bad pip argument {a!r}")
    return packages


def remote_setup(
    host: str | Host,
    *,
    ssh: SSHOptions | None = None,
    python: str | None = None,
    venv: str | None = None,
    packages: Sequence[str] = ("numpy", "onnxruntime"),
    pip_args: Sequence[str] = (),
    upgrade_pip: bool = False,
    remote_cache: str | None = None,
    on_progress: ProgressFn | None = None,
    match_host: bool = False,
) -> dict[str, Any]:
    """Make a venv on the device and pip install numpy and onnxruntime into it, atomically.

    The venv defaults to ``~/.cache/edgeattn/venv``, which :func:`run_remote` and
    :func:`remote_check` then use automatically when no ``remote_python`` is given. It is built at
    a temporary path and moved into place only once numpy and onnxruntime import in it: a failed
    setup changes nothing on the device (an earlier venv, or the system python3, keeps working)
    and raises :class:`DeviceCommandError` whose message and hint say what failed (TLS, no wheel
    for this platform/Python, disk full, no venv module, no network). ``packages`` are pip
    requirements (``onnxruntime==1.31.0``); ``match_host`` pins numpy and onnxruntime to this
    host's versions (a requirement in ``packages`` naming one of them wins); ``pip_args`` go to
    ``pip install`` (``--no-index``, ``--find-links=DIR``, ``--index-url=URL``...). Returns
    :func:`remote_check`'s report for the venv's python (with ``venv`` and ``python`` set).
    """
    h = parse_host(host)
    opts = ssh or SSHOptions()
    cache = remote_path(remote_cache, DEFAULT_CACHE)
    venv_dir = remote_path(venv, f"{cache}/{VENV_SUBDIR}")
    packages = _requirements(packages, pip_args, match_host)
    timeout = opts.timeout if opts.timeout is not None else 1800.0
    lines: list[str] = []
    header: list[str] = []

    def on_line(line: str) -> None:
        if _SETUP_DEVICE_RE.match(line):
            header.append(line)
        lines.append(line)
        del lines[:-400]
        say(on_progress, h.spec, line)

    with SSHConnection(h, opts) as conn:
        try:
            res = conn.run(
                sh_words(
                    SETUP_SH,
                    python or "",
                    venv_dir,
                    "1" if upgrade_pip else "0",
                    SETUP_FIXUP,
                    *pip_args,
                    *packages,
                ),
                timeout=timeout,
                on_stderr_line=on_line,
                what="setup",
            )
        except DeviceCommandError as exc:
            raise _setup_error(exc, header + lines) from None
    kv = dict(parse_kv_lines(res.stdout))
    vdir = kv.get("@venv", venv_dir)
    report = remote_check(
        h,
        ssh=opts,
        remote_python=f"{vdir}/bin/python3",
        remote_cache=remote_cache,
        on_progress=on_progress,
    )
    report["venv"] = vdir
    return report
