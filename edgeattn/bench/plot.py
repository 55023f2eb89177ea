"""Plots (optional extra ``edgeattn[plot]``): latency against N and against D, one line per
method, log axes, as in the SimA paper's timing figures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeattn.bench.report import device_label, ok, p50
from edgeattn.errors import BenchError


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchError(
            "plotting needs matplotlib, which is not installed",
            hint="pip install 'edgeattn[plot]'  (or: pip install matplotlib)",
        ) from None
    return plt


def plot_records(records: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Latency vs N (tokens regime) and vs D (channels regime) in one figure; PNG or SVG by suffix."""
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise BenchError(f"--plot {str(path)!r}: use a .png, .svg or .pdf file name")
    plt = _plt()
    rs = ok(records)
    if not rs:
        raise BenchError("nothing to plot: no successful records")
    ns = {(r.get("meta") or {}).get("tokens") for r in rs}
    ds = {(r.get("meta") or {}).get("dim") for r in rs}
    if len(ns) == 1 and len(ds) == 1:  # one shape (a bench run): bars per method and device
        fig, ax = plt.subplots(figsize=(7, 4))
        labels = [f"{(r.get('meta') or {}).get('method')}\n{device_label(r)[:24]}" for r in rs]
        vals = [p50(r) for r in rs]
        ax.bar(range(len(vals)), vals)
        ax.set_xticks(range(len(vals)), labels, fontsize=7)
        ax.set_ylabel("median latency (ms)")
        ax.set_title(title or "attention block latency")
        fig.tight_layout()
        return _save(fig, plt, path)
    panels = [ax for ax, vals in (("N", ns), ("D", ds)) if len(vals) > 1] or ["N"]
    devices = {device_label(r) for r in rs}
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, which in zip(axes[0], panels, strict=True):
        # One line per (device, method, fixed other-axis value).
        lines: dict[tuple[str, str, Any], list[tuple[int, float]]] = {}
        for r in rs:
            m = r.get("meta") or {}
            x, fixed = (
                (m.get("tokens"), m.get("dim")) if which == "N" else (m.get("dim"), m.get("tokens"))
            )
            label = m.get("label") or m.get("method") or "?"
            lines.setdefault((device_label(r), label, fixed), []).append((x, p50(r)))
        for (dev, label, fixed), pts in sorted(lines.items(), key=lambda kv: str(kv[0])):
            if len(pts) < 2:
                continue
            pts.sort()
            other = "D" if which == "N" else "N"
            lbl = f"{label} ({other}={fixed})" + ("" if len(devices) == 1 else f" — {dev}")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=lbl)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("tokens N" if which == "N" else "channels D")
        ax.set_ylabel("median latency (ms)")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"latency vs {which}")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: Path) -> Path:
    import io

    from edgeattn.runtime.records import write_atomic

    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lower().lstrip("."))
    plt.close(fig)
    write_atomic(str(path), buf.getvalue())
    return path
