"""The host side of device conditions (issue 23): marked rounds, ratios without them, energy per
inference, the sampling overhead, the sustained report, the bench flags, against values worked out
by hand from hand-built records (and, at the end, a tiny real bench on a fake sysfs tree)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeattn.bench import conditions as cond
from edgeattn.bench import core
from edgeattn.errors import BenchError
from edgeattn.runtime.conditions import clusters_text

EXE = [sys.executable, "-m", "edgeattn.cli"]
TINY = ["--tokens", "64", "--dim", "32", "--heads", "2"]
A, B = "softmax/N64/D32/h2/B1", "sima/N64/D32/h2/B1"
#: rounds 0-11: per-round ratios A/B (B = 1 ms); rounds 12-19 (marked): 3.0
CLEAN = [2.0, 2.1, 1.9, 2.2, 1.8, 2.05, 1.95, 2.15, 1.85, 2.0, 2.1, 1.9]


def _record(a_ms, b_ms, marks, *, energy=None, overhead_us=None, t_s=None, temps=None, **extra):
    n = len(a_ms)
    conds = [
        {
            "t_s": float(i if t_s is None else t_s[i]),
            "temp_c": None if temps is None else temps[i],
            "mhz_min": 1500.0,
            "throttle_bits": 0x4 if marks[i] else 0,
            "marked": bool(marks[i]),
            "why": "throttled (pi bits 0x4)" if marks[i] else None,
        }
        for i in range(n)
    ]
    p = {
        "members": [
            {"id": A, "meta": {"method": "softmax"}},
            {"id": B, "meta": {"method": "sima"}},
        ],
        # the headline as the runtime writes it; hand values for the 20-round case below
        "ratios": [
            {
                "name": "vs_ref/sima",
                "num": A,
                "den": B,
                "median": 2.125,
                "ci_low": 2.0,
                "ci_high": 3.0,
                "rounds": n,
            }
        ],  # fmt: skip
        "rounds_ms": [[a, b] for a, b in zip(a_ms, b_ms, strict=True)],
        "round_conditions": conds,
        "conditions_sources": {
            "cpufreq": True,
            "thermal": "cpu-thermal",
            "throttle": "sysfs",
            "energy": None,
            "unreadable": ["energy"],
        },
        **extra,
    }
    if energy is not None:
        p["round_energy_uj"] = energy
        p["conditions_sources"]["energy"] = {"kind": "powercap", "name": "package-0"}
    if overhead_us is not None:
        p["conditions_overhead_us"] = overhead_us
    return {"kind": "paired", "status": "ok", "id": "paired/N64", "paired": p}


def _twenty(**kw):
    a = CLEAN + [3.0] * 8
    return _record(a, [1.0] * 20, [i >= 12 for i in range(20)], **kw)


def test_without_marked_rounds_equals_the_hand_median_and_interval():
    rec = _twenty()
    assert cond.marked(rec) == list(range(12, 20))
    (e,) = cond.without_marked(rec)
    w = e["without"]
    # 12 clean ratios sorted: 1.8 1.85 1.9 1.9 1.95 2.0 | 2.0 2.05 2.1 2.1 2.15 2.2 -> median 2.0;
    # n = 12 at 95 %: P(Bin(12, 1/2) <= 2) = 79/4096 <= 0.025 < 299/4096 -> ranks 3 and 10
    assert w["median"] == pytest.approx(2.0)
    assert (w["ci_low"], w["ci_high"]) == (pytest.approx(1.9), pytest.approx(2.1))
    assert w["rounds"] == 12 and e["dropped"] == 8
    assert w["confidence"] == pytest.approx(1 - 2 * 79 / 4096, abs=1e-4)
    assert e["moved"] is True  # headline 2.125 is outside [1.9, 2.1]
    lines = cond.condition_lines(rec)
    assert lines[0] == "8 of 20 rounds marked (throttled 8 / below frequency floor 0)"
    assert "without 8 marked rounds: 2.00× [1.90–2.10] (12 rounds)" in lines[1]
    assert "moved this figure beyond its interval" in lines[1]


def test_marked_rounds_that_agree_do_not_move_the_headline():
    a = CLEAN + [2.0] * 8
    rec = _record(a, [1.0] * 20, [i >= 12 for i in range(20)])
    rec["paired"]["ratios"][0].update(median=2.0, ci_low=1.95, ci_high=2.05)
    (e,) = cond.without_marked(rec)
    assert e["moved"] is False
    assert "moved" not in cond.without_lines(rec)[0]


def test_no_marked_rounds_no_without_lines_and_no_energy_line():
    rec = _record(CLEAN, [1.0] * 12, [False] * 12)
    assert cond.without_marked(rec) == []
    lines = cond.condition_lines(rec)
    assert lines[0] == "0 of 12 rounds marked (throttled 0 / below frequency floor 0)"
    assert cond.NO_ENERGY in lines
    assert lines[-1] == (
        "conditions readable: thermal (cpu-thermal), cpufreq, throttle bits (sysfs); "
        "not readable: energy"
    )
    old = {"kind": "paired", "status": "ok", "paired": {"rounds_ms": [[1, 2]]}}
    assert cond.condition_lines(old) == []  # a record from before conditions: nothing said


def test_a_device_that_tells_nothing_says_throttling_was_not_checked():
    """No cpufreq and no throttle bits (this VM, the emulated boards): no round could be marked,
    so the output says so instead of '0 of N rounds marked'."""
    rec = _record(CLEAN, [1.0] * 12, [False] * 12)
    rec["paired"]["conditions_sources"] = {
        "cpufreq": False,
        "thermal": None,
        "throttle": None,
        "energy": None,
        "unreadable": ["thermal", "cpufreq", "throttle", "powercap", "hwmon"],
    }
    lines = cond.condition_lines(rec)
    assert lines[0] == (
        "throttling not checked: no cpufreq or throttle bits readable on this device "
        "(12 rounds, none could be marked)"
    )
    assert not any("rounds marked" in ln for ln in lines)


def test_energy_per_inference_and_energy_ratio_by_hand():
    # A spends 4000 + 100 i µJ in round i, B 2000 µJ; one unreadable B entry in round 0
    energy = [[4000.0 + 100 * i, 2000.0] for i in range(20)]
    energy[0][1] = None
    rec = _twenty(energy=energy)
    e = cond.energy(rec)
    a = e["members"]["softmax"]
    # 4.0 .. 5.9 mJ: median (4.9 + 5.0) / 2; n = 20 -> ranks 6 and 15: 4.5 and 5.4
    assert a["median_mj"] == pytest.approx(4.95)
    assert (a["ci_low"], a["ci_high"]) == (pytest.approx(4.5), pytest.approx(5.4))
    assert e["members"]["sima"]["median_mj"] == pytest.approx(2.0)
    assert e["members"]["sima"]["rounds"] == 19
    r = e["ratios"]["vs_ref/sima"]
    # rounds 1..19: ratio 2 + 0.05 i; median of 19 = i = 10 -> 2.5; n = 19 -> ranks 5 and 15
    assert r["median"] == pytest.approx(2.5) and r["rounds"] == 19
    assert (r["ci_low"], r["ci_high"]) == (pytest.approx(2.25), pytest.approx(2.75))
    lines = cond.energy_lines(rec)
    assert lines[0].startswith("energy per inference from powercap package-0 (informative")
    assert "softmax 4.95 mJ [4.5–5.4]" in lines[0]
    assert "energy ratio reference / sima: 2.50× [2.25–2.75]; latency 2.12× [2.00–3.00]" in lines[1]


def test_overhead_line_is_a_share_of_the_median_round():
    rec = _twenty(overhead_us=30)
    # round sums A + 1: median over 20 = 2.125 + 1 = 3.125 ms; 30 µs / 3.125 ms = 0.96 %
    assert cond.overhead_line(rec) == "conditions sampled per round: 30 µs, 0.96 % of a round"


def _sustained():
    # 151 rounds, one a second: A 1.0 ms in the first minute, 1.1 in between, 1.2 in the last
    # minute (t >= 90); B 0.5 throughout; marked from t = 100 s; temperature 50 + t / 10
    ts = list(range(151))
    a = [1.0 if t <= 60 else 1.2 if t >= 90 else 1.1 for t in ts]
    return _record(
        a, [0.5] * 151, [t >= 100 for t in ts], t_s=ts, temps=[50 + t / 10 for t in ts],
        sustained=True,
    )  # fmt: skip


def test_sustained_windows_retention_and_first_marked():
    rec = _sustained()
    s = cond.sustained_summary(rec)
    assert s["duration_s"] == 150 and s["first_marked_s"] == 100.0 and s["marked"] == 51
    ws = s["windows"]
    assert len(ws) == 10 and [w["rounds"] for w in ws] == [15] * 9 + [16]
    assert ws[0]["medians"] == {"softmax": 1.0, "sima": 0.5}
    assert ws[-1]["medians"]["softmax"] == 1.2 and ws[-1]["temp_c"] == pytest.approx(65.0)
    ret = s["retention"]
    assert ret["window_s"] == 60.0 and ret["last"] == [90.0, 150.0]
    a = ret["members"]["softmax"]
    assert a["ratio"] == pytest.approx(1.2) and (a["first_rounds"], a["last_rounds"]) == (60, 61)
    assert (a["ci_low"], a["ci_high"]) == (pytest.approx(1.2), pytest.approx(1.2))
    assert ret["members"]["sima"]["ratio"] == pytest.approx(1.0)
    lines = cond.sustained_lines(rec)
    assert lines[1].startswith(
        "retention softmax: last-minute median / first-minute median = 1.200"
    )
    assert "first marked round at 100.0 s (51 marked in all)" in lines


def test_retention_interval_is_a_seeded_bootstrap_that_covers_the_ratio():
    ts = [i * 0.5 for i in range(241)]  # 120 s
    a = [1.0 + 0.01 * (i % 7) + (0.1 if t >= 60 else 0.0) for i, t in enumerate(ts)]
    rec = _record(a, [0.5] * 241, [False] * 241, t_s=ts, sustained=True)
    r1 = cond.retention(rec)["members"]["softmax"]
    r2 = cond.retention(rec)["members"]["softmax"]
    assert r1 == r2  # seeded: the same data, the same interval
    assert r1["ci_low"] < r1["ratio"] < r1["ci_high"]
    assert r1["ratio"] == pytest.approx(1.13 / 1.03, rel=1e-9)
    assert cond.first_marked_s(rec) is None
    assert "first marked round: none" in cond.sustained_lines(rec)
    rec["paired"]["conditions_sources"] = {"cpufreq": False, "throttle": None}  # nothing to read
    assert (
        "first marked round: not checked (nothing on this device could mark one)"
        in cond.sustained_lines(rec)
    )


def test_sustained_plot_writes_a_png(tmp_path):
    p = cond.plot_sustained(_sustained(), tmp_path / "s.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cond.sustained_plot_path("results/b.jsonl") == Path("results/b-sustained.png")


def test_clusters_and_placement_text():
    big_little = [
        {"name": "little", "cpus": [0, 1, 2, 3], "max_mhz": 1800.0, "part": "0xd05"},
        {"name": "big", "cpus": [4, 5, 6, 7], "max_mhz": 2400.0, "part": "0xd0b"},
    ]
    assert clusters_text(big_little) == (
        "cpus 0-3 little (1800 MHz, part 0xd05), 4-7 big (2400 MHz, part 0xd0b)"
    )
    recs = [{"placement": {"cpus": [4, 5], "request": "big", "intra_op_threads": 2}}]
    assert cond.placement_line(recs) == "placement: cpus 4,5 (asked: big), 2 intra-op threads"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90.0), ("2m", 120.0), ("1.5m", 90.0), ("45", 45.0), ("1h", 3600.0)],
)
def test_parse_duration(text, seconds):
    assert cond.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["2x", "-1m", "0s", "m", "nan"])
def test_parse_duration_rejects(text):
    with pytest.raises(BenchError, match="is not a duration"):
        cond.parse_duration(text)


def test_settings_put_the_conditions_into_the_group_and_the_spec():
    st = core.Settings(freq_floor=0.8, sustained_s=120.0, cooldown_within_c=2.0, cooldown_s=60)
    assert st.group_fields() == {
        "freq_floor": 0.8,
        "sustained_s": 120.0,
        "cooldown": {"until_within_c": 2.0, "max_s": 60.0},
    }
    assert core.Settings(cooldown_s=30).group_fields() == {"cooldown": {"seconds": 30.0}}
    assert core.Settings().group_fields() == {} and core.Settings().spec_fields() == {}


def _cli(*args, env=None):
    e = dict(os.environ, **(env or {}))
    return subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=120, env=e)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--sustained", "2x"], "--sustained '2x' is not a duration"),
        (["--freq-floor", "1.5"], "--freq-floor 1.5 is invalid"),
        (["--cooldown", "-1"], "--cooldown -1.0 is invalid"),
        (["--cooldown-within", "0"], "--cooldown-within 0.0 is invalid"),
        (["--sustained", "1m", "--no-paired"], "--sustained runs the paired group"),
        (["--cpus", "0,,2"], "--cpus '0,,2' is invalid; expected core numbers"),
        (["--cpus", "x"], "--cpus 'x' is invalid; expected core numbers"),
        (["--cpus", "-1"], "--cpus '-1' is invalid; expected core numbers"),
        (["--cpus", "4095"], "--cpus '4095': core 4095 is not usable here; usable cores: 0"),
        (["--cpus", "big"], "--cpus 'big' is invalid: this device has no big cluster"),
    ],
)
def test_bench_flag_errors_are_one_line_before_any_work(tmp_path, args, words):
    out = tmp_path / "r.jsonl"
    (tmp_path / "empty").mkdir()  # no sysfs: no clusters, whatever this machine's CPU
    r = _cli(
        "bench", *TINY, *args, "-o", str(out), env={"EDGEATTN_SYSFS_ROOT": str(tmp_path / "empty")}
    )
    assert r.returncode == 1, r.stderr
    assert words in r.stderr and len(r.stderr.strip().splitlines()) <= 2
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# a tiny real bench on a fake sysfs tree whose throttle bits flip mid-run
# ---------------------------------------------------------------------------------------------
THROTTLE = "sys/devices/platform/soc/soc:firmware/get_throttled"
SMALL = ["--tokens", "256", "--dim", "64", "--heads", "2", "--methods", "softmax,sima"]


def fake_pi_tree(root: Path, cpus: int = 2) -> Path:
    """A Pi-like tree: cpufreq at its max on every core, a cpu-thermal zone at 50 °C, the
    firmware's throttle bits clear (fixed width, so a flip rewrites in place: the sampler keeps
    the file open)."""
    for c in range(cpus):
        d = root / f"sys/devices/system/cpu/cpu{c}/cpufreq"
        d.mkdir(parents=True)
        for name, v in (("scaling_cur_freq", 1800000), ("cpuinfo_max_freq", 1800000)):
            (d / name).write_text(f"{v}\n")
        (d / "cpuinfo_min_freq").write_text("600000\n")
        (d / "scaling_governor").write_text("ondemand\n")
    z = root / "sys/class/thermal/thermal_zone0"
    z.mkdir(parents=True)
    (z / "type").write_text("cpu-thermal\n")
    (z / "temp").write_text("50000\n")
    t = root / THROTTLE
    t.parent.mkdir(parents=True)
    t.write_text("0x00000000\n")
    return root


def rewrite(path: Path, text: str) -> None:
    """In place (same inode, no truncation): what the open file of the sampler sees."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, text.encode(), 0)
    finally:
        os.close(fd)


def sampler_pids(match, procs: Path = Path("/proc")) -> list[int]:
    """Processes that hold a file open whose path ``match(path)`` accepts: the runtime's sampler."""
    found = []
    for d in procs.iterdir():
        if not d.name.isdigit():
            continue
        try:
            if any(match(os.readlink(fd)) for fd in (d / "fd").iterdir()):
                found.append(int(d.name))
        except OSError:
            continue
    return found


def flip_when_rounds_run(path: Path, after_s: float, timeout: float, flip=None, match=None) -> dict:
    """Wait for a sampler to hold ``path`` open, then for its first read after a rewrite (the
    rounds have begun: each round re-reads the file), then ``after_s`` more, then ``flip()``
    (default: set bit 2, throttled now). Reads are seen through atime (relatime: the first read
    after a write updates it). ``match``: how the path shows in /proc/PID/fd (a board's chroot)."""
    import time

    seen: dict = {}
    end = time.monotonic() + timeout
    match = match or (lambda link: link == str(path))
    while time.monotonic() < end and not seen.get("pids"):
        seen["pids"] = sampler_pids(match)
        time.sleep(0.01)
    if not seen.get("pids"):
        return seen
    seen["status"] = []
    for pid in seen["pids"]:
        with contextlib.suppress(OSError):
            seen["status"].append(Path(f"/proc/{pid}/status").read_text())
    rewrite(path, path.read_text())  # the same value, a new mtime
    while time.monotonic() < end:
        st = path.stat()
        if st.st_atime_ns >= st.st_mtime_ns:
            break
        time.sleep(0.005)
    seen["rounds_seen_s"] = time.monotonic()
    time.sleep(after_s)
    (flip or (lambda: rewrite(path, "0x00000004\n")))()
    seen["flipped"] = True
    return seen


def test_tiny_sustained_bench_marks_exactly_the_rounds_after_the_flip(tmp_path):
    import threading

    tree = fake_pi_tree(tmp_path / "sysfs")
    out = tmp_path / "r.jsonl"
    env = dict(os.environ, EDGEATTN_SYSFS_ROOT=str(tree), EDGEATTN_CACHE=str(tmp_path / "c"))
    seen: dict = {}
    flipper = threading.Thread(
        target=lambda: seen.update(flip_when_rounds_run(tree / THROTTLE, 0.6, 120)), daemon=True
    )
    flipper.start()
    r = subprocess.run(
        [*EXE, "bench", *SMALL, "--sustained", "1.5s", "--cpus", "0", "--warmup", "1",
         "-o", str(out)],
        capture_output=True, text=True, timeout=300, env={**env, "COLUMNS": "200"},
    )  # fmt: skip
    flipper.join(5)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert seen.get("flipped"), seen
    # pinned: the runtime process may run on core 0 only, and the record says so
    assert any("Cpus_allowed_list:\t0\n" in s for s in seen["status"]), seen["status"]
    (rec,) = [json.loads(x) for x in out.read_text().splitlines() if '"paired"' in x]
    assert rec["placement"]["cpus"] == [0] and rec["placement"]["intra_op_threads"] == 1
    p = rec["paired"]
    conds = p["round_conditions"]
    assert p["sustained"] is True and len(conds) == len(p["rounds_ms"]) > 20
    assert p["conditions_sources"]["throttle"] == "sysfs"
    assert p["conditions_sources"]["thermal"] == "cpu-thermal"
    marked = [i for i, c in enumerate(conds) if c["marked"]]
    throttled = [i for i, c in enumerate(conds) if (c["throttle_bits"] or 0) & 0xF]
    # exactly the rounds after the flip: a non-empty suffix, and only the throttled ones
    assert marked == throttled and marked
    assert marked == list(range(marked[0], len(conds))) and marked[0] > 0
    assert all(conds[i]["why"] == "throttled (pi bits 0x4)" for i in marked)
    assert all(c["mhz_min"] == 1800.0 and c["temp_c"] == 50.0 for c in conds)
    text = " ".join(r.stdout.split())
    n = len(conds)
    assert f"{len(marked)} of {n} rounds marked (throttled {len(marked)} / below" in text
    assert f"without {len(marked)} marked rounds:" in text
    assert "retention softmax: last-" in text and "first marked round at" in text
    assert "conditions sampled per round:" in text and cond.NO_ENERGY in text
    assert "placement: cpus 0" in text
    # the legend names the methods from the paired record (a sustained run has no alone pass)
    lines = r.stdout.splitlines()
    assert any(ln.startswith("softmax: ") for ln in lines)
    assert not any(ln.startswith(".") for ln in lines)
    png = tmp_path / "r-sustained.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    rep = _cli("report", str(out), env={"COLUMNS": "200"})
    assert rep.returncode == 0, rep.stderr
    assert f"without {len(marked)} marked rounds:" in " ".join(rep.stdout.split())


RK3588 = [
    {"name": "little", "cpus": [0, 1, 2, 3], "max_mhz": 1800.0, "part": "0xd05"},
    {"name": "big", "cpus": [4, 5, 6, 7], "max_mhz": 2400.0, "part": "0xd0b"},
]
SOURCES = {
    "cpufreq": True,
    "thermal": "soc-thermal",
    "throttle": None,
    "energy": None,
    "unreadable": ["throttle", "powercap", "hwmon"],
}


def test_env_and_remote_check_name_the_clusters_and_the_sources():
    from edgeattn.cli.env_view import env_rows
    from edgeattn.remote.check import _read_env

    rows = dict(env_rows({"clusters": RK3588, "conditions_sources": SOURCES}))
    want_c = "cpus 0-3 little (1800 MHz, part 0xd05), 4-7 big (2400 MHz, part 0xd0b)"
    want_s = (
        "readable: thermal (soc-thermal), cpufreq; not readable: throttle bits, "
        "energy (no powercap, hwmon)"
    )
    assert rows["clusters"] == want_c and rows["conditions"] == want_s
    report: dict = {"notes": []}
    _read_env(report, {"clusters": RK3588, "conditions_sources": SOURCES}, {})
    assert want_c in report["notes"] and f"conditions {want_s}" in report["notes"]
    assert report["clusters"] == RK3588


@pytest.mark.parametrize(
    ("cpus", "bad"), [("big", False), ([0, 1], False), ("0,,2", True), ("x", True), ([-1], True)]
)
def test_remote_run_spec_checks_a_cpu_list_here_and_leaves_cluster_words_to_the_device(cpus, bad):
    from edgeattn.errors import SpecError
    from edgeattn.remote.spec import validate_spec

    spec = {"runs": [{"id": "a", "model": "m.onnx"}], "cpus": cpus}
    if bad:
        with pytest.raises(SpecError, match=r"^bad spec: cpus .* is invalid"):
            validate_spec(spec)
    else:
        validate_spec(spec)


def test_conditions_summary_as_data():
    s = cond.conditions_summary(_twenty(overhead_us=30))
    assert (s["rounds"], s["marked"], s["overhead_us"], s["energy"]) == (20, 8, 30, None)
    (w,) = s["without_marked"]
    assert w["moved"] is True and w["without"]["median"] == pytest.approx(2.0)
    assert "sustained" not in s and cond.conditions_summary({"paired": {}}) is None
    assert cond.conditions_summary(_sustained())["sustained"]["first_marked_s"] == 100.0
