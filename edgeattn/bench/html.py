"""``edgeattn report FILES --html PAGE.html``: one self-contained page comparing devices.

Everything is inline (styles, figures as SVG, no script, no font or image to fetch), so the page
opens offline, mails as one file, reads on a phone (responsive CSS) and prints (print CSS). Every
number comes from the functions the terminal report uses: ``report.run_summaries`` /
``bench_summary`` (the paired ratios with their 95 % intervals, the op-level breakdown),
``sweep.ratio_points`` / ``find_crossover`` / ``verdict_counts``, ``profile.stage_rows`` /
``reconciliation``, and ``check.check_file`` for each run's integrity (complete, partial,
edited). Figures are matplotlib rendered to SVG, each hover target given an SVG ``<title>`` with
its exact value and interval. Every string that comes from a record is escaped.
"""

from __future__ import annotations

import html as _html
import io
import json
import os
import re
import shlex
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeattn.bench import pairs, report, sweep
from edgeattn.errors import BenchError

#: the marker that says a file is a page this command wrote (and may overwrite)
GENERATOR = "edgeattn report --html"
MARK = f'<meta name="generator" content="{GENERATOR}">'
EMULATED = "emulated — not device speed"
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")
_COMPONENTS = ("attention", "mlp", "norm", "lpi", "embed", "head", "other")
_COMP_COLOURS = {
    "attention": "#1f77b4",
    "mlp": "#ff7f0e",
    "norm": "#2ca02c",
    "lpi": "#9467bd",
    "embed": "#8c564b",
    "head": "#e377c2",
    "other": "#7f7f7f",
}
#: a headline figure per shape up to this many shapes; a sweep's other shapes are in its figures
MAX_HEADLINE_SHAPES = 6
#: figure width in inches: narrow enough that the text stays readable on a phone
FIG_W = 4.8


def esc(v: Any) -> str:
    """HTML-escaped text; ``://`` written as ``&#58;//`` so that no URL appears in the file as
    text (the page reads the same; nothing in it can be mistaken for a link to fetch)."""
    return _html.escape("" if v is None else str(v), quote=True).replace("://", "&#58;//")


def _num(v: Any) -> str:
    """A number as an exact attribute value (what the record holds)."""
    return esc(json.dumps(v))


# ------------------------------------------------------------------------------------ the file


def page_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` must not be overwritten (None: missing, empty, or a page of this command)."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory; give a file name such as report.html"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_size == 0:
        return None
    try:
        with open(p, "rb") as f:
            head = f.read(4096)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if MARK.encode() in head:
        return None
    return "exists and is not a page edgeattn wrote; refusing to overwrite it"


def check_html_out(path: str | os.PathLike) -> None:
    problem = page_problem(path)
    if problem:
        raise BenchError(f"--html {str(path)!r} {problem}", hint="choose another --html file")


def write_page(
    records: Sequence[dict[str, Any]], files: Sequence[str | os.PathLike], out: str | os.PathLike
) -> Path:
    """Build the page for ``records`` (read from ``files``) and write it to ``out`` atomically;
    refuses an existing file that is not a page of this command."""
    from edgeattn.bench.preflight import why
    from edgeattn.runtime.records import write_atomic

    check_html_out(out)
    text = build_page(records, files, out_name=Path(out).name)
    try:
        write_atomic(str(out), text.encode("utf-8"))
    except OSError as exc:
        raise BenchError(f"--html {str(out)!r}: cannot write it: {why(exc)}") from None
    return Path(out)


# ---------------------------------------------------------------------------------- integrity


class _NoSchema:
    """Stands in for ``check.Validators`` without the jsonschema package: runs are still told
    apart (the run_end count and digest), the schema is not checked."""

    def errors(self, obj: dict[str, Any], branch: str) -> list[tuple[list[Any], str]]:
        return []


def integrity_reports(files: Sequence[str | os.PathLike]) -> tuple[list[Any], bool]:
    """(``check.FileReport`` per file, whether the schema was checked)."""
    from edgeattn.bench import check

    try:
        v: Any = check.Validators()
        schema = True
    except BenchError:
        v, schema = _NoSchema(), False
    return [check.check_file(f, v) for f in files], schema


def run_states(reports: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """{run key (as ``report.run_key``): {state, detail, run_id, file, end, records}}."""
    out: dict[str, dict[str, Any]] = {}
    for rep in reports:
        if rep.sidecar is not None:
            continue
        for r in rep.runs.values():
            out[f"{rep.path}#{r.run_id}"] = {
                "state": r.state or "partial",
                "detail": r.detail,
                "run_id": r.run_id,
                "file": rep.path,
                "end": r.end or {},
                "records": len(r.lines) + len(r.after_end),
                "lines": f"{r.first_line}-{r.last_line}",
            }
    return out


def _state_of(run: str, states: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if run in states:
        return states[run]
    return {"state": "no run id", "detail": "older records: no run id, integrity not recorded"}


def _badge(state: str) -> str:
    cls = {"complete": "ok", "partial": "warn", "edited": "bad"}.get(state, "muted")
    return f'<span class="badge {cls}" data-state="{esc(state)}">{esc(state)}</span>'


# ------------------------------------------------------------------------------------ helpers


def _short_device(rec: dict[str, Any]) -> str:
    dev = rec.get("device") or {}
    host = rec.get("host") or {}
    name = host.get("spec") or dev.get("hostname") or "?"
    prov = (rec.get("session") or {}).get("device") or ""
    return f"{name} [{prov}]" + (" · emulated" if dev.get("emulated") else "")


def _fmt_x(r: dict[str, Any]) -> str:
    return f"{r['median']:.2f}× [{r['ci_low']:.2f}–{r['ci_high']:.2f}]"


def _fmt_ms(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.3g}" if v < 10 else f"{v:.1f}"


def _fmt_iv(d: dict[str, Any] | None, pct: bool = False) -> str:
    if not d:
        return "-"
    f = (lambda x: f"{x:.0%}") if pct else _fmt_ms
    return f"{f(d['median'])} [{f(d['ci_low'])}–{f(d['ci_high'])}]"


def _run_short(run: str) -> str:
    src, _, rid = run.partition("#")
    return f"{Path(src).name}" + (f" #{rid[:8]}" if rid else "")


def _table(heads: Sequence[str], rows: Sequence[str], cls: str = "") -> str:
    th = "".join(f"<th>{esc(h)}</th>" for h in heads)
    return (
        f'<div class="scroll"><table class="{cls}"><thead><tr>{th}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


class _Ctx:
    """What the sections share: the records, the runs' columns and labels, the devices."""

    def __init__(self, records: Sequence[dict[str, Any]], states: dict[str, dict[str, Any]]):
        self.records = [r for r in records]
        self.states = states
        self.cols = report.run_columns(self.records)
        self.label_col = {report.run_label(c, self.cols): c for c in self.cols}
        self.devices: list[str] = []
        for dev, _ in self.cols:
            if dev not in self.devices:
                self.devices.append(dev)
        self.colour = {d: _PALETTE[i % len(_PALETTE)] for i, d in enumerate(self.devices)}
        self.short: dict[str, str] = {}
        for d in self.devices:
            rec = next(r for r in self.records if report.device_label(r) == d)
            s = _short_device(rec)
            while s in self.short.values():
                s += "'"
            self.short[d] = s
        self.n_fig = 0

    def of_col(self, col: tuple[str, str]) -> list[dict[str, Any]]:
        return [r for r in self.records if (report.device_label(r), report.run_key(r)) == col]

    def series(self, col: tuple[str, str]) -> str:
        """A figure's name for a run: the short device name, plus the file when needed."""
        full = report.run_label(col, self.cols)
        return self.short[col[0]] + full[len(col[0]) :]

    def fig_id(self) -> str:
        self.n_fig += 1
        return f"f{self.n_fig}"


# ------------------------------------------------------------------------------------ figures


def _plt() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchError(
            "report --html draws its figures with matplotlib, which is not installed",
            hint="pip install 'edgeattn[plot]'  (or: pip install matplotlib)",
        ) from None
    plt.rcParams.update(
        {
            "svg.fonttype": "none",  # text stays text: small, selectable, no glyph paths
            "svg.hashsalt": "edgeattn",  # stable ids: the same records give the same page
            "font.size": 10,
            "font.family": "sans-serif",
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    )
    return plt


def _svg(fig: Any, fid: str, tips: dict[str, str], label: str) -> str:
    """The figure as inline SVG: no XML prologue, metadata or namespace URIs, ids made unique
    to this figure, and an SVG ``<title>`` (hover text) inside each artist named in ``tips``."""
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(
        buf,
        format="svg",
        bbox_inches="tight",
        metadata={"Creator": None, "Date": None, "Format": None, "Type": None},
    )
    plt.close(fig)
    s = buf.getvalue()
    s = s[s.index("<svg") :]
    s = re.sub(r"<metadata>.*?</metadata>", "", s, flags=re.S)
    s = re.sub(r"<style[^>]*>.*?</style>", "", s, flags=re.S)
    s = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", s)
    s = s.replace("xlink:href=", "href=")
    s = re.sub(r'<svg([^>]*?)\s+width="[^"]*"\s+height="[^"]*"', r"<svg\1", s, count=1)
    for gid, tip in tips.items():
        s = s.replace(f'<g id="{gid}">', f'<g id="{gid}" class="tip"><title>{esc(tip)}</title>', 1)
    s = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{fid}-{m.group(1)}"', s)
    s = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{fid}-{m.group(1)})", s)
    s = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{fid}-{m.group(1)}"', s)
    return s.replace("<svg", f'<svg role="img" aria-label="{esc(label)}"', 1)


def _figure(svg: str, caption: str, kind: str, sources: Sequence[str] = ()) -> str:
    src = ""
    if sources:
        src = '<p class="src">from: ' + ", ".join(esc(x) for x in sources) + "</p>"
    return (
        f'<figure class="fig" data-figure="{esc(kind)}">{svg}'
        f"<figcaption>{caption}</figcaption>{src}</figure>"
    )


# --------------------------------------------------------------------------- device cards


_FP_FIELDS = (
    ("hostname", "host name"),
    ("device_model", "model"),
    ("cpu_model", "CPU"),
    ("machine", "arch"),
    ("os", "OS"),
    ("cores_physical", "cores (physical)"),
    ("cores_logical", "cores (logical)"),
    ("cores_usable", "cores usable"),
    ("ram_total_mb", "RAM MB"),
    ("ort_device", "ORT device"),
    ("fp16_native", "fp16 native"),
    ("fingerprint_id", "fingerprint"),
)
_VERSIONS = (("onnxruntime_version", "onnxruntime"), ("numpy_version", "numpy"))
_CONDITIONS = ("temperature_c", "cpu_cur_mhz", "governor", "throttled")


def _dl(items: Sequence[tuple[str, Any]]) -> str:
    return (
        "<dl>"
        + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items if v not in (None, ""))
        + "</dl>"
    )


def _conditions(c: dict[str, Any] | None) -> str:
    c = c or {}
    vals = [f"{k} {c[k]}" for k in _CONDITIONS if c.get(k) is not None]
    return ", ".join(vals) if vals else "not reported by this device"


def device_cards(ctx: _Ctx) -> str:
    out = []
    for dev in ctx.devices:
        recs = [
            r for r in ctx.records if report.device_label(r) == dev and r.get("kind") != "run_end"
        ]
        recs.sort(key=lambda r: r.get("created_utc") or "")
        fp = next((r["device"] for r in reversed(recs) if r.get("device")), {})
        host = next((r.get("host") for r in recs if r.get("host")), None) or {}
        emulated = bool(fp.get("emulated"))
        runs = [c for c in ctx.cols if c[0] == dev]
        versions = [(lbl, fp.get(k)) for k, lbl in _VERSIONS]
        versions.append(("python", (fp.get("python") or {}).get("version")))
        versions.append(("edgeattn runtime", next((r.get("runtime_version") for r in recs), None)))
        ends = [ctx.states.get(c[1], {}).get("end") or {} for c in runs]
        versions.append(("edgeattn", next((e["edgeattn_version"] for e in ends if e.get("edgeattn_version")), None)))  # fmt: skip
        prov = sorted({(r.get("session") or {}).get("provider") or "" for r in recs} - {""})
        fields = [(lbl, fp.get(k)) for k, lbl in _FP_FIELDS]
        fields.insert(0, ("remote host", host.get("spec")))
        fields.append(("providers", ", ".join(prov) or None))
        fields.append(("available providers", ", ".join(fp.get("providers") or []) or None))
        for k in ("jetson", "gpu"):
            if fp.get(k):
                fields.append((k, json.dumps(fp[k], ensure_ascii=False)))
        emu = ""
        if emulated:
            hint = fp.get("emulated_hint") or fp.get("emulated")
            hint = f" ({esc(hint)})" if isinstance(hint, str) else ""
            emu = (
                f'<p class="emulated" data-emulated="true"><strong>{esc(EMULATED)}</strong>'
                f"{hint}: its timings show that the path works, not how fast the device is.</p>"
            )
        before = recs[0].get("conditions", {}) if recs else {}
        after = recs[-1].get("conditions", {}) if recs else {}
        counts = sweep.verdict_counts(recs)
        verdicts = ", ".join(f"{k}: {v}" for k, v in counts.items()) or "none"
        run_rows = []
        for c in runs:
            st = _state_of(c[1], ctx.states)
            end = st.get("end") or {}
            run_rows.append(
                f'<li data-run="{esc(c[1])}">{_badge(st["state"])} {esc(_run_short(c[1]))}'
                + (f" · {esc(end.get('command'))}" if end.get("command") else "")
                + (f" · {esc(st['detail'])}" if st.get("detail") else "")
                + "</li>"
            )
        out.append(
            f'<section class="card{" emu" if emulated else ""}" data-device="{esc(dev)}" '
            f'style="border-top-color:{ctx.colour[dev]}">'
            f"<h3>{esc(ctx.short[dev])}</h3><p class='full'>{esc(dev)}</p>{emu}"
            f"{_dl(fields)}<h4>versions</h4>{_dl(versions)}"
            f"<h4>conditions</h4><dl><dt>before</dt><dd>{esc(_conditions(before.get('before')))}"
            f"</dd><dt>after</dt><dd>{esc(_conditions(after.get('after')))}</dd></dl>"
            f'<h4>verdicts</h4><p class="verdicts">{esc(verdicts)}</p>'
            f'<h4>runs</h4><ul class="runs">{"".join(run_rows)}</ul></section>'
        )
    return f'<div class="cards">{"".join(out)}</div>'


# ---------------------------------------------------------------------------- headline ratios


def _headline_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The ratios a run shows at one shape: each named line measured, then each method against
    the reference that no named line already says (same numerator and denominator)."""
    rows = []
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for name in report.SUMMARY_RATIOS:
        r = summary.get(name)
        if not r:
            continue
        row = {"name": name, "label": pairs.RATIO_BY_NAME[name].label, "r": r, "also": []}
        rows.append(row)
        seen[(r.get("num"), r.get("den"))] = row
    ref = summary.get("reference")
    for member, r in (summary.get("vs_reference") or {}).items():
        name = f"{pairs.VS_REF}{member}"
        same = seen.get((r.get("num"), r.get("den")))
        if same is not None:
            same["also"].append(name)
            continue
        rows.append({"name": name, "label": f"{ref} ÷ {member}", "r": r, "also": []})
    return rows


def headline(ctx: _Ctx) -> str:
    # Long because it writes one figure and its table from the same rows: splitting would pass the
    # rows twice.
    items = report.run_summaries(ctx.records)
    if not items:
        return (
            "<p class='muted'>No paired records: ratios need the paired pass "
            "(bench or sweep with at least two methods, without --no-paired).</p>"
        )
    shapes: list[str] = []
    for it in items:
        if it["shape"] not in shapes:
            shapes.append(it["shape"])
    # a figure per shape a one-shape run (a bench) measured; a sweep's shapes are drawn along
    # N or D in the sweep figures (and listed in the table here)
    runs_at: dict[str, set[str]] = {}
    for it in items:
        runs_at.setdefault(it["label"], set()).add(it["shape"])
    drawn = [sh for sh in shapes if any(runs_at[it["label"]] == {sh} for it in items)]
    drawn = (drawn or shapes[:1])[:MAX_HEADLINE_SHAPES]
    plt = _plt()
    parts = [f"<p class='note'>{esc(pairs.DIRECTION)}; each dot is the median of the per-round "
             "ratios of the paired pass, its whisker the 95 % interval; hollow = unstable "
             "(the tries disagreed); ≈1 in the table = no measurable difference (the interval "
             "holds 1.0); hover a dot for its exact figures.</p>"]  # fmt: skip
    table_rows = []
    for shape in shapes:
        at = [it for it in items if it["shape"] == shape]
        per = [(it, _headline_rows(it["summary"])) for it in at]
        labels: list[str] = []
        for _, rows in per:
            for row in rows:
                if row["label"] not in labels:
                    labels.append(row["label"])
        for it, rows in per:
            col = ctx.label_col[it["label"]]
            st = _state_of(col[1], ctx.states)
            prec = report.latest_paired(
                [
                    r
                    for r in ctx.of_col(col)
                    if f"N={(r.get('meta') or {}).get('tokens')}, D={(r.get('meta') or {}).get('dim')}"
                    == shape
                ]
            )
            src = f"{(prec or {}).get('id')} · run {_run_short(col[1])}"
            for row in rows:
                r = row["r"]
                flags = []
                if r.get("stability") == "unstable":
                    flags.append('<span class="badge warn">unstable</span>')
                if r.get("no_difference"):
                    flags.append('<span class="badge muted">≈1</span>')
                if st["state"] != "complete":
                    flags.append(_badge(st["state"]))
                table_rows.append(
                    f'<tr class="ratio" data-device="{esc(col[0])}" data-run="{esc(col[1])}" '
                    f'data-shape="{esc(shape)}" data-ratio="{esc(row["name"])}" '
                    f'data-also="{esc(" ".join(row["also"]))}" data-median="{_num(r["median"])}" '
                    f'data-ci-low="{_num(r["ci_low"])}" data-ci-high="{_num(r["ci_high"])}" '
                    f'data-stability="{esc(r.get("stability"))}">'
                    f'<td><span class="dot" style="background:{ctx.colour[col[0]]}"></span>'
                    f"{esc(ctx.series(col))}</td><td>{esc(shape)}</td><td>{esc(row['label'])}</td>"
                    f'<td class="num">{esc(_fmt_x(r))}</td><td class="num">{esc(r.get("rounds"))}'
                    f"</td><td>{esc(r.get('stability') or '-')} {' '.join(flags)}</td>"
                    f'<td class="src">{esc(src)}</td></tr>'
                )
        if shape in drawn:
            parts.append(_headline_figure(plt, ctx, shape, labels, per))
    if len(shapes) > len(drawn):
        parts.append(
            f"<p class='note'>{len(shapes) - len(drawn)} more shape(s), measured by sweeps: in "
            "the table below and the sweep figures.</p>"
        )
    parts.append(
        _table(
            ("run", "shape", "ratio", "× [95 % interval]", "rounds", "verdict", "source"),
            table_rows,
            "ratios",
        )
    )
    notes_html = []
    for it in items:
        notes = [it["summary"].get("stability_note")] + [
            f"alone, {d['method']} {d['isolated']:.2f}× is outside the paired interval "
            f"{_fmt_x(d['paired'])} (drift between the isolated runs; the paired figure is "
            "the comparison)"
            for d in it["summary"].get("disagreements") or []
        ]
        for n in notes:
            if n:
                col = ctx.label_col[it["label"]]
                notes_html.append(f"<li>{esc(ctx.series(col))} at {esc(it['shape'])}: {esc(n)}</li>")  # fmt: skip
    if notes_html:
        parts.append(f"<ul class='small notes'>{''.join(notes_html)}</ul>")
    return "".join(parts)


def _headline_figure(
    plt: Any, ctx: _Ctx, shape: str, labels: list[str], per: list[tuple[dict[str, Any], list]]
) -> str:
    fid = ctx.fig_id()
    n_series = len(per)
    height = 0.9 + len(labels) * (0.32 + 0.2 * n_series)
    fig, ax = plt.subplots(figsize=(FIG_W, height))
    tips: dict[str, str] = {}
    step = 0.6 / max(n_series, 1)
    xs: list[float] = [1.0]
    for si, (it, rows) in enumerate(per):
        col = ctx.label_col[it["label"]]
        colour = ctx.colour[col[0]]
        off = (si - (n_series - 1) / 2) * step
        for row in rows:
            r = row["r"]
            y = labels.index(row["label"]) + off
            unstable = r.get("stability") == "unstable"
            gid = f"tip{len(tips)}"
            tip = (
                f"{ctx.series(col)}: {row['label']} = {_fmt_x(r)} (95 % interval, "
                f"{r.get('rounds')} paired rounds, {r.get('stability') or 'no verdict'}"
                + ("; no measurable difference" if r.get("no_difference") else "")
                + ")"
            )
            ax.hlines(y, r["ci_low"], r["ci_high"], color=colour, lw=2,
                      linestyles="dashed" if unstable else "solid", gid=gid + "w")  # fmt: skip
            ax.plot([r["median"]], [y], "o", ms=7, color=colour,
                    mfc="white" if unstable else colour, mew=1.8, gid=gid)  # fmt: skip
            tips[gid] = tips[gid + "w"] = tip
            xs += [r["ci_low"], r["ci_high"]]
        ax.plot([], [], "o", color=colour, label=ctx.series(col))
    ax.axvline(1.0, color="#444", lw=1, zorder=0)
    lo, hi = min(xs), max(xs)
    if hi / max(lo, 1e-9) > 4:
        ax.set_xscale("log")
    pad = (hi - lo) * 0.08 or 0.05
    ax.set_xlim(max(lo - pad, 1e-6), hi + pad)
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels([_wrap(lbl, 24) for lbl in labels], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("reference time ÷ method time  (> 1: the method is faster)")
    ax.set_title(f"paired ratios at {shape}", loc="left", fontsize=10)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22 - 0.3 / height), ncol=1,
              frameon=False, fontsize=9)  # fmt: skip
    ax.grid(axis="x", color="#ddd", lw=0.6)
    svg = _svg(fig, fid, tips, f"paired ratios at {shape}")
    return _figure(svg, f"Ratios at {esc(shape)}, one colour per device (run).", "headline")


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


# ------------------------------------------------------------------------------- the sweeps


def _paired_latency(rec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{pair key: {median, ci_low, ci_high}} of one paired record (its own figures)."""
    lat = (rec.get("paired") or {}).get("latency_ms") or {}
    return {key: lat[rid] for rid, key in pairs.member_keys(rec).items() if lat.get(rid)}


def sweeps(ctx: _Ctx) -> str:
    plt = None
    parts = []
    for col in ctx.cols:
        mine = ctx.of_col(col)
        prs = sorted(pairs.paired(mine), key=lambda r: r.get("created_utc") or "")
        groups: dict[tuple[str, Any, Any], dict[Any, dict[str, Any]]] = {}
        for rec in prs:
            m = rec.get("meta") or {}
            reg = sweep.regime_of(list(pairs.ratio_results(rec)))
            if reg == "tokens":
                key, x = (reg, m.get("dim"), m.get("heads")), m.get("tokens")
            else:
                key, x = (reg, m.get("tokens"), m.get("heads")), m.get("dim")
            groups.setdefault(key, {})[x] = rec  # the latest record per point
        pts = sweep.ratio_points(mine)
        for (reg, fixed, heads), by_x in groups.items():
            if len(by_x) < 2:
                continue
            plt = plt or _plt()
            parts.append(_sweep_figure(plt, ctx, col, reg, fixed, heads, by_x, pts, mine))
    if not parts:
        return ""
    return "".join(parts)


def _crossover(mine: list[dict[str, Any]], dim: Any, heads: Any) -> Any:
    methods = {
        (r.get("meta") or {}).get("method")
        for r in mine
        if (r.get("meta") or {}).get("dim") == dim and (r.get("meta") or {}).get("heads") == heads
    }
    for rec in pairs.paired(mine):
        methods |= set(pairs.member_methods(rec).values())
    from edgeattn.bench import methods as table

    if not set(table.crossover_pair()) <= methods:
        return None
    try:
        return sweep.find_crossover(mine, dim, heads)
    except BenchError:
        return None


def _sweep_figure(
    plt: Any,
    ctx: _Ctx,
    col: tuple[str, str],
    reg: str,
    fixed: Any,
    heads: Any,
    by_x: dict[Any, dict[str, Any]],
    pts: list[dict[str, Any]],
    mine: list[dict[str, Any]],
) -> str:
    # Long because each regime's two panels (ratios, latency) and their hover titles are drawn on
    # shared axes.
    fid = ctx.fig_id()
    xname = "tokens N" if reg == "tokens" else "channels D"
    fixed_name = f"D={fixed}, h={heads}" if reg == "tokens" else f"N={fixed}, h={heads}"
    xs = sorted(by_x)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(FIG_W, 7.4), sharex=True)
    tips: dict[str, str] = {}
    methods: list[str] = []
    for x in xs:
        for k in _paired_latency(by_x[x]):
            if k not in methods:
                methods.append(k)
    for mi, meth in enumerate(methods):
        c = _PALETTE[mi % len(_PALETTE)]
        px = [x for x in xs if meth in _paired_latency(by_x[x])]
        ys = [_paired_latency(by_x[x])[meth] for x in px]
        ax1.plot(px, [y["median"] for y in ys], "-", color=c, lw=1.4, label=meth)
        for x, y in zip(px, ys, strict=True):
            gid = f"tip{len(tips)}"
            ax1.plot([x], [y["median"]], "o", color=c, ms=5, gid=gid)
            tips[gid] = (
                f"{meth} at {xname.split()[1]}={x} ({fixed_name}): paired median "
                f"{_fmt_ms(y['median'])} ms [{_fmt_ms(y.get('ci_low'))}–"
                f"{_fmt_ms(y.get('ci_high'))}] · {by_x[x].get('id')}"
            )
    notes = []
    if reg == "tokens":
        cx = _crossover(mine, fixed, heads)
        if cx is not None:
            if cx.crossover is not None:
                ax1.axvline(cx.crossover, color="#000", ls="--", lw=1)
                ax1.annotate(f"measured crossover N={cx.crossover}", (cx.crossover, 0.97),
                             xycoords=("data", "axes fraction"), fontsize=8, ha="left",
                             va="top")  # fmt: skip
            ax1.axvline(cx.rule, color="#999", ls=":", lw=1)
            notes.append(
                f"measured (QKᵀ)V / Q(KᵀV) crossover: "
                f"{'N=' + str(cx.crossover) if cx.crossover is not None else 'none'} "
                f"({cx.note}); the official rule switches at N = head_dim = {cx.rule} (dotted)"
            )
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax1.set_xscale("log")
    ax1.set_yscale("log")
    from matplotlib.ticker import LogLocator, NullLocator

    ax1.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax1.yaxis.set_minor_locator(NullLocator())
    ax1.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax1.yaxis.set_minor_formatter(NullFormatter())
    ax1.set_ylabel("paired median latency, ms")
    ax1.set_title(
        f"{ctx.series(col)}: {reg} regime, {fixed_name}", loc="left", fontsize=10, wrap=True
    )
    ax1.legend(fontsize=8, frameon=False, ncol=2)
    ax1.grid(color="#eee", lw=0.6)
    mine_pts = [
        p
        for p in pts
        if p["regime"] == reg
        and p["heads"] == heads
        and (p["dim"] if reg == "tokens" else p["tokens"]) == fixed
    ]
    names: list[str] = []
    for p in mine_pts:
        if p["ratio"] not in names:
            names.append(p["ratio"])
    for ni, name in enumerate(names):
        c = _PALETTE[ni % len(_PALETTE)]
        ps = sorted(
            [p for p in mine_pts if p["ratio"] == name],
            key=lambda p: p["tokens"] if reg == "tokens" else p["dim"],
        )
        px = [p["tokens"] if reg == "tokens" else p["dim"] for p in ps]
        ax2.fill_between(px, [p["ci_low"] for p in ps], [p["ci_high"] for p in ps],
                         color=c, alpha=0.18, lw=0)  # fmt: skip
        ax2.plot(px, [p["median"] for p in ps], "-", color=c, lw=1.4, label=ps[0]["label"])
        for x, p in zip(px, ps, strict=True):
            gid = f"tip{len(tips)}"
            unstable = p["stability"] == "unstable"
            ax2.plot([x], [p["median"]], "o", color=c, ms=5,
                     mfc="white" if unstable else c, gid=gid)  # fmt: skip
            tips[gid] = (
                f"{p['label']} at {xname.split()[1]}={x}: {_fmt_x(p)} (95 % interval, "
                f"{p['rounds']} rounds, {p['stability'] or 'no verdict'}"
                + ("; no measurable difference" if p["no_difference"] else "")
                + ")"
            )
    ax2.axhline(1.0, color="#444", lw=1)
    ax2.set_ylabel("ratio (reference ÷ method)")
    ax2.set_xlabel(xname)
    ax2.legend(fontsize=8, frameon=False)
    ax2.grid(color="#eee", lw=0.6)
    ax2.set_xticks(xs)
    ax2.set_xticklabels([str(x) for x in xs])
    ax2.minorticks_off()
    svg = _svg(fig, fid, tips, f"{reg} sweep of {ctx.series(col)}")
    cap = (
        f"Latency against {esc(xname)} per method (top) and the paired ratios with their 95 % "
        f"band and the line at 1.0 (bottom); {esc(ctx.series(col))}."
    )
    if notes:
        cap += " " + " ".join(esc(n) for n in notes)
    srcs = [f"{by_x[x].get('id')}" for x in xs]
    return _figure(svg, cap, "sweep", [f"run {_run_short(col[1])}: " + ", ".join(srcs)])


# ---------------------------------------------------------------------------- op-level table


def op_level(ctx: _Ctx) -> str:
    rows = []
    for it in report.run_summaries(ctx.records):
        col = ctx.label_col[it["label"]]
        s = it["summary"]
        npe = s.get("ns_per_element") or {}
        for meth, b in (s.get("op_level") or {}).items():
            nm = b.get("norm_ms_runs")
            sh = b.get("norm_share_runs")
            ops = ", ".join(f"{k} {_fmt_ms(v)}" for k, v in (b.get("norm_ops") or {}).items())
            attrs = ""
            if nm:
                attrs = (
                    f' data-median="{_num(nm["median"])}" data-ci-low="{_num(nm["ci_low"])}" '
                    f'data-ci-high="{_num(nm["ci_high"])}"'
                )
            rows.append(
                f'<tr class="op" data-device="{esc(col[0])}" data-method="{esc(meth)}"{attrs}>'
                f"<td>{esc(ctx.series(col))}</td><td>{esc(it['shape'])}</td><td>{esc(meth)}</td>"
                f'<td class="num">{esc(_fmt_iv(nm) if nm else _fmt_ms(b["norm_ms"]))}</td>'
                f'<td class="num">{esc(_fmt_iv(sh, pct=True) if sh else "-")}</td>'
                f'<td class="num">{esc(_fmt_ms(b.get("nxn_matmul_ms")))}</td>'
                f'<td class="num">{esc(_fmt_ms(b.get("node_ms")))}</td>'
                f"<td>{esc(pairs.op_verdict(b))}</td><td>{esc(ops or 'none')}</td>"
                f'<td class="num">{esc(b.get("profiled_runs"))}</td></tr>'
            )
        if len(npe) >= 2:  # the pure-op graphs, each alone over the same (B,h,N,N) tensor
            each = ", ".join(f"{k} {v:.3f} ns" for k, v in npe.items())
            rows.append(
                f'<tr class="op npe"><td>{esc(ctx.series(col))}</td><td>{esc(it["shape"])}</td>'
                f"<td>pure op, ns per element</td><td colspan='7'>{esc(each)}</td></tr>"
            )
    if not rows:
        return ""
    return (
        "<p class='note'>The profiled pass of the fixed-order pair (softmax MSA and SimA, both "
        "(QKᵀ)V): the normalisation ops against the two N×N MatMuls and the whole node time, "
        "ms per run: median of the profiled runs [95 % interval]; 'consistent' = the "
        "normalisation time's interval within ±10 % of its median.</p>"
        + _table(
            (
                "run",
                "shape",
                "method",
                "norm ms",
                "norm share",
                "N×N mm ms",
                "node ms",
                "verdict",
                "norm ops (ms)",
                "runs",
            ),
            rows,
            "ops",
        )  # fmt: skip
    )


# ----------------------------------------------------------------------------- profiles


def profiles(ctx: _Ctx) -> str:
    from edgeattn.bench.profile import TOP, reconciliation

    recs = [
        r
        for r in report.ok(ctx.records)
        if (r.get("profile") or {}).get("blocks") and r.get("kind") != "paired"
    ]
    if not recs:
        return ""
    plt = _plt()
    parts = []
    for rec in sorted(recs, key=lambda r: r.get("created_utc") or ""):
        rows = (rec["profile"]["blocks"].get("1")) or []
        if not rows:
            continue
        dev = report.device_label(rec)
        col = (dev, report.run_key(rec))
        name = (rec.get("meta") or {}).get("name") or "?"
        fid = ctx.fig_id()
        fig, ax = plt.subplots(figsize=(FIG_W, 1.4 + 0.26 * len(rows)))
        tips: dict[str, str] = {}
        comps = [c for c in _COMPONENTS if any((r.get("components") or {}).get(c) for r in rows)]
        for i, r in enumerate(rows):
            left = 0.0
            parts_ms = r.get("components") or {r.get("component") or "other": r["ms"]}
            for c in comps:
                v = parts_ms.get(c) or 0.0
                if not v:
                    continue
                gid = f"tip{len(tips)}"
                ax.barh(i, v, left=left, color=_COMP_COLOURS[c], height=0.7, gid=gid)
                tips[gid] = (
                    f"{r['name']}: {c} {v:.4g} ms of {r['ms']:.4g} ms "
                    f"({v / r['ms']:.0%} of the block; the block is {r['share']:.1%} of node time)"
                    if r["ms"]
                    else f"{r['name']}: {c} {v:.4g} ms"
                )
                left += v
        from matplotlib.patches import Patch

        handles = [Patch(color=_COMP_COLOURS[c], label=c) for c in comps]
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels([r["name"] for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("profiled node time per run, ms")
        ax.set_title(f"{name} on {ctx.series(col)}", loc="left", fontsize=10)
        ax.legend(handles=handles, fontsize=8, frameon=False, loc="upper center", ncol=4,
                  bbox_to_anchor=(0.5, -0.9 / (1.4 + 0.26 * len(rows))))  # fmt: skip
        ax.grid(axis="x", color="#eee", lw=0.6)
        svg = _svg(fig, fid, tips, f"per-block profile of {name}")
        rc = reconciliation(rec)
        bits = [
            f"unprofiled median {_fmt_ms(rc['headline_ms'])} ms",
            f"node time {_fmt_ms(rc['node_ms'])} ms per profiled run",
            f"profiled wall {_fmt_ms(rc['profiled_wall_ms'])} ms",
        ]
        if rc.get("overhead"):
            bits.append(f"profiling overhead {rc['overhead']:.2f}×")
        if rc.get("top_share") is not None:
            bits.append(f"{rc['top_share']:.1%} of node time in {TOP} (not in a block)")
        warn = " Attribution warning: much of the time is in no block." if rc.get("warn") else ""
        cap = (
            f"Per-block profile of {esc(name)} (ORT profiler, stacked by component): "
            + esc("; ".join(bits))
            + "."
            + esc(warn)
        )
        parts.append(_figure(svg, cap, "profile", [f"{rec.get('id')} · run {_run_short(col[1])}"]))
    return "".join(parts)


# ----------------------------------------------------------------------------- precision


def precision(ctx: _Ctx) -> str:
    rows = []
    for col in ctx.cols:
        mine = ctx.of_col(col)
        speed: dict[tuple[Any, Any, str, str], dict[str, Any]] = {}
        for rec in sorted(pairs.paired(mine), key=lambda r: r.get("created_utc") or ""):
            m = rec.get("meta") or {}
            for name, r in pairs.ratio_results(rec).items():
                if name.startswith("speedup_vs_fp32/"):
                    _, meth, prec = name.split("/", 2)
                    speed[(m.get("tokens"), m.get("dim"), meth, prec)] = dict(r, src=rec.get("id"))
        errs: dict[tuple[Any, Any, str, str], dict[str, Any]] = {}
        for rec in sorted(report.ok(mine), key=lambda r: r.get("created_utc") or ""):
            m = rec.get("meta") or {}
            prec = m.get("precision") or "fp32"
            if prec == "fp32":
                continue
            errs[(m.get("tokens"), m.get("dim"), m.get("method"), prec)] = dict(
                m.get("precision_info") or {}, src=rec.get("id")
            )
        for key in sorted(set(speed) | set(errs), key=lambda k: tuple(str(x) for x in k)):
            n, d, meth, prec = key
            sp = speed.get(key)
            info = errs.get(key) or {}
            e = info.get("error_vs_fp32") or {}
            attrs = ""
            if sp:
                attrs = (
                    f' data-median="{_num(sp["median"])}" data-ci-low="{_num(sp["ci_low"])}" '
                    f'data-ci-high="{_num(sp["ci_high"])}"'
                )
            q = info.get("quantization")
            src = " · ".join(str(x) for x in ((sp or {}).get("src"), info.get("src")) if x)
            rows.append(
                f'<tr class="precision" data-device="{esc(col[0])}" data-method="{esc(meth)}" '
                f'data-precision="{esc(prec)}"{attrs}><td>{esc(ctx.series(col))}</td>'
                f"<td>N={esc(n)}, D={esc(d)}</td><td>{esc(meth)}</td><td>{esc(prec)}</td>"
                f'<td class="num">{esc(_fmt_x(sp) if sp else "-")}</td>'
                + "".join(
                    f'<td class="num">{esc(_g(e.get(k)))}</td>'
                    for k in ("max_abs", "max_rel", "cosine_min", "top1_agreement")
                )
                + f"<td>{esc(e.get('degraded', '-'))}</td>"
                f"<td>{esc(json.dumps(q, ensure_ascii=False) if isinstance(q, dict) else q or '-')}</td>"
                f'<td class="src">{esc(src)}</td></tr>'
            )
    if not rows:
        return ""
    return (
        "<p class='note'>Each precision variant against its own fp32 block: the speed-up is "
        "fp32 time ÷ variant time from the same paired rounds [95 % interval]; the error is the "
        "export's verification against fp32.</p>"
        + _table(
            (
                "run",
                "shape",
                "method",
                "precision",
                "speed-up vs fp32",
                "max abs err",
                "max rel err",
                "cosine min",
                "top-1 agreement",
                "degraded",
                "quantization",
                "source",
            ),
            rows,
            "prec",
        )  # fmt: skip
    )


def _g(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


# ------------------------------------------------------------------------- runs and commands


def rerun_command(recs: Sequence[dict[str, Any]], end: dict[str, Any]) -> str | None:
    """An ``edgeattn`` command line that measures what ``recs`` (one run) measured, rebuilt from
    the records (the exact command line is not recorded): the shapes, methods, provider,
    threads and timing options they carry. None when the run's command cannot be told."""
    # Long because it rebuilds each command kind's options from the records (no command line is
    # stored).
    ms = [r for r in recs if r.get("kind") != "run_end" and r.get("status") == "ok"]
    if not ms:
        return None
    cmd = end.get("command")
    iso = [r for r in ms if r.get("kind") != "paired"]
    prs = [r for r in ms if r.get("kind") == "paired"]
    first = (iso or prs)[0]
    ses = first.get("session") or {}
    words: list[str] = ["edgeattn"]
    profiled = [r for r in iso if (r.get("meta") or {}).get("method") == "profile"]
    if cmd == "profile" or (cmd is None and profiled and not prs):
        m = (profiled or iso)[0].get("meta") or {}
        words += ["profile", str(m.get("name") or "?")]
        if m.get("img_size"):
            words += ["--img-size", str(m["img_size"])]
        for k, v in (m.get("overrides") or {}).items():
            words += ["--set", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
        runs = ((profiled or iso)[0].get("protocol") or {}).get("profile_runs")
        if runs:
            words += ["--runs", str(runs)]
    else:
        shapes = sorted(
            {((r.get("meta") or {}).get("tokens"), (r.get("meta") or {}).get("dim")) for r in ms},
            key=lambda s: tuple(-1 if x is None else x for x in s),
        )
        methods: list[str] = []
        precs: list[str] = []
        for r in prs:
            for key in pairs.member_keys(r).values():
                meth, _, prec = key.partition("@")
                methods += [meth] if meth not in methods else []
                precs += [prec] if prec and prec not in precs else []
        for r in iso:
            m = r.get("meta") or {}
            if m.get("method") and m["method"] not in methods:
                methods.append(m["method"])
        heads = (first.get("meta") or {}).get("heads")
        if len(shapes) == 1 and cmd in (None, "bench", "remote run"):
            n, d = shapes[0]
            words += ["bench", "--tokens", str(n), "--dim", str(d), "--heads", str(heads)]
            batch = (first.get("meta") or {}).get("batch")
            if batch and batch != 1:
                words += ["--batch", str(batch)]
        else:
            ns = sorted({n for n, _ in shapes if n is not None})
            ds = sorted({d for _, d in shapes if d is not None})
            words += ["sweep"]
            if len(ds) == 1:
                words += ["--regime", "tokens", "--tokens-grid", ",".join(map(str, ns)),
                          "--dim", str(ds[0])]  # fmt: skip
            elif len(ns) == 1:
                words += ["--regime", "channels", "--channels-grid", ",".join(map(str, ds)),
                          "--channels-tokens", str(ns[0])]  # fmt: skip
            else:
                words += ["--regime", "both"]
            words += ["--heads", str(heads)]
        if methods:
            words += ["--methods", ",".join(methods)]
        if precs:
            words += ["--precision", ",".join(["fp32", *precs])]
        proto = (iso[0].get("protocol") if iso else None) or {}
        for opt, k in (("--min-time", "min_time_s"), ("--max-time", "max_time_s")):
            if proto.get(k) is not None:
                words += [opt, f"{proto[k]:g}"]
        pproto = (prs[0].get("protocol") if prs else None) or {}
        if pproto.get("min_time_s") is not None:
            words += ["--pair-time", f"{pproto['min_time_s']:g}"]
        if pproto.get("tries") is not None:
            words += ["--tries", str(pproto["tries"])]
    if ses.get("device") and ses["device"] != "cpu":
        words += ["--device", str(ses["device"])]
    if ses.get("intra_op_threads"):
        words += ["--threads", str(ses["intra_op_threads"])]
    if ses.get("opt_level") and ses["opt_level"] != "all":
        words += ["--opt-level", str(ses["opt_level"])]
    host = (first.get("host") or {}).get("spec")
    if host:
        words += ["--host", str(host)]
    return " ".join(shlex.quote(w) for w in words)


def runs_section(ctx: _Ctx, reports: Sequence[Any], schema: bool, files: Sequence[str]) -> str:
    rows = []
    for col in ctx.cols:
        st = _state_of(col[1], ctx.states)
        end = st.get("end") or {}
        mine = ctx.of_col(col)
        ids = sorted({str(r.get("id")) for r in mine if r.get("id")})
        cmd = rerun_command(mine, end)
        rows.append(
            f'<tr class="run" data-run="{esc(col[1])}" data-state="{esc(st["state"])}">'
            f"<td>{esc(ctx.series(col))}</td><td>{_badge(st['state'])}"
            f"<div class='small'>{esc(st.get('detail') or '')}</div></td>"
            f"<td><code>{esc(st.get('run_id') or '-')}</code><div class='small'>"
            f"{esc(Path(col[1].partition('#')[0]).name)}"
            + (f", lines {esc(st['lines'])}" if st.get("lines") else "")
            + "</div></td>"
            f"<td>{esc(end.get('command') or '-')}<div class='small'>"
            f"{esc(end.get('started_utc') or '')}</div></td>"
            f"<td><code class='cmd'>{esc(cmd or '-')}</code></td>"
            f"<td class='small'>{esc(', '.join(ids))}</td></tr>"
        )
    file_lines = []
    for rep in reports:
        for line in rep.summary()[:1]:
            file_lines.append(f"<li>{esc(line)}</li>")
    schema_note = (
        "each line checked against docs/records.schema.json"
        if schema
        else "the schema was not checked here (no jsonschema package); runs still told apart"
    )
    report_cmd = " ".join(shlex.quote(str(f)) for f in files)
    return (
        "<p class='note'>A run is <b>complete</b> when its closing run_end record's count and "
        "digest match its records, <b>partial</b> when it has none (interrupted, a host failed, "
        "or the file was cut: its figures are shown, labelled), <b>edited</b> when they differ. "
        f"Same verdicts as <code>edgeattn report --check</code>; {esc(schema_note)}. The "
        "command is rebuilt from the records (the exact command line is not recorded): it "
        "measures the same shapes, methods and options again.</p>"
        + _table(
            (
                "run",
                "integrity",
                "run id",
                "recorded",
                "to rerun (rebuilt from the records)",
                "record ids",
            ),
            rows,
            "runs",
        )  # fmt: skip
        + f"<ul class='files small'>{''.join(file_lines)}</ul>"
        + f"<p class='small'>This page: <code class='cmd'>edgeattn report {esc(report_cmd)} "
        "--html PAGE.html</code></p>"
    )


# --------------------------------------------------------------------------------- the page


CSS = """
:root{--fg:#1b1b1b;--muted:#666;--line:#ddd;--bg:#fff;--card:#fafafa}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
 color:var(--fg);background:var(--bg);margin:0 auto;max-width:1100px;padding:12px}
h1{font-size:1.45em;margin:.2em 0}h2{font-size:1.2em;margin:1.4em 0 .4em;
 border-bottom:1px solid var(--line);padding-bottom:.2em}h3{margin:0;font-size:1.05em}
h4{margin:.7em 0 .2em;font-size:.85em;text-transform:uppercase;color:var(--muted)}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(290px,1fr));gap:12px}
.card{background:var(--card);border:1px solid var(--line);border-top:5px solid #888;
 border-radius:6px;padding:10px 12px;break-inside:avoid}
.card .full{color:var(--muted);font-size:.85em;margin:.1em 0 .4em;word-break:break-word}
.emulated{background:#fff3cd;border:1px solid #e0b000;padding:6px 8px;border-radius:4px;
 margin:.4em 0}
dl{display:grid;grid-template-columns:max-content 1fr;gap:1px 10px;margin:0;font-size:.88em}
dt{color:var(--muted)}dd{margin:0;word-break:break-word}
ul.runs{margin:0;padding-left:1.1em;font-size:.88em}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;margin:.5em 0}
table{border-collapse:collapse;font-size:.86em;min-width:100%}
table.ratios td:nth-child(3),table.ops td:nth-child(9){min-width:13em}
table.ratios td:first-child,table.runs td:first-child{min-width:8em}
table.runs td:nth-child(5){min-width:16em}
th,td{border-bottom:1px solid var(--line);padding:4px 6px;text-align:left;vertical-align:top}
th{background:#f1f1f1;white-space:nowrap}td.num{text-align:right;white-space:nowrap}
td.src,.src,.small{color:var(--muted);font-size:.82em}
.badge{display:inline-block;padding:0 6px;border-radius:9px;font-size:.8em;font-weight:600;
 white-space:nowrap}
.badge.ok{background:#d4edda;color:#155724}.badge.warn{background:#fff3cd;color:#7a5a00}
.badge.bad{background:#f8d7da;color:#721c24}.badge.muted{background:#e9ecef;color:#444}
.dot{display:inline-block;width:.7em;height:.7em;border-radius:50%;margin-right:.35em}
figure.fig{margin:1em 0;break-inside:avoid}
figure.fig svg{width:100%;height:auto;display:block;max-width:760px}
figcaption{font-size:.88em;color:#333;margin-top:.3em}
.note{font-size:.88em;color:#333;background:#f6f8fa;border-left:3px solid #bbb;padding:4px 8px}
.muted{color:var(--muted)}code{font-size:.9em}code.cmd{word-break:break-all}
svg .tip{cursor:help}svg *{stroke-linejoin:round;stroke-linecap:butt}
.alert{background:#f8d7da;border:1px solid #d9534f;padding:6px 10px;border-radius:4px}
nav a{margin-right:.8em;font-size:.9em}
@media (max-width:600px){body{font-size:14px;padding:8px}th,td{padding:3px 4px}
 nav a{display:inline-block;margin:.1em .6em .1em 0}}
@media print{body{max-width:none;font-size:10pt;padding:0}nav{display:none}
 .scroll{overflow:visible}a{color:inherit;text-decoration:none}
 figure.fig,.card,tr{break-inside:avoid}h2{break-after:avoid}
 .badge,.emulated,.card{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
"""


def build_page(
    records: Sequence[dict[str, Any]], files: Sequence[str | os.PathLike], out_name: str = ""
) -> str:
    """The whole page as one string (see the module's docstring)."""
    reports, schema = integrity_reports(files)
    states = run_states(reports)
    ctx = _Ctx(records, states)
    if not ctx.cols:
        raise BenchError(f"no measurements in {', '.join(map(str, files))}: nothing to show")
    not_whole = [
        (c, _state_of(c[1], states)) for c in ctx.cols if _state_of(c[1], states)["state"] in ("partial", "edited")
    ]  # fmt: skip
    alert = ""
    if not_whole:
        alert = (
            "<p class='alert' data-integrity='not whole'>"
            + "; ".join(
                f"{esc(ctx.series(c))} ({esc(_run_short(c[1]))}): {_badge(st['state'])} "
                f"{esc(st.get('detail') or '')}"
                for c, st in not_whole
            )
            + " — its figures are shown below, labelled.</p>"
        )
    sections = [
        ("devices", "Devices", device_cards(ctx)),
        ("ratios", "Headline ratios (paired pass)", headline(ctx)),
        ("sweeps", "Latency against tokens and channels", sweeps(ctx)),
        ("ops", "exp vs l1, isolated from the matmuls", op_level(ctx)),
        ("profiles", "Per-block profiles", profiles(ctx)),
        ("precision", "Precision: speed-up and error vs fp32", precision(ctx)),
        (
            "runs",
            "Runs, integrity and how to rerun",
            runs_section(ctx, reports, schema, [str(f) for f in files]),
        ),  # fmt: skip
    ]
    sections = [s for s in sections if s[2]]
    nav = "".join(f'<a href="#{k}">{esc(t)}</a>' for k, t, _ in sections)
    body = "".join(
        f'<section id="{k}"><h2>{esc(t)}</h2>{html}</section>' for k, t, html in sections
    )
    import edgeattn

    title = "edgeattn: " + " vs ".join(ctx.short[d] for d in ctx.devices)
    created = max((r.get("created_utc") or "" for r in records), default="")
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8">{MARK}'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><p class='small'>{len(ctx.devices)} device(s), "
        f"{len(ctx.cols)} run(s), {len(records)} record(s) from "
        f"{esc(', '.join(Path(str(f)).name for f in files))}; latest record {esc(created)}; "
        f"page by edgeattn {esc(edgeattn.__version__)}"
        + (f" ({esc(out_name)})" if out_name else "")
        + f"</p><nav>{nav}</nav>{alert}</header>{body}</body></html>\n"
    )
