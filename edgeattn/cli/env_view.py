"""`edgeattn env` for a person: the device fingerprint as labelled, readable rows.

:func:`env_rows` turns :func:`edgeattn.runtime.sysinfo.fingerprint` into ``(label, text)`` pairs:
no ``None`` (what the device does not report is named once, in the "not reported" row), no JSON
(nested values become ``key value`` phrases, lists comma-separated), memory in GiB. Fields this
module does not know yet are still shown, rendered the same generic way. ``env --json`` prints
the fingerprint itself, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Row = tuple[str, str]


def _known(value: Any) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, dict):
        return any(_known(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_known(v) for v in value)
    return True


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def plain(value: Any) -> str:
    """Any fingerprint value as readable text: ``a, b`` for lists, ``key value, ...`` for dicts
    (unknown entries left out), yes/no for booleans; never ``None`` or JSON."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, dict):
        parts = [f"{k.replace('_', ' ')} {plain(v)}" for k, v in value.items() if _known(v)]
        return ", ".join(parts) if parts else "unknown"
    if isinstance(value, (list, tuple)):
        parts = [plain(v) for v in value if _known(v)]
        return ", ".join(parts) if parts else "unknown"
    return "unknown" if value is None else str(value)


def _gib(mb: Any) -> str | None:
    return f"{mb / 1024:.1f} GiB" if isinstance(mb, (int, float)) else None


def _join(*parts: str | None, sep: str = ", ") -> str | None:
    kept = [p for p in parts if p]
    return sep.join(kept) if kept else None


def _cores(fp: dict) -> str | None:
    names = ("physical", "logical", "usable")
    return _join(
        *(f"{fp[f'cores_{n}']} {n}" if _known(fp.get(f"cores_{n}")) else None for n in names)
    )


def _cpufreq(fp: dict) -> str | None:
    f = fp.get("cpufreq") or {}
    if not isinstance(f, dict) or not _known(f):
        return None
    lo, hi, cur = f.get("min_mhz"), f.get("max_mhz"), f.get("cur_mhz")
    span = f"{_number(lo)}–{_number(hi)} MHz" if lo is not None and hi is not None else None
    return _join(
        f"governor {f['governor']}" if f.get("governor") else None,
        span,
        f"now {_number(cur)} MHz" if cur is not None else None,
    )


def _temperature(fp: dict) -> str | None:
    t = fp.get("temperature_c")
    zones = fp.get("thermal_zones")
    text = f"{_number(t)} °C" if isinstance(t, (int, float)) else None
    if isinstance(zones, dict) and zones:
        listed = ", ".join(f"{k} {_number(v)} °C" for k, v in zones.items())
        text = _join(text, f"zones: {listed}", sep="; ")
    return text


def _memory(fp: dict) -> str | None:
    total, avail = _gib(fp.get("ram_total_mb")), _gib(fp.get("ram_available_mb"))
    return _join(f"{total} total" if total else None, f"{avail} available" if avail else None)


def _emulated(fp: dict) -> str:
    kind = fp.get("emulated")
    if not kind:
        return "no"
    hint = fp.get("emulated_hint")
    return f"{kind} ({hint})" if hint else str(kind)


def _fp16(fp: dict) -> str | None:
    native, evidence = fp.get("fp16_native"), fp.get("fp16_evidence")
    if native is None:
        return None
    what = "native" if native else "not native (an fp16 graph runs emulated)"
    return f"{what}: {evidence}" if evidence else what


def _python(fp: dict) -> str | None:
    py = fp.get("python")
    if not isinstance(py, dict):
        return plain(py) if _known(py) else None
    return _join(
        py.get("version"),
        f"({py['implementation']})" if py.get("implementation") else None,
        sep=" ",
    )


def _software(fp: dict) -> str | None:
    names = (
        ("onnxruntime", "onnxruntime_version"),
        ("numpy", "numpy_version"),
        ("psutil", "psutil_version"),
    )
    # a key present as None: the import failed; a key absent: an older fingerprint, say nothing
    return _join(*(f"{n} {fp[k]}" if fp[k] else f"{n} not installed" for n, k in names if k in fp))


def _ort_device(fp: dict) -> str | None:
    return str(fp["ort_device"]) if fp.get("ort_device") else None


def _clusters(fp: dict) -> str | None:
    from edgeattn.runtime.conditions import clusters_text

    return clusters_text(fp.get("clusters"))


def _conditions(fp: dict) -> str | None:
    from edgeattn.runtime.conditions import sources_text

    return sources_text(fp.get("conditions_sources"))


def _field(key: str) -> Callable[[dict], str | None]:
    return lambda fp: plain(fp[key]) if _known(fp.get(key)) else None


#: (label, fields it shows, how to render them); unknown ones are named in "not reported"
_ROWS: tuple[tuple[str, tuple[str, ...], Callable[[dict], str | None]], ...] = (
    ("device model", ("device_model",), _field("device_model")),
    ("host", ("hostname",), _field("hostname")),
    ("os", ("os", "system", "release"), _field("os")),
    ("machine", ("machine",), _field("machine")),
    ("cpu", ("cpu_model",), _field("cpu_model")),
    ("cores", ("cores_physical", "cores_logical", "cores_usable"), _cores),
    ("cpu frequency", ("cpufreq",), _cpufreq),
    ("clusters", ("clusters",), _clusters),
    ("conditions", ("conditions_sources",), _conditions),
    ("temperature", ("temperature_c", "thermal_zones"), _temperature),
    ("throttled", ("throttled",), _field("throttled")),
    ("jetson", ("jetson",), _field("jetson")),
    ("gpu", ("gpu",), _field("gpu")),
    ("emulated", ("emulated", "emulated_hint"), _emulated),
    ("fp16 arithmetic", ("fp16_native", "fp16_evidence"), _fp16),
    ("memory", ("ram_total_mb", "ram_available_mb"), _memory),
    ("python", ("python",), _python),
    ("software", ("onnxruntime_version", "numpy_version", "psutil_version"), _software),
    ("providers", ("providers",), _field("providers")),
    ("ort device", ("ort_device",), _ort_device),
    ("fingerprint id", ("fingerprint_id",), _field("fingerprint_id")),
)

#: fields that only some devices have: when absent, not worth a "not reported" mention
_OPTIONAL = {"throttled", "jetson", "gpu", "clusters", "conditions"}


def env_rows(fp: dict) -> list[Row]:
    """The fingerprint as ``(label, text)`` rows, then one row naming what is not reported."""
    rows: list[Row] = []
    missing: list[str] = []
    shown: set[str] = set()
    for label, keys, render in _ROWS:
        shown.update(keys)
        text = render(fp)
        if text:
            rows.append((label, text))
        elif label not in _OPTIONAL:
            missing.append(label)
    for key, value in fp.items():  # a field added to the fingerprint after this view
        if key in shown:
            continue
        if _known(value):
            rows.append((key.replace("_", " "), plain(value)))
        else:
            missing.append(key.replace("_", " "))
    if missing:
        rows.append(("not reported", ", ".join(missing) + " (unknown on this device)"))
    return rows


def env_table(fp: dict) -> Any:
    """A borderless two-column rich table of :func:`env_rows`: labels never wrapped, values
    wrapped at words."""
    from rich.table import Table
    from rich.text import Text

    from edgeattn.cli.console import keep_whole

    table = Table(
        title="edgeattn env: this device (--json: the fingerprint as recorded)",
        title_justify="left",
        show_header=False,
        box=None,
        pad_edge=False,
    )
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for label, text in env_rows(fp):
        table.add_row(Text(label), Text(text))  # as they are: a value is never markup
    return keep_whole(table, 0)
