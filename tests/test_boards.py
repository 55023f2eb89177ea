"""The device path on emulated boards (tests/boards/board.py): an aarch64 Debian with its own sshd.

Tier ``-m boards`` (not in the default run): needs root and binfmt_misc (skips, saying why, where
the machine forbids them); builds the root filesystem once (minutes; cached under
``$EDGEATTN_BOARD_CACHE``). Emulated timings are meaningless: these tests check that the path from
``edgeattn`` on the host to the runtime on an ARM device works, what the records say, and that
everything is cleaned up on both sides, not how fast anything is.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from boards import board as boardlib

from edgeattn.remote.setup import setup_failure

ROOT = Path(__file__).resolve().parent.parent
SHAPE = ["--tokens", "64", "--dim", "64", "--heads", "2", "--methods", "softmax,sima"]
FAST = ["--warmup", "1", "--min-time", "0.05", "--min-runs", "3", "--max-time", "2"]
PARITY_TOL = 1e-5  # float32 CPU kernels, x86 vs aarch64 (SIMD widths differ): measured ~2e-7


# --------------------------------------------------------------------------------------------------
# pure pieces (no board): the setup failure hints say what actually failed
# --------------------------------------------------------------------------------------------------
def _dev(machine: str = "aarch64", py: str = "3.11.2") -> str:
    return f"edgeattn-setup: device {machine}, python {py}"


@pytest.mark.parametrize(
    "lines, reason, hint",
    [
        (
            [
                _dev(),
                "WARNING: Retrying ... SSLError(SSLCertVerificationError(1, '[SSL: "
                "CERTIFICATE_VERIFY_FAILED] certificate verify failed'))",
                "ERROR: No matching distribution found for numpy",
            ],
            "cannot verify TLS",
            "clock",
        ),
        (
            [_dev(), "ERROR: No matching distribution found for onnxruntime==9.9"],
            "no onnxruntime wheel for this device (aarch64, Python 3.11.2)",
            "--find-links",
        ),
        (
            [_dev("armv7l"), "ERROR: No matching distribution found for onnxruntime"],
            "no onnxruntime wheel for this device (armv7l",
            "64-bit",
        ),
        (
            [_dev(), "ERROR: Could not install packages due to an OSError: [Errno 28] No space"],
            "disk is full",
            "--venv",
        ),
        ([_dev(), "edgeattn-setup: No module named venv/ensurepip"], "no venv/pip", "python3-venv"),
        (
            [_dev(), "Failed to establish a new connection: [Errno 101] Network is unreachable"],
            "cannot reach the package index",
            "--find-links",
        ),
    ],
)
def test_setup_failure_hint_names_what_failed(lines, reason, hint):
    got_reason, got_hint = setup_failure(90, lines)
    assert reason in got_reason and hint in got_hint
    if "armv7l" not in lines[0]:
        assert "32-bit" not in got_reason + got_hint  # the old fixed text, wrong on aarch64


@pytest.mark.parametrize(
    "files, machine, want",
    [
        ({"/etc/edgeattn-emulated": "qemu-user cortex-a72\n# ..."}, "aarch64", "qemu-user"),
        (
            {"/proc/cpuinfo": "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t: fpu"},
            "aarch64",
            "qemu-user",
        ),
        ({"/proc/cpuinfo": "processor\t: 0\nHardware\t: QEMU virt"}, "aarch64", "qemu"),
        (
            {"/proc/sys/fs/binfmt_misc/qemu-aarch64": "enabled\ninterpreter /x"},
            "aarch64",
            "qemu-user",
        ),
        ({"/proc/sys/fs/binfmt_misc/qemu-aarch64": "enabled\n"}, "x86_64", None),  # a PC with qemu
        (
            {"/proc/cpuinfo": "processor\t: 0\nCPU part\t: 0xd08\nHardware\t: BCM2835"},
            "aarch64",
            None,
        ),
    ],
)
def test_fingerprint_tells_emulated_from_real(files, machine, want, monkeypatch):
    from edgeattn.runtime import sysinfo

    monkeypatch.setattr(sysinfo, "read_text", lambda path: files.get(path))
    monkeypatch.setattr(sysinfo.platform, "machine", lambda: machine)
    got = sysinfo.emulation()
    assert (got or {}).get("emulated") == want, got
    fp = sysinfo.fingerprint()
    assert fp["emulated"] == want
    if want is None:  # a real device keeps the fingerprint id it had before this field existed
        fp2 = dict(fp)
        del fp2["emulated"]
        assert sysinfo.fingerprint_id(fp2) == fp["fingerprint_id"]


# --------------------------------------------------------------------------------------------------
# boards
# --------------------------------------------------------------------------------------------------
def _up(name: str):
    try:
        b = boardlib.up(name)
    except boardlib.BoardUnavailable as exc:
        pytest.skip(f"board {name} cannot run on this machine: {exc}")
    return b


_BOARD_FIXTURES = {"pi4": "pi4", "pi32": "pi-32bit", "old_python": "old-python"}


@pytest.fixture(scope="session")
def prebuilt(request):
    """On a cold cache, build every board this session needs side by side (see board.prebuild)."""
    wanted = set()
    for item in request.session.items:
        wanted |= {
            _BOARD_FIXTURES[f] for f in getattr(item, "fixturenames", ()) if f in _BOARD_FIXTURES
        }
    try:
        threads = boardlib.prebuild(sorted(wanted))
    except boardlib.BoardError:
        threads = []  # each board says why when it comes up
    yield threads
    for t in threads:  # never leave a build half done (and its tree behind) at exit
        t.join()


def _board(name: str):
    b = _up(name)
    try:
        yield b
    finally:
        b.stop()
        # nothing of the board is left: no process rooted in its tree, no mount, no tree
        assert not b.processes()
        assert not boardlib._mounts_under(b.work)
        assert not b.work.exists()


@pytest.fixture(scope="session")
def pi4(prebuilt):
    yield from _board("pi4")


@pytest.fixture(scope="session")
def pi32(prebuilt):
    yield from _board("pi-32bit")


@pytest.fixture(scope="session")
def old_python(prebuilt):
    yield from _board("old-python")


@pytest.fixture(scope="module")
def export_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("export-cache")


def cli(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    """``edgeattn ARGS`` in a subprocess (the CLI exactly as a user runs it)."""
    return subprocess.run(
        [sys.executable, "-m", "edgeattn.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {}), "COLUMNS": "200"},
        check=False,
        cwd=ROOT,
    )


def board_args(b) -> list[str]:
    return ["--ssh-config", str(b.ssh_config)]


def device_runtime_procs(b) -> list[str]:
    """Live runtime processes inside the board (their command lines)."""
    found = []
    for pid in b.processes():
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        args = raw.replace(b"\0", b" ").decode(errors="replace")
        if state != "Z" and "measure" in args and "runtime-" in args:
            found.append(args)
    return found


def _read(p: Path) -> list[dict]:
    """The measurement records of ``p`` (each run's closing ``run_end`` record left out)."""
    recs = [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
    return [r for r in recs if r.get("kind") != "run_end"]


def _wait(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return pred()


boards = pytest.mark.boards


@boards
def test_board_is_an_aarch64_cortex_a72_that_says_emulated(pi4):
    res = pi4.ssh("uname -m; python3 -c 'import platform; print(platform.machine())'; hostname")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["aarch64", "aarch64", "pi4"]
    # an ARM binary really runs there, under qemu (the host is x86_64)
    assert os.uname().machine != "aarch64"


@boards
def test_remote_check_on_pi4(pi4):
    res = cli("remote", "check", "pi4", *board_args(pi4), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    (rep,) = json.loads(res.stdout)
    from importlib.metadata import version

    assert rep["ok"] and rep["reachable"] and rep["problems"] == []
    assert rep["machine"] == "aarch64" and rep["python_version"].startswith("3.11.")
    assert rep["numpy_version"] == version("numpy")
    assert rep["onnxruntime_version"] == version("onnxruntime")
    assert "CPUExecutionProvider" in rep["providers"]
    assert rep["cpu"]["model"] == "Cortex-A72"
    assert rep["emulated"] == "qemu-user"
    assert any("not device speed" in n for n in rep["notes"])
    table = cli("remote", "check", "pi4", *board_args(pi4))
    assert table.returncode == 0, table.stdout + table.stderr
    assert "Cortex-A72" in table.stdout and "emulated" in table.stdout


@pytest.fixture(scope="module")
def bench_runs(pi4, export_cache, tmp_path_factory):
    """The same small bench locally and on pi4 (the device's system python3)."""
    d = tmp_path_factory.mktemp("bench")
    env = {"EDGEATTN_CACHE": str(export_cache)}
    local, remote = d / "local.jsonl", d / "pi4.jsonl"
    res = cli("bench", *SHAPE, *FAST, "--out", str(local), env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    t0 = time.monotonic()
    res = cli(
        "bench", *SHAPE, *FAST, "--out", str(remote), "--host", "pi4", *board_args(pi4), env=env
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return {"local": local, "remote": remote, "seconds": time.monotonic() - t0, "out": res.stdout}


@boards
def test_bench_on_pi4_record_shape(pi4, bench_runs):
    loc, rem = _read(bench_runs["local"]), _read(bench_runs["remote"])
    want = ["softmax", "sima"]
    rem_kernels = [r for r in rem if (r.get("meta") or {}).get("method") in want]
    assert [r["meta"]["method"] for r in rem_kernels] == want
    assert all(r["status"] == "ok" for r in rem)
    by = {r["meta"].get("method"): r for r in loc if r.get("meta")}
    for r in rem_kernels:
        dev = r["device"]
        assert dev["machine"] == "aarch64"
        assert dev["cpu_model"] == "Cortex-A72"
        assert dev["emulated"] == "qemu-user" and "edgeattn-emulated" in dev["emulated_hint"]
        assert dev["python"]["version"].startswith("3.11.")
        assert r["host"]["spec"] == "pi4" and r["host"]["target"] == f"pi@127.0.0.1:{pi4.port}"
        assert r["latency_ms"]["median"] > 0
        a = by[r["meta"]["method"]]
        assert a["device"]["machine"] != "aarch64" and not a["device"]["emulated"]
        assert a["meta"] == r["meta"] and a["model"]["sha256"] == r["model"]["sha256"]
        assert set(a) <= set(r) and set(r) - set(a) == {"host"}
        assert set(a["device"]) == set(dev)
        assert a["device"]["fingerprint_id"] != dev["fingerprint_id"]
    assert "Cortex-A72" in bench_runs["out"] and "emulated — not device speed" in bench_runs["out"]


@boards
def test_bench_left_nothing_on_the_device(pi4, bench_runs):
    res = pi4.ssh("ls -A ~/.cache/edgeattn ~/.cache/edgeattn/runs")
    assert res.returncode == 0, res.stderr
    assert "runs:" in res.stdout and res.stdout.rstrip().endswith("runs:")  # no run dir left
    assert device_runtime_procs(pi4) == []


@boards
def test_report_shows_the_board_next_to_the_local_run(bench_runs):
    res = cli("report", str(bench_runs["local"]), str(bench_runs["remote"]))
    assert res.returncode == 0, res.stdout + res.stderr
    text = res.stdout
    assert "pi4" in text and "Cortex-A72" in text
    # the board's column says emulated (rich may wrap a long header over two lines)
    # the board is labelled emulated wherever it is named: the latency table's and the ratio
    # table's column headers, its block of named lines and its conditions block (rich may wrap
    # a long header)
    assert text.count("(emulated —") == 4 and text.count("device speed)") == 4, text
    assert "throttling not checked: no cpufreq or throttle bits readable" in text
    from edgeattn.bench.report import device_label

    (rem,) = {device_label(r) for r in _read(bench_runs["remote"]) if r.get("model")}
    (loc,) = {device_label(r) for r in _read(bench_runs["local"]) if r.get("model")}
    assert rem.endswith("(emulated — not device speed)") and "emulated" not in loc


@boards
def test_html_page_of_this_machine_and_the_emulated_pi(bench_runs, tmp_path):
    """report --html from real records of two devices (this machine, the emulated Pi over SSH):
    one self-contained page, both devices' paired ratios with their intervals equal to the
    terminal's, the Pi's card labelled emulated; loaded in headless Chromium with no request and
    no error when the browser is there (tests/test_report_html.py checks it in depth)."""
    from test_report_html import CHROMIUM, PROBE, chromium, dom

    from edgeattn.bench import html as page
    from edgeattn.bench import pairs, report, run

    out = tmp_path / "r.html"
    res = cli("report", str(bench_runs["local"]), str(bench_runs["remote"]), "--html", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    text = out.read_text(encoding="utf-8")
    assert "http:" not in text and "https:" not in text
    d = dom(text)
    records = run.read_record_files([bench_runs["local"], bench_runs["remote"]])
    rows = [x for x in d.rows if "data-ratio" in x]
    devices = set()
    for item in report.run_summaries(records):
        dev = next(c[0] for c in report.run_columns(records)
                   if report.run_label(c, report.run_columns(records)) == item["label"])  # fmt: skip
        devices.add(dev)
        for m, want in item["summary"]["vs_reference"].items():
            name = f"{pairs.VS_REF}{m}"
            (row,) = [x for x in rows if x["data-device"] == dev
                      and (x["data-ratio"] == name or name in x["data-also"].split())]  # fmt: skip
            assert float(row["data-median"]) == want["median"]
            assert float(row["data-ci-low"]) == want["ci_low"] <= want["median"]
    (emu,) = [dv for dv in devices if "emulated" in dv]
    assert len(devices) == 2 and page.EMULATED in d.cards[emu]
    if CHROMIUM:
        probed = tmp_path / "probed.html"
        probed.write_text(text.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
        r = chromium("--dump-dom", probed.as_uri())
        loaded = dom(r.stdout).root
        assert r.returncode == 0 and loaded.get("data-loaded") == "1", r.stderr[-2000:]
        assert loaded.get("data-resources", "") == "" and "data-errors" not in loaded


_PARITY = (
    "import sys, json, numpy as np, onnxruntime as ort; "
    "name, shape = sys.argv[1], [int(x) for x in sys.argv[2].split(',')]; "
    "data = sys.stdin.buffer.read(); "
    "s = ort.InferenceSession(data, providers=['CPUExecutionProvider']); "
    "x = np.random.default_rng(0).standard_normal(shape).astype(np.float32); "
    "y = s.run(None, {name: x})[0].astype(np.float32); "
    "sys.stdout.write(json.dumps({'shape': list(y.shape), 'hex': y.tobytes().hex()}))"
)


def _outputs(run, model: bytes, name: str, shape: list[int]):
    import numpy as np

    res = run(model, name, ",".join(map(str, shape)))
    assert res.returncode == 0, res.stderr[-2000:]
    obj = json.loads(res.stdout)
    return np.frombuffer(bytes.fromhex(obj["hex"]), dtype=np.float32).reshape(obj["shape"])


@boards
def test_outputs_match_x86(pi4, bench_runs, export_cache):
    import numpy as np

    by_sha = {}
    for p in glob.glob(str(export_cache / "**" / "*.onnx"), recursive=True):
        by_sha[hashlib.sha256(Path(p).read_bytes()).hexdigest()] = Path(p)
    recs = [r for r in _read(bench_runs["remote"]) if r["status"] == "ok" and r.get("model")]
    assert [r["meta"]["method"] for r in recs] == ["softmax", "sima"]
    for r in recs:
        model = by_sha[r["model"]["sha256"]].read_bytes()
        ((name, inp),) = r["inputs"].items()

        def here(m, n, s):
            return subprocess.run(
                [sys.executable, "-c", _PARITY, n, s], input=m, capture_output=True, check=False
            )

        def there(m, n, s):
            return subprocess.run(
                ["ssh", "-F", str(pi4.ssh_config), "-T", "pi4"]
                + [" ".join(shlex.quote(w) for w in ("python3", "-c", _PARITY, n, s))],
                input=m,
                capture_output=True,
                check=False,
                timeout=300,
            )

        x86 = _outputs(here, model, name, inp["shape"])
        arm = _outputs(lambda m, n, s: _decoded(there(m, n, s)), model, name, inp["shape"])
        assert x86.shape == arm.shape
        err = float(np.max(np.abs(x86 - arm)))
        assert err <= PARITY_TOL, (r["meta"]["method"], err)


def _decoded(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess(
        res.args, res.returncode, res.stdout.decode(), res.stderr.decode(errors="replace")
    )


def _control_dirs(pid: int) -> set[str]:
    """The ControlPath directories of ``pid``'s ssh children (their command lines)."""
    dirs = set()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            args = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid != pid:
            continue
        for a in args:
            a = a.decode(errors="replace")
            if a.startswith("ControlPath="):
                dirs.add(os.path.dirname(a.split("=", 1)[1]))
    return dirs


@boards
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_mid_bench_cleans_up_both_sides(sig, pi4, export_cache, tmp_path):
    out = tmp_path / "sig.jsonl"
    p = subprocess.Popen(
        [sys.executable, "-m", "edgeattn.cli", "bench", *SHAPE, "--warmup", "1"]
        + ["--min-time", "120", "--max-time", "200", "--out", str(out), "--host", "pi4"]
        + board_args(pi4),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "EDGEATTN_CACHE": str(export_cache), "COLUMNS": "200"},
        cwd=ROOT,
    )
    ctl: set[str] = set()
    seen: list[str] = []
    try:
        assert p.stdout is not None
        for line in p.stdout:  # until the runtime runs on the device
            seen.append(line)
            ctl |= _control_dirs(p.pid)
            if device_runtime_procs(pi4):
                break
        assert device_runtime_procs(pi4), "".join(seen)[-3000:]
        time.sleep(1)
        # the sockets live now (an earlier connection, e.g. the reachability check, may have
        # come and gone with its own directory: ``ctl`` keeps it for the final check)
        live = _control_dirs(p.pid)
        assert live and all(os.path.isdir(c) for c in live), (live, ctl)
        ctl |= live
        os.kill(p.pid, sig)
        rc = p.wait(60)
        rest = p.stdout.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert rc in (130, 143), (rc, rest[-2000:])
    assert "Traceback" not in rest
    assert _wait(lambda: not device_runtime_procs(pi4), 15), device_runtime_procs(pi4)
    assert _wait(lambda: pi4.ssh("ls -A ~/.cache/edgeattn/runs").stdout.split() == [], 15)
    assert not [c for c in ctl if os.path.exists(c)], "ssh control socket directory left behind"


# --------------------------------------------------------------------------------------------------
# remote setup on the board: atomic, pinned, from a local wheel directory (no device network)
# --------------------------------------------------------------------------------------------------
@boards
def test_failed_setup_leaves_the_working_python(pi4, tmp_path):
    cache = "~/setup-fail-cache"
    before = cli("remote", "check", "pi4", *board_args(pi4), "--remote-cache", cache, "--json")
    assert before.returncode == 0 and json.loads(before.stdout)[0]["python"] == "python3"
    # pip finds nothing (no index, no wheels): the failure a device without network would hit
    res = cli(
        "remote",
        "setup",
        "pi4",
        *board_args(pi4),
        "--remote-cache",
        cache,
        "--pip-arg=--no-index",
    )
    assert res.returncode == 1
    err = " ".join(res.stderr.split())
    assert "no numpy wheel for this device (aarch64, Python 3.11" in err, err
    assert "32-bit" not in err and "nothing was changed" in err
    # nothing left behind, and the system python3 is still the one picked, and it works
    ls = pi4.ssh("ls -A ~/setup-fail-cache")
    assert ls.stdout.split() == [] or "venv" not in ls.stdout, ls.stdout
    after = cli("remote", "check", "pi4", *board_args(pi4), "--remote-cache", cache, "--json")
    assert after.returncode == 0, after.stdout + after.stderr
    rep = json.loads(after.stdout)[0]
    assert rep["ok"] and rep["python"] == "python3"


@boards
def test_setup_pins_the_host_versions_from_a_local_wheel_dir(pi4):
    from importlib.metadata import version

    cache = "~/setup-cache"
    res = cli(
        "remote",
        "setup",
        "pi4",
        *board_args(pi4),
        "--remote-cache",
        cache,
        "--match-host",
        "--pip-arg=--no-index",
        "--pip-arg=--find-links=/srv/wheels",
    )
    assert res.returncode == 0, res.stdout + res.stderr
    chk = cli("remote", "check", "pi4", *board_args(pi4), "--remote-cache", cache, "--json")
    rep = json.loads(chk.stdout)[0]
    assert rep["ok"], rep["problems"]
    assert rep["python"] == "/home/pi/setup-cache/venv/bin/python3"
    assert rep["numpy_version"] == version("numpy")
    assert rep["onnxruntime_version"] == version("onnxruntime")
    # the venv was moved into place whole: its scripts name the final path, no temp dir is left
    ls = pi4.ssh("ls -A ~/setup-cache; head -n 1 ~/setup-cache/venv/bin/pip")
    assert ".new-" not in ls.stdout and ".old-" not in ls.stdout
    assert "#!/home/pi/setup-cache/venv/bin/python" in ls.stdout
    # a second setup that fails (a version with no wheel) keeps the first venv working
    bad = cli(
        "remote",
        "setup",
        "pi4",
        *board_args(pi4),
        "--remote-cache",
        cache,
        "--package",
        "onnxruntime==0.0.1",
        "--pip-arg=--no-index",
        "--pip-arg=--find-links=/srv/wheels",
    )
    assert bad.returncode == 1 and "no onnxruntime wheel" in " ".join(bad.stderr.split())
    again = cli("remote", "check", "pi4", *board_args(pi4), "--remote-cache", cache, "--json")
    rep = json.loads(again.stdout)[0]
    assert rep["ok"] and rep["onnxruntime_version"] == version("onnxruntime")


@boards
def test_bench_remote_options_shared_with_remote_run(pi4, export_cache, tmp_path):
    """bench --host takes --remote-dir, --keep-remote, --timeout, --connect-timeout."""
    out = tmp_path / "kept.jsonl"
    res = cli(
        "bench",
        *SHAPE[:-1],
        "softmax",
        *FAST,
        "--out",
        str(out),
        "--host",
        "pi4",
        *board_args(pi4),
        "--remote-dir",
        "~/kept-runs",
        "--keep-remote",
        "--timeout",
        "600",
        "--connect-timeout",
        "30",
        env={"EDGEATTN_CACHE": str(export_cache)},
    )
    assert res.returncode == 0, res.stdout + res.stderr
    kept = pi4.ssh("ls ~/kept-runs/*/spec.json").stdout.split()
    assert len(kept) >= 1 and all(k.startswith("/home/pi/kept-runs/") for k in kept)
    pi4.ssh("rm -rf ~/kept-runs")


# --------------------------------------------------------------------------------------------------
# 32-bit Raspberry Pi OS: no onnxruntime wheel exists; the preflight says so and what to do
# --------------------------------------------------------------------------------------------------
@boards
def test_pi_32bit_check_diagnoses_no_onnxruntime_wheel(pi32):
    assert pi32.ssh("uname -m").stdout.split() == ["armv7l"]
    res = cli("remote", "check", "pi-32bit", *board_args(pi32), "--json")
    assert res.returncode == 1, res.stdout + res.stderr
    (rep,) = json.loads(res.stdout)
    assert rep["reachable"] and not rep["ok"]
    assert rep["machine"] == "armv7l" and rep["python_version"].startswith("3.11.")
    assert rep["numpy_version"] and rep["onnxruntime_version"] is None  # Debian's numpy only
    assert any("onnxruntime is not installed" in p for p in rep["problems"])
    fixes = " ".join(rep["fixes"])
    assert "no wheels on PyPI for 32-bit ARM (armv7l)" in fixes
    assert "64-bit" in fixes and "from source" in fixes
    assert "remote setup" not in fixes  # it could not help: pip has nothing to install
    assert rep["emulated"] == "qemu-user"
    text = cli("remote", "check", "pi-32bit", *board_args(pi32))
    assert "32-bit ARM" in text.stdout and "64-bit" in text.stdout


# --------------------------------------------------------------------------------------------------
# the oldest Python the runtime supports, on ARM, with an onnxruntime of its time
# --------------------------------------------------------------------------------------------------
@boards
def test_old_python_board_runs_the_runtime(old_python):
    res = cli("remote", "check", "old-python", *board_args(old_python), "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    (rep,) = json.loads(res.stdout)
    assert rep["ok"], rep["problems"]
    assert rep["python_version"].startswith("3.9.") and rep["machine"] == "aarch64"
    assert rep["numpy_version"] == "1.26.4" and rep["onnxruntime_version"] == "1.19.2"


@boards
def test_two_boards_in_parallel_side_by_side(pi4, old_python, export_cache, tmp_path):
    cfg = tmp_path / "ssh_config"
    cfg.write_text(pi4.ssh_config.read_text() + "\n" + old_python.ssh_config.read_text())
    out = tmp_path / "b.jsonl"
    t0 = time.monotonic()
    res = cli(
        "bench",
        *SHAPE,
        *FAST,
        "--out",
        str(out),
        "--host",
        "pi4",
        "--host",
        "old-python",
        "--ssh-config",
        str(cfg),
        env={"EDGEATTN_CACHE": str(export_cache)},
    )
    elapsed = time.monotonic() - t0
    assert res.returncode == 0, res.stdout + res.stderr
    recs = [r for r in _read(out) if r.get("model")]
    hosts = {r["host"]["spec"] for r in recs}
    assert hosts == {"pi4", "old-python"}
    py = {r["host"]["spec"]: r["device"]["python"]["version"][:4] for r in recs}
    assert py == {"pi4": "3.11", "old-python": "3.9."}
    assert all(r["status"] == "ok" and r["device"]["emulated"] == "qemu-user" for r in recs)
    rep = cli("report", str(out))
    assert rep.returncode == 0, rep.stdout + rep.stderr
    lines = rep.stdout.splitlines()
    assert any("pi4" in ln for ln in lines) and any("old-python" in ln for ln in lines)
    # both boards say emulated wherever they are named (two table headers, a block of lines and
    # a conditions block each; rich may wrap a long header over two lines)
    assert rep.stdout.count("(emulated —") == 8 and rep.stdout.count("device speed)") == 8
    assert elapsed > 0


# --------------------------------------------------------------------------------------------------
# fleets from an Ansible inventory
# --------------------------------------------------------------------------------------------------
def test_ansible_inventory_without_ansible_says_how(tmp_path, monkeypatch):
    import shutil

    from edgeattn.errors import RemoteError
    from edgeattn.remote.inventory import is_ansible_inventory, load_inventory

    plain = tmp_path / "hosts.txt"
    plain.write_text("pi@pi4.local\n[::1]:2222\n")
    assert not is_ansible_inventory(plain)
    assert load_inventory(plain).hosts == ["pi@pi4.local", "[::1]:2222"]
    ini = tmp_path / "hosts.ini"
    ini.write_text("[pis]\npi4 ansible_host=10.0.0.4 ansible_user=pi\n")
    assert is_ansible_inventory(ini)
    real_which = shutil.which
    monkeypatch.setattr(
        shutil, "which", lambda n: None if n == "ansible-inventory" else real_which(n)
    )
    with pytest.raises(RemoteError) as e:
        load_inventory(ini, "pis")
    assert "edgeattn[ansible]" in (e.value.hint or "") and "plain format" in e.value.hint


@pytest.fixture(scope="session")
def ansible_bin(tmp_path_factory) -> str:
    """A directory with ansible-inventory: on PATH already, else a venv with ansible-core."""
    import shutil

    found = shutil.which("ansible-inventory")
    if found:
        return os.path.dirname(found)
    d = tmp_path_factory.mktemp("ansible")
    base = getattr(sys, "_base_executable", None) or sys.executable
    subprocess.run([base, "-m", "venv", str(d / "venv")], check=True, capture_output=True)
    res = subprocess.run(
        [str(d / "venv/bin/python"), "-m", "pip", "install", "-q", "ansible-core>=2.15"],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        pytest.fail(f"pip install ansible-core failed: {res.stderr[-1500:]}")
    return str(d / "venv/bin")


@boards
@pytest.mark.parametrize("fmt", ["ini", "yaml"])
def test_remote_check_from_an_ansible_inventory_group(
    fmt, pi4, ansible_bin, export_cache, tmp_path
):
    key, port = pi4.identity, pi4.port
    if fmt == "ini":
        inv = tmp_path / "hosts.ini"
        inv.write_text(
            "[pis]\n"
            f"pi4 ansible_host=127.0.0.1 ansible_port={port} ansible_user=pi "
            f"ansible_ssh_private_key_file={key} ansible_python_interpreter=/usr/bin/python3\n"
            "[jetsons]\nnano ansible_host=127.0.0.1 ansible_port=1\n"
        )
    else:
        inv = tmp_path / "hosts.yml"
        inv.write_text(
            "all:\n  children:\n    pis:\n      hosts:\n        pi4:\n"
            f"          ansible_host: 127.0.0.1\n          ansible_port: {port}\n"
            f"          ansible_user: pi\n          ansible_ssh_private_key_file: {key}\n"
            "          ansible_python_interpreter: /usr/bin/python3\n"
            "    jetsons:\n      hosts:\n        nano:\n          ansible_port: 1\n"
        )
    # the user's own ssh settings still apply (here: where the board's host key is known)
    user_cfg = tmp_path / "user_ssh_config"
    user_cfg.write_text(
        f"Host *\n  UserKnownHostsFile {pi4.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
        "  IdentitiesOnly yes\n"
    )
    env = {"PATH": f"{ansible_bin}:{os.environ['PATH']}"}
    res = cli(
        "remote",
        "check",
        "--inventory",
        str(inv),
        "--hosts",
        "pis",
        "--ssh-config",
        str(user_cfg),
        "--json",
        env=env,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    (rep,) = json.loads(res.stdout)  # only the 'pis' group
    assert rep["host"] == "pi4" and rep["ok"], rep
    assert rep["target"] == f"pi@127.0.0.1:{port}"
    assert rep["python"] == "/usr/bin/python3"  # ansible_python_interpreter
    bad = cli("remote", "check", "--inventory", str(inv), "--hosts", "nope", env=env)
    assert bad.returncode == 1 and "no group 'nope'" in bad.stderr
    if fmt == "ini":  # bench takes the same inventory
        out = tmp_path / "inv.jsonl"
        res = cli(
            "bench",
            *SHAPE[:-1],
            "softmax",
            *FAST,
            "--out",
            str(out),
            "--inventory",
            str(inv),
            "--hosts",
            "pis",
            "--ssh-config",
            str(user_cfg),
            env={**env, "EDGEATTN_CACHE": str(export_cache)},
        )
        assert res.returncode == 0, res.stdout + res.stderr
        recs = [r for r in _read(out) if r.get("model")]
        assert recs and all(r["host"]["spec"] == "pi4" for r in recs)
        assert all(r["host"]["python"] == "/usr/bin/python3" for r in recs)


# --------------------------------------------------------------------------------------------------
# device conditions (issue 23): a fake Pi sysfs tree inside the board, its throttle bits flipped
# by the host mid-run; the device's sessions get EDGEATTN_SYSFS_ROOT from ~/.ssh/environment
# --------------------------------------------------------------------------------------------------
@boards
def test_throttle_flip_on_pi4_marks_exactly_the_rounds_after_it(pi4, export_cache, tmp_path):
    import shutil
    import threading

    from fake_sysfs import PI_THROTTLE, FakeSysfs
    from test_conditions_report import flip_when_rounds_run

    fake = FakeSysfs.pi4(pi4.root / "home/pi/fakesys")
    envf = pi4.root / "home/pi/.ssh/environment"
    saved = envf.read_text()
    envf.write_text(saved + "EDGEATTN_SYSFS_ROOT=/home/pi/fakesys\n")
    rel = "/home/pi/fakesys/" + PI_THROTTLE
    seen: dict = {}
    flipper = threading.Thread(
        target=lambda: seen.update(
            flip_when_rounds_run(
                fake.path(PI_THROTTLE),
                8.0,
                600,
                flip=lambda: fake.set_throttle(0x4),
                match=lambda link: link.endswith(rel),
            )
        ),
        daemon=True,
    )
    out = tmp_path / "flip.jsonl"
    try:
        flipper.start()
        res = cli(
            "bench", *SHAPE, "--warmup", "1", "--sustained", "25s", "--out", str(out),
            "--host", "pi4", *board_args(pi4), env={"EDGEATTN_CACHE": str(export_cache)},
        )  # fmt: skip
        flipper.join(10)
    finally:
        envf.write_text(saved)
        shutil.rmtree(fake.path(""), ignore_errors=True)  # the board as the other tests know it
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert seen.get("flipped"), seen
    (rec,) = [r for r in _read(out) if r.get("kind") == "paired"]
    assert rec["device"]["machine"] == "aarch64" and rec["host"]["spec"] == "pi4"
    p = rec["paired"]
    conds = p["round_conditions"]
    assert p["sustained"] is True and len(conds) == len(p["rounds_ms"]) >= 10
    assert p["conditions_sources"]["throttle"] == "sysfs"
    assert p["conditions_sources"]["thermal"] == "cpu-thermal"
    marked = [i for i, c in enumerate(conds) if c["marked"]]
    throttled = [i for i, c in enumerate(conds) if (c["throttle_bits"] or 0) & 0xF]
    assert marked == throttled and marked  # exactly the rounds taken while throttled
    assert marked == list(range(marked[0], len(conds))) and marked[0] > 0  # after the flip
    assert all(conds[i]["why"] == "throttled (pi bits 0x4)" for i in marked)
    text = " ".join(res.stdout.split())
    assert f"{len(marked)} of {len(conds)} rounds marked (throttled {len(marked)} /" in text
    assert f"without {len(marked)} marked rounds:" in text  # the ratios with and without them
    assert "retention softmax: last-" in text and "first marked round at" in text
    assert "energy: not available on this device" in text
    rep = cli("report", str(out))
    assert rep.returncode == 0, rep.stderr
    assert f"without {len(marked)} marked rounds:" in " ".join(rep.stdout.split())
