"""Device conditions sampled around every paired round: clock, temperature, throttle bits, energy.

A :class:`Sampler` discovers once what this device lets a user read, keeps those files open and
re-reads them with ``os.pread(fd, 64, 0)`` (no open/close per sample: a sysfs attribute re-reads
its value at offset 0), so a sample costs a few microseconds:

* cpufreq ``scaling_cur_freq`` of each core in use, one per cpufreq policy (``related_cpus``
  share one clock; ``cpuinfo_max_freq`` read once);
* one thermal zone's ``temp`` (a cpu/soc/x86_pkg zone if one is named so, else the hottest);
* the Raspberry Pi firmware's throttle bits from ``soc:firmware/get_throttled`` (the kernel prints
  them as hex); without that file ``vcgencmd get_throttled`` is run at most once per try, never per
  round (a subprocess costs milliseconds);
* energy: powercap/RAPL ``energy_uj`` of the top-level zones (cumulative, wraps at
  ``max_energy_range_uj``), else hwmon power rails (``power<N>_input`` µW, or ``in<N>_input`` mV x
  ``curr<N>_input`` mA, the Jetson INA3221), integrated by the trapezoid rule between two readings.

Raspberry Pi throttle bits: 0 under-voltage, 1 arm frequency capped, 2 throttled, 3 soft temperature
limit (now); 16-19 the same "has occurred". A round is *marked* when any of bits 0-3 is set in the
samples around it, or when a core in use ran below ``freq_floor`` x its own ``cpuinfo_max_freq``
(x86: its nominal ``base_frequency``, as turbo ceilings are not all-core clocks).

Every path is read under ``$EDGEATTN_SYSFS_ROOT`` (default ``/``): a testing and diagnostic knob
that points the sampler at a fake tree (``tests/fake_sysfs.py``; the emulated boards use it too).
:func:`clusters` groups the cores (big.LITTLE) and :func:`parse_cpus` reads ``--cpus`` text.

Python 3.8, standard library only (it runs on the device).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

ROOT_ENV = "EDGEATTN_SYSFS_ROOT"
CPU_DIR = "sys/devices/system/cpu"
THERMAL_DIR = "sys/class/thermal"
PI_THROTTLE = "sys/devices/platform/soc/soc:firmware/get_throttled"
POWERCAP_DIR = "sys/class/powercap"
HWMON_DIR = "sys/class/hwmon"
CPUINFO = "proc/cpuinfo"

#: bits 0-3 of the Pi's get_throttled: the conditions that hold *now* (16-19: "has occurred")
THROTTLE_NOW = 0xF
PI_BITS = {
    0: "under-voltage",
    1: "arm frequency capped",
    2: "throttled",
    3: "soft temperature limit",
}
DEFAULT_FREQ_FLOOR = 0.9
#: hwmon rail labels that are a board's total input (summing every rail would count it twice)
TOTAL_RAILS = ("VDD_IN", "POM_5V_IN", "VIN", "VDD_5V_IN")
#: ARM "CPU part" ids of little cores (A35, A53, A55, A510, A520): names a cluster without cpufreq
LITTLE_PARTS = ("0xd04", "0xd03", "0xd05", "0xd46", "0xd80")
CPU_WORDS = ("big", "little", "all")
_READ = 64

Reading = Tuple[float, Any]  # (perf_counter time, raw energy value)


def sysfs_root() -> str:
    return os.environ.get(ROOT_ENV) or "/"


def _join(root: str, rel: str) -> str:
    return os.path.join(root, rel)


def read_text(path: str) -> Optional[str]:
    """A small sysfs/procfs file's text, stripped (NULs dropped), or None if unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().replace("\x00", "").strip()
    except Exception:
        return None


def _to_int(raw: Union[bytes, str, None], base: int = 10) -> Optional[int]:
    try:
        return int(raw.split()[0], base)  # type: ignore[union-attr]
    except Exception:
        return None


def _pread(fd: int) -> bytes:
    try:
        return os.pread(fd, _READ, 0)
    except OSError:  # a sensor that fails one read (EIO, EAGAIN) fails that value only
        return b""


def _pread_all(fds: Sequence[int]) -> List[bytes]:
    pread = os.pread
    try:
        return [pread(fd, _READ, 0) for fd in fds]
    except OSError:
        return [_pread(fd) for fd in fds]


class _File:
    """One file kept open and re-read with pread; ``value()`` is its parsed integer or None."""

    __slots__ = ("fd", "base")

    def __init__(self, fd: int, base: int) -> None:
        self.fd = fd
        self.base = base

    @classmethod
    def open(cls, path: str, base: int = 10) -> Optional[_File]:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        f = cls(fd, base)
        if f.value() is None:  # unreadable (EACCES on read, EIO from a sensor) or not a number
            f.close()
            return None
        return f

    def value(self) -> Optional[int]:
        try:
            return int(os.pread(self.fd, _READ, 0).split()[0], self.base)
        except Exception:
            return None

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def parse_throttle(text: Optional[str]) -> Optional[int]:
    """Pi throttle bits from ``get_throttled`` text: ``50005``, ``0x50005`` or ``throttled=0x5``
    (the kernel and vcgencmd both print hex)."""
    if text is None:
        return None
    t = text.strip()
    if "=" in t:
        t = t.split("=", 1)[1].strip()
    return _to_int(t, 16)


def decode_throttle(bits: int) -> Dict[str, List[str]]:
    """``{"now": [...], "occurred": [...]}``: the names of the Pi throttle bits that are set."""
    return {
        "now": [name for b, name in sorted(PI_BITS.items()) if bits >> b & 1],
        "occurred": [name for b, name in sorted(PI_BITS.items()) if bits >> (b + 16) & 1],
    }


def _temp_c(raw: Optional[int]) -> Optional[float]:
    if raw is None:
        return None
    return round(raw / 1000.0, 3) if abs(raw) > 200 else float(raw)


def _cpu_ids(root: str) -> List[int]:
    try:
        names = os.listdir(_join(root, CPU_DIR))
    except OSError:
        return []
    return sorted(int(n[3:]) for n in names if re.match(r"^cpu\d+$", n))


def usable_cpus() -> List[int]:
    """The cores this process may run on (its affinity), else all of ``os.cpu_count()``."""
    try:
        return sorted(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except Exception:
        return list(range(os.cpu_count() or 1))


def _cpufreq(root: str, cpu: int, name: str) -> str:
    return _join(root, "{}/cpu{}/cpufreq/{}".format(CPU_DIR, cpu, name))


def max_mhz(root: str, cpu: int) -> Optional[float]:
    khz = _to_int(read_text(_cpufreq(root, cpu, "cpuinfo_max_freq")))
    return khz / 1000.0 if khz else None


#: where the driver names a nominal frequency below a turbo/boost ceiling (which all cores under
#: load never reach), the frequency floor is a fraction of it: intel_pstate, amd-pstate
NOMINAL_FREQ = ("base_frequency", "amd_pstate_nominal_freq")


def ref_mhz(root: str, cpu: int) -> Optional[float]:
    """The MHz the frequency floor is a fraction of: the nominal (base) frequency where the driver
    names one, else ``cpuinfo_max_freq`` (ARM boards: no turbo above it)."""
    for name in NOMINAL_FREQ:
        khz = _to_int(read_text(_cpufreq(root, cpu, name)))
        if khz:
            return khz / 1000.0
    return max_mhz(root, cpu)


class _Energy:
    """One energy source: powercap counters (cumulative µJ) or hwmon rails (instant µW)."""

    def __init__(self, kind: str, name: str, files: List[Any], wrap_uj: Optional[int]) -> None:
        self.kind = kind  # powercap | hwmon-power | hwmon-vi
        self.name = name
        self.files = files  # powercap/hwmon-power: [_File]; hwmon-vi: [(mV _File, mA _File)]
        self.wrap_uj = wrap_uj
        self.wraps = [wrap_uj]  # per powercap counter

    def flat(self) -> List[_File]:
        """Every file read, in the order :meth:`value` takes their contents."""
        out: List[_File] = []
        for f in self.files:
            out.extend(f if isinstance(f, tuple) else (f,))
        return out

    def value(self, raws: Sequence[bytes]) -> Any:
        """From the files' contents (``flat()`` order): a tuple of counters (powercap, None
        where unreadable) or the summed power in µW (hwmon; None if a rail is unreadable)."""
        vals = [_to_int(r) for r in raws]
        if self.kind == "powercap":
            return tuple(vals)
        if None in vals:
            return None
        if self.kind == "hwmon-power":
            return float(sum(vals))  # type: ignore[arg-type]
        return float(sum(mv * ma for mv, ma in zip(vals[::2], vals[1::2])))  # type: ignore[operator]  # noqa: B905 (3.8)

    def read(self) -> Any:
        return self.value([_pread(f.fd) for f in self.flat()])

    def delta_uj(self, a: Reading, b: Reading) -> Optional[float]:
        """µJ spent between two readings (counter wrap handled; None when not readable)."""
        (ta, va), (tb, vb) = a, b
        if va is None or vb is None:
            return None
        if self.kind != "powercap":
            return (va + vb) / 2.0 * (tb - ta)  # µW x s = µJ, trapezoid rule
        total = 0
        for x, y, wrap in zip(va, vb, self.wraps):  # noqa: B905 (3.8)
            if x is None or y is None:
                return None
            if y >= x:
                total += y - x
            elif wrap:
                total += (y - x) % (wrap + 1)
            else:
                return None  # wrapped, and the range is unknown
        return float(total)

    def close(self) -> None:
        for f in self.files:
            for g in f if isinstance(f, tuple) else (f,):
                g.close()

    def describe(self) -> Dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "wrap_uj": self.wrap_uj}


def _powercap(root: str) -> Optional[_Energy]:
    base = _join(root, POWERCAP_DIR)
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return None
    zones = []
    for d in names:
        if d.count(":") != 1:  # intel-rapl:0 is a top-level zone; intel-rapl:0:0 its subzone
            continue
        f = _File.open(os.path.join(base, d, "energy_uj"))
        if f is None:
            continue
        label = read_text(os.path.join(base, d, "name")) or d
        wrap = _to_int(read_text(os.path.join(base, d, "max_energy_range_uj")))
        zones.append((label, f, wrap))
    if not zones:
        return None
    packages = [z for z in zones if z[0].startswith("package")]
    if packages:  # psys (the platform) includes the packages: never both
        for z in zones:
            if z not in packages:
                z[1].close()
        zones = packages
    else:
        for z in zones[1:]:
            z[1].close()
        zones = zones[:1]
    e = _Energy("powercap", "+".join(z[0] for z in zones), [z[1] for z in zones], zones[0][2])
    e.wraps = [z[2] for z in zones]
    return e


def _hwmon(root: str) -> Optional[_Energy]:
    base = _join(root, HWMON_DIR)
    try:
        names = sorted(os.listdir(base), key=lambda n: (len(n), n))
    except OSError:
        return None
    for d in names:
        path = os.path.join(base, d)
        dev = read_text(os.path.join(path, "name")) or d
        try:
            files = set(os.listdir(path))
        except OSError:
            continue
        chans: List[Tuple[str, str, Any]] = []  # (kind, label, files)
        for fname in sorted(files):
            m = re.match(r"^power(\d+)_input$", fname)
            if m:
                f = _File.open(os.path.join(path, fname))
                if f is not None:
                    lab = read_text(os.path.join(path, "power{}_label".format(m.group(1))))
                    chans.append(("hwmon-power", lab or "power" + m.group(1), f))
        if not chans:
            for fname in sorted(files):
                m = re.match(r"^curr(\d+)_input$", fname)
                if not m or "in{}_input".format(m.group(1)) not in files:
                    continue
                n = m.group(1)
                mv = _File.open(os.path.join(path, "in{}_input".format(n)))
                ma = _File.open(os.path.join(path, fname))
                if mv is None or ma is None:
                    for f in (mv, ma):
                        if f is not None:
                            f.close()
                    continue
                lab = read_text(os.path.join(path, "in{}_label".format(n))) or read_text(
                    os.path.join(path, "curr{}_label".format(n))
                )
                chans.append(("hwmon-vi", lab or "in" + n, (mv, ma)))
        if not chans:
            continue
        total = [c for c in chans if c[1] in TOTAL_RAILS][:1]
        keep = total or chans
        for c in chans:
            if c not in keep:
                for f in c[2] if isinstance(c[2], tuple) else (c[2],):
                    f.close()
        label = keep[0][1] if len(keep) == 1 else "+".join(c[1] for c in keep)
        return _Energy(keep[0][0], "{}:{}".format(dev, label), [c[2] for c in keep], None)
    return None


def _vcgencmd_throttled() -> Optional[int]:
    exe = shutil.which("vcgencmd")
    if exe is None:
        return None
    try:
        res = subprocess.run(
            [exe, "get_throttled"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            timeout=3,
            check=False,
            universal_newlines=True,
        )
    except Exception:
        return None
    return parse_throttle(res.stdout) if res.returncode == 0 else None


class Sampler:
    """What this device lets us read, opened once; :meth:`sample` re-reads it cheaply.

    ``cpus``: the cores in use (default: this process's affinity)."""

    def __init__(self, cpus: Optional[Sequence[int]] = None, root: Optional[str] = None) -> None:
        self.root = root or sysfs_root()
        self.cpus = sorted(cpus) if cpus is not None else usable_cpus()
        self.freq_cpus: List[int] = []
        self.ref_mhz: List[Optional[float]] = []  # per core of freq_cpus: see ref_mhz()
        self._freq: List[_File] = []
        self.zone: Optional[str] = None
        self._temp: Optional[_File] = None
        self.throttle: Optional[str] = None
        self._thr: Optional[_File] = None
        self.energy: Optional[_Energy] = None
        self.unreadable: List[str] = []
        self._discover()
        # one flat list of descriptors, read in one go: [cores..., zone?, throttle?, energy...]
        files = list(self._freq) + [f for f in (self._temp, self._thr) if f is not None]
        self._e0 = len(files)
        self._efiles = self.energy.flat() if self.energy is not None else []
        self._fds = [f.fd for f in files + self._efiles]
        self._efds = [f.fd for f in self._efiles]

    def _discover(self) -> None:
        shared = set()  # cores whose clock is read already: one core per cpufreq policy
        for c in self.cpus:
            if c in shared:
                continue
            f = _File.open(_cpufreq(self.root, c, "scaling_cur_freq")) or _File.open(
                _cpufreq(self.root, c, "cpuinfo_cur_freq")
            )
            if f is not None:
                self._freq.append(f)
                self.freq_cpus.append(c)
                self.ref_mhz.append(ref_mhz(self.root, c))
                related = read_text(_cpufreq(self.root, c, "related_cpus")) or ""
                shared.update(int(x) for x in related.split() if x.isdigit())
        if not self._freq:
            self.unreadable.append("cpufreq")
        self._discover_thermal()
        self._thr = _File.open(_join(self.root, PI_THROTTLE), base=16)
        if self._thr is not None:
            self.throttle = "sysfs"
        elif self.root == "/" and _vcgencmd_throttled() is not None:
            self.throttle = "vcgencmd"
        else:
            self.unreadable.append("throttle")
        self.energy = _powercap(self.root)
        if self.energy is None:
            self.unreadable.append("powercap")
            self.energy = _hwmon(self.root)
            if self.energy is None:
                self.unreadable.append("hwmon")

    def _discover_thermal(self) -> None:
        base = _join(self.root, THERMAL_DIR)
        try:
            names = sorted(
                (n for n in os.listdir(base) if n.startswith("thermal_zone")),
                key=lambda n: (len(n), n),
            )
        except OSError:
            names = []
        found = []
        for n in names:
            f = _File.open(os.path.join(base, n, "temp"))
            if f is not None:
                found.append((read_text(os.path.join(base, n, "type")) or n, f))
        pick = None
        for kind, f in found:
            k = kind.lower()
            if "cpu" in k or "soc" in k or "x86_pkg" in k:
                pick = (kind, f)
                break
        if pick is None and found:
            pick = max(found, key=lambda z: _temp_c(z[1].value()) or -1e9)
        for _kind, f in found:
            if pick is None or f is not pick[1]:
                f.close()
        if pick is None:
            self.unreadable.append("thermal")
        else:
            self.zone, self._temp = pick

    # ---------------------------------------------------------------------------- reading

    def sample(self) -> Dict[str, Any]:
        """``{"t": perf_counter s, "mhz": [MHz per core of freq_cpus] | None, "temp_c",
        "throttle_bits", "energy": (t, raw) | None}``; a value that cannot be read is None."""
        return self.decode(self.raw())

    def raw(self) -> Tuple[float, List[bytes]]:
        """Every file's bytes (one pread each) and the time: decode later, off the clock."""
        return time.perf_counter(), _pread_all(self._fds)

    def raw_energy(self) -> Tuple[float, List[bytes]]:
        return time.perf_counter(), _pread_all(self._efds)

    def decode(self, raw: Tuple[float, List[bytes]]) -> Dict[str, Any]:
        t, vals = raw
        nf = len(self._freq)
        mhz = None
        if nf:
            mhz = [v / 1000.0 if v is not None else None for v in map(_to_int, vals[:nf])]
        i = nf
        temp = thr = None
        if self._temp is not None:
            temp = _temp_c(_to_int(vals[i]))
            i += 1
        if self._thr is not None:
            thr = _to_int(vals[i], 16)
        return {
            "t": t,
            "mhz": mhz,
            "temp_c": temp,
            "throttle_bits": thr,
            "energy": self.decode_energy((t, vals[self._e0 :])) if self.energy else None,
        }

    def decode_energy(self, raw: Tuple[float, List[bytes]]) -> Optional[Reading]:
        if self.energy is None:
            return None
        return (raw[0], self.energy.value(raw[1]))

    def read_energy(self) -> Optional[Reading]:
        """One energy reading, decoded."""
        return self.decode_energy(self.raw_energy()) if self.energy is not None else None

    def energy_uj(self, a: Optional[Reading], b: Optional[Reading]) -> Optional[float]:
        if self.energy is None or a is None or b is None:
            return None
        return self.energy.delta_uj(a, b)

    def temperature_c(self) -> Optional[float]:
        return _temp_c(self._temp.value()) if self._temp is not None else None

    def throttle_slow(self) -> Optional[int]:
        """The throttle bits by ``vcgencmd`` (a subprocess: once per try, never per round)."""
        return _vcgencmd_throttled() if self.throttle == "vcgencmd" else None

    def sources(self) -> Dict[str, Any]:
        return {
            "cpufreq": bool(self._freq),
            "thermal": self.zone,
            "throttle": self.throttle,
            "energy": self.energy.describe() if self.energy else None,
            "unreadable": list(self.unreadable),
        }

    def close(self) -> None:
        for f in self._freq:
            f.close()
        for f in (self._temp, self._thr):
            if f is not None:
                f.close()
        if self.energy is not None:
            self.energy.close()
        self._freq, self._temp, self._thr = [], None, None
        self._fds, self._efds, self.energy = [], [], None

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# --------------------------------------------------------------------------- paired rounds


def judge(
    before: Dict[str, Any],
    after: Dict[str, Any],
    ref_mhz_by_core: Sequence[Optional[float]],
    freq_floor: float,
    t0: float,
) -> Dict[str, Any]:
    """One round's conditions entry from the samples taken before and after it."""
    temps = [s["temp_c"] for s in (before, after) if s["temp_c"] is not None]
    bits = None
    for s in (before, after):
        if s["throttle_bits"] is not None:
            bits = (bits or 0) | s["throttle_bits"]
    why = []
    if bits is not None and bits & THROTTLE_NOW:
        why.append("throttled (pi bits {:#x})".format(bits))
    mhz_min = None
    if before["mhz"] is not None and after["mhz"] is not None:
        worst = None  # the core furthest below the floor, as (cur/max, cur, max, index)
        for i, top in enumerate(ref_mhz_by_core):
            cur = [v for v in (before["mhz"][i], after["mhz"][i]) if v is not None]
            if not cur:
                continue
            low = min(cur)
            mhz_min = low if mhz_min is None else min(mhz_min, low)
            if top and freq_floor > 0 and low < freq_floor * top:
                if worst is None or low / top < worst[0]:
                    worst = (low / top, low, top, i)
        if worst is not None:
            why.append(
                "below frequency floor {:g} MHz < {:g} x {:g} MHz".format(
                    worst[1], freq_floor, worst[2]
                )
            )
    return {
        "t_s": round(before["t"] - t0, 6),
        "t_end_s": round(after["t"] - t0, 6),
        "temp_c": max(temps) if temps else None,
        "mhz_min": round(mhz_min, 1) if mhz_min is not None else None,
        "throttle_bits": bits,
        "marked": bool(why),
        "why": "; ".join(why) if why else None,
    }


class RoundLog:
    """Samples around the rounds of one paired group and the energy of each member run.

    ``start_try()`` before a try's first round, ``member_done(i)`` after each member run (only
    when :attr:`energy`), ``end_round(order)`` after each round, ``end_try()`` after the try. The
    sample after round r is the one before round r+1, and the reading after a round's last member
    is that sample, so a round costs one sample and k-1 energy reads: bytes kept as read, decoded
    and judged by ``end_try()``, off the clock."""

    def __init__(self, sampler: Sampler, members: int, freq_floor: float) -> None:
        self.sampler = sampler
        self.k = members
        self.freq_floor = freq_floor
        self.energy = sampler.energy is not None
        self.t0: Optional[float] = None
        self.t0_unix: Optional[float] = None
        self.entries: List[Dict[str, Any]] = []
        self.round_energy: List[List[Optional[float]]] = []
        self.overhead_s: List[float] = []
        self._before: Any = None
        self._row: List[Any] = []  # energy reads after members (run order), this round
        self._raw: List[Any] = []  # (before, after, order, row) per round, this try
        self._spent = 0.0

    def start_try(self) -> None:
        self._before = self.sampler.raw()
        if self.t0 is None:
            self.t0, self.t0_unix = self._before[0], time.time()
        self._row, self._raw, self._spent = [], [], 0.0

    def member_done(self, i: int) -> None:
        if len(self._row) < self.k - 1:  # after the last member: end_round's sample
            t = time.perf_counter()
            self._row.append(self.sampler.raw_energy())
            self._spent += time.perf_counter() - t

    def end_round(self, order: List[int]) -> None:
        t = time.perf_counter()
        after = self.sampler.raw()
        self._raw.append((self._before, after, order, self._row))
        self._before, self._row = after, []
        self.overhead_s.append(self._spent + time.perf_counter() - t)
        self._spent = 0.0

    def end_try(self) -> None:
        """Decode and judge this try's rounds."""
        s = self.sampler
        t0 = self.t0 or 0.0
        prev_raw, prev = None, None
        for before, after, order, row in self._raw:
            b = prev if before is prev_raw else s.decode(before)
            a = s.decode(after)
            prev_raw, prev = after, a
            self.entries.append(judge(b, a, s.ref_mhz, self.freq_floor, t0))
            if not self.energy:
                continue
            spent: List[Optional[float]] = [None] * self.k
            e = b["energy"]
            for j, i in enumerate(order):
                cur = s.decode_energy(row[j]) if j < len(row) else a["energy"]
                v = s.energy_uj(e, cur)
                spent[i] = round(v, 1) if v is not None else None
                e = cur
            self.round_energy.append(spent)
        self._raw = []

    def rounds(self) -> List[Dict[str, Any]]:
        """One entry per round, aligned with the group's ``rounds_ms``."""
        return self.entries

    def block(self) -> Dict[str, Any]:
        """The fields this adds to a paired record's ``paired`` block."""
        out: Dict[str, Any] = {
            "round_conditions": self.rounds(),
            "conditions_overhead_us": self.overhead_us(),
            "conditions_sources": self.sampler.sources(),
            "conditions_t0_unix": round(self.t0_unix, 6) if self.t0_unix is not None else None,
        }
        if self.energy:
            out["round_energy_uj"] = self.round_energy
        return out

    def overhead_us(self) -> Optional[float]:
        if not self.overhead_s:
            return None
        xs = sorted(self.overhead_s)
        n = len(xs)
        med = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2.0
        return round(med * 1e6, 2)


def cool_down(spec: Optional[Dict[str, float]], sampler: Sampler, start_c: Optional[float]) -> Any:
    """Wait as the group's ``cooldown`` asks; return (seconds waited, note or None)."""
    if not spec:
        return 0.0, None
    t = time.perf_counter()
    if "seconds" in spec:
        time.sleep(float(spec["seconds"]))
        return round(time.perf_counter() - t, 3), None
    within, max_s = float(spec["until_within_c"]), float(spec["max_s"])
    if start_c is None or sampler.temperature_c() is None:
        time.sleep(max_s)
        return round(time.perf_counter() - t, 3), "no temperature readable: waited max_s"
    while True:
        now = sampler.temperature_c()
        waited = time.perf_counter() - t
        if now is not None and now <= start_c + within:
            return round(waited, 3), None
        if waited >= max_s:
            return round(waited, 3), "still {:g} C above the start after max_s".format(
                round((now or 0) - start_c, 1)
            )
        time.sleep(min(0.5, max(0.0, max_s - waited)))


# ---------------------------------------------------------------------------------- clusters


def cpu_parts(root: Optional[str] = None) -> Dict[int, str]:
    """{processor: "CPU part"} from /proc/cpuinfo (ARM); empty where it names none."""
    text = read_text(_join(root or sysfs_root(), CPUINFO)) or ""
    out: Dict[int, str] = {}
    proc = None
    for line in text.splitlines():
        k, _, v = line.partition(":")
        k, v = k.strip(), v.strip()
        if k == "processor" and v.isdigit():
            proc = int(v)
        elif k == "CPU part" and proc is not None:
            out[proc] = v.lower()
    return out


def clusters(root: Optional[str] = None) -> List[Dict[str, Any]]:
    """The core clusters: by "CPU part" when /proc/cpuinfo names more than one (one big cluster
    may have cores at two max frequencies: RK3588's A76 at 2256 and 2400 MHz), else by
    ``cpuinfo_max_freq``; one group is one cluster named ``all``. Names: ``little`` (slowest),
    ``big`` (fastest), ``cluster<k>`` between them or where nothing says which is which."""
    root = root or sysfs_root()
    parts = cpu_parts(root)
    cpus = _cpu_ids(root) or sorted(parts)
    if not cpus:
        return []
    mhz = {c: max_mhz(root, c) for c in cpus}
    if len({parts.get(c) for c in cpus}) > 1 and all(c in parts for c in cpus):
        key = {c: parts[c] for c in cpus}
    elif len(set(mhz.values())) > 1 and None not in mhz.values():
        key = {c: mhz[c] for c in cpus}
    else:
        key = {c: 0 for c in cpus}
    groups: Dict[Any, List[int]] = {}
    for c in cpus:
        groups.setdefault(key[c], []).append(c)
    out = []
    for members in groups.values():
        fs = [mhz[c] for c in members if mhz[c] is not None]
        ps = {parts.get(c) for c in members}
        out.append(
            {
                "name": "",
                "cpus": members,
                "max_mhz": max(fs) if fs else None,
                "part": ps.pop() if len(ps) == 1 else None,
            }
        )
    if len(out) == 1:
        out[0]["name"] = "all"
        return out
    if all(g["max_mhz"] is not None for g in out):
        out.sort(key=lambda g: (g["max_mhz"], g["cpus"][0]))
        ordered = len({g["max_mhz"] for g in out}) == len(out)
    else:
        little = [g for g in out if g["part"] in LITTLE_PARTS]
        out.sort(key=lambda g: (g["part"] not in LITTLE_PARTS, g["cpus"][0]))
        ordered = len(little) == 1 and len(out) == 2
    for i, g in enumerate(out):
        g["name"] = "cluster{}".format(i)
    if ordered:
        out[0]["name"], out[-1]["name"] = "little", "big"
    return out


def cpu_list_text(cpus: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5"."""
    out: List[str] = []
    xs = sorted(set(cpus))
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        out.append(str(xs[i]) if i == j else "{}-{}".format(xs[i], xs[j]))
        i = j + 1
    return ",".join(out)


_VALID = "core numbers like 0 or 0,2-3, or big, little, all"


def parse_cpus(value: Any, root: Optional[str] = None) -> List[int]:
    """Cores from ``"0"``, ``"0,2-3"``, ``[0, 2]``, ``"big"``, ``"little"`` or ``"all"`` (the
    words read :func:`clusters`). ``ValueError`` names the value and what is valid."""
    if isinstance(value, list):
        if not value or not all(isinstance(c, int) and not isinstance(c, bool) for c in value):
            raise ValueError("cpus {!r} is invalid; expected {}".format(value, _VALID))
        if any(c < 0 for c in value):
            raise ValueError("cpus {!r} is invalid; core numbers are >= 0".format(value))
        return sorted(set(value))
    if not isinstance(value, str):
        raise ValueError("cpus {!r} is invalid; expected {}".format(value, _VALID))
    text = value.strip().lower()
    if text in CPU_WORDS:
        groups = clusters(root)
        if text == "all":
            every = sorted(c for g in groups for c in g["cpus"])
            return every or usable_cpus()
        for g in groups:
            if g["name"] == text:
                return list(g["cpus"])
        have = (
            ", ".join("{} ({})".format(g["name"], cpu_list_text(g["cpus"])) for g in groups)
            or "no cpu list readable"
        )
        raise ValueError(
            "cpus {!r} is invalid: this device has no {} cluster (its clusters: {}); valid: {}".format(
                value, text, have, "core numbers like 0 or 0,2-3, or all"
            )
        )
    out: List[int] = []
    for item in text.split(","):
        m = re.match(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$", item)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise ValueError("cpus {!r} is invalid; expected {}".format(value, _VALID))
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        out.extend(range(lo, hi + 1))
    return sorted(set(out))


# ------------------------------------------------------------------ how the host says it (text)
def sources_text(src: Optional[Dict[str, Any]]) -> Optional[str]:
    """'readable: thermal (cpu-thermal), cpufreq; not readable: throttle bits, energy (no
    powercap, hwmon)'."""
    if not src:
        return None
    yes, no = [], []
    if src.get("thermal"):
        yes.append(f"thermal ({src['thermal']})")
    else:
        no.append("thermal")
    (yes if src.get("cpufreq") else no).append("cpufreq")
    if src.get("throttle"):
        yes.append(f"throttle bits ({src['throttle']})")
    else:
        no.append("throttle bits")
    e = src.get("energy")
    missing = [str(x) for x in src.get("unreadable") or []]
    if e:
        yes.append(f"energy ({e.get('kind')} {e.get('name')})")
    else:
        looked = [x for x in missing if x in ("powercap", "hwmon", "pmic")]
        no.append(f"energy (no {', '.join(looked)})" if looked else "energy")
    known = {"thermal", "cpufreq", "throttle", "powercap", "hwmon", "pmic", "energy"}
    no += [x for x in missing if x not in known]
    text = "readable: " + (", ".join(yes) if yes else "none")
    return text + ("; not readable: " + ", ".join(no) if no else "")


def clusters_text(clusters: Optional[Sequence[Dict[str, Any]]]) -> Optional[str]:
    """'cpus 0-3 little (1800 MHz), 4-7 big (2400 MHz)'; one uniform cluster: 'cpus 0-3 all
    (1500 MHz, one cluster)'; None when unknown."""
    if not clusters:
        return None
    parts = []
    for c in clusters:
        bits = [f"{c['max_mhz']:.0f} MHz"] if c.get("max_mhz") else []
        if c.get("part"):
            bits.append(f"part {c['part']}")
        if len(clusters) == 1:
            bits.append("one cluster")
        extra = f" ({', '.join(bits)})" if bits else ""
        parts.append(f"{cpu_list_text(c.get('cpus') or [])} {c.get('name')}{extra}")
    return "cpus " + ", ".join(parts)
