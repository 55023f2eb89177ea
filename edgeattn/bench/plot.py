"""Plots (optional extra ``edgeattn[plot]``): latency against N and against D, one line per
method, log axes, as in the SimA paper's timing figures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeattn.bench.report import device_label, ok, p50
from edgeattn.errors import BenchError


def pyplot():
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
    # Long because each figure kind (bars for one shape, lines along N or D) is a few matplotlib
    # calls; they share the axes set-up.
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise BenchError(f"--plot {str(path)!r}: use a .png, .svg or .pdf file name")
    plt = pyplot()
    from edgeattn.bench.ratios import ratio_points

    pts = ratio_points(records)
    if len({(p["regime"], p["tokens"], p["dim"]) for p in pts}) > 1:
        return plot_regimes(records, path, title)
    rs = ok(records)
    if not rs:
        raise BenchError("nothing to plot: no successful records")
    ns = {(r.get("meta") or {}).get("tokens") for r in rs}
    ds = {(r.get("meta") or {}).get("dim") for r in rs}
    if len(ns) == 1 and len(ds) == 1:  # one shape (a bench run): bars per method and device
        from edgeattn.bench import pairs
        from edgeattn.bench.report import latest_paired

        fig, ax = plt.subplots(figsize=(7, 4))
        bars: list[tuple[str, float, float, float]] = []  # label, median, -err, +err
        for dev in sorted({device_label(r) for r in rs}):
            prec = latest_paired([r for r in records if device_label(r) == dev])
            if prec is None:
                continue
            lat = (prec.get("paired") or {}).get("latency_ms") or {}
            for rid, key in pairs.member_keys(prec).items():
                v = lat.get(rid) or {}
                if v.get("median") is None:
                    continue
                med = v["median"]
                lo, hi = v.get("ci_low", med), v.get("ci_high", med)
                bars.append((f"{key}\n{dev[:24]}", med, med - lo, hi - med))
        ylabel = "paired median latency (ms), 95 % interval"
        if not bars:  # no paired pass: each method alone
            bars = [
                (f"{(r.get('meta') or {}).get('method')}\n{device_label(r)[:24]}", p50(r), 0, 0)
                for r in rs
            ]
            ylabel = "median latency alone (ms)"
        ax.bar(
            range(len(bars)),
            [b[1] for b in bars],
            yerr=[[b[2] for b in bars], [b[3] for b in bars]],
            capsize=3,
        )
        ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=7)
        ax.set_ylabel(ylabel)
        ax.set_title(title or "attention block latency")
        fig.tight_layout()
        return save_figure(fig, plt, path)
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
    return save_figure(fig, plt, path)


def plot_regimes(records: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """The SimA paper's timing design with uncertainty: per regime (tokens: vs N, left; channels:
    vs D, right), the paired ratios with their 95 % interval as a band and a line at 1.0 (top),
    and each method's paired median latency (bottom, log-log)."""
    # Long because the two panels per regime (ratios with bands, latency) are matplotlib calls on
    # shared axes.
    from edgeattn.bench import ratios
    from edgeattn.bench.pairs import RATIO_BY_NAME
    from edgeattn.bench.ratios import ratio_points

    path = Path(path)
    plt = pyplot()
    from matplotlib.ticker import ScalarFormatter

    pts = ratio_points(records)
    regimes = [r for r in ("tokens", "channels") if any(p["regime"] == r for p in pts)]
    if not regimes:
        raise BenchError("nothing to plot: no paired records (measure with --paired)")
    fig, axes = plt.subplots(
        2, len(regimes), figsize=(6.5 * len(regimes), 7.5), squeeze=False, sharex="col"
    )
    devices = sorted({p["device"] for p in pts})
    for col, reg in enumerate(regimes):
        xkey = "tokens" if reg == "tokens" else "dim"
        fixed_key = "dim" if reg == "tokens" else "tokens"
        ax_r, ax_l = axes[0][col], axes[1][col]
        mine = [p for p in pts if p["regime"] == reg]
        for dev in devices:
            for name in ratios.REGIME_RATIOS[reg]:
                series = sorted(
                    (p for p in mine if p["ratio"] == name and p["device"] == dev),
                    key=lambda p: p[xkey],
                )
                if not series:
                    continue
                xs = [p[xkey] for p in series]
                label = RATIO_BY_NAME[name].label + ("" if len(devices) == 1 else f" — {dev}")
                (line,) = ax_r.plot(xs, [p["median"] for p in series], marker="o", label=label)
                ax_r.fill_between(
                    xs,
                    [p["ci_low"] for p in series],
                    [p["ci_high"] for p in series],
                    color=line.get_color(),
                    alpha=0.2,
                    linewidth=0,
                )
                for p in series:
                    if p["stability"] == "unstable":
                        ax_r.annotate("unstable", (p[xkey], p["median"]), fontsize=6)
            lat: dict[str, list[tuple[int, float]]] = {}
            for p in mine:
                if p["device"] != dev:
                    continue
                for meth, ms in p["latency_ms"].items():
                    lat.setdefault(meth, [])
                    if (p[xkey], ms) not in lat[meth]:
                        lat[meth].append((p[xkey], ms))
            for meth, series in sorted(lat.items()):
                series.sort()
                label = meth + ("" if len(devices) == 1 else f" — {dev}")
                ax_l.plot([x for x, _ in series], [y for _, y in series], marker=".", label=label)
        ax_r.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        fixed = sorted({p[fixed_key] for p in mine})
        fixed_s = ", ".join(str(v) for v in fixed)
        ax_r.set_title(
            f"{reg} regime ({'N grows' if reg == 'tokens' else 'D grows'}, "
            f"{'D' if reg == 'tokens' else 'N'} = {fixed_s}): ratio, 95 % interval"
        )
        ax_r.set_ylabel("paired ratio (× ; > 1: the second is faster)")
        ax_r.set_xscale("log", base=2)
        ax_r.set_yscale("log")
        _plain_ticks(ax_r, sorted({p[xkey] for p in mine}))
        ax_r.grid(True, which="both", alpha=0.3)
        ax_r.legend(fontsize=7)
        ax_l.set_xscale("log", base=2)
        ax_l.set_yscale("log")
        ax_l.xaxis.set_major_formatter(ScalarFormatter())
        ax_l.set_xlabel("tokens N" if reg == "tokens" else "channels D")
        ax_l.set_ylabel("median latency, paired pass (ms)")
        ax_l.grid(True, which="both", alpha=0.3)
        ax_l.legend(fontsize=7)
    fig.suptitle(title or f"exp vs l1 on {', '.join(devices)}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, plt, path)


def _plain_ticks(ax: Any, xs: Sequence[int]) -> None:
    """Ticks at the measured points, written as numbers (not 2^k); ratios as plain numbers."""
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    ax.xaxis.set_major_locator(FixedLocator(list(xs)))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="y", which="minor", labelsize=6)


def save_figure(fig: Any, plt: Any, path: Path) -> Path:
    import io

    from edgeattn.runtime.records import write_atomic

    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix.lower().lstrip("."))
    plt.close(fig)
    write_atomic(str(path), buf.getvalue())
    return path
