"""Fail fast and fail loud: bad requests to bench/sweep/profile are refused before any export (one
line naming the bad value and what is valid, no traceback, the export cache left empty); the memory
guard; report on files that are not records; export -o over a foreign file; Ctrl-C / SIGTERM; a disk
that fills mid-bench. The CLI runs as a real subprocess (``python -m edgeattn.cli``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeattn.bench import core, preflight
from edgeattn.errors import BenchError

EXE = [sys.executable, "-m", "edgeattn.cli"]
TINY = ["--dim", "32", "--heads", "2", "--min-time", "0.05", "--max-time", "0.5"]


def run_cli(*args: str, cache: Path, timeout: int = 120, cwd: Path | None = None):
    env = dict(os.environ, EDGEATTN_CACHE=str(cache))
    env.pop("EDGEATTN_DEBUG", None)
    return subprocess.run(
        [*EXE, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
    )


def one_error_line(r: subprocess.CompletedProcess) -> str:
    """Non-zero exit, no traceback, exactly one ``error:`` line (a ``hint:`` line may follow)."""
    assert r.returncode != 0, r.stdout + r.stderr
    text = r.stdout + r.stderr
    assert "Traceback" not in text, text
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("hint:")]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error:"), r.stderr
    return lines[0]


def no_export(cache: Path) -> None:
    assert not cache.exists() or not any(cache.iterdir()), list(cache.iterdir())


def _mount(args: list[str], where: Path) -> None:
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", *args, str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount here: mount {' '.join(args)} failed: {r.stderr.strip()}")


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"  # must stay missing or empty: nothing was exported


# ---------------------------------------------------------------------------------- --out paths


def test_out_is_a_directory(tmp_path, cache):
    r = run_cli("bench", "--methods", "sima", "--out", str(tmp_path), *TINY, cache=cache)
    line = one_error_line(r)
    assert str(tmp_path) in line and "is a directory" in line
    no_export(cache)


def test_out_under_proc(tmp_path, cache):
    r = run_cli("bench", "--methods", "sima", "--out", "/proc/edgeattn.jsonl", cache=cache)
    line = one_error_line(r)
    assert "/proc/edgeattn.jsonl" in line and "cannot append records" in line
    no_export(cache)


def test_out_parent_cannot_be_created(tmp_path, cache):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "sub" / "r.jsonl"
    r = run_cli("bench", "--methods", "sima", "--out", str(out), cache=cache)
    line = one_error_line(r)
    assert str(out) in line and "cannot create its directory" in line
    no_export(cache)


def test_out_on_a_read_only_mount(tmp_path, cache):
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    _mount(["--bind", str(src)], ro)
    try:
        r0 = subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True)
        if r0.returncode != 0:
            pytest.skip(f"cannot remount the bind mount read-only: {r0.stderr.decode().strip()}")
        out = ro / "r.jsonl"
        for cmd in (["bench", "--methods", "sima"], ["sweep", "--regime", "tokens"]):
            r = run_cli(*cmd, "--out", str(out), cache=cache)
            line = one_error_line(r)
            assert str(out) in line and "Read-only file system" in line
        no_export(cache)
        assert not any(src.iterdir())
    finally:
        subprocess.run(["umount", str(ro)], check=False)


def test_out_on_a_full_disk(small_disk, cache):
    disk = small_disk("64k")
    earlier = disk.path / "r.jsonl"
    earlier.write_text(json.dumps({"schema": "edgeattn.record/1", "id": "old"}) + "\n")
    disk.fill()
    r = run_cli("bench", "--methods", "sima", "--out", str(earlier), *TINY, cache=cache)
    line = one_error_line(r)
    assert str(earlier) in line and "No space left on device" in line
    no_export(cache)
    assert json.loads(earlier.read_text())["id"] == "old"  # earlier records intact


# ------------------------------------------------------------------------ bad values, all commands

BAD = [
    (["bench", "--threads", "-1"], "--threads -1"),
    (["bench", "--min-time", "-1"], "--min-time -1"),
    (["bench", "--max-time", "0"], "--max-time 0"),
    (["bench", "--min-time", "2", "--max-time", "1"], "--max-time 1"),
    (["bench", "--warmup", "-1"], "--warmup -1"),
    (["bench", "--min-runs", "0"], "--min-runs 0"),
    (["bench", "--plot", "{tmp}/p.txt"], "p.txt"),
    (["bench", "--plot", "/proc/edgeattn.png"], "/proc/edgeattn.png"),
    (["bench", "--host", "$(id)"], "$(id)"),
    (["bench", "--host", "-oProxyCommand=x"], "-oProxyCommand=x"),
    (["bench", "--tokens", "97"], "--tokens 97"),
    (["bench", "--tokens", "10000000"], "N=10000000"),
    (["bench", "--dim", "30", "--heads", "4"], "--dim 30"),
    (["sweep", "--threads", "-1"], "--threads -1"),
    (["sweep", "--min-time", "0"], "--min-time 0"),
    (["sweep", "--regime", "tokens", "--tokens-grid", "64,97", "--methods", "soft"], "97"),
    (["sweep", "--out", "{tmp}"], "is a directory"),
    (["sweep", "--write-crossover", "/proc/x.json"], "/proc/x.json"),
    (["sweep", "--plot", "{tmp}/p.jpeg"], "p.jpeg"),
    (["profile", "sima_tiny_12_p16", "--runs", "0"], "--runs 0"),
    (["profile", "sima_tiny_12_p16", "--threads", "-2"], "--threads -2"),
    (["profile", "sima_tiny_12_p16", "--out", "{tmp}"], "is a directory"),
]


@pytest.mark.parametrize("args,names", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_before_any_export(args, names, tmp_path, cache):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    names = names.replace("{tmp}", str(tmp_path))
    if "--out" not in args:
        args += ["--out", str(tmp_path / "r.jsonl")]
    r = run_cli(*args, cache=cache, cwd=tmp_path)
    line = one_error_line(r)
    assert names in line, line
    no_export(cache)
    assert not (tmp_path / "r.jsonl").exists()


def test_soft_hint_names_nearest_tokens_and_methods(tmp_path, cache):
    r = run_cli("bench", "--tokens", "97", "--out", str(tmp_path / "r.jsonl"), cache=cache)
    line = one_error_line(r)
    assert "96 (8×12)" in line and "98 (7×14)" in line and "100 (10×10)" in line
    assert "--methods softmax,softmax_fused,sima_qk,sima,xca" in line


def test_more_threads_than_cores_is_a_warning():
    warnings = preflight.check_numbers(threads=preflight.usable_cores() + 1)
    assert len(warnings) == 1 and "usable core" in warnings[0]
    assert preflight.check_numbers(threads=0) == []


# --------------------------------------------------------------------------------- memory guard


def test_memory_estimate_counts_the_attention_map():
    big = core.Job(core.METHODS["softmax"], core.Shape(25600, 384, 6))
    lin = core.Job(core.METHODS["sima_kv"], core.Shape(25600, 384, 6))
    auto = core.Job(core.METHODS["sima"], core.Shape(25600, 384, 6))
    assert preflight.has_nxn_map(big) and not preflight.has_nxn_map(lin)
    assert not preflight.has_nxn_map(auto)  # resolves to Q(KᵀV) at N > head_dim
    assert preflight.estimate_mb(big) > 2 * 6 * 25600**2 * 4 / 1e6
    assert preflight.estimate_mb(lin) < 1000
    with pytest.raises(BenchError, match=r"softmax at N=25600 needs ≈ .* GB, 20\.0 GB available"):
        preflight.check_memory([big, lin], available=20000.0)
    preflight.check_memory([lin], available=20000.0)


def test_tokens_25600_is_refused_fast_and_small(tmp_path, cache):
    need = preflight.estimate_mb(core.Job(core.METHODS["softmax"], core.Shape(25600, 384, 6)))
    have = preflight.available_mb()
    if have is None or have > need:
        pytest.skip(f"this machine has {have} MB available, enough for softmax at N=25600")
    t0 = time.monotonic()
    r = run_cli("bench", "--tokens", "25600", "--out", str(tmp_path / "r.jsonl"), cache=cache)
    assert time.monotonic() - t0 < 5
    line = one_error_line(r)
    assert "softmax at N=25600 needs ≈" in line and "--no-memory-guard" in line
    assert "--methods sima,soft,xca" in line
    no_export(cache)


# ------------------------------------------------------------------------------- report, export


def test_report_refuses_foreign_and_binary_files(tmp_path, cache):
    foreign = tmp_path / "other.jsonl"
    foreign.write_text('{"status": "error"}\n{"status": "error"}\n')
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xa8\xff" * 10)
    for f in (foreign, binary):
        r = run_cli("report", str(f), cache=cache)
        line = one_error_line(r)
        assert str(f) in line
        assert (
            "not an edgeattn records file (expected JSON Lines with schema edgeattn.record/1)"
            in line
        )


def test_report_reads_a_file_with_a_cut_last_line(tmp_path, cache):
    from edgeattn.runtime import records

    f = tmp_path / "r.jsonl"
    rec = records.new_record(id="x", key="k", status="error", error="boom")
    f.write_text(records.dumps(rec) + "\n" + records.dumps(rec)[:30])
    r = run_cli("report", str(f), cache=cache)
    assert r.returncode == 0, r.stderr
    assert f"{f}:2: partial last line" in r.stdout + r.stderr


def test_export_refuses_to_overwrite_a_foreign_file(tmp_path, cache):
    target = tmp_path / "notes.txt"
    target.write_text("precious\n")
    r = run_cli("export", "block_sima", "--tokens", "16", "--dim", "32", "--heads", "2",
                "-o", str(target), cache=cache)  # fmt: skip
    line = one_error_line(r)
    assert str(target) in line and "not an edgeattn export" in line
    assert target.read_text() == "precious\n"


def test_an_edgeattn_export_may_be_overwritten(tmp_path):
    from edgeattn.cli.export_cmd import check_overwrite
    from edgeattn.errors import ExportError
    from edgeattn.export.onnx import SIDECAR_SCHEMA

    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"\x08\x07")
    with pytest.raises(ExportError):
        check_overwrite(str(onnx))
    (tmp_path / "m.onnx.json").write_text(json.dumps({"schema": SIDECAR_SCHEMA}))
    check_overwrite(str(onnx))  # ours: no complaint
    check_overwrite(str(tmp_path / "new.onnx"))  # missing: fine


# ------------------------------------------------------------------- loud failures and signals


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize(
    "sig,code",
    # SIGINT takes the same bookkeeping path as SIGTERM: its 7 s case runs in the slow tier
    [(signal.SIGTERM, 143), pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow)],
)
def test_signal_prints_kept_records_and_the_resume_command(sig, code, tmp_path, shared_cache):
    out = tmp_path / "r.jsonl"
    args = ["sweep", "--regime", "tokens", "--tokens-grid", "64,256", "--methods", "sima,xca",
            "--dim", "32", "--heads", "2", "--min-time", "3", "--max-time", "4"]  # fmt: skip
    env = dict(os.environ, EDGEATTN_CACHE=str(shared_cache))
    p = subprocess.Popen(
        [*EXE, *args, "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # SIGINT as a terminal gives it, even if this process was started in the background of
        # a non-interactive shell (SIGINT ignored, which the child would inherit)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and p.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 1:
            break
        time.sleep(0.2)
    assert p.poll() is None, p.communicate()
    time.sleep(0.5)  # inside the next measurement
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == code, err
    kept = out.read_text().count("\n")
    assert kept >= 1
    line = err.strip().splitlines()[-1]
    what = "terminated" if sig == signal.SIGTERM else "interrupted"
    assert line.startswith(f"{what}: {kept} record(s) kept in {out}; rerun with: edgeattn sweep")
    assert line.endswith(f"--resume --out {out}")
    # the runtime subprocess was killed with it: no measure process is left writing
    time.sleep(0.5)
    assert out.read_text().count("\n") == kept
    ps = subprocess.run(["pgrep", "-f", f"edgeattn.runtime measure .*{out}"], capture_output=True)
    assert ps.returncode == 1, ps.stdout


def test_disk_full_mid_bench_fails_loud_and_keeps_earlier_records(small_disk, shared_cache):
    disk = small_disk("1m")
    out = disk.path / "r.jsonl"
    env = dict(os.environ, EDGEATTN_CACHE=str(shared_cache))
    p = subprocess.Popen(
        [*EXE, "bench", "--methods", "sima,xca,sima_kv", "--tokens", "64", "--out", str(out),
         "--dim", "32", "--heads", "2", "--min-time", "1", "--max-time", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and p.poll() is None:
        if out.exists() and out.read_bytes().endswith(b"\n"):
            break
        time.sleep(0.05)
    disk.fill()  # now the disk fills up
    _, err = p.communicate(timeout=240)
    r = subprocess.CompletedProcess(p.args, p.returncode, "", err)
    line = one_error_line(r)
    assert "runtime failed on" in line and "No space left on device" in line
    assert str(out) in line
    got = [json.loads(x) for x in out.read_text().splitlines()]  # every line whole
    assert len(got) == 1 and got[0]["status"] == "ok"
