"""`edgeattn bench --host`: the same exp-vs-l1 bench on a device over SSH (a real sshd on
127.0.0.1 and a device Python with numpy + onnxruntime but no torch and no edgeattn)."""

from __future__ import annotations

import json

import pytest
from conftest_remote import *  # noqa: F403 - sshd / device_python fixtures

pytestmark = pytest.mark.ssh

SHAPE = ["--tokens", "64", "--dim", "32", "--heads", "2", "--methods", "softmax,sima_qk,sima"]
FAST = ["--min-time", "0.05", "--min-runs", "3", "--max-time", "2", "--pair-time", "0.2"]


def _read(p):
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]


def test_bench_on_host_gives_the_local_table(sshd, device_python, tmp_path, monkeypatch, capsys):  # noqa: F811
    from edgeattn.cli import main

    monkeypatch.setenv("EDGEATTN_CACHE", str(tmp_path / "cache"))
    local = tmp_path / "local.jsonl"
    remote = tmp_path / "remote.jsonl"
    assert main(["bench", *SHAPE, *FAST, "--out", str(local)]) == 0
    capsys.readouterr()
    rc = main(
        [
            "bench",
            *SHAPE,
            *FAST,
            "--out",
            str(remote),
            "--host",
            "dev",
            "--ssh-config",
            str(sshd.client_config),
            "--remote-python",
            device_python,
            "--remote-cache",
            str(tmp_path / "device-cache"),
        ]
    )
    text = capsys.readouterr().out
    # --remote-cache (shared with `remote run`): the zipapp and models were cached there
    assert list((tmp_path / "device-cache").rglob("*.pyz"))
    assert rc == 0
    loc, rem = _read(local), _read(remote)
    (lp,) = [r for r in loc if r["kind"] == "paired"]
    (rp,) = [r for r in rem if r["kind"] == "paired"]
    loc = [r for r in loc if r["kind"] == "isolated"]
    rem = [r for r in rem if r["kind"] == "isolated"]
    assert [r["meta"]["method"] for r in rem] == ["softmax", "sima_qk", "sima"]
    assert all(r["status"] == "ok" for r in rem) and rp["status"] == "ok"
    # the paired pass ran on the device too, over the same model bytes, with the same ratios
    assert [m["model"]["sha256"] for m in rp["paired"]["members"]] == [
        m["model"]["sha256"] for m in lp["paired"]["members"]
    ]
    assert [r["name"] for r in rp["paired"]["ratios"]] == [
        r["name"] for r in lp["paired"]["ratios"]
    ]
    assert rp["host"]["spec"] == "dev" and "paired rounds" in text
    # Same measurement, same model bytes, same record shape; plus the host tag.
    for a, b in zip(loc, rem, strict=True):
        assert a["meta"] == b["meta"]
        assert a["model"]["sha256"] == b["model"]["sha256"]
        assert set(a) <= set(b) and "host" in b
    assert rem[0]["host"]["spec"] == "dev"
    assert "exp vs l1 at fixed (QKᵀ)V order" in text and "dynamic ordering" in text


def test_bench_on_unreachable_host_fails_in_one_line(tmp_path, monkeypatch, capsys):
    from sshd import free_port

    from edgeattn.cli import main

    monkeypatch.setenv("EDGEATTN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "r.jsonl"
    rc = main(
        [
            "bench",
            *SHAPE,
            *FAST,
            "--out",
            str(out),
            "--host",
            f"127.0.0.1:{free_port()}",
            "--ssh-option",
            "ConnectTimeout=5",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1
    assert "refused" in err.lower() and "Traceback" not in err
