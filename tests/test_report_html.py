"""``edgeattn report FILES --html PAGE``: one self-contained page, checked in a real browser.

Records from two devices: a real tiny bench (and a real tiny profile) on this machine, and a copy
of the bench as an emulated board (``device.emulated`` set, another host name, another run id,
its ratios scaled so the two devices differ). The page is opened in headless Chromium (Debian's
``chromium``; ``./dev.sh test`` installs it) with every host name unresolvable and a dead proxy:
it must load with no request and no error, show both devices' ratios with the very numbers
``report.bench_summary`` / ``pairs.vs_reference`` give, and label the emulated board. A partial
run (no ``run_end``) and an edited one are labelled so on the page.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from html.parser import HTMLParser
from pathlib import Path

import pytest

from edgeattn import integrity
from edgeattn.bench import html as page
from edgeattn.bench import pairs, report, run
from edgeattn.errors import BenchError
from edgeattn.runtime import __main__ as rt
from edgeattn.runtime import records as R

pytest.importorskip("matplotlib")

EXE = [sys.executable, "-m", "edgeattn.cli"]
BENCH = ["--tokens", "64", "--dim", "32", "--heads", "2", "--methods", "softmax,sima_qk,sima"]
FAST = ["--min-time", "0.05", "--max-time", "0.2", "--pair-time", "0.2"]
#: the slow tier (CI runs it): a real bench and profile, then Chromium; the default tier keeps
#: 5 min with report --check's integrity tests (test_report_check.py) covering the same runs
pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NO_CHROMIUM = (
    "chromium is not installed (apt-get install chromium; ./dev.sh test installs it as root)"
)
#: every request the page makes fails loudly: no host resolves, the proxy is a closed port
OFFLINE = ["--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9"]
#: injected into a copy of the page: errors, console errors and every resource fetched, as
#: attributes of <html> that --dump-dom shows
PROBE = (
    "<script>(function(){var d=document.documentElement;"
    "function add(k,v){d.setAttribute(k,(d.getAttribute(k)||'')+v+'|')}"
    "window.addEventListener('error',function(e){add('data-errors',e.message||"
    "('resource '+(e.target&&(e.target.src||e.target.href))))},true);"
    "var ce=console.error;console.error=function(){add('data-console-errors',"
    "Array.prototype.join.call(arguments,' '));ce.apply(console,arguments)};"
    "window.addEventListener('load',function(){d.setAttribute('data-resources',"
    "performance.getEntriesByType('resource').map(function(e){return e.name}).join(' '));"
    "d.setAttribute('data-loaded','1')})})();</script>"
)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*EXE, *args], capture_output=True, text=True, timeout=600, env=env or dict(os.environ)
    )


def as_other_device(src: Path, dst: Path, scale: float = 0.8) -> Path:
    """``src``'s records as another, emulated device's complete run (a new run id and run_end)."""
    rid = uuid.uuid4().hex
    lines = []
    for line in src.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == integrity.RUN_END:
            continue
        rec["run_id"] = rid
        if rec.get("device"):
            rec["device"].update(hostname="pi-emulated", machine="aarch64", emulated=True)
        for r in (rec.get("paired") or {}).get("ratios") or []:
            for k in ("median", "ci_low", "ci_high"):
                r[k] = round(r[k] * scale, 6)
        lines.append(R.dumps(rec) + "\n")
    dst.write_text("".join(lines))
    end = integrity.end_record(dst, rid, command="bench")
    with open(dst, "a") as f:
        f.write(R.dumps(end) + "\n")
    return dst


@pytest.fixture(scope="module")
def recs(tmp_path_factory) -> dict[str, Path]:
    """A real tiny bench and profile here, and the bench as an emulated board."""
    d = tmp_path_factory.mktemp("html")
    env = dict(os.environ, EDGEATTN_CACHE=str(d / "cache"))
    env.pop(rt.RUN_ID_ENV, None)
    r = cli("bench", *BENCH, *FAST, "-o", str(d / "here.jsonl"), env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    r = cli(
        "profile", "sima_nano_12_p16", "--img-size", "32", "--runs", "3", "--min-time", "0.05",
        "-o", str(d / "prof.jsonl"), env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    return {
        "dir": d,
        "here": d / "here.jsonl",
        "prof": d / "prof.jsonl",
        "pi": as_other_device(d / "here.jsonl", d / "pi.jsonl"),
    }


class Dom(HTMLParser):
    """The elements of a page as (tag, attributes, text inside) for the ones asked about."""

    def __init__(self) -> None:
        super().__init__()
        self.root: dict[str, str] = {}
        self.rows: list[dict[str, str]] = []
        self.cards: dict[str, str] = {}
        self.figures: list[str] = []
        self.titles: list[str] = []
        self._card: str | None = None
        self._card_depth = 0
        self._in_title = False
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "html":
            self.root = a
        if tag == "tr" and "data-ratio" in a or tag == "tr" and "class" in a:
            self.rows.append(dict(a, _tag=tag))
        if tag == "figure":
            self.figures.append(a.get("data-figure", ""))
        if tag == "section" and "card" in a.get("class", "").split():
            self._card, self._card_depth = a["data-device"], 0
            self.cards[self._card] = ""
        if self._card is not None and tag == "section":
            self._card_depth += 1
        if tag == "title":
            self._in_title = True
            self.titles.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        if self._card is not None and tag == "section":
            self._card_depth -= 1
            if self._card_depth == 0:
                self._card = None

    def handle_data(self, data: str) -> None:
        if self._card is not None:
            self.cards[self._card] += data
        if self._in_title:
            self.titles[-1] += data


def dom(text: str) -> Dom:
    d = Dom()
    d.feed(text)
    return d


def chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    base = [CHROMIUM, "--headless=new", "--disable-gpu", "--no-sandbox", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--hide-scrollbars",
            *OFFLINE]  # fmt: skip
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------ in a browser


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_page_of_two_devices_in_chromium(recs, tmp_path):
    out = tmp_path / "r.html"
    r = cli("report", str(recs["here"]), str(recs["pi"]), str(recs["prof"]), "--html", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"html: {out}" in r.stdout
    text = out.read_text(encoding="utf-8")
    # self-contained: no URL, no external reference of any kind
    assert not re.search(r"https?:|//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), "a URL in the page"
    assert not re.search(r"url\((?!#)", text) and "@import" not in text and "<link" not in text
    assert not re.search(r"<(img|script|iframe|object|embed)\b", text)
    assert text.count("<svg") >= 2 and page.MARK in text

    probed = tmp_path / "probed.html"
    probed.write_text(text.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    r = chromium("--enable-logging=stderr", "--v=0", "--dump-dom", probed.as_uri())
    assert r.returncode == 0, r.stderr[-2000:]
    d = dom(r.stdout)
    assert d.root.get("data-loaded") == "1", "the page did not finish loading"
    assert d.root.get("data-resources", "") == "", f"requests: {d.root.get('data-resources')}"
    assert "data-errors" not in d.root and "data-console-errors" not in d.root, d.root
    assert not re.search(r":CONSOLE[:(].*(Uncaught|rror)", r.stderr), r.stderr[-2000:]

    # the figures: headline dots with whiskers (hover titles), the profile's stacked bars
    assert "headline" in d.figures and "profile" in d.figures
    assert any("95 % interval" in t and "×" in t for t in d.titles)
    assert any("attention" in t and "ms" in t for t in d.titles)

    # both devices, each with the ratios the terminal report gives, to the last digit
    records = run.read_record_files([recs["here"], recs["pi"], recs["prof"]])
    rows = [x for x in d.rows if "data-ratio" in x]
    seen_devices = set()
    for item in report.run_summaries(records):
        s = item["summary"]
        dev = next(
            c[0] for c in report.run_columns(records) if report.run_label(c, report.run_columns(records)) == item["label"]
        )  # fmt: skip
        seen_devices.add(dev)
        mine = [x for x in rows if x["data-device"] == dev]
        expect = {n: s[n] for n in report.SUMMARY_RATIOS if s.get(n)}
        expect.update({f"{pairs.VS_REF}{m}": v for m, v in s["vs_reference"].items()})
        prec = report.latest_paired([x for x in records if report.device_label(x) == dev])
        assert pairs.vs_reference(prec)[1] == s["vs_reference"]
        assert expect and "exp_vs_l1_fixed_order" in expect
        for name, want in expect.items():
            row = [x for x in mine if x["data-ratio"] == name or name in x["data-also"].split()]
            assert len(row) == 1, (dev, name)
            for attr, key in (("data-median", "median"), ("data-ci-low", "ci_low"),
                              ("data-ci-high", "ci_high")):  # fmt: skip
                assert float(row[0][attr]) == want[key], (dev, name, attr)
    assert len(seen_devices) == 2
    emu = [dv for dv in seen_devices if "emulated" in dv]
    assert len(emu) == 1
    assert page.EMULATED in d.cards[emu[0]]
    (real,) = seen_devices - set(emu)
    assert page.EMULATED not in d.cards[real]
    # the two devices' numbers differ (the copy's ratios were scaled): nothing was mixed up
    a = {x["data-ratio"]: x["data-median"] for x in rows if x["data-device"] == real}
    b = {x["data-ratio"]: x["data-median"] for x in rows if x["data-device"] == emu[0]}
    assert a.keys() == b.keys() and a != b
    # each run complete, its rebuilt command shown
    runs = [x for x in d.rows if x.get("class") == "run"]
    assert len(runs) == 3 and {x["data-state"] for x in runs} == {"complete"}
    assert "edgeattn bench --tokens 64 --dim 32 --heads 2 --methods softmax,sima_qk,sima" in text

    # a phone-sized screenshot, kept with the test's files
    shot = tmp_path / "report.png"
    r = chromium("--window-size=412,915", f"--screenshot={shot}", out.as_uri())
    assert r.returncode == 0 and shot.is_file() and shot.stat().st_size > 10_000, r.stderr[-2000:]


# ------------------------------------------------------------------------------- integrity


def _page_of(files: list[Path], out: Path) -> Dom:
    records = run.read_record_files(files)
    page.write_page(records, files, out)
    return dom(out.read_text(encoding="utf-8"))


def test_partial_and_edited_runs_are_labelled(recs, tmp_path):
    lines = recs["here"].read_text().splitlines()
    partial = tmp_path / "partial.jsonl"
    partial.write_text("".join(x + "\n" for x in lines if '"run_end"' not in x))
    edited = tmp_path / "edited.jsonl"
    out = []
    for x in lines:
        rec = json.loads(x)
        if rec.get("kind") == "paired":
            rec["paired"]["ratios"][0]["median"] *= 1.5  # a hand-improved figure
            x = R.dumps(rec)
        out.append(x + "\n")
    edited.write_text("".join(out))
    other = as_other_device(recs["here"], tmp_path / "pi.jsonl")
    d = _page_of([partial, edited, other], tmp_path / "p.html")
    text = (tmp_path / "p.html").read_text(encoding="utf-8")
    states = {x["data-run"].partition("#")[0]: x["data-state"] for x in d.rows if x.get("class") == "run"}  # fmt: skip
    assert states == {str(partial): "partial", str(edited): "edited", str(other): "complete"}
    assert "data-integrity='not whole'" in text  # the banner at the top
    assert re.search(r'data-state="partial">partial</span>', text)
    assert re.search(r'data-state="edited">edited</span>', text)
    # a partial run's figures are shown, labelled, never hidden
    shown = {x["data-run"].partition("#")[0] for x in d.rows if "data-ratio" in x}
    assert str(partial) in shown and str(edited) in shown


# ------------------------------------------------------------------------- the output file


def test_output_file_is_ours_or_refused(recs, tmp_path):
    files = [recs["here"]]
    records = run.read_record_files(files)
    foreign = tmp_path / "notes.html"
    foreign.write_text("<html>my notes</html>")
    with pytest.raises(BenchError, match="not a page edgeattn wrote"):
        page.write_page(records, files, foreign)
    assert foreign.read_text() == "<html>my notes</html>"
    with pytest.raises(BenchError, match="is a directory"):
        page.write_page(records, files, tmp_path)
    mine = tmp_path / "r.html"
    page.write_page(records, files, mine)
    page.write_page(records, files, mine)  # its own page: rewritten
    assert page.MARK in mine.read_text() and not list(tmp_path.glob(".r.html.*"))


def test_strings_from_records_are_escaped(recs, tmp_path):
    src = tmp_path / "x.jsonl"
    out = []
    for x in recs["here"].read_text().splitlines():
        rec = json.loads(x)
        if rec.get("device"):
            rec["device"]["hostname"] = "<script>alert(1)</script>"
            rec["device"]["cpu_model"] = 'x" onmouseover="alert(1) https://evil.example/'
        out.append(R.dumps(rec) + "\n")
    src.write_text("".join(out))
    records = run.read_record_files([src])
    text = page.build_page(records, [src])
    assert "<script" not in text and 'x" onmouseover' not in text and "https://" not in text


def test_sweep_and_precision_sections(recs, tmp_path):
    """A run with several shapes gets latency-vs-N and ratio figures; a precision variant its
    speed-up vs fp32 (from the paired ratios) and its error vs fp32 (from the record)."""
    lines = recs["here"].read_text().splitlines()
    out = []
    for x in lines:
        rec = json.loads(x)
        if rec.get("kind") == integrity.RUN_END:
            continue
        out.append(R.dumps(rec))
        if rec.get("kind") == "paired":  # the same group again at N=128 (a two-point sweep)
            at = json.loads(x)
            at["meta"]["tokens"] = 128
            at["id"] = "paired/N128/D32/h2/B1"
            at["created_utc"] = rec["created_utc"][:-1] + "1Z"
            at["paired"]["ratios"].append(
                {"name": "speedup_vs_fp32/softmax/int8-dynamic", "median": 1.7, "ci_low": 1.6,
                 "ci_high": 1.8, "rounds": 30, "contains_one": False,
                 "num": "softmax/N64/D32/h2/B1", "den": "softmax/N64/D32/h2/B1"}
            )  # fmt: skip
            out.append(R.dumps(at))
        if rec.get("id", "").startswith("softmax/"):
            q = json.loads(x)
            q["meta"].update(tokens=128, precision="int8-dynamic")
            q["meta"]["precision_info"] = {"error_vs_fp32": {"max_abs": 0.012, "cosine_min": 0.999}}
            out.append(R.dumps(q))
    src = tmp_path / "sweep.jsonl"
    src.write_text("".join(x + "\n" for x in out))
    records = run.read_record_files([src])
    text = page.build_page(records, [src])
    d = dom(text)
    assert "sweep" in d.figures
    assert any("paired median" in t and "ms" in t for t in d.titles)
    (row,) = [x for x in d.rows if x.get("class") == "precision"]
    assert row["data-precision"] == "int8-dynamic" and float(row["data-median"]) == 1.7
    assert "0.012" in text and "partial" in text  # no run_end: the run is labelled partial
