"""Fake, scriptable sysfs trees for the device-conditions code (``edgeattn.runtime.conditions``
reads every path under ``$EDGEATTN_SYSFS_ROOT``): cpufreq per core, thermal zones, the Raspberry Pi
firmware's ``get_throttled``, powercap counters that wrap, hwmon rails (Jetson INA3221), and a
``/proc/cpuinfo`` with CPU parts (big.LITTLE).

    fake = FakeSysfs.pi4(tmp_path / "pi")      # or rk3588, jetson_orin, x86_rapl, two_core
    monkeypatch.setenv(*fake.env_item())
    fake.set_temp(0, 85.0); fake.set_throttle(0x50005)

Values are written *in place* at a fixed width (space padded, like nothing in a real sysfs but
harmless to a parser that splits): the sampler keeps each file open and re-reads it with
``pread``, so a write-and-rename would leave it reading the old file forever, and a truncate would
let it read an empty one. :meth:`FakeSysfs.script` writes the same changes from a POSIX shell
script (``printf ... 1<> file``, no truncation) for a board that has no Python to spare.

Standard library only, importable as ``from fake_sysfs import ...`` (tests/ is on the path) or
``from tests.fake_sysfs import ...``.
"""

from __future__ import annotations

import os
import shlex
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Optional, Union

ROOT_ENV = "EDGEATTN_SYSFS_ROOT"
WIDTH = 23  # every value file holds WIDTH characters and a newline

CPU = "sys/devices/system/cpu"
THERMAL = "sys/class/thermal"
PI_THROTTLE = "sys/devices/platform/soc/soc:firmware/get_throttled"
POWERCAP = "sys/class/powercap"
HWMON = "sys/class/hwmon"
CPUINFO = "proc/cpuinfo"

#: ARM CPU part ids the presets use
A55, A72, A76, A78AE = "0xd05", "0xd08", "0xd0b", "0xd42"

Value = Union[int, float, str]


def _fixed(value: Value) -> bytes:
    text = str(value)
    if len(text) > WIDTH:
        raise ValueError(f"{text!r} is longer than the fake tree's {WIDTH}-character values")
    return (text.ljust(WIDTH) + "\n").encode("ascii")


class FakeSysfs:
    """A fake tree under ``root``; every setter rewrites one file in place."""

    def __init__(self, root: Union[str, Path]) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.wraps: dict[str, int] = {}

    # ------------------------------------------------------------------------------ plumbing

    def env_item(self) -> tuple[str, str]:
        return ROOT_ENV, str(self.root)

    def env(self) -> dict[str, str]:
        return {ROOT_ENV: str(self.root)}

    def path(self, rel: str) -> Path:
        return self.root / rel

    def write(self, rel: str, value: Value) -> None:
        """Write ``value`` into ``rel`` in place (created if missing)."""
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, _fixed(value), 0)
        finally:
            os.close(fd)

    def read(self, rel: str) -> str:
        return self.path(rel).read_text().strip()

    def text(self, rel: str, content: str) -> None:
        """A file written once (names, labels, cpuinfo): plain text, not fixed width."""
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)

    # --------------------------------------------------------------------------------- cpufreq

    @staticmethod
    def freq_path(cpu: int, name: str = "scaling_cur_freq") -> str:
        return f"{CPU}/cpu{cpu}/cpufreq/{name}"

    def cpu(
        self,
        n: int,
        max_mhz: float,
        cur_mhz: Optional[float] = None,
        min_mhz: float = 600.0,
        governor: str = "schedutil",
    ) -> None:
        self.write(self.freq_path(n, "cpuinfo_max_freq"), int(max_mhz * 1000))
        self.write(self.freq_path(n, "cpuinfo_min_freq"), int(min_mhz * 1000))
        self.write(self.freq_path(n, "scaling_governor"), governor)
        self.set_mhz(n, max_mhz if cur_mhz is None else cur_mhz)

    def policy(self, cpus: Sequence[int]) -> None:
        """Cores that share one clock (one cpufreq policy): ``related_cpus`` of each."""
        for n in cpus:
            self.text(self.freq_path(n, "related_cpus"), " ".join(map(str, cpus)) + "\n")

    def set_mhz(self, n: int, mhz: float) -> None:
        self.write(self.freq_path(n), int(mhz * 1000))

    def bare_cpu(self, n: int) -> None:
        """A core with no cpufreq (a VM, a board without a driver)."""
        self.path(f"{CPU}/cpu{n}").mkdir(parents=True, exist_ok=True)

    # --------------------------------------------------------------------------------- thermal

    @staticmethod
    def temp_path(i: int) -> str:
        return f"{THERMAL}/thermal_zone{i}/temp"

    def zone(self, i: int, kind: str = "cpu-thermal", temp_c: float = 45.0) -> None:
        self.text(f"{THERMAL}/thermal_zone{i}/type", kind + "\n")
        self.set_temp(i, temp_c)

    def set_temp(self, i: int, temp_c: float) -> None:
        self.write(self.temp_path(i), int(round(temp_c * 1000)))

    # -------------------------------------------------------------------------------- Pi bits

    def pi_throttle(self, bits: int = 0) -> None:
        self.set_throttle(bits)

    def set_throttle(self, bits: int) -> None:
        self.write(PI_THROTTLE, f"{bits:x}")  # the kernel prints "%x"

    # -------------------------------------------------------------------------------- powercap

    @staticmethod
    def energy_path(zone: str) -> str:
        return f"{POWERCAP}/{zone}/energy_uj"

    def powercap(
        self,
        zone: str = "intel-rapl:0",
        name: str = "package-0",
        energy_uj: int = 0,
        max_range_uj: int = 262143328850,
    ) -> None:
        self.text(f"{POWERCAP}/{zone}/name", name + "\n")
        self.text(f"{POWERCAP}/{zone}/max_energy_range_uj", f"{max_range_uj}\n")
        self.wraps[zone] = max_range_uj
        self.write(self.energy_path(zone), energy_uj)

    def energy(self, zone: str = "intel-rapl:0") -> int:
        return int(self.read(self.energy_path(zone)))

    def add_energy(self, uj: int, zone: str = "intel-rapl:0") -> int:
        """Advance the counter by ``uj``, wrapping past max_energy_range_uj; the new value."""
        new = (self.energy(zone) + uj) % (self.wraps[zone] + 1)
        self.write(self.energy_path(zone), new)
        return new

    # ----------------------------------------------------------------------------------- hwmon

    def hwmon_vi(self, i: int, name: str, rails: dict[str, tuple[float, float]]) -> None:
        """An INA3221-like device: per channel ``in<N>_input`` (mV), ``curr<N>_input`` (mA),
        ``in<N>_label``; channels numbered from 1 in the given order."""
        self.text(f"{HWMON}/hwmon{i}/name", name + "\n")
        for n, (label, (mv, ma)) in enumerate(rails.items(), 1):
            self.text(f"{HWMON}/hwmon{i}/in{n}_label", label + "\n")
            self.set_rail(i, n, mv, ma)

    def set_rail(self, i: int, n: int, mv: float, ma: float) -> None:
        self.write(f"{HWMON}/hwmon{i}/in{n}_input", int(mv))
        self.write(f"{HWMON}/hwmon{i}/curr{n}_input", int(ma))

    def hwmon_power(self, i: int, name: str, channels: dict[str, int]) -> None:
        """A device with ``power<N>_input`` (µW) and ``power<N>_label``."""
        self.text(f"{HWMON}/hwmon{i}/name", name + "\n")
        for n, (label, uw) in enumerate(channels.items(), 1):
            self.text(f"{HWMON}/hwmon{i}/power{n}_label", label + "\n")
            self.set_power(i, n, uw)

    def set_power(self, i: int, n: int, uw: int) -> None:
        self.write(f"{HWMON}/hwmon{i}/power{n}_input", int(uw))

    # --------------------------------------------------------------------------------- cpuinfo

    def cpuinfo(self, parts: Sequence[str]) -> None:
        """An aarch64 /proc/cpuinfo: one block per processor with its CPU part."""
        blocks = []
        for n, part in enumerate(parts):
            blocks.append(
                f"processor\t: {n}\nBogoMIPS\t: 48.00\nFeatures\t: fp asimd evtstrm crc32\n"
                f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n"
                f"CPU part\t: {part}\nCPU revision\t: 0\n"
            )
        self.text(CPUINFO, "\n".join(blocks))

    # ---------------------------------------------------------------------------------- scripts

    def script(self, steps: Iterable[tuple[float, dict[str, Value]]], root: str = "") -> str:
        """A POSIX sh script that applies ``steps`` — ``(seconds after the previous step,
        {relative path: value})`` — in place, for a board: ``root`` is the tree's path there
        (default: this tree's). Each write is ``printf '%-23s\\n' VALUE 1<> FILE``."""
        base = root or str(self.root)
        lines = ["#!/bin/sh", f"R={shlex.quote(base)}"]
        for delay, changes in steps:
            if delay > 0:
                lines.append(f"sleep {delay:g}")
            for rel, value in changes.items():
                _fixed(value)  # too long fails here, not on the board
                lines.append(
                    f"printf '%-{WIDTH}s\\n' {shlex.quote(str(value))} 1<> \"$R\"/{shlex.quote(rel)}"
                )
        return "\n".join(lines) + "\n"

    def later(self, delay_s: float, changes: dict[str, Value]) -> Flip:
        """Apply ``changes`` from a background thread after ``delay_s``; the returned
        :class:`Flip` says when (``time.time()`` just before and after the writes)."""
        flip = Flip()

        def go() -> None:
            time.sleep(delay_s)
            flip.before = time.time()
            for rel, value in changes.items():
                self.write(rel, value)
            flip.after = time.time()
            flip.done.set()

        threading.Thread(target=go, daemon=True).start()
        return flip

    # --------------------------------------------------------------------------------- presets

    @classmethod
    def two_core(cls, root: Union[str, Path], powercap: bool = True) -> FakeSysfs:
        """2 cores at 2000 MHz, one x86_pkg_temp zone and (default) a RAPL package counter."""
        fake = cls(root)
        for n in range(2):
            fake.cpu(n, 2000.0)
        fake.zone(0, "x86_pkg_temp", 50.0)
        if powercap:
            fake.powercap("intel-rapl:0", "package-0", 1000, max_range_uj=262143328850)
        return fake

    @classmethod
    def x86_rapl(cls, root: Union[str, Path], cores: int = 4) -> FakeSysfs:
        """RAPL as a laptop shows it: package-0 with a core subzone, and a psys zone."""
        fake = cls(root)
        for n in range(cores):
            fake.cpu(n, 3400.0, governor="powersave")
        fake.zone(0, "acpitz", 40.0)
        fake.zone(1, "x86_pkg_temp", 55.0)
        fake.text(f"{POWERCAP}/intel-rapl/enabled", "1\n")  # the control type: no counter
        fake.powercap("intel-rapl:0", "package-0", 5_000_000, max_range_uj=262143328850)
        fake.powercap("intel-rapl:0:0", "core", 2_000_000, max_range_uj=262143328850)
        fake.powercap("intel-rapl:1", "psys", 9_000_000, max_range_uj=262143328850)
        return fake

    @classmethod
    def pi4(cls, root: Union[str, Path]) -> FakeSysfs:
        """Raspberry Pi 4: 4 x A72 at 1500 MHz, cpu-thermal, get_throttled, no energy."""
        fake = cls(root)
        for n in range(4):
            fake.cpu(n, 1500.0, governor="ondemand")
        fake.policy(range(4))  # one clock for the four cores
        fake.zone(0, "cpu-thermal", 55.0)
        fake.pi_throttle(0)
        fake.cpuinfo([A72] * 4)
        return fake

    @classmethod
    def rk3588(cls, root: Union[str, Path]) -> FakeSysfs:
        """RK3588: 4 x A55 at 1800 MHz (cpus 0-3), 4 x A76 at 2256 (4-5) and 2400 MHz (6-7)."""
        fake = cls(root)
        for n in range(8):
            fake.cpu(n, 1800.0 if n < 4 else 2256.0 if n < 6 else 2400.0)
        for cores in ((0, 1, 2, 3), (4, 5), (6, 7)):  # three policies, as the kernel has them
            fake.policy(cores)
        fake.zone(0, "soc-thermal", 45.0)
        fake.zone(1, "bigcore0-thermal", 46.0)
        fake.cpuinfo([A55] * 4 + [A76] * 4)
        return fake

    @classmethod
    def jetson_orin(cls, root: Union[str, Path]) -> FakeSysfs:
        """Jetson Orin Nano: 6 x A78AE at 1510 MHz, thermal zones, an INA3221 with VDD_IN."""
        fake = cls(root)
        for n in range(6):
            fake.cpu(n, 1510.4)
        fake.zone(0, "cpu-thermal", 48.0)
        fake.zone(1, "gpu-thermal", 46.5)
        fake.hwmon_vi(
            1,
            "ina3221",
            {
                "VDD_IN": (5072.0, 1100.0),
                "VDD_CPU_GPU_CV": (5064.0, 400.0),
                "VDD_SOC": (5064.0, 300.0),
            },
        )
        fake.cpuinfo([A78AE] * 6)
        return fake


class Flip:
    """When a :meth:`FakeSysfs.later` change happened (``time.time()``)."""

    def __init__(self) -> None:
        self.before: Optional[float] = None
        self.after: Optional[float] = None
        self.done = threading.Event()


def steps_climb(
    zone: int, start_c: float, end_c: float, seconds: float, n: int = 10
) -> list[tuple[float, dict[str, Value]]]:
    """Script steps for a zone that climbs from ``start_c`` to ``end_c`` over ``seconds``."""
    out: list[tuple[float, dict[str, Value]]] = []
    for k in range(n + 1):
        c = start_c + (end_c - start_c) * k / n
        out.append((0 if k == 0 else seconds / n, {FakeSysfs.temp_path(zone): int(c * 1000)}))
    return out
