"""Device conditions of a paired group, host side: marked rounds, ratios without them, energy per
inference, the sampling overhead, and the sustained report (latency over time, retention, plot).

The device runtime (``edgeattn.runtime.conditions`` / ``runtime.paired``) samples each paired
round's conditions (temperature, the lowest current frequency of the cores in use, throttle bits)
and marks a round taken while throttled or below the group's frequency floor; where the board has
an energy counter it records each member's µJ per round. This module only reads those record
fields (``rec["paired"]["round_conditions"]``, ``"round_energy_uj"``, ``"conditions_overhead_us"``,
``"conditions_sources"``, ``"sustained"``; all optional, absent on older records) and computes:

- each ratio again without the marked rounds, with the same statistics as the headline
  (``runtime.intervals.ratio_summary``: median of per-round ratios, order-statistic interval), and
  whether the headline median falls outside the without-interval or the without-median outside
  the headline interval (the marked rounds moved the figure beyond its own uncertainty);
- energy per inference per member (median mJ of the per-round µJ, order-statistic 95 % interval)
  and the energy ratio with the latency ratio's orientation (informative: board counters);
- the sustained report: medians per time window per member, the retention ratio (last-window
  median / first-window median, 60 s windows when the run lasted at least 2 minutes), its 95 %
  interval from a seeded percentile bootstrap of the ratio of medians (the two windows hold
  different rounds, so there is no pairing to use), the time of the first marked round, and a
  PNG of latency and temperature against time.

Pure functions over record dicts, except :func:`plot_sustained` (writes the PNG).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from edgeattn.runtime import intervals
from edgeattn.runtime.conditions import sources_text

NO_ENERGY = "energy: not available on this device (no powercap/hwmon/PMIC readable)"
ENERGY_LABEL = "informative: board counters, not lab-grade"
#: the retention windows: first and last minute when the run lasted at least two
RETENTION_WINDOW_S = 60.0
#: sustained windows in the over-time table (per-10 % windows of the run)
WINDOWS = 10
BOOTSTRAP = 2000
BOOTSTRAP_SEED = 0
#: the plot's line: the median latency of each of this many time bins
PLOT_BINS = 100
RETENTION_METHOD = (
    "last-window median / first-window median; 95 % percentile bootstrap of the ratio of "
    f"medians ({BOOTSTRAP} resamples of each window, seed {BOOTSTRAP_SEED})"
)


# ------------------------------------------------------------------------------------ parsing


def parse_duration(text: str | float | None, flag: str = "--sustained") -> float | None:
    """'90s', '2m', '1.5m', '1h' or a bare number of seconds -> seconds (> 0); one-line
    ``BenchError`` naming the value and what is valid."""
    from edgeattn.errors import BenchError

    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        word, value = str(text), float(text)
    else:
        word = str(text).strip().lower()
        scale = {"s": 1.0, "m": 60.0, "h": 3600.0}.get(word[-1:], None)
        digits = word[:-1] if scale else word
        scale = scale or 1.0
        try:
            value = float(digits) * scale
        except ValueError:
            value = float("nan")
    if not (value == value and math.isfinite(value) and value > 0):
        raise BenchError(
            f"{flag} {text!r} is not a duration; use a positive number with s, m or h "
            "(90s, 2m, 1.5m), or seconds"
        )
    return value


# ------------------------------------------------------------------------------------ reading


def _p(rec: dict[str, Any]) -> dict[str, Any]:
    return rec.get("paired") or {}


def has_conditions(rec: dict[str, Any]) -> bool:
    return bool(_p(rec).get("round_conditions"))


def is_sustained(rec: dict[str, Any]) -> bool:
    return bool(_p(rec).get("sustained"))


def columns(rec: dict[str, Any]) -> dict[str, int]:
    """{run id: column of ``rounds_ms``} (members in record order)."""
    return {m["id"]: i for i, m in enumerate(_p(rec).get("members") or [])}


def member_label(rec: dict[str, Any]) -> dict[str, str]:
    from edgeattn.bench import pairs

    return pairs.member_keys(rec)


def marked(rec: dict[str, Any]) -> list[int]:
    """Indices of the marked rounds (aligned with ``rounds_ms``)."""
    conds = _p(rec).get("round_conditions") or []
    return [i for i, c in enumerate(conds) if (c or {}).get("marked")]


def mark_reasons(rec: dict[str, Any]) -> dict[str, int]:
    """{'throttled': n, 'below frequency floor': n} over the marked rounds (a round may count in
    both)."""
    out = {"throttled": 0, "below frequency floor": 0}
    for c in _p(rec).get("round_conditions") or []:
        if not (c or {}).get("marked"):
            continue
        why = str(c.get("why") or "")
        bits = c.get("throttle_bits")
        if "thrott" in why or (isinstance(bits, int) and bits & 0xF):
            out["throttled"] += 1
        if "floor" in why:
            out["below frequency floor"] += 1
    return out


# ----------------------------------------------------------------------- ratios without marked


def _ratio_label(name: str) -> str:
    from edgeattn.bench import pairs

    if name.startswith(pairs.VS_REF):
        return f"reference / {name[len(pairs.VS_REF) :]}"
    spec = pairs.RATIO_BY_NAME.get(name)
    return spec.label if spec else name


def without_marked(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """Each ratio of the record again over the unmarked rounds only.

    One entry per ratio: ``name``, ``label``, ``headline`` (the record's summary), ``without``
    (``ratio_summary`` over the unmarked rounds, None when fewer than 2 remain), ``dropped``
    (marked rounds left out), ``moved`` (the headline median is outside the without-interval, or
    the without-median outside the headline interval). Empty when no round is marked."""
    p = _p(rec)
    gone = set(marked(rec))
    if not gone:
        return []
    col = columns(rec)
    rounds = p.get("rounds_ms") or []
    keep = [row for i, row in enumerate(rounds) if i not in gone]
    out = []
    for r in p.get("ratios") or []:
        if r.get("num") not in col or r.get("den") not in col:
            continue
        entry: dict[str, Any] = {
            "name": r["name"],
            "label": _ratio_label(r["name"]),
            "headline": r,
            "dropped": len(gone),
            "without": None,
            "moved": False,
        }
        if len(keep) >= 2:
            w = intervals.ratio_summary(
                [row[col[r["num"]]] for row in keep], [row[col[r["den"]]] for row in keep]
            )
            entry["without"] = w
            h = r["median"]
            entry["moved"] = bool(
                not (w["ci_low"] <= h <= w["ci_high"])
                or not (r["ci_low"] <= w["median"] <= r["ci_high"])
            )
        out.append(entry)
    return out


def _fmt(r: dict[str, Any]) -> str:
    return f"{r['median']:.2f}× [{r['ci_low']:.2f}–{r['ci_high']:.2f}]"


def _unmarkable(rec: dict[str, Any]) -> bool:
    """The device read no cpufreq and no throttle bits: nothing could mark a round."""
    src = _p(rec).get("conditions_sources")
    return bool(src) and not (src.get("cpufreq") or src.get("throttle"))


def marked_line(rec: dict[str, Any]) -> str | None:
    """'8 of 20 rounds marked (throttled 8 / below frequency floor 0)'; None without conditions."""
    conds = _p(rec).get("round_conditions")
    if not conds:
        return None
    if _unmarkable(rec):
        return (
            f"throttling not checked: no cpufreq or throttle bits readable on this device "
            f"({len(conds)} rounds, none could be marked)"
        )
    why = mark_reasons(rec)
    return (
        f"{len(marked(rec))} of {len(conds)} rounds marked (throttled {why['throttled']} / "
        f"below frequency floor {why['below frequency floor']})"
    )


def without_lines(rec: dict[str, Any]) -> list[str]:
    out = []
    for e in without_marked(rec):
        w = e["without"]
        if w is None:
            out.append(
                f"{e['label']}: {_fmt(e['headline'])}; without the {e['dropped']} marked rounds: "
                "fewer than 2 rounds left, no figure"
            )
            continue
        line = (
            f"{e['label']}: {_fmt(e['headline'])}; without {e['dropped']} marked rounds: "
            f"{_fmt(w)} ({w['rounds']} rounds)"
        )
        if e["moved"]:
            line += (
                " — the marked rounds moved this figure beyond its interval: quote the figure "
                "without them, or rerun with the board cool"
            )
        out.append(line)
    return out


# --------------------------------------------------------------------------------- overhead


def overhead_line(rec: dict[str, Any]) -> str | None:
    """'conditions sampled per round: 12 µs, 0.3 % of a round' (the round: the median of the
    rounds' summed member times)."""
    p = _p(rec)
    us = p.get("conditions_overhead_us")
    rounds = p.get("rounds_ms") or []
    if us is None or not rounds:
        return None
    round_ms = intervals.median([sum(row) for row in rounds])
    share = us / 1000.0 / round_ms if round_ms > 0 else float("nan")
    return f"conditions sampled per round: {us:.0f} µs, {share:.2%} of a round".replace("%", " %")


# ----------------------------------------------------------------------------------- energy


def energy(rec: dict[str, Any]) -> dict[str, Any] | None:
    """{"members": {pair key: {median_mj, ci_low, ci_high, rounds}}, "ratios": {ratio name:
    ratio_summary of the per-round energies, num / den like the latency ratio}}; None when the
    record has no energy (no counter on the device, or an older record)."""
    p = _p(rec)
    rows = p.get("round_energy_uj")
    if not rows:
        return None
    col = columns(rec)
    keys = member_label(rec)
    members = {}
    for rid, j in col.items():
        vals = [row[j] / 1000.0 for row in rows if row and row[j] is not None]
        if not vals:
            continue
        lo, hi, conf = intervals.median_ci(vals)
        members[keys.get(rid, rid)] = {
            "median_mj": intervals.median(vals),
            "ci_low": lo,
            "ci_high": hi,
            "confidence": conf,
            "rounds": len(vals),
        }
    ratios = {}
    for r in p.get("ratios") or []:
        if r.get("num") not in col or r.get("den") not in col:
            continue
        a, b = col[r["num"]], col[r["den"]]
        pairs_ = [
            (row[a], row[b])
            for row in rows
            if row and row[a] is not None and row[b] is not None and row[b] > 0
        ]
        if pairs_:
            ratios[r["name"]] = intervals.ratio_summary(
                [x for x, _ in pairs_], [y for _, y in pairs_]
            )
    if not members:
        return None
    return {"members": members, "ratios": ratios}


def energy_lines(rec: dict[str, Any]) -> list[str]:
    """Energy per inference and the energy ratios, or the one 'not available' line (only for a
    record that carries conditions: older records say nothing)."""
    p = _p(rec)
    if not has_conditions(rec) and "conditions_sources" not in p:
        return []
    e = energy(rec)
    if e is None:
        return [NO_ENERGY]
    src = (p.get("conditions_sources") or {}).get("energy") or {}
    where = f" from {src.get('kind')} {src.get('name')}" if src else ""
    each = ", ".join(
        f"{k} {v['median_mj']:.3g} mJ [{v['ci_low']:.3g}–{v['ci_high']:.3g}]"
        for k, v in e["members"].items()
    )
    out = [f"energy per inference{where} ({ENERGY_LABEL}): {each}"]
    lat = {r["name"]: r for r in p.get("ratios") or []}
    for name, r in e["ratios"].items():
        latency = f"; latency {_fmt(lat[name])}" if name in lat else ""
        out.append(f"energy ratio {_ratio_label(name)}: {_fmt(r)}{latency} ({ENERGY_LABEL})")
    return out


# ---------------------------------------------------------------------------------- all lines


def placement_line(records: Iterable[dict[str, Any]]) -> str | None:
    """'placement: cpus 0,1 (asked: big), 2 intra-op threads' from the latest record that has it."""
    recs = [r for r in records if r.get("placement")]
    if not recs:
        return None
    pl = sorted(recs, key=lambda r: r.get("created_utc") or "")[-1]["placement"]
    cpus = ",".join(str(c) for c in pl.get("cpus") or [])
    req = pl.get("request")
    asked = f" (asked: {req})" if req is not None and str(req) != cpus else ""
    n = pl.get("intra_op_threads")
    threads = f", {n} intra-op thread{'s' if n != 1 else ''}" if n else ""
    return f"placement: cpus {cpus}{asked}{threads}"


def conditions_records(records: Iterable[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """[(label, paired record)] of the ok paired records that carry conditions (``report``)."""
    from edgeattn.bench import pairs
    from edgeattn.bench.report import device_label

    out = []
    for r in pairs.paired(records):
        p = _p(r)
        if p.get("round_conditions") or p.get("conditions_sources") or p.get("sustained"):
            out.append((f"{device_label(r)} {r.get('id')}", r))
    # the same order whatever the order of the files (time, then the device and group)
    return sorted(out, key=lambda lr: (lr[1].get("created_utc") or "", lr[0]))


def conditions_summary(rec: dict[str, Any] | None) -> dict[str, Any] | None:
    """The conditions of one paired record as data (``bench --json``); None without any."""
    if not rec or not (has_conditions(rec) or "conditions_sources" in _p(rec)):
        return None
    p = _p(rec)
    out: dict[str, Any] = {
        "rounds": len(p.get("round_conditions") or []),
        "marked": len(marked(rec)),
        "marked_why": mark_reasons(rec),
        "without_marked": [
            {"name": e["name"], "without": e["without"], "moved": e["moved"]}
            for e in without_marked(rec)
        ],
        "overhead_us": p.get("conditions_overhead_us"),
        "energy": energy(rec),
        "sources": p.get("conditions_sources"),
    }
    if is_sustained(rec):
        out["sustained"] = sustained_summary(rec)
    return out


def condition_lines(rec: dict[str, Any] | None) -> list[str]:
    """Every conditions line of one paired record for the bench output and ``report``: marked
    rounds, ratios without them, the sampling overhead, energy, and what could be read. Empty for
    a record without conditions."""
    if not rec:
        return []
    p = _p(rec)
    out = []
    m = marked_line(rec)
    if m:
        out.append(m)
    out += without_lines(rec)
    o = overhead_line(rec)
    if o:
        out.append(o)
    out += energy_lines(rec)
    s = sources_text(p.get("conditions_sources"))
    if s:
        out.append("conditions " + s)
    return out


# -------------------------------------------------------------------------------- sustained


def _times(rec: dict[str, Any]) -> list[float]:
    return [float((c or {}).get("t_s") or 0.0) for c in _p(rec).get("round_conditions") or []]


def windows(rec: dict[str, Any], n: int = WINDOWS) -> list[dict[str, Any]]:
    """The run cut into ``n`` equal time windows: {start_s, end_s, rounds, medians {pair key:
    ms}, temp_c (max), marked}; empty windows left out."""
    p = _p(rec)
    ts = _times(rec)
    rounds = p.get("rounds_ms") or []
    if not ts or len(ts) != len(rounds):
        return []
    conds = p.get("round_conditions") or []
    span = max(ts) or 1.0
    col = columns(rec)
    keys = member_label(rec)
    width = span / n
    out = []
    for k in range(n):
        lo, hi = k * width, (k + 1) * width
        idx = [i for i, t in enumerate(ts) if lo <= t < hi or (k == n - 1 and t == hi)]
        if not idx:
            continue
        temps = [conds[i].get("temp_c") for i in idx if conds[i].get("temp_c") is not None]
        out.append(
            {
                "start_s": lo,
                "end_s": hi,
                "rounds": len(idx),
                "medians": {
                    keys.get(rid, rid): intervals.median([rounds[i][j] for i in idx])
                    for rid, j in col.items()
                },
                "temp_c": max(temps) if temps else None,
                "marked": sum(1 for i in idx if conds[i].get("marked")),
            }
        )
    return out


def _bootstrap_ratio(
    num: Sequence[float], den: Sequence[float], n: int = BOOTSTRAP, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """95 % percentile bootstrap interval of median(num) / median(den), each resampled on its
    own (seeded: the same data always gives the same interval)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a = np.asarray(num, dtype=float)
    b = np.asarray(den, dtype=float)
    out = np.empty(n)
    chunk = max(1, int(2_000_000 // max(len(a), len(b), 1)))
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        ma = np.median(a[rng.integers(0, len(a), (m, len(a)))], axis=1)
        mb = np.median(b[rng.integers(0, len(b), (m, len(b)))], axis=1)
        out[s : s + m] = ma / mb
    lo, hi = np.quantile(out, [0.025, 0.975])
    return float(lo), float(hi)


def retention(rec: dict[str, Any], window_s: float = RETENTION_WINDOW_S) -> dict[str, Any] | None:
    """{"window_s", "first": [start, end], "last": [start, end], "members": {pair key: {ratio,
    ci_low, ci_high, first_ms, last_ms, first_rounds, last_rounds}}, "method"}: the retention
    ratio per member (last-window median / first-window median; > 1 means slower at the end).
    Windows of ``window_s`` when the run lasted at least twice that, else halves of the run."""
    p = _p(rec)
    ts = _times(rec)
    rounds = p.get("rounds_ms") or []
    if len(ts) < 4 or len(ts) != len(rounds):
        return None
    # the run's length: to the end of its last round where the record says (t_end_s), so that a
    # 2-minute run has a first and a last minute that do not overlap
    end = (p.get("round_conditions") or [{}])[-1].get("t_end_s")
    span = max(max(ts), float(end) if end is not None else 0.0)
    w = window_s if span >= 2 * window_s else span / 2.0
    first = [i for i, t in enumerate(ts) if t < w]  # rounds begun in the first window
    last = [i for i, t in enumerate(ts) if t >= span - w]  # ... and in the last
    if len(first) < 2 or len(last) < 2:
        return None
    col = columns(rec)
    keys = member_label(rec)
    members = {}
    for rid, j in col.items():
        a = [rounds[i][j] for i in last]
        b = [rounds[i][j] for i in first]
        lo, hi = _bootstrap_ratio(a, b)
        members[keys.get(rid, rid)] = {
            "ratio": intervals.median(a) / intervals.median(b),
            "ci_low": lo,
            "ci_high": hi,
            "first_ms": intervals.median(b),
            "last_ms": intervals.median(a),
            "first_rounds": len(b),
            "last_rounds": len(a),
        }
    return {
        "window_s": w,
        "first": [0.0, w],
        "last": [span - w, span],
        "members": members,
        "method": RETENTION_METHOD,
    }


def first_marked_s(rec: dict[str, Any]) -> float | None:
    ts = _times(rec)
    for i in marked(rec):
        return ts[i] if i < len(ts) else None
    return None


def sustained_summary(rec: dict[str, Any]) -> dict[str, Any]:
    ts = _times(rec)
    return {
        "duration_s": max(ts) if ts else 0.0,
        "rounds": len(ts),
        "windows": windows(rec),
        "retention": retention(rec),
        "first_marked_s": first_marked_s(rec),
        "marked": len(marked(rec)),
    }


def _window_word(w: float) -> str:
    return "minute" if math.isclose(w, 60.0) else f"{w:.3g} s"


def sustained_lines(rec: dict[str, Any]) -> list[str]:
    """Retention per member with its interval, and the time to the first marked round."""
    s = sustained_summary(rec)
    d = s["duration_s"]
    out = [f"sustained: {s['rounds']} rounds over {d:.{0 if d >= 10 else 1}f} s, every round kept"]
    ret = s["retention"]
    if ret:
        word = _window_word(ret["window_s"])
        for k, v in ret["members"].items():
            out.append(
                f"retention {k}: last-{word} median / first-{word} median = {v['ratio']:.3f} "
                f"[{v['ci_low']:.3f}–{v['ci_high']:.3f}] ({v['first_ms']:.3f} → "
                f"{v['last_ms']:.3f} ms; > 1 = slower at the end)"
            )
        out.append(f"retention interval: {ret['method']}")
    else:
        out.append("retention: too few rounds for a first and a last window")
    t = s["first_marked_s"]
    if t is None and _unmarkable(rec):
        out.append("first marked round: not checked (nothing on this device could mark one)")
    elif t is None:
        out.append("first marked round: none")
    else:
        out.append(f"first marked round at {t:.1f} s ({s['marked']} marked in all)")
    return out


def sustained_table(rec: dict[str, Any]) -> Any:
    """A rich table: one row per time window, median ms per member, max temperature, marked."""
    from rich.table import Table

    ws = windows(rec)
    keys = list(member_label(rec).values())
    t = Table(title="latency over time (median ms per window)")
    t.add_column("window (s)")
    t.add_column("rounds", justify="right")
    for k in keys:
        t.add_column(k, justify="right")
    t.add_column("max °C", justify="right")
    t.add_column("marked", justify="right")
    digits = 0 if not ws or ws[-1]["end_s"] >= 20 else 1
    for w in ws:
        t.add_row(
            f"{w['start_s']:.{digits}f}–{w['end_s']:.{digits}f}",
            str(w["rounds"]),
            *[f"{w['medians'].get(k, float('nan')):.3f}" for k in keys],
            "-" if w["temp_c"] is None else f"{w['temp_c']:.1f}",
            str(w["marked"]),
        )
    return t


def _spans(idx: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive runs of indices as (first, last) pairs."""
    out: list[tuple[int, int]] = []
    for i in idx:
        if out and i == out[-1][1] + 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


def plot_sustained(rec: dict[str, Any], path: str | Path, title: str = "") -> Path:
    """Latency of each member (every round, and a rolling median) and the temperature against
    time; marked rounds shaded. PNG or SVG by suffix."""
    from edgeattn.bench.plot import pyplot, save_figure
    from edgeattn.errors import BenchError

    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise BenchError(f"--plot {str(path)!r}: use a .png, .svg or .pdf file name")
    plt = pyplot()
    p = _p(rec)
    ts = _times(rec)
    rounds = p.get("rounds_ms") or []
    conds = p.get("round_conditions") or []
    if not ts or len(ts) != len(rounds):
        raise BenchError("nothing to plot: the record has no per-round conditions")
    fig, ax = plt.subplots(figsize=(9, 4.5))
    keys = member_label(rec)
    import numpy as np

    t_arr = np.asarray(ts, dtype=float)
    bins = np.minimum((t_arr / (max(ts) or 1.0) * PLOT_BINS).astype(int), PLOT_BINS - 1)
    for rid, j in columns(rec).items():
        ys = np.asarray([row[j] for row in rounds], dtype=float)
        step = max(1, len(ys) // 5000)  # at most ~5000 dots per member
        line = ax.plot(t_arr[::step], ys[::step], ".", ms=2, alpha=0.25)[0]
        mids, meds = [], []
        for b in range(PLOT_BINS):  # the median of each of PLOT_BINS time bins
            sel = bins == b
            if sel.any():
                mids.append(float(t_arr[sel].mean()))
                meds.append(float(np.median(ys[sel])))
        ax.plot(mids, meds, "-", color=line.get_color(), label=keys.get(rid, rid))
    for a, b in _spans(marked(rec)):
        ax.axvspan(ts[a], ts[min(b + 1, len(ts) - 1)], color="red", alpha=0.08, lw=0)
    every = np.asarray([x for row in rounds for x in row], dtype=float)
    ax.set_ylim(0, float(np.quantile(every, 0.99)) * 1.3)  # a few stalls never flatten the rest
    ax.set_xlabel("time since the first round (s)")
    ax.set_ylabel("latency (ms)")
    temps = [
        (t, c.get("temp_c")) for t, c in zip(ts, conds, strict=False) if c.get("temp_c") is not None
    ]
    if temps:
        ax2 = ax.twinx()
        ax2.plot([t for t, _ in temps], [c for _, c in temps], "k-", lw=1, label="temperature")
        ax2.set_ylabel("temperature (°C)")
        ax2.legend(loc="upper right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(
        (title or "sustained run")
        + "\ndots: rounds; lines: median per time bin; marked rounds shaded; top 1 % cut",
        fontsize=9,
    )
    return save_figure(fig, plt, path)


def sustained_plot_path(out: str | Path) -> Path:
    """The default PNG next to the records file: ``<out stem>-sustained.png``."""
    o = Path(out)
    return o.with_name(o.stem + "-sustained.png")
