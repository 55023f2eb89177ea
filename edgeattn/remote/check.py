"""Preflight one device (:func:`remote_check`): reachable? python, numpy, onnxruntime, providers,
CPU, disk; what blocks a measurement there and the commands that fix it (:func:`fix_commands`)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from edgeattn.remote.bundle import zipapp_bytes
from edgeattn.remote.device_scripts import (
    CHECK_SH,
    DEFAULT_CACHE,
    PROBE_SH,
    PUT_SH,
    PY_PROBE,
    parse_kv_lines,
    remote_path,
)
from edgeattn.remote.run import ProgressFn, say
from edgeattn.remote.ssh import (
    DeviceCommandError,
    Host,
    SSHConnection,
    SSHError,
    SSHOptions,
    parse_host,
    sh_words,
)

MIN_PYTHON = (3, 8)
LOW_DISK_MB = 200.0


def remote_check(
    host: str | Host,
    *,
    ssh: SSHOptions | None = None,
    remote_python: str | None = None,
    remote_cache: str | None = None,
    on_progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Preflight one device: reachable? python, numpy, onnxruntime, providers, CPU, disk.

    Sends the runtime zipapp (cached) and runs its ``check`` and ``env``; an inline probe that runs
    on any Python reports what it can when the zipapp cannot start. ``problems`` lists what blocks
    a measurement and ``fixes`` the commands that fix it on that device. Transport failures do not
    raise: ``reachable`` is False and ``error`` says why.
    """
    h = parse_host(host)
    opts = ssh or SSHOptions()
    cache = remote_path(remote_cache, DEFAULT_CACHE)
    report: dict[str, Any] = {
        "host": h.spec,
        "target": None,
        "reachable": False,
        "ok": False,
        "problems": [],
        "fixes": [],
        "notes": [],
    }
    try:
        with SSHConnection(h, opts) as conn:
            report["target"] = conn.target()
            t0 = time.monotonic()
            pyz, sha = zipapp_bytes()
            pyz_name = f"runtime-{sha}.pyz"
            res = conn.run(
                sh_words(PROBE_SH, cache, "", "", remote_python or "", pyz_name), what="probe"
            )
            report["reachable"] = True
            report["connect_s"] = round(time.monotonic() - t0, 3)
            kv = dict(parse_kv_lines(res.stdout))
            abs_cache = kv.get("cache", cache)
            if "missing" in kv:
                say(on_progress, h.spec, "sending the runtime")
                conn.run(sh_words(PUT_SH, abs_cache, pyz_name), stdin=pyz, what="upload")
            res = conn.run(
                sh_words(
                    CHECK_SH, abs_cache, remote_python or "", f"{abs_cache}/{pyz_name}", PY_PROBE
                ),
                what="check",
            )
    except SSHError as exc:
        report["error"] = str(exc)
        report["error_kind"] = exc.kind
        report["problems"].append(str(exc))
        if exc.hint:
            report["fixes"].append(exc.hint)
        return report
    except DeviceCommandError as exc:
        report["error"] = str(exc)
        report["problems"].append(str(exc))
        return report
    _interpret_check(report, res.stdout.decode("utf-8", errors="replace"), h.spec)
    return report


def _interpret_check(report: dict[str, Any], text: str, host: str) -> None:
    """Fill ``report`` from the check script's ``@``-lines: versions, CPU, then problems and fixes."""
    lines: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("@"):
            k, _, v = line.partition(" ")
            lines[k[1:]] = v
    report["python"] = lines.get("python")
    report["machine"] = lines.get("machine") or None
    report["os"] = lines.get("os") or None
    df = lines.get("df", "").split()
    if len(df) >= 4 and df[3].isdigit():
        report["disk_free_mb"] = round(int(df[3]) / 1024, 1)
    if "nopython" in lines:
        report["python_version"] = None
        report["problems"].append(f"{report['python']!r} not found on the device")
        report["fixes"] += fix_commands(report, host, python_missing=True)
        return
    _read_probe(report, _json_or_none(lines.get("probe", "")))
    check = _read_runtime(report, lines)
    _find_problems(report, lines.get("probe", ""), check)
    report["fixes"] += fix_commands(report, host)
    report["ok"] = not report["problems"]


def _read_probe(report: dict[str, Any], probe: dict[str, Any] | None) -> None:
    """The inline probe's versions (it runs on any Python, even where the zipapp cannot)."""
    report["probe"] = probe
    if probe:
        report["python_version"] = probe.get("version")
        report["numpy_version"] = probe.get("numpy") if probe.get("numpy") is not True else "?"
        report["onnxruntime_version"] = (
            probe.get("onnxruntime") if probe.get("onnxruntime") is not True else "?"
        )
        report["machine"] = report["machine"] or probe.get("machine")


def _read_runtime(report: dict[str, Any], lines: Mapping[str, str]) -> dict[str, Any] | None:
    """The zipapp's ``check`` and ``env`` answers (they win over the probe's); returns ``check``."""
    check_line = lines.get("check")
    check = env = None
    if check_line is not None:
        rc_text, _, body = check_line.partition(" ")
        check = _json_or_none(body) if rc_text == "0" else None
        if check is None:
            report["runtime_error"] = body.strip()[-300:] or f"exit status {rc_text}"
        env = _json_or_none(lines.get("env", ""))
    report["check"] = check
    report["env"] = env
    if check:
        report["python_version"] = (check.get("python") or {}).get(
            "version", report.get("python_version")
        )
        report["numpy_version"] = check.get("numpy_version")
        report["onnxruntime_version"] = check.get("onnxruntime_version")
        report["providers"] = check.get("providers")
        cpu = dict(check.get("cpu") or {})
        if check.get("disk_free_mb") is not None:
            report["disk_free_mb"] = check["disk_free_mb"]
    else:
        cpu = {"machine": report.get("machine")}
    if env:
        _read_env(report, env, cpu)
    report["cpu"] = cpu
    return check


def _read_env(report: dict[str, Any], env: Mapping[str, Any], cpu: dict[str, Any]) -> None:
    """The device's conditions (``env``): CPU frequency and heat, fp16, emulation, as notes."""
    freq = env.get("cpufreq") or {}
    cpu.setdefault("model", env.get("cpu_model"))
    cpu["governor"] = freq.get("governor")
    cpu["max_mhz"] = freq.get("max_mhz")
    cpu["temperature_c"] = env.get("temperature_c")
    cpu["throttled"] = env.get("throttled")
    report["device_model"] = env.get("device_model")
    report["emulated"] = env.get("emulated")
    report["fp16_native"] = env.get("fp16_native")
    _read_conditions(report, env)
    if env.get("fp16_native") is False:
        report["notes"].append(
            "fp16 runs emulated on this CPU (no native half-precision arithmetic: "
            f"{env.get('fp16_evidence')}); expect export --precision fp16 to be slower than "
            "fp32 here; int8 is the CPU precision"
        )
    elif env.get("fp16_native"):
        report["notes"].append(f"native fp16 arithmetic ({env.get('fp16_evidence')})")
    if env.get("emulated"):
        report["notes"].append(
            f"this device is emulated ({env['emulated']}: {env.get('emulated_hint') or '?'}): "
            "it proves the device path works; its timings are not device speed"
        )


def _read_conditions(report: dict[str, Any], env: Mapping[str, Any]) -> None:
    """The clusters and the condition sources the device's fingerprint names, as notes
    ('cpus 0-3 little (1800 MHz), 4-7 big (2400 MHz)'; 'readable: thermal, cpufreq; ...')."""
    from edgeattn.runtime.conditions import clusters_text, sources_text

    report["clusters"] = env.get("clusters")
    report["conditions_sources"] = env.get("conditions_sources")
    text = clusters_text(env.get("clusters"))
    if text:
        report["notes"].append(text)
    text = sources_text(env.get("conditions_sources"))
    if text:
        report["notes"].append("conditions " + text)


def _find_problems(report: dict[str, Any], probe_line: str, check: Any) -> None:
    """What blocks a measurement (``problems``) and what only deserves a word (``notes``)."""
    pv = report.get("python_version")
    if pv is None:
        report["problems"].append(
            f"{report['python']!r} could not run a Python probe: {probe_line[-200:]}"
        )
    elif _version_tuple(pv) < MIN_PYTHON:
        report["problems"].append(f"python {pv} is older than {'.'.join(map(str, MIN_PYTHON))}")
    elif not check:
        report["problems"].append(
            f"the runtime zipapp did not start: {report.get('runtime_error', 'no output')}"
        )
    if pv is not None:
        if not report.get("numpy_version"):
            report["problems"].append("numpy is not installed for this python")
        if not report.get("onnxruntime_version"):
            report["problems"].append("onnxruntime is not installed for this python")
    if (
        check
        and report.get("providers") is not None
        and "CPUExecutionProvider" not in report["providers"]
    ):
        report["problems"].append("onnxruntime has no CPUExecutionProvider")
    free = report.get("disk_free_mb")
    if free is not None and free < LOW_DISK_MB:
        report["problems"].append(f"only {free:.0f} MB free on the device's cache disk")
    gov = (report.get("cpu") or {}).get("governor")
    if gov and gov != "performance":
        report["notes"].append(
            f"CPU governor is {gov!r}: for steadier timings set 'performance' "
            "(echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor)"
        )


def _json_or_none(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text`` (stray output around it is ignored), or None."""
    text = text or ""
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start >= 0:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if isinstance(obj, dict):
            return obj
        start = text.find("{", start + 1)
    return None


def _version_tuple(v: str) -> tuple[int, ...]:
    parts = []
    for x in str(v).split(".")[:3]:
        digits = "".join(ch for ch in x if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def fix_commands(report: Mapping[str, Any], host: str, python_missing: bool = False) -> list[str]:
    """Commands that fix what ``report`` says is missing, for that device's architecture."""
    venv = "~/.cache/edgeattn/venv"
    fixes: list[str] = []
    if python_missing:
        return [
            "on the device: sudo apt-get install -y python3 python3-venv python3-pip",
            "or point at another interpreter: --remote-python /path/to/python3",
        ]
    pv = report.get("python_version")
    if pv is not None and _version_tuple(pv) < MIN_PYTHON:
        fixes.append(
            f"the runtime needs Python >= 3.8 (found {pv}): install a newer python3 on the device "
            "and pass --remote-python /path/to/python3.8+"
        )
        return fixes
    if pv is None:
        return fixes
    need = [m for m in ("numpy", "onnxruntime") if not report.get(f"{m}_version")]
    if not need:
        return fixes
    machine = str(report.get("machine") or "").lower()
    probe = report.get("probe") or {}
    py = report.get("python") or "python3"
    if (
        machine.startswith(("armv7", "armv6", "arm"))
        and machine != "arm64"
        and "onnxruntime" in need
    ):
        fixes.append(
            f"onnxruntime has no wheels on PyPI for 32-bit ARM ({machine}): install the 64-bit "
            "(aarch64) Raspberry Pi OS, or build onnxruntime from source for armv7l"
        )
        if "numpy" in need:
            fixes.append("on the device: sudo apt-get install -y python3-numpy")
        return fixes
    pkgs = " ".join(need)
    fixes.append(f"edgeattn remote setup {host}   (makes {venv} and pip installs {pkgs} there)")
    if probe.get("venv") is None or probe.get("ensurepip") is None:
        fixes.append("on the device first: sudo apt-get install -y python3-venv")
    fixes.append(
        f"or by hand on the device: python3 -m venv {venv} && {venv}/bin/python -m pip install {pkgs}"
    )
    if not probe.get("externally_managed") and not probe.get("in_venv"):
        fixes.append(f"or: {py} -m pip install --user {pkgs}")
    elif probe.get("in_venv"):
        fixes.append(f"or: {py} -m pip install {pkgs}")
    return fixes
