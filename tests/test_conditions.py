"""Device conditions per paired round (``edgeattn.runtime.conditions``), read from fake sysfs trees
(``fake_sysfs.py``, through ``$EDGEATTN_SYSFS_ROOT``): Pi throttle bits, rounds marked exactly
after a mid-run flip in a real paired group, energy per member run from a powercap counter the
test advances by known amounts (and wraps), hwmon power integrated by hand, big.LITTLE clusters,
``--cpus`` text, and ``cpus: [0]`` pinning a real runtime process."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_sysfs import A55, A76, FakeSysfs
from onnx_factory import attention_model

from edgeattn.runtime import __main__ as rt
from edgeattn.runtime import conditions as C
from edgeattn.runtime.paired import Group, measure_group
from edgeattn.runtime.session import RuntimeSpecError

REPO = Path(__file__).resolve().parents[1]
M = importlib.import_module("edgeattn.runtime.measure")  # the package exports a measure() too


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("cond")
    return {
        # about 0.1 and 0.5 ms a run here: rounds of ~0.6 ms, not thousands per second (the
        # order-statistic intervals over the rounds cost O(rounds²))
        "small": str(attention_model(d / "small.onnx", tokens=128, dim=64)),
        "big": str(attention_model(d / "big.onnx", tokens=256, dim=64)),
    }


def _schema_errors(obj: dict, name: str) -> list[str]:
    """What docs/<name>.schema.json says is wrong with ``obj``."""
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((REPO / "docs" / f"{name}.schema.json").read_text())
    return [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(obj)]


def _group(models: dict[str, str], tmp_path: Path, **group) -> dict:
    """Run one paired group in this process (the runtime's own parse and measure)."""
    g = {
        "id": "g",
        "runs": ["small", "big"],
        "ratios": [{"name": "big_vs_small", "num": "big", "den": "small"}],
        "min_rounds": 5,
        "min_time_s": 0.2,
        "tries": 1,
    }
    g.update(group)
    spec = {
        "defaults": {"warmup": 1, "intra_op_threads": 1},
        "runs": [{"id": k, "model": v} for k, v in models.items()],
        "paired": [g],
        "isolated": False,
    }
    specs = rt.parse_spec(spec, str(tmp_path))
    (grp,), _ = rt.parse_paired(spec, specs)
    rec = measure_group(grp, {s.id: s for s in specs})
    assert rec["status"] == "ok", rec["error"]
    return rec


# ------------------------------------------------------------------------------ Pi throttle


@pytest.mark.parametrize("text", ["50005", "0x50005", "throttled=0x50005", "50005\n"])
def test_pi_throttle_bits_are_read_as_hex_and_decoded(text):
    bits = C.parse_throttle(text)
    assert bits == 0x50005
    assert C.decode_throttle(bits) == {
        "now": ["under-voltage", "throttled"],
        "occurred": ["under-voltage", "throttled"],
    }
    assert C.decode_throttle(0xF0008) == {
        "now": ["soft temperature limit"],
        "occurred": [
            "under-voltage",
            "arm frequency capped",
            "throttled",
            "soft temperature limit",
        ],
    }
    assert C.parse_throttle("garbage") is None and C.parse_throttle(None) is None


def test_a_pi_sampler_reads_the_bits_and_only_now_bits_mark(tmp_path):
    fake = FakeSysfs.pi4(tmp_path)
    with C.Sampler(cpus=[0, 1, 2, 3], root=str(fake.root)) as s:
        assert s.sources() == {
            "cpufreq": True,
            "thermal": "cpu-thermal",
            "throttle": "sysfs",
            "energy": None,
            "unreadable": ["powercap", "hwmon"],
        }
        a = s.sample()
        fake.set_throttle(0x50000)  # under-voltage and throttling *occurred*, not now
        b = s.sample()
        fake.set_throttle(0x50005)
        fake.set_temp(0, 82.5)
        c = s.sample()
        maxes = s.ref_mhz
    assert (a["throttle_bits"], b["throttle_bits"], c["throttle_bits"]) == (0, 0x50000, 0x50005)
    assert a["mhz"] == [1500.0] and c["temp_c"] == 82.5  # one clock (policy) for 4 cores
    quiet = C.judge(a, b, maxes, 0.9, a["t"])
    assert not quiet["marked"] and quiet["throttle_bits"] == 0x50000 and quiet["why"] is None
    hot = C.judge(b, c, maxes, 0.9, a["t"])
    assert hot["marked"] and hot["why"] == "throttled (pi bits 0x50005)"
    assert hot["temp_c"] == 82.5 and hot["t_s"] == pytest.approx(b["t"] - a["t"], abs=1e-6)


def test_vcgencmd_is_the_fallback_once_per_try_never_per_round(tmp_path, monkeypatch):
    """No get_throttled file: ``vcgencmd get_throttled`` (a subprocess) is read when asked
    (once per try), and the per-round samples carry no bits rather than a stale value."""
    exe = tmp_path / "bin" / "vcgencmd"
    exe.parent.mkdir()
    exe.write_text('#!/bin/sh\n[ "$1" = get_throttled ] && echo throttled=0x50000\n')
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv(C.ROOT_ENV, raising=False)
    if os.path.exists("/" + C.PI_THROTTLE):
        pytest.skip("this machine has the Pi firmware's get_throttled file")
    with C.Sampler(cpus=[0]) as s:
        assert s.sources()["throttle"] == "vcgencmd"
        assert s.sample()["throttle_bits"] is None
        assert s.throttle_slow() == 0x50000


def test_the_frequency_floor_is_per_core_and_0_disables_it(tmp_path):
    fake = FakeSysfs.rk3588(tmp_path)
    with C.Sampler(cpus=[1, 2, 6, 7], root=str(fake.root)) as s:  # two little, two big cores
        assert s.freq_cpus == [1, 6]  # one read per cpufreq policy
        assert s.ref_mhz == [1800.0, 2400.0]
        a = s.sample()
        fake.set_mhz(6, 2200.0)  # 2200 >= 0.9 x 2400 = 2160: not below the floor
        b = s.sample()
        fake.set_mhz(6, 1416.0)
        c = s.sample()
        maxes = s.ref_mhz
    ok = C.judge(a, b, maxes, 0.9, a["t"])
    # the little core at its own max (1800 MHz) is not "below 0.9 x 2400"
    assert not ok["marked"] and ok["mhz_min"] == 1800.0
    low = C.judge(b, c, maxes, 0.9, a["t"])
    assert low["marked"] and low["mhz_min"] == 1416.0
    assert low["why"] == "below frequency floor 1416 MHz < 0.9 x 2400 MHz"
    assert not C.judge(b, c, maxes, 0.0, a["t"])["marked"]


def test_the_floor_is_of_the_base_frequency_where_there_is_turbo(tmp_path):
    """intel_pstate: cpuinfo_max_freq is the single-core turbo (4700 MHz), all cores under load
    run near base (3400 MHz): the floor is 0.9 x base, so 3500 MHz is not "throttled"."""
    fake = FakeSysfs(tmp_path)
    fake.cpu(0, 4700.0, cur_mhz=3500.0, governor="powersave")
    fake.write(fake.freq_path(0, "base_frequency"), 3400000)
    with C.Sampler(cpus=[0], root=str(fake.root)) as s:
        assert s.ref_mhz == [3400.0]
        a = s.sample()
        fake.set_mhz(0, 2900.0)
        b = s.sample()
    assert not C.judge(a, a, s.ref_mhz, 0.9, a["t"])["marked"]
    low = C.judge(a, b, s.ref_mhz, 0.9, a["t"])
    assert low["why"] == "below frequency floor 2900 MHz < 0.9 x 3400 MHz"


def test_nothing_readable_is_named_and_samples_are_empty(tmp_path):
    with C.Sampler(cpus=[0], root=str(tmp_path)) as s:
        src = s.sources()
        smp = s.sample()
    assert src == {
        "cpufreq": False,
        "thermal": None,
        "throttle": None,
        "energy": None,
        "unreadable": ["cpufreq", "thermal", "throttle", "powercap", "hwmon"],
    }
    assert [smp[k] for k in ("mhz", "temp_c", "throttle_bits", "energy")] == [None] * 4


# ------------------------------------------------------------------- marked rounds, for real


def test_rounds_after_a_mid_run_flip_are_marked_exactly(two_models, tmp_path, monkeypatch):
    """A background thread trips the Pi bits and the zone mid-run: the rounds that ended after
    the flip are marked, the ones that ended before it are not (±5 ms at the flip itself)."""
    fake = FakeSysfs.pi4(tmp_path / "sys")
    monkeypatch.setenv(*fake.env_item())
    M.device_fingerprint()  # computed once per process: not between the flip's start and round 1
    flip = fake.later(0.55, {fake.temp_path(0): 85000, "sys/devices/platform/soc/soc:firmware/get_throttled": "50005"})  # fmt: skip
    rec = _group(two_models, tmp_path, min_rounds=20, min_time_s=1.0, max_rounds=10**6)
    assert flip.done.is_set()
    p = rec["paired"]
    rc = p["round_conditions"]
    assert len(rc) == len(p["rounds_ms"]) >= 20
    assert p["conditions_sources"]["throttle"] == "sysfs"
    assert "round_energy_uj" not in p  # no energy source in a Pi 4 tree
    t0 = p["conditions_t0_unix"]
    ends = [t0 + r["t_end_s"] for r in rc]
    margin = 0.005  # a sample is timed just before its reads: a preemption between them
    for r, end in zip(rc, ends, strict=True):
        if end > flip.after + margin:
            assert r["marked"] and r["why"] == "throttled (pi bits 0x50005)", r
            assert r["temp_c"] == 85.0 and r["throttle_bits"] == 0x50005
        elif end < flip.before - margin:
            assert not r["marked"] and r["throttle_bits"] == 0 and r["temp_c"] == 55.0, r
    marks = [r["marked"] for r in rc]
    assert any(marks) and not all(marks)
    assert marks == sorted(marks)  # never unmarked again after the first mark
    # rounds are timestamped in order, and each starts where the one before ended
    assert all(a["t_end_s"] <= b["t_s"] + 1e-6 for a, b in zip(rc, rc[1:], strict=False))
    assert 0 < p["conditions_overhead_us"] < 1000
    assert _schema_errors(rec, "records") == []


# -------------------------------------------------------------------------------- energy


def test_energy_per_member_run_from_a_wrapping_powercap_counter(two_models, tmp_path, monkeypatch):
    """Each member's run advances the fake RAPL counter by its own known amount (the session's
    run is wrapped to do it), the counter wraps many times: every entry is exactly that amount."""
    fake = FakeSysfs.two_core(tmp_path / "sys", powercap=False)
    wrap = 9_999_999
    fake.powercap("intel-rapl:0", "package-0", energy_uj=wrap - 500_000, max_range_uj=wrap)
    fake.powercap("intel-rapl:0:0", "core", energy_uj=7, max_range_uj=wrap)  # a subzone: ignored
    monkeypatch.setenv(*fake.env_item())
    spend = {two_models["small"]: 1_234_567, two_models["big"]: 3_456_789}
    real = M.create_session

    def create(model, *args, **kwargs):
        info = real(model, *args, **kwargs)
        run = info.session.run

        def run_spending(*a, **k):
            fake.add_energy(spend[model])
            return run(*a, **k)

        info.session.run = run_spending
        return info

    monkeypatch.setattr(M, "create_session", create)
    rec = _group(two_models, tmp_path, min_rounds=12, min_time_s=0.1)
    p = rec["paired"]
    assert p["conditions_sources"]["energy"] == {
        "kind": "powercap",
        "name": "package-0",
        "wrap_uj": wrap,
    }
    e = p["round_energy_uj"]
    assert len(e) == len(p["rounds_ms"]) >= 12
    assert e == [[1_234_567.0, 3_456_789.0]] * len(e)
    total = sum(sum(row) for row in e)
    assert total > 3 * wrap  # it wrapped, more than once
    assert _schema_errors(rec, "records") == []


def test_a_wrap_with_an_unknown_range_is_not_guessed(tmp_path):
    fake = FakeSysfs(tmp_path)
    fake.powercap("intel-rapl:0", "package-0", energy_uj=900)
    (fake.root / "sys/class/powercap/intel-rapl:0/max_energy_range_uj").unlink()
    with C.Sampler(cpus=[0], root=str(fake.root)) as s:
        a = s.read_energy()
        fake.write(fake.energy_path("intel-rapl:0"), 100)
        b = s.read_energy()
        assert s.sources()["energy"]["wrap_uj"] is None
        assert s.energy_uj(a, b) is None
        assert s.energy_uj(b, b) == 0.0


def test_hwmon_rails_are_integrated_by_the_trapezoid_rule(tmp_path):
    """Jetson INA3221: only VDD_IN (the board's input; the other rails are inside it), mV x mA =
    µW, energy = mean of the two powers x the time between the readings."""
    fake = FakeSysfs.jetson_orin(tmp_path)
    with C.Sampler(cpus=[0], root=str(fake.root)) as s:
        assert s.sources()["energy"] == {
            "kind": "hwmon-vi",
            "name": "ina3221:VDD_IN",
            "wrap_uj": None,
        }
        a = s.read_energy()
        time.sleep(0.05)
        fake.set_rail(1, 1, 5000.0, 2500.0)
        b = s.read_energy()
        got = s.energy_uj(a, b)
    assert a[1] == 5072 * 1100 and b[1] == 5000 * 2500
    by_hand = (5072 * 1100 + 5000 * 2500) / 2 * (b[0] - a[0])
    assert got == pytest.approx(by_hand, rel=1e-12)
    # power<N>_input rails without a total label are summed
    fake2 = FakeSysfs(tmp_path / "p")
    fake2.hwmon_power(0, "rails", {"cpu": 1_500_000, "ddr": 500_000})
    with C.Sampler(cpus=[0], root=str(fake2.root)) as s:
        assert s.sources()["energy"]["name"] == "rails:cpu+ddr"
        assert s.sources()["energy"]["kind"] == "hwmon-power"
        assert s.read_energy()[1] == 2_000_000


def test_x86_rapl_takes_the_package_not_psys_or_subzones(tmp_path):
    fake = FakeSysfs.x86_rapl(tmp_path)
    with C.Sampler(cpus=[0, 1], root=str(fake.root)) as s:
        assert s.sources()["energy"]["name"] == "package-0"
        assert s.sources()["thermal"] == "x86_pkg_temp"
        a = s.read_energy()
        fake.add_energy(250, "intel-rapl:0")
        fake.add_energy(10_000, "intel-rapl:1")  # psys moves too: not counted
        assert s.energy_uj(a, s.read_energy()) == 250.0


# ------------------------------------------------------------------ sustained and cooldown


def test_a_sustained_group_keeps_every_round_of_one_try(two_models, tmp_path, monkeypatch):
    fake = FakeSysfs.two_core(tmp_path / "sys")
    monkeypatch.setenv(*fake.env_item())
    rec = _group(
        two_models,
        tmp_path,
        sustained_s=0.5,
        min_rounds=1,
        max_rounds=3,
        cooldown={"seconds": 0.1},
        tries=3,
    )
    p = rec["paired"]
    assert p["sustained"] is True and len(p["tries"]) == 1
    (tr,) = p["tries"]
    assert tr["stop_reason"] == "sustained_s" and tr["cooldown_s"] >= 0.1
    assert len(p["rounds_ms"]) > 3  # max_rounds does not cut a sustained run
    assert p["round_conditions"][-1]["t_end_s"] >= 0.5
    assert len(p["round_energy_uj"]) == len(p["rounds_ms"])
    assert rec["protocol"]["sustained_s"] == 0.5


def test_cooldown_until_within_waits_for_the_zone(tmp_path):
    fake = FakeSysfs.two_core(tmp_path, powercap=False)
    fake.set_temp(0, 60.0)
    with C.Sampler(cpus=[0], root=str(fake.root)) as s:
        flip = fake.later(0.3, {fake.temp_path(0): 51000})
        waited, note = C.cool_down({"until_within_c": 2.0, "max_s": 5.0}, s, 50.0)
        assert flip.done.is_set() and note is None and 0.3 <= waited < 2.0
        waited, note = C.cool_down({"until_within_c": 0.5, "max_s": 0.2}, s, 50.0)
        assert 0.2 <= waited < 1.0 and note == "still 1 C above the start after max_s"
    with C.Sampler(cpus=[0], root=str(tmp_path / "empty")) as s:
        waited, note = C.cool_down({"until_within_c": 1.0, "max_s": 0.1}, s, None)
        assert waited >= 0.1 and note == "no temperature readable: waited max_s"


@pytest.mark.parametrize(
    "field, msg",
    [
        ({"freq_floor": 1.5}, "freq_floor 1.5 is invalid; expected a fraction in [0, 1]"),
        ({"freq_floor": "x"}, "freq_floor 'x' is invalid"),
        ({"sustained_s": 0}, "sustained_s 0 is invalid; expected seconds > 0"),
        ({"cooldown": {"seconds": -1}}, "cooldown {'seconds': -1} is invalid; expected"),
        ({"cooldown": {"until_within_c": 2}}, "cooldown {'until_within_c': 2} is invalid"),
        ({"cooldown": 5}, "cooldown 5 is invalid"),
    ],
)
def test_bad_group_fields_are_one_line(field, msg):
    with pytest.raises(RuntimeSpecError) as exc:
        Group({"id": "g", "runs": ["a", "b"], **field}, ["a", "b"])
    assert msg in str(exc.value) and "\n" not in str(exc.value)


# -------------------------------------------------------------------------------- clusters


def test_rk3588_clusters_from_parts_and_frequencies(tmp_path):
    fake = FakeSysfs.rk3588(tmp_path / "rk")
    assert C.clusters(str(fake.root)) == [
        {"name": "little", "cpus": [0, 1, 2, 3], "max_mhz": 1800.0, "part": A55},
        {"name": "big", "cpus": [4, 5, 6, 7], "max_mhz": 2400.0, "part": A76},
    ]
    assert C.parse_cpus("big", str(fake.root)) == [4, 5, 6, 7]
    assert C.parse_cpus("little", str(fake.root)) == [0, 1, 2, 3]
    assert C.parse_cpus("all", str(fake.root)) == list(range(8))
    # cpufreq only (no CPU part): grouped by max frequency, the middle one is named by number
    (fake.root / "proc/cpuinfo").unlink()
    assert [(g["name"], g["cpus"]) for g in C.clusters(str(fake.root))] == [
        ("little", [0, 1, 2, 3]),
        ("cluster1", [4, 5]),
        ("big", [6, 7]),
    ]
    # CPU parts only (no cpufreq): the A55s are the little cluster
    parts = FakeSysfs(tmp_path / "parts")
    for n in range(8):
        parts.bare_cpu(n)
    parts.cpuinfo([A55] * 4 + [A76] * 4)
    assert [(g["name"], g["cpus"], g["max_mhz"]) for g in C.clusters(str(parts.root))] == [
        ("little", [0, 1, 2, 3], None),
        ("big", [4, 5, 6, 7], None),
    ]
    # uniform cores: one cluster, "all"
    pi = FakeSysfs.pi4(tmp_path / "pi")
    assert C.clusters(str(pi.root)) == [
        {"name": "all", "cpus": [0, 1, 2, 3], "max_mhz": 1500.0, "part": "0xd08"}
    ]
    with pytest.raises(ValueError, match=r"no big cluster \(its clusters: all \(0-3\)\)"):
        C.parse_cpus("big", str(pi.root))


@pytest.mark.parametrize(
    "value, want",
    [("0", [0]), ("0,2-3", [0, 2, 3]), (" 3 , 1 ", [1, 3]), ("1-1", [1]), ([2, 0, 2], [0, 2])],
)
def test_parse_cpus(value, want):
    assert C.parse_cpus(value) == want


@pytest.mark.parametrize("bad", ["", "a", "3-1", "1,,2", "-1", "0x1", [], [-1], [True], 2.5])
def test_parse_cpus_refuses_bad_text_in_one_line(bad):
    with pytest.raises(ValueError) as exc:
        C.parse_cpus(bad)
    text = str(exc.value)
    assert text.startswith(f"cpus {bad!r} is invalid") and "\n" not in text


def test_cpu_list_text():
    assert C.cpu_list_text([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8" and C.cpu_list_text([3]) == "3"


# ------------------------------------------------------------------------------ placement


def _runtime(spec: dict, tmp_path: Path) -> subprocess.Popen:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return subprocess.Popen(
        [sys.executable, "-m", "edgeattn.runtime", "measure", "--spec", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=env,
    )


def _allowed(pid: int) -> set[str]:
    """Cpus_allowed_list of every thread of ``pid`` (ORT's pool threads included)."""
    out = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            status = Path(f"/proc/{pid}/task/{task}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("Cpus_allowed_list:"):
                out.add(line.split(":", 1)[1].strip())
    return out


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux affinity API")
def test_cpus_0_pins_the_runtime_and_is_recorded(two_models, tmp_path):
    spec = {
        "defaults": {"warmup": 1, "min_time_s": 1.0, "max_time_s": 3.0, "max_runs": 10**6},
        "runs": [{"id": "big", "model": two_models["big"]}],
        "cpus": [0],
    }
    proc = _runtime(spec, tmp_path)
    seen = None
    assert proc.stderr is not None
    for line in proc.stderr:  # progress: read the threads' affinity once the timing has begun
        if "creating cpu session" in line:
            time.sleep(0.4)  # the session exists and runs: its intra-op threads too
            seen = _allowed(proc.pid)
            assert proc.poll() is None  # read while it was still timing
            break
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert seen == {"0"}
    (rec,) = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    assert rec["placement"] == {"cpus": [0], "request": "0", "intra_op_threads": 1}
    assert rec["session"]["intra_op_threads"] == 1  # one thread per pinned core
    assert _schema_errors(rec, "records") == []


def test_the_new_spec_fields_validate_and_the_runtime_takes_them(tmp_path):
    spec = {
        "runs": [{"id": "a", "model": "a.onnx"}, {"id": "b", "model": "b.onnx"}],
        "cpus": "0",
        "paired": [
            {"id": "g", "runs": ["a", "b"], "freq_floor": 0.8, "cooldown": {"seconds": 5}},
            {"id": "h", "runs": ["a", "b"], "sustained_s": 120, "freq_floor": 0,
             "cooldown": {"until_within_c": 2, "max_s": 300}},
        ],
    }  # fmt: skip
    assert _schema_errors(spec, "spec") == []
    specs = rt.parse_spec(spec, str(tmp_path))
    g, h = rt.parse_paired(spec, specs)[0]
    assert (g.freq_floor, g.cooldown, g.sustained_s) == (0.8, {"seconds": 5.0}, None)
    assert (h.freq_floor, h.sustained_s) == (0, 120)
    assert rt.parse_placement(spec) == {"cpus": [0], "request": "0"}
    for bad in ({"cpus": []}, {"cpus": [-1]}, {"cpus": 3}):
        assert _schema_errors(dict(spec, **bad), "spec"), bad
    bad_group = dict(spec["paired"][0], freq_floor=2)
    assert _schema_errors(dict(spec, paired=[bad_group]), "spec")


@pytest.mark.parametrize(
    "cpus, msg",
    [
        ([99], "cpus [99] names core(s) 99 this process cannot run on; usable cores: "),
        ("1-0", "cpus '1-0' is invalid; expected core numbers"),
        ("big", "cpus 'big' is invalid: this device has no big cluster"),
    ],
)
def test_bad_cpus_exit_2_in_one_line_before_measuring(tmp_path, cpus, msg, monkeypatch):
    monkeypatch.delenv(C.ROOT_ENV, raising=False)
    spec = {"runs": [{"model": "never-read.onnx"}], "cpus": cpus}
    with pytest.raises(rt.UsageError, match="bad spec: ") as exc:
        rt.parse_placement(spec)
    assert msg in str(exc.value) and "\n" not in str(exc.value)
    path = tmp_path / "s.json"
    path.write_text(json.dumps(spec))
    r = subprocess.run(
        [sys.executable, "-m", "edgeattn.runtime", "measure", "--spec", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert r.returncode == rt.EXIT_USAGE and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and msg in r.stderr


def test_the_fingerprint_names_sources_and_clusters(tmp_path, monkeypatch):
    from edgeattn.runtime import sysinfo

    fake = FakeSysfs.rk3588(tmp_path)
    monkeypatch.setenv(*fake.env_item())
    fp = sysinfo.fingerprint()
    assert [g["name"] for g in fp["clusters"]] == ["little", "big"]
    src = fp["conditions_sources"]
    assert src["thermal"] == "soc-thermal" and src["energy"] is None
    assert src["unreadable"] == ["throttle", "powercap", "hwmon"]


def test_fake_tree_script_writes_in_place(tmp_path):
    """The shell script the emulated boards run changes the files the sampler keeps open."""
    fake = FakeSysfs.pi4(tmp_path)
    script = fake.script([(0, {fake.temp_path(0): 85000, C.PI_THROTTLE: "50005"})])
    with C.Sampler(cpus=[0], root=str(fake.root)) as s:
        assert s.sample()["throttle_bits"] == 0
        subprocess.run(["sh", "-c", script], check=True)
        smp = s.sample()
    assert smp["throttle_bits"] == 0x50005 and smp["temp_c"] == 85.0
