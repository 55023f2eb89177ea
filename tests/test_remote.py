"""edgeattn.remote against real, throwaway sshd servers on 127.0.0.1 (see tests/sshd.py).

The "device" is this machine reached over SSH, running a separate venv (numpy + onnxruntime, no
torch, no edgeattn) through ``remote_python``; every device path is under a tmp directory.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
from conftest_remote import *  # noqa: F403 - the fixtures of this module
from sshd import free_port

from edgeattn.errors import RemoteError
from edgeattn.remote import (
    CommandTimeout,
    DeviceCommandError,
    SSHError,
    SSHOptions,
    build_zipapp,
    parse_host,
    read_inventory,
    remote_check,
    remote_setup,
    run_many,
    run_remote,
)
from edgeattn.remote.bundle import zipapp_bytes
from edgeattn.remote.check import fix_commands
from edgeattn.remote.spec import prepare_spec
from edgeattn.remote.ssh import Host, SSHConnection, remote_command, sh_words

pytestmark = pytest.mark.ssh

TINY = {"warmup": 1, "min_runs": 3, "max_runs": 50, "min_time_s": 0.05, "intra_op_threads": 1}


def tiny_spec(model: str = "tiny.onnx", **extra) -> dict:
    return {
        "defaults": dict(TINY),
        "runs": [
            {"model": model, "inputs": {"x": [1, 8, 16]}, "meta": {"case": "a"}, **extra},
            {"model": model, "id": "b2", "inputs": {"x": [2, 8, 16]}},
        ],
    }


@pytest.fixture
def opts(sshd) -> SSHOptions:
    return SSHOptions(ssh_config=str(sshd.client_config), connect_timeout=5, timeout=120)


@pytest.fixture
def dev(tmp_path: Path) -> dict:
    """Device-side locations for one test (cache and run dirs under tmp)."""
    return {"remote_cache": str(tmp_path / "dev-cache"), "remote_dir": str(tmp_path / "dev-runs")}


def runtime_procs(marker: str) -> list[str]:
    """Live (non-zombie) processes of the device runtime whose command line holds ``marker``."""
    out = subprocess.run(
        ["ps", "-ww", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=True
    ).stdout
    found = []
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3 or parts[1].startswith("Z"):
            continue
        args = parts[2]
        if marker in args and "measure" in args and not args.startswith(("ssh ", "ps ")):
            found.append(line)
    return found


# --------------------------------------------------------------------------------------------------
# pure host-side pieces
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec, host, user, port",
    [
        ("pi", "pi", None, None),
        ("pi@raspberrypi", "raspberrypi", "pi", None),
        ("raspberrypi:2222", "raspberrypi", None, 2222),
        ("pi@10.0.0.5:2222", "10.0.0.5", "pi", 2222),
        ("[::1]:2222", "::1", None, 2222),
        ("pi@[fe80::1%eth0]", "fe80::1%eth0", "pi", None),
        ("::1", "::1", None, None),
        ("ssh://pi@board.local:22", "board.local", "pi", 22),
        ("my-board_alias", "my-board_alias", None, None),
    ],
)
def test_parse_host(spec, host, user, port):
    h = parse_host(spec)
    assert (h.host, h.user, h.port, h.spec) == (host, user, port, spec)


@pytest.mark.parametrize(
    "bad",
    [
        "-oProxyCommand=touch /tmp/pwned",
        "-p",
        "pi@-oProxyCommand=x",
        "host;touch X",
        "host$(touch X)",
        "host`touch X`",
        "a b",
        "host\nx",
        "pi@host:99999",
        "pi@host:22x",
        "'quoted'",
        "",
    ],
)
def test_parse_host_rejects(bad):
    with pytest.raises(RemoteError) as exc:
        parse_host(bad)
    assert "\n" not in str(exc.value)


def test_remote_command_quotes_every_word():
    nasty = ["a b", "it's", '"dq"', "; touch X", "$(touch X)", "`touch X`", "-rf", "new\nline", ""]
    line = remote_command(["sh", "-c", 'echo "$@"', "sh", *nasty])
    assert shlex.split(line) == ["sh", "-c", 'echo "$@"', "sh", *nasty]
    with pytest.raises(ValueError):
        sh_words("echo one\necho two")


def test_ssh_options_passthrough_and_batchmode(sshd, tmp_path):
    o = SSHOptions(
        ssh_config=str(sshd.client_config),
        identity=str(sshd.client_key),
        options=("Compression=yes", "ProxyJump=none"),
        accept_new_host_key=True,
        connect_timeout=3,
    )
    with SSHConnection("pi@board:2222", o) as conn:
        a = conn.argv(["true"])
    assert a[:5] == ["ssh", "-F", str(sshd.client_config), "-i", str(sshd.client_key)]
    # BatchMode first (ssh keeps the first value), then accept-new, then the user's options
    assert a.index("BatchMode=yes") < a.index("StrictHostKeyChecking=accept-new")
    assert a.index("StrictHostKeyChecking=accept-new") < a.index("Compression=yes")
    assert "ConnectTimeout=3" in a and "ProxyJump=none" in a
    assert a[-4:] == ["pi", "--", "board", "true"] and a[a.index("-p") + 1] == "2222"
    with SSHConnection("board", SSHOptions(multiplex=False)) as conn:
        plain = conn.argv(["true"])
    assert not any("Control" in x for x in plain)
    assert not any("StrictHostKeyChecking" in x for x in plain)
    for bad in ("BatchMode=no", "NoEquals", "Key=a\nb", "-oX=y"):
        with pytest.raises(RemoteError):
            SSHOptions(options=(bad,))


def test_zipapp_is_deterministic_and_standalone(tmp_path, device_python):
    (p1, sha1), (p2, sha2) = build_zipapp(tmp_path / "a"), build_zipapp(tmp_path / "b")
    assert sha1 == sha2 and p1.read_bytes() == p2.read_bytes() == zipapp_bytes()[0]
    names = zipfile.ZipFile(p1).namelist()
    assert names == sorted(names)
    assert "__main__.py" in names and "edgeattn/__init__.py" in names
    assert "edgeattn/runtime/__main__.py" in names
    assert not [n for n in names if "__pycache__" in n or not n.endswith(".py")]
    assert not [
        n
        for n in names
        if n.startswith("edgeattn/") and n.count("/") == 1 and n != "edgeattn/__init__.py"
    ]
    # runs in the device env (no torch, no edgeattn installed there), from an unrelated cwd
    res = subprocess.run(
        [device_python, str(p1), "check"], capture_output=True, text=True, cwd=tmp_path, check=True
    )
    assert json.loads(res.stdout)["ok"] is True


def test_prepare_spec_keeps_basenames(models, tmp_path):
    other = tmp_path / "sub"
    other.mkdir()
    (other / "tiny.onnx").write_bytes((models / "tiny.onnx").read_bytes() + b"")
    spec = {
        "defaults": {"model": "tiny.onnx", "warmup": 1},
        "runs": [{"id": "a"}, {"id": "b", "model": str(other / "tiny.onnx")}, {"model": "m"}],
    }
    dev_spec, files = prepare_spec(spec, {"m": models / "bad.onnx"}, base_dir=models)
    assert "model" not in dev_spec["defaults"]
    assert [r["model"] for r in dev_spec["runs"]] == [
        "models/0/tiny.onnx",
        "models/0/tiny.onnx",  # same content and name: one file
        "models/1/bad.onnx",
    ]
    assert len(files) == 2 and spec["defaults"]["model"] == "tiny.onnx"  # input not mutated
    with pytest.raises(FileNotFoundError):
        prepare_spec({"runs": [{"model": "nope.onnx"}]}, base_dir=models)


def test_read_inventory(tmp_path):
    inv = tmp_path / "hosts.txt"
    inv.write_text("# lab boards\npi@pi4.local   # the 4GB one\n\n[::1]:2222\njetson\n")
    assert read_inventory(inv) == ["pi@pi4.local", "[::1]:2222", "jetson"]
    inv.write_text("-oProxyCommand=x\n")
    with pytest.raises(RemoteError):
        read_inventory(inv)


# --------------------------------------------------------------------------------------------------
# over SSH
# --------------------------------------------------------------------------------------------------
def test_remote_measure_matches_local_record_shape(
    sshd, opts, dev, device_python, models, tmp_path
):
    spec = tiny_spec()
    out = tmp_path / "remote.jsonl"
    progress: list[str] = []
    res = run_remote(
        "dev",
        spec,
        base_dir=models,
        out=out,
        ssh=opts,
        remote_python=device_python,
        on_progress=lambda h, line: progress.append(line),
        **dev,
    )
    assert res.exit_status == 0 and res.ok == 2 and res.failed == 0
    recs = res.records
    assert [r["status"] for r in recs] == ["ok", "ok"]
    assert [r["id"] for r in recs] == ["tiny#0", "b2"]
    for r in recs:
        assert r["schema"] == "edgeattn.record/1"
        assert r["host"] == {
            "spec": "dev",
            "target": f"{sshd.user}@127.0.0.1:{sshd.port}",
            "python": device_python,
        }
        assert r["device"]["machine"] and r["device"]["python"]["version"]
        assert r["latency_ms"]["median"] > 0
    # streamed to the local file as they arrived, same content
    from edgeattn.runtime.records import read_jsonl

    assert [r["key"] for r in read_jsonl(str(out))] == [r["key"] for r in recs]
    assert any(line.startswith("[edgeattn-runtime]") for line in progress)
    # the same spec measured locally by the runtime gives records of the same shape and keys
    (tmp_path / "tiny.onnx").write_bytes((models / "tiny.onnx").read_bytes())
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    local = subprocess.run(
        [sys.executable, "-m", "edgeattn.runtime", "measure", "--spec", "spec.json", "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    local_recs = [json.loads(line) for line in local.stdout.splitlines() if line.strip()]
    for loc, rem in zip(local_recs, recs, strict=True):
        assert set(rem) - set(loc) == {"host"}
        assert set(loc) <= set(rem)
        for k in ("model", "session", "latency_ms", "device"):
            assert set(loc[k]) == set(rem[k]), k
        assert loc["model"]["path"] == rem["model"]["path"]
        assert loc["model"]["sha256"] == rem["model"]["sha256"]
        assert loc["key"] == rem["key"] and loc["id"] == rem["id"]
    # the device run directory is gone; the cache holds the zipapp and the model by sha256
    assert os.listdir(dev["remote_dir"]) == []
    cache = Path(dev["remote_cache"])
    assert len(list(cache.glob("runtime-*.pyz"))) == 1
    assert [p.name for p in (cache / "models").iterdir()] == [f"{recs[0]['model']['sha256']}.onnx"]
    for k in ("connect", "deploy", "run", "collect", "cleanup"):
        assert res.timings[k] >= 0


def test_second_run_sends_no_runtime_or_models(opts, dev, device_python, models):
    spec = tiny_spec()
    first = run_remote("dev", spec, base_dir=models, ssh=opts, remote_python=device_python, **dev)
    second = run_remote("dev", spec, base_dir=models, ssh=opts, remote_python=device_python, **dev)
    pyz = len(zipapp_bytes()[0])
    model = (models / "tiny.onnx").stat().st_size
    assert first.bytes_sent["runtime"] == pyz and first.bytes_sent["models"] == model
    assert second.bytes_sent["runtime"] == 0 and second.bytes_sent["models"] == 0
    assert second.bytes_sent["spec"] == first.bytes_sent["spec"] > 0
    assert second.bytes_sent["stream"] < first.bytes_sent["stream"]
    assert second.ok == first.ok == 2


def test_preflight_reports_missing_onnxruntime_with_fix(
    opts, dev, device_python, device_python_no_ort
):
    good = remote_check(
        "dev", ssh=opts, remote_python=device_python, remote_cache=dev["remote_cache"]
    )
    assert good["reachable"] and good["ok"], good["problems"]
    assert good["onnxruntime_version"] and good["numpy_version"] and good["python_version"]
    assert "CPUExecutionProvider" in good["providers"]
    assert good["cpu"]["cores_logical"] >= 1 and good["disk_free_mb"] > 0
    assert good["fixes"] == []
    # the device (this host, over SSH) says whether fp16 is native, as its /proc/cpuinfo does
    from edgeattn.runtime.sysinfo import fp16_arithmetic

    native = fp16_arithmetic()["native"]
    assert good["fp16_native"] is native
    if native is False:
        assert any("fp16 runs emulated on this CPU" in n for n in good["notes"])

    bad = remote_check(
        "dev", ssh=opts, remote_python=device_python_no_ort, remote_cache=dev["remote_cache"]
    )
    assert bad["reachable"] and not bad["ok"]
    assert bad["numpy_version"] and bad["onnxruntime_version"] is None
    assert any("onnxruntime" in p for p in bad["problems"])
    fixes = "\n".join(bad["fixes"])
    assert "edgeattn remote setup dev" in fixes
    assert "pip install onnxruntime" in fixes  # the exact command, for that interpreter


def test_preflight_falls_back_when_the_zipapp_cannot_start(opts, dev, device_python, tmp_path):
    # an interpreter that runs `-c` code but cannot run the zipapp (as Python < 3.8 would)
    fake = tmp_path / "old-python"
    fake.write_text(
        "#!/bin/sh\n"
        'case "$1" in -c) exec "' + device_python + '" "$@";; esac\n'
        'echo "SyntaxError: invalid syntax (pretend 3.7)" >&2; exit 1\n'
    )
    fake.chmod(0o755)
    rep = remote_check("dev", ssh=opts, remote_python=str(fake), remote_cache=dev["remote_cache"])
    assert rep["reachable"] and not rep["ok"]
    assert rep["python_version"] and rep["onnxruntime_version"]  # from the inline probe
    assert any("zipapp did not start" in p and "SyntaxError" in p for p in rep["problems"])
    missing = remote_check(
        "dev",
        ssh=opts,
        remote_python=str(tmp_path / "nope" / "python3"),
        remote_cache=dev["remote_cache"],
    )
    assert not missing["ok"] and "not found" in missing["problems"][0]
    assert any("apt-get install" in f for f in missing["fixes"])


def test_remote_setup_and_its_venv_is_used_automatically(
    sshd, opts, dev, device_python, models, tmp_path
):
    # an earlier venv at the default place, <cache>/venv (here a link to the ready device env)
    cache = Path(dev["remote_cache"])
    cache.mkdir(parents=True)
    (cache / "venv").symlink_to(Path(device_python).parent.parent)
    # the device's pip installs from a local wheel directory (no index): what the host has
    from importlib.metadata import version

    wheels = tmp_path / "wheels"
    pins = [f"numpy=={version('numpy')}", f"onnxruntime=={version('onnxruntime')}"]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "-d", str(wheels), *pins],
        check=True,
        capture_output=True,
    )
    lines: list[str] = []
    rep = remote_setup(
        "dev",
        ssh=opts,
        remote_cache=str(cache),
        match_host=True,
        pip_args=["--no-index", f"--find-links={wheels}"],
        on_progress=lambda h, x: lines.append(x),
    )
    # a fresh venv replaced the old one atomically (the old target is untouched)
    assert rep["ok"] and rep["venv"] == os.path.realpath(cache / "venv")
    assert not (cache / "venv").is_symlink() and Path(device_python).exists()
    assert rep["python"] == f"{rep['venv']}/bin/python3"
    assert rep["onnxruntime_version"] == version("onnxruntime")
    assert any("imports ok" in x for x in lines)
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith("venv")) == ["venv"]
    # no remote_python: check and run pick <cache>/venv/bin/python3 and record it
    # "~/..." is the device's home (this sshd gives its sessions HOME=sshd.home)
    (sshd.home / "devpy").symlink_to(Path(device_python).parent.parent)
    tilde = remote_check(
        "dev", ssh=opts, remote_python="~/devpy/bin/python3", remote_cache=str(cache)
    )
    assert tilde["ok"] and tilde["python"] == f"{sshd.home}/devpy/bin/python3"
    auto = f"{cache.resolve()}/venv/bin/python3"
    assert remote_check("dev", ssh=opts, remote_cache=str(cache))["python"] == auto
    res = run_remote("dev", tiny_spec(), base_dir=models, ssh=opts, **dev)
    assert res.python == auto and res.records[0]["host"]["python"] == auto


def test_fix_commands_per_architecture():
    base = {"python_version": "3.11.2", "numpy_version": "1.26.4", "onnxruntime_version": None}
    arm64 = fix_commands(
        dict(base, machine="aarch64", probe={"venv": True, "ensurepip": True}), "pi"
    )
    assert arm64[0].startswith("edgeattn remote setup pi")
    assert any(
        "-m venv ~/.cache/edgeattn/venv" in f and "pip install onnxruntime" in f for f in arm64
    )
    armv7 = fix_commands(dict(base, machine="armv7l"), "pi")
    assert len(armv7) == 1 and "no wheels on PyPI for 32-bit ARM (armv7l)" in armv7[0]
    old = fix_commands(dict(base, python_version="3.7.3", machine="aarch64"), "pi")
    assert "Python >= 3.8" in old[0]
    no_venv = fix_commands(dict(base, machine="x86_64", probe={"venv": None}), "pi")
    assert any("apt-get install -y python3-venv" in f for f in no_venv)
    user = fix_commands(dict(base, machine="x86_64", probe={"venv": True, "ensurepip": True}), "pi")
    assert any(f.endswith("-m pip install --user onnxruntime") for f in user)


def test_command_timeout_stops_the_device_runtime(sshd, dev, device_python, models):
    o = SSHOptions(ssh_config=str(sshd.client_config), timeout=3)
    spec = {
        "defaults": dict(LONG, intra_op_threads=1),
        "runs": [{"model": "tiny.onnx", "inputs": {"x": [1, 8, 16]}}],
    }
    with pytest.raises(CommandTimeout) as exc:
        run_remote("dev", spec, base_dir=models, ssh=o, remote_python=device_python, **dev)
    assert "timed out after 3 s" in str(exc.value)
    assert _wait_for(lambda: not runtime_procs(dev["remote_cache"]), 5.0)
    assert _wait_for(lambda: os.listdir(dev["remote_dir"]) == [], 5.0)


def test_unreachable_host_is_one_line_sshe_error(sshd, models, dev):
    o = SSHOptions(ssh_config=str(sshd.client_config), connect_timeout=3)
    with pytest.raises(SSHError) as exc:
        run_remote(f"127.0.0.1:{free_port()}", tiny_spec(), base_dir=models, ssh=o, **dev)
    assert exc.value.kind == "refused"
    assert "\n" not in str(exc.value) and "connection refused" in str(exc.value)
    with pytest.raises(SSHError) as exc:
        run_remote("no-such-host.invalid", tiny_spec(), base_dir=models, ssh=o, **dev)
    assert exc.value.kind == "resolve" and "\n" not in str(exc.value)


def test_wrong_key_is_an_auth_failure(opts, models, dev):
    with pytest.raises(SSHError) as exc:
        run_remote("dev-wrongkey", tiny_spec(), base_dir=models, ssh=opts, **dev)
    assert exc.value.kind == "auth" and "permission denied" in str(exc.value).lower()
    assert exc.value.hint and "\n" not in str(exc.value)


def test_unknown_host_key_refused_unless_accept_new(sshd, opts, dev, device_python):
    sshd.empty_known_hosts.write_text("")
    try:
        rep = remote_check(
            "dev-newkey",
            ssh=opts,
            remote_python=device_python,
            **{"remote_cache": dev["remote_cache"]},
        )
        assert not rep["reachable"] and rep["error_kind"] == "hostkey"
        assert "--accept-new-host-key" in " ".join(rep["fixes"])
        assert sshd.empty_known_hosts.read_text() == ""  # nothing was written
        o = SSHOptions(ssh_config=opts.ssh_config, accept_new_host_key=True, connect_timeout=5)
        rep = remote_check(
            "dev-newkey", ssh=o, remote_python=device_python, remote_cache=dev["remote_cache"]
        )
        assert rep["reachable"] and rep["ok"]
        assert str(sshd.port) in sshd.empty_known_hosts.read_text()  # now trusted
    finally:
        sshd.empty_known_hosts.write_text("")


def test_injection_is_neither_local_nor_remote(opts, device_python, models, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pwned = tmp_path / "pwned"
    marker = str(pwned / "X")
    # the host can never become an option, even if it bypasses parse_host
    with pytest.raises(RemoteError):
        run_remote(f"-oProxyCommand=touch {marker}", tiny_spec(), base_dir=models, ssh=opts)
    with (
        pytest.raises(SSHError),
        SSHConnection(Host("x", f"-oProxyCommand=touch {marker}"), opts) as c,
    ):
        c.run(["true"])
    # remote dir, remote python and model names full of shell syntax: quoted, never run
    payloads = f"a b'c\"d; touch {marker}; $(touch {marker}) `touch {marker}` -x"
    weird_dir = str(tmp_path / payloads)
    # a file name cannot hold "/": this payload touches a relative name (cwd: local or device)
    weird_model = (
        tmp_path / "models" / "-m; touch pwned-m $(touch pwned-m) `touch pwned-m` 'q'.onnx"
    )
    weird_model.parent.mkdir()
    weird_model.write_bytes((models / "tiny.onnx").read_bytes())
    res = run_remote(
        "dev",
        tiny_spec(model=str(weird_model)),
        ssh=opts,
        remote_python=device_python,
        remote_dir=weird_dir,
        remote_cache=weird_dir + "/cache",
    )
    assert res.ok == 2 and res.records[0]["model"]["path"] == weird_model.name
    assert Path(res.remote_dir).parent == Path(weird_dir)
    assert [p.name for p in Path(weird_dir).iterdir()] == ["cache"]  # the run dir is gone
    with pytest.raises(DeviceCommandError) as exc:
        run_remote(
            "dev",
            tiny_spec(),
            base_dir=models,
            ssh=opts,
            remote_python=f"python3; touch {marker}",
            remote_dir=weird_dir,
            remote_cache=weird_dir + "/cache",
        )
    assert exc.value.returncode == 127
    with pytest.raises(RemoteError):
        run_remote("dev", tiny_spec(), base_dir=models, ssh=opts, remote_dir="bad\ndir")
    assert not pwned.exists()
    for where in (tmp_path, Path.home(), Path(weird_dir), Path(weird_dir) / "cache", Path("/")):
        assert not (where / "pwned-m").exists(), where
    assert not Path(marker).exists() and not (Path.cwd() / "X").exists()
    assert [p.name for p in Path(weird_dir).iterdir()] == ["cache"]


def test_cleanup_after_failures_and_keep_remote(opts, dev, device_python, models):
    # a corrupt model: the runtime reports an error record (exit 3), the run dir still goes
    spec = {
        "defaults": dict(TINY),
        "runs": [{"model": "bad.onnx"}, {"model": "tiny.onnx", "inputs": {"x": [1, 8, 16]}}],
    }
    res = run_remote("dev", spec, base_dir=models, ssh=opts, remote_python=device_python, **dev)
    assert res.exit_status == 3 and res.failed == 1 and res.ok == 1
    assert res.records[0]["status"] == "error" and res.records[0]["error"]
    assert os.listdir(dev["remote_dir"]) == []
    # a spec the runtime would reject: refused here, with the runtime's own one line, before
    # anything connects or reaches the device
    from edgeattn.errors import SpecError

    bad = {"defaults": dict(TINY, warmup="lots"), "runs": [{"model": "tiny.onnx"}]}
    with pytest.raises(SpecError) as exc:
        run_remote("dev", bad, base_dir=models, ssh=opts, remote_python=device_python, **dev)
    assert "warmup 'lots' is invalid" in str(exc.value) and "\n" not in str(exc.value)
    assert os.listdir(dev["remote_dir"]) == []
    # a device python that does not exist (exit 127)
    with pytest.raises(DeviceCommandError) as exc:
        run_remote(
            "dev",
            tiny_spec(),
            base_dir=models,
            ssh=opts,
            remote_python="/nonexistent/python3",
            **dev,
        )
    assert exc.value.returncode == 127 and exc.value.hint
    assert os.listdir(dev["remote_dir"]) == []
    # keep_remote keeps it, with the spec and the model in it
    res = run_remote(
        "dev",
        tiny_spec(),
        base_dir=models,
        ssh=opts,
        remote_python=device_python,
        keep_remote=True,
        **dev,
    )
    kept = Path(res.remote_dir)
    assert kept.is_dir() and (kept / "spec.json").is_file()
    assert (kept / "models" / "0" / "tiny.onnx").read_bytes() == (models / "tiny.onnx").read_bytes()


LONG = {"warmup": 1, "min_runs": 10**7, "max_runs": 10**7, "min_time_s": 120, "max_time_s": 120}


def _wait_for(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


def test_killing_the_local_ssh_stops_the_device_runtime(opts, dev, device_python, models):
    spec = {
        "defaults": dict(LONG, intra_op_threads=1),
        "runs": [{"model": "tiny.onnx", "inputs": {"x": [1, 8, 16]}}],
    }
    started = threading.Event()
    errors: list[BaseException] = []

    def progress(host: str, line: str) -> None:
        if "first run" in line:
            started.set()

    def go() -> None:
        try:
            run_remote(
                "dev",
                spec,
                base_dir=models,
                ssh=opts,
                remote_python=device_python,
                on_progress=progress,
                **dev,
            )
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    assert started.wait(60), "the remote run did not start"
    marker = dev["remote_cache"]
    assert runtime_procs(marker), "no runtime process on the device"
    kids = subprocess.run(
        ["ps", "-ww", "-o", "pid=,args=", "--ppid", str(os.getpid())],
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    ssh_pids = [int(k.split()[0]) for k in kids if k.split()[1:2] == ["ssh"] and "measure" in k]
    assert len(ssh_pids) == 1, kids
    os.kill(ssh_pids[0], signal.SIGKILL)
    assert _wait_for(lambda: not runtime_procs(marker), 5.0), runtime_procs(marker)
    t.join(30)
    assert not t.is_alive()
    assert errors and isinstance(errors[0], SSHError) and errors[0].kind == "killed"
    assert _wait_for(lambda: os.listdir(dev["remote_dir"]) == [], 5.0)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_host_interrupted_or_killed_stops_the_device_runtime(
    sig, sshd, dev, device_python, models, tmp_path
):
    """The whole host process goes (Ctrl-C, or kill -9 with no chance to clean up)."""
    spec = {
        "defaults": dict(LONG, intra_op_threads=1),
        "runs": [{"model": "tiny.onnx", "inputs": {"x": [1, 8, 16]}}],
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    code = (
        # Ctrl-C raises KeyboardInterrupt here whatever this test process inherited: a job
        # started in the background of a non-interactive shell (CI launched with `&`) has SIGINT
        # ignored, Python keeps an inherited SIG_IGN, and the host would then never stop
        "import json, signal, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from edgeattn.remote import SSHOptions, run_remote\n"
        # no shared master when the host is SIGKILLed: nothing would close it for 15 s
        f"o = SSHOptions(ssh_config={str(sshd.client_config)!r}, multiplex={sig != signal.SIGKILL})\n"
        f"run_remote('dev', json.load(open({str(tmp_path / 'spec.json')!r})), base_dir={str(models)!r},"
        f" ssh=o, remote_python={device_python!r}, remote_cache={dev['remote_cache']!r},"
        f" remote_dir={dev['remote_dir']!r}, on_progress=lambda h, l: print(l, flush=True))\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        for line in p.stdout:
            if "first run" in line:
                break
        assert runtime_procs(dev["remote_cache"])
        os.kill(p.pid, sig)
        # The bound the code gives: the interrupted host closes its session first (the cleanup
        # comes after), so the device's watcher TERMs the runtime at once and KILLs it within 5 s.
        assert _wait_for(lambda: not runtime_procs(dev["remote_cache"]), 10.0)
        p.wait(30)
        assert _wait_for(lambda: os.listdir(dev["remote_dir"]) == [], 20.0)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_run_many_in_parallel_on_two_servers(
    sshd, sshd2, both_config, device_python, models, tmp_path
):
    o = SSHOptions(ssh_config=str(both_config), connect_timeout=5, timeout=120)
    out = tmp_path / "both.jsonl"
    common = {"remote_cache": str(tmp_path / "cache"), "remote_dir": str(tmp_path / "runs")}
    t0 = time.monotonic()
    outcomes = run_many(
        ["dev", "dev2"],
        tiny_spec(),
        base_dir=models,
        out=out,
        ssh=o,
        remote_python=device_python,
        **common,
    )
    elapsed = time.monotonic() - t0
    assert [x.host for x in outcomes] == ["dev", "dev2"] and all(x.succeeded for x in outcomes)
    from edgeattn.runtime.records import read_jsonl

    recs = read_jsonl(str(out))
    assert len(recs) == 4 and all(r["status"] == "ok" for r in recs)
    ports = {r["host"]["spec"]: r["host"]["target"].rsplit(":", 1)[1] for r in recs}
    assert ports == {"dev": str(sshd.port), "dev2": str(sshd2.port)}
    serial = sum(x.result.timings["total"] for x in outcomes)
    assert elapsed < serial  # they overlapped
    # a failing host does not stop the other one
    outcomes = run_many(
        ["dev", "dev2-wrongkey"],
        tiny_spec(),
        base_dir=models,
        ssh=o,
        remote_python=device_python,
        **common,
    )
    assert outcomes[0].succeeded and isinstance(outcomes[1].error, SSHError)


def test_cli_remote_run_and_check(
    sshd, device_python, device_python_no_ort, models, tmp_path, capsys
):
    from edgeattn.cli import main

    spec = tmp_path / "spec.json"
    (tmp_path / "tiny.onnx").write_bytes((models / "tiny.onnx").read_bytes())
    spec.write_text(json.dumps(tiny_spec()))
    out = tmp_path / "cli.jsonl"
    common = ["--ssh-config", str(sshd.client_config), "--remote-cache", str(tmp_path / "c")]
    rc = main(
        [
            "remote",
            "run",
            "dev",
            "--spec",
            str(spec),
            "--out",
            str(out),
            "--remote-python",
            device_python,
            "--remote-dir",
            str(tmp_path / "r"),
            "--timeout",
            "120",
            *common,
        ]
    )
    assert rc == 0
    kinds = [json.loads(x).get("kind") for x in out.read_text().splitlines()]
    assert len(kinds) == 3 and kinds[-1] == "run_end"  # 2 records, then the run's closing one
    rc = main(["remote", "check", "dev", "--remote-python", device_python_no_ort, *common])
    text = capsys.readouterr().out
    assert rc == 1 and "onnxruntime is not installed" in text and "pip install onnxruntime" in text
    rc = main(["remote", "run", "--spec", str(spec), *common, "--", "-oProxyCommand=touch X"])
    assert rc == 1 and not (Path.cwd() / "X").exists()
    assert "bad host" in capsys.readouterr().err
