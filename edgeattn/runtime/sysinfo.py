"""Device fingerprint: what machine, CPU, memory, thermal state and software a figure came from.

The fingerprint also names what the per-round conditions sampler can read here and what it cannot
(``conditions_sources``) and the core clusters (``clusters``: big/little), see ``conditions.py``.

Every probe is guarded: anything unreadable is ``None``, never an exception. Standard library only;
numpy, onnxruntime and psutil are imported inside functions and reported as ``None`` when missing.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from typing import Any, Dict, List, Optional

from .conditions import read_text

_CPUFREQ = "/sys/devices/system/cpu/cpu0/cpufreq"
_STABLE_FIELDS = (
    "hostname",
    "machine",
    "cpu_model",
    "cores_physical",
    "cores_logical",
    "ram_total_mb",
    "onnxruntime_version",
)


def _cmd(args: List[str], timeout: float = 3.0) -> Optional[str]:
    """Output of a small system tool, or None if absent, failing or slow."""
    try:
        if shutil.which(args[0]) is None:
            return None
        res = subprocess.run(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
            universal_newlines=True,
        )
        out = res.stdout.strip()
        return out if res.returncode == 0 and out else None
    except Exception:
        return None


def _int(text: Optional[str]) -> Optional[int]:
    try:
        return int(str(text).strip())
    except Exception:
        return None


def _cpuinfo() -> Dict[str, str]:
    """First value of each key of /proc/cpuinfo (Linux)."""
    text = read_text("/proc/cpuinfo")
    out: Dict[str, str] = {}
    for line in (text or "").splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            k, v = k.strip(), v.strip()
            if k and v and k not in out:
                out[k] = v
    return out


def cpu_model() -> Optional[str]:
    try:
        info = _cpuinfo()
        for key in ("model name", "cpu model"):
            if info.get(key):
                return info[key]
        lscpu = _cmd(["lscpu"])  # aarch64 /proc/cpuinfo has no model name; lscpu decodes it
        for line in (lscpu or "").splitlines():
            if line.lower().startswith("model name:") and line.split(":", 1)[1].strip() != "-":
                return line.split(":", 1)[1].strip()
        for key in ("Hardware", "Model", "Processor"):
            if info.get(key):
                return info[key]
        if sys.platform == "darwin":
            return _cmd(["sysctl", "-n", "machdep.cpu.brand_string"])
        return platform.processor() or None
    except Exception:
        return None


#: what says a CPU does half-precision arithmetic natively: ARMv8.2-A FP16 (scalar ``fphp`` and
#: vector ``asimdhp`` in /proc/cpuinfo's Features), x86 AVX512-FP16
_FP16_FLAGS = (("fphp", "asimdhp"), ("avx512fp16",))


def fp16_arithmetic() -> Dict[str, Any]:
    """Whether this CPU reports native fp16 arithmetic: ``{"native": bool|None, "evidence": str}``.

    Without it an fp16 graph runs emulated (ONNX Runtime's CPU kernels cast most fp16 ops to
    float32), usually slower than float32. ``native: None`` when the platform does not say.
    """
    if sys.platform == "darwin":
        v = _cmd(["sysctl", "-n", "hw.optional.arm.FEAT_FP16"])
        if v is None or not v.strip():
            return {"native": None, "evidence": "sysctl hw.optional.arm.FEAT_FP16 not available"}
        return {
            "native": v.strip() == "1",
            "evidence": f"sysctl hw.optional.arm.FEAT_FP16={v.strip()}",
        }
    info = _cpuinfo()
    words = set((info.get("Features") or info.get("flags") or "").split())
    if not words:
        return {"native": None, "evidence": "no CPU feature list in /proc/cpuinfo"}
    for flags in _FP16_FLAGS:
        if all(f in words for f in flags):
            return {"native": True, "evidence": "cpu flags " + "+".join(flags)}
    return {"native": False, "evidence": "no fphp/asimdhp (ARM) or avx512fp16 (x86) flag"}


def cores_logical() -> Optional[int]:
    try:
        return os.cpu_count()
    except Exception:
        return None


def cores_usable() -> Optional[int]:
    try:
        return len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except Exception:
        return cores_logical()


def cores_physical() -> Optional[int]:
    try:
        import psutil  # type: ignore[import-not-found]

        n = psutil.cpu_count(logical=False)
        if n:
            return int(n)
    except Exception:
        pass
    try:
        if sys.platform == "darwin":
            return _int(_cmd(["sysctl", "-n", "hw.physicalcpu"]))
        base = "/sys/devices/system/cpu"
        pairs = set()
        for name in os.listdir(base):
            if not (name.startswith("cpu") and name[3:].isdigit()):
                continue
            topo = os.path.join(base, name, "topology")
            core = read_text(os.path.join(topo, "core_id"))
            pkg = read_text(os.path.join(topo, "physical_package_id"))
            if core is not None:
                pairs.add((pkg, core))
        return len(pairs) or None
    except Exception:
        return None


def _meminfo() -> Dict[str, int]:
    out: Dict[str, int] = {}
    for line in (read_text("/proc/meminfo") or "").splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])  # kB
    return out


def ram_mb() -> Dict[str, Optional[float]]:
    total = avail = None
    try:
        mi = _meminfo()
        if "MemTotal" in mi:
            total = mi["MemTotal"] / 1024.0
            avail = mi.get("MemAvailable", mi.get("MemFree", 0)) / 1024.0
        else:
            try:
                import psutil  # type: ignore[import-not-found]

                vm = psutil.virtual_memory()
                total, avail = vm.total / 2**20, vm.available / 2**20
            except Exception:
                if sys.platform == "darwin":
                    b = _int(_cmd(["sysctl", "-n", "hw.memsize"]))
                    total = b / 2**20 if b else None
    except Exception:
        pass
    return {
        "ram_total_mb": round(total, 1) if total is not None else None,
        "ram_available_mb": round(avail, 1) if avail is not None else None,
    }


def cpufreq() -> Dict[str, Any]:
    def mhz(name: str) -> Optional[float]:
        v = _int(read_text(os.path.join(_CPUFREQ, name)))
        return round(v / 1000.0, 1) if v is not None else None

    return {
        "governor": read_text(os.path.join(_CPUFREQ, "scaling_governor")),
        "cur_mhz": mhz("scaling_cur_freq"),
        "min_mhz": mhz("cpuinfo_min_freq"),
        "max_mhz": mhz("cpuinfo_max_freq"),
    }


def thermal_zones() -> Optional[Dict[str, float]]:
    """{zone type: °C} from /sys/class/thermal, or None."""
    try:
        base = "/sys/class/thermal"
        out: Dict[str, float] = {}
        for name in sorted(os.listdir(base)):
            if not name.startswith("thermal_zone"):
                continue
            t = _int(read_text(os.path.join(base, name, "temp")))
            if t is None:
                continue
            kind = read_text(os.path.join(base, name, "type")) or name
            key = kind if kind not in out else f"{kind}:{name}"
            out[key] = round(t / 1000.0, 1) if abs(t) > 200 else float(t)
        return out or None
    except Exception:
        return None


def temperature_c() -> Optional[float]:
    """CPU temperature: a cpu/soc zone if named so, else the hottest zone, else vcgencmd."""
    zones = thermal_zones()
    if zones:
        for key, val in zones.items():
            k = key.lower()
            if "cpu" in k or "soc" in k or "x86_pkg" in k:
                return val
        return max(zones.values())
    out = _cmd(["vcgencmd", "measure_temp"])  # temp=48.3'C
    if out and "=" in out:
        try:
            return float(out.split("=", 1)[1].split("'")[0])
        except Exception:
            return None
    return None


def throttled() -> Optional[str]:
    """Raspberry Pi ``vcgencmd get_throttled`` (e.g. ``0x0``), or None elsewhere."""
    out = _cmd(["vcgencmd", "get_throttled"])
    return out.split("=", 1)[1] if out and "=" in out else None


def device_model() -> Optional[str]:
    return read_text("/proc/device-tree/model") or (
        _cmd(["sysctl", "-n", "hw.model"]) if sys.platform == "darwin" else None
    )


EMULATED_MARKER = "/etc/edgeattn-emulated"
_BINFMT = "/proc/sys/fs/binfmt_misc"
_X86_CPUINFO_KEYS = ("vendor_id", "flags", "cpu family")


def emulation() -> Optional[Dict[str, str]]:
    """``{"emulated": "qemu-user", "hint": ...}`` when this "device" runs under an emulator.

    Hints, first found wins: the device's own marker file (edgeattn's emulated test boards write
    ``/etc/edgeattn-emulated``), a cpuinfo that names QEMU, an x86 cpuinfo on an ARM/RISC-V
    machine (qemu-user passes the host's through), or an enabled binfmt_misc handler
    ``qemu-<this machine>`` (nobody registers an emulator for the native architecture).
    """
    marker = read_text(EMULATED_MARKER)
    if marker is not None:
        first = (marker.splitlines() or ["qemu-user"])[0].strip()
        kind = first.split()[0] if first else "qemu-user"
        return {"emulated": kind, "hint": "marker {}: {}".format(EMULATED_MARKER, first)[:200]}
    machine = (platform.machine() or "").lower()
    text = read_text("/proc/cpuinfo") or ""
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k.strip() in ("Hardware", "model name", "cpu model") and "qemu" in v.lower():
            return {"emulated": "qemu", "hint": "cpuinfo {}: {}".format(k.strip(), v.strip())}
    if machine.startswith(("arm", "aarch64", "riscv")):
        keys = {ln.split(":", 1)[0].strip() for ln in text.splitlines() if ":" in ln}
        if any(k in keys for k in _X86_CPUINFO_KEYS):
            return {"emulated": "qemu-user", "hint": "x86 /proc/cpuinfo on " + machine}
    # only 64-bit names: an arm64 kernel runs 32-bit ARM natively, so qemu-arm proves nothing
    n = {"aarch64": "aarch64", "riscv64": "riscv64"}.get(machine)
    entry = read_text(os.path.join(_BINFMT, "qemu-" + n)) if n else None
    if entry and entry.splitlines()[0].strip() == "enabled":
        return {"emulated": "qemu-user", "hint": "binfmt_misc qemu-" + n + " is enabled"}
    return None


def jetson() -> Optional[Dict[str, Optional[str]]]:
    release = read_text("/etc/nv_tegra_release")
    if not release:
        return None
    return {
        "l4t": release.splitlines()[0] if release else None,
        "nvpmodel": _cmd(["nvpmodel", "-q"]),
    }


def gpu() -> Optional[str]:
    return _cmd(
        [
            "nvidia-smi",
            "--query-gpu=name,driver_version,memory.total",
            "--format=csv,noheader",
        ]
    )


def versions() -> Dict[str, Any]:
    out: Dict[str, Any] = {
        "numpy_version": None,
        "onnxruntime_version": None,
        "psutil_version": None,
        "providers": None,
        "ort_device": None,
    }
    try:
        import numpy

        out["numpy_version"] = numpy.__version__
    except Exception:
        pass
    try:
        import onnxruntime as ort

        out["onnxruntime_version"] = ort.__version__
        out["providers"] = list(ort.get_available_providers())
        out["ort_device"] = ort.get_device()
    except Exception:
        pass
    try:
        import psutil  # type: ignore[import-not-found]

        out["psutil_version"] = psutil.__version__
    except Exception:
        pass
    return out


def _safe(fn, default=None):
    try:
        return fn()
    except Exception:
        return default


def fingerprint_id(fp: Dict[str, Any]) -> str:
    """Stable id of a device+runtime: hash of fields that do not change between runs.

    RAM is rounded to 256 MiB so that kernel updates moving MemTotal by a few MB keep the id.
    """
    stable = {k: fp.get(k) for k in _STABLE_FIELDS}
    if fp.get("emulated"):  # only when set: real devices keep the ids they always had
        stable["emulated"] = fp["emulated"]
    if isinstance(stable["ram_total_mb"], (int, float)):
        stable["ram_total_mb"] = int(round(stable["ram_total_mb"] / 256.0)) * 256
    blob = json.dumps(stable, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def fingerprint() -> Dict[str, Any]:
    """The device fingerprint as one JSON-serialisable dict (never raises)."""
    fp: Dict[str, Any] = {
        "hostname": _safe(socket.gethostname),
        "os": _safe(platform.platform),
        "system": _safe(platform.system),
        "release": _safe(platform.release),
        "machine": _safe(platform.machine),
        "device_model": _safe(device_model),
        "cpu_model": _safe(cpu_model),
        "cores_physical": _safe(cores_physical),
        "cores_logical": _safe(cores_logical),
        "cores_usable": _safe(cores_usable),
        "cpufreq": _safe(cpufreq),
        "temperature_c": _safe(temperature_c),
        "thermal_zones": _safe(thermal_zones),
        "throttled": _safe(throttled),
        "jetson": _safe(jetson),
        "gpu": _safe(gpu),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
        },
    }
    emu = _safe(emulation)
    fp["emulated"] = emu["emulated"] if emu else None
    fp["emulated_hint"] = emu["hint"] if emu else None
    fp16 = _safe(fp16_arithmetic) or {}
    fp["fp16_native"] = fp16.get("native")
    fp["fp16_evidence"] = fp16.get("evidence")
    fp.update(_safe(ram_mb, {"ram_total_mb": None, "ram_available_mb": None}))
    fp.update(_safe(versions, {}))
    fp["conditions_sources"] = _safe(conditions_sources)
    fp["clusters"] = _safe(_clusters)
    fp["fingerprint_id"] = fingerprint_id(fp)
    return fp


def conditions_sources() -> Dict[str, Any]:
    """What the per-round sampler can read here (``conditions.Sampler.sources()``): cpufreq, the
    thermal zone, Pi throttle bits, the energy counter, and the names of what could not be read."""
    from . import conditions as cond

    with cond.Sampler() as s:
        return s.sources()


def _clusters() -> List[Dict[str, Any]]:
    from . import conditions as cond

    return cond.clusters()


def conditions() -> Dict[str, Any]:
    """Cheap snapshot of what drifts during a sweep (temperature, clock, throttling)."""
    freq = _safe(cpufreq, {}) or {}
    return {
        "temperature_c": _safe(temperature_c),
        "cpu_cur_mhz": freq.get("cur_mhz"),
        "governor": freq.get("governor"),
        "throttled": _safe(throttled),
    }
