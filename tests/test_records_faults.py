"""Fault injection on the records file (edgeattn.runtime.records): concurrent writers, a writer
killed mid-loop, a cut last line, symlinks, the umask, a full disk, and the runtime's exit code when
its --out cannot take records. Real files and real processes throughout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeattn.runtime import records

WRITER = r"""
import sys
from edgeattn.runtime import records
path, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
pad = "x" * int(sys.argv[4]) if len(sys.argv) > 4 else ""
for i in range(n):
    rec = records.new_record(id="%s-%d" % (who, i), key="%s-%d" % (who, i), notes=[pad])
    records.append_jsonl(path, rec)
    if n > 1000 and i == 10:
        sys.stdout.write("ready\n"); sys.stdout.flush()
"""


def writer(path: Path, who: str, n: int, pad: int = 0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), who, str(n), str(pad)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def lines(path: Path) -> list[dict]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [json.loads(x) for x in data.decode().splitlines()]


def test_eight_concurrent_writers_fifty_records_each(tmp_path):
    out = tmp_path / "r.jsonl"
    procs = [writer(out, f"w{k}", 50, pad=2000) for k in range(8)]  # 2 kB lines: no luck needed
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    recs = lines(out)
    assert len(recs) == 400
    assert {r["id"] for r in recs} == {f"w{k}-{i}" for k in range(8) for i in range(50)}
    for k in range(8):  # each writer's records in its own order
        mine = [int(r["id"].split("-")[1]) for r in recs if r["id"].startswith(f"w{k}-")]
        assert mine == sorted(mine)


def test_writer_killed_mid_loop_keeps_every_completed_record(tmp_path):
    out = tmp_path / "r.jsonl"
    p = writer(out, "k", 10**6)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL
    got = records.read_jsonl(str(out), warn=lambda m: pytest.fail(m))
    ids = [int(r["id"].split("-")[1]) for r in got]
    assert len(ids) > 10 and ids == list(range(len(ids)))  # no gap, no duplicate, no half line
    records.append_jsonl(str(out), records.new_record(id="after", key="after"))
    assert records.read_jsonl(str(out))[-1]["id"] == "after"


def test_cut_last_line_is_set_aside_and_nothing_is_lost(tmp_path):
    out = tmp_path / "r.jsonl"
    for i in range(5):
        records.append_jsonl(str(out), records.new_record(id=f"r{i}", key=f"k{i}"))
    whole = out.read_bytes()
    cut = whole[: len(whole) - 40]  # the last record loses its end (and its newline)
    out.write_bytes(cut)
    good_part = cut[: cut.rfind(b"\n") + 1]
    tail = cut[len(good_part) :]
    warnings: list[str] = []
    # readers skip the fragment with the line number, and resume still works
    assert [r["id"] for r in records.iter_jsonl(str(out), warn=warnings.append)] == [
        f"r{i}" for i in range(4)
    ]
    assert warnings and f"{out}:5: partial last line" in warnings[0]
    assert records.done_keys(str(out)) == {f"k{i}" for i in range(4)}

    records.append_jsonl(str(out), records.new_record(id="new", key="knew"))
    data = out.read_bytes()
    assert data.startswith(good_part)  # the good records were not rewritten
    assert [r["id"] for r in lines(out)] == ["r0", "r1", "r2", "r3", "new"]
    partials = list(tmp_path.glob("r.jsonl.partial-*"))
    assert len(partials) == 1 and partials[0].read_bytes() == tail
    assert records.done_keys(str(out)) == {"k0", "k1", "k2", "k3", "knew"}


def test_complete_last_record_without_newline_is_kept(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text(records.dumps(records.new_record(id="a", key="a")))  # no newline
    records.append_jsonl(str(out), records.new_record(id="b", key="b"))
    assert [r["id"] for r in lines(out)] == ["a", "b"]
    assert not list(tmp_path.glob("*.partial-*"))


def test_bad_middle_line_is_reported_and_skipped(tmp_path):
    out = tmp_path / "r.jsonl"
    rec = records.dumps(records.new_record(id="a", key="a"))
    out.write_bytes((rec + "\nnot json\n\xff\xfe\n[1]\n" + rec + "\n").encode("latin-1"))
    warnings: list[str] = []
    got = records.read_jsonl(str(out), warn=warnings.append)
    assert len(got) == 2
    assert [w.split(": ")[0] for w in warnings] == [f"{out}:2", f"{out}:3", f"{out}:4"]


def test_binary_or_foreign_file_is_named(tmp_path):
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xa8\xff")
    with pytest.raises(ValueError, match=r"x\.png: not an edgeattn records file"):
        records.read_jsonl(str(png), warn=lambda m: None)
    other = tmp_path / "other.jsonl"
    other.write_text('{"a": 1}\n{"b": 2}\n')
    with pytest.raises(ValueError, match=r"other\.jsonl: not an edgeattn records file"):
        records.read_records(str(other), warn=lambda m: None)


def test_symlink_is_followed(tmp_path):
    target = tmp_path / "real.jsonl"
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    records.append_jsonl(str(link), records.new_record(id="a", key="a"))
    records.append_jsonl(str(link), records.new_record(id="b", key="b"))
    assert link.is_symlink()
    assert [r["id"] for r in lines(target)] == ["a", "b"]


def test_new_files_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        records.append_jsonl(str(tmp_path / "r.jsonl"), records.new_record(id="a"))
        records.write_atomic(str(tmp_path / "w.csv"), b"x\n")
        os.umask(0o027)
        records.append_jsonl(str(tmp_path / "s.jsonl"), records.new_record(id="a"))
    finally:
        os.umask(old)
    assert (tmp_path / "r.jsonl").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "w.csv").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "s.jsonl").stat().st_mode & 0o777 == 0o640


def test_full_disk_raises_and_leaves_no_half_record(small_disk):
    out = small_disk("64k").path / "r.jsonl"
    n = 0
    with pytest.raises(OSError) as info:
        while True:  # the records themselves fill the disk
            records.append_jsonl(str(out), records.new_record(id=f"r{n}", notes=["x" * 3000]))
            n += 1
    assert info.value.errno == 28  # ENOSPC
    got = lines(out)  # every line whole, ends with a newline
    assert [r["id"] for r in got] == [f"r{i}" for i in range(n)] and n > 5


def _measure(out: str, tmp_path: Path) -> subprocess.CompletedProcess:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"runs": [{"model": str(tmp_path / "missing.onnx")}]}))
    return subprocess.run(
        [sys.executable, "-m", "edgeattn.runtime", "measure", "--spec", str(spec), "--out", out],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("where", ["dir", "proc", "missing"])
def test_runtime_refuses_an_unwritable_out_before_measuring(where, tmp_path):
    out = {
        "dir": str(tmp_path),
        "proc": "/proc/edgeattn-x.jsonl",
        "missing": str(tmp_path / "no" / "such" / "r.jsonl"),
    }[where]
    r = _measure(out, tmp_path)
    assert r.returncode == 1, r.stderr
    err = [ln for ln in r.stderr.splitlines() if "error" in ln]
    assert len(err) == 1 and out in err[0] and "cannot write records to" in err[0]
    assert r.stdout == ""  # nothing measured


def test_runtime_exits_1_when_the_disk_fills(small_disk, tmp_path):
    disk = small_disk("64k")
    out = disk.path / "r.jsonl"
    disk.fill()  # the file stays creatable (tmpfs inodes are not blocks)
    r = _measure(str(out), tmp_path)
    assert r.returncode == 1, r.stderr
    assert "No space left on device" in r.stderr.splitlines()[-1]
    assert str(out) in r.stderr.splitlines()[-1]
    assert not out.exists() or out.read_bytes() == b""


def test_runtime_memory_error_is_an_error_record(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from onnx_factory import attention_model

    model = attention_model(tmp_path / "dyn.onnx", dynamic=True)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"runs": [{"model": str(model), "inputs": {"x": [1, 10**13, 32]}}]}))
    out = tmp_path / "r.jsonl"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeattn.runtime",
            "measure",
            "--spec",
            str(spec),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 3, r.stderr  # a failed run, not a crash
    (rec,) = records.read_jsonl(str(out))
    assert rec["status"] == "error" and rec["error"].startswith("MemoryError: ")
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr


def test_cut_last_line_in_a_directory_that_takes_no_new_file(tmp_path):
    d = tmp_path / "locked"
    d.mkdir()
    out = d / "r.jsonl"
    records.append_jsonl(str(out), records.new_record(id="a", key="a"))
    with open(out, "ab") as f:
        f.write(b'{"id": "cut')
    r = subprocess.run(["chattr", "+i", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"chattr +i not possible here: {r.stderr.strip()}")
    try:
        records.append_jsonl(str(out), records.new_record(id="b", key="b"))
    finally:
        subprocess.run(["chattr", "-i", str(d)], check=False)
    warnings: list[str] = []
    assert [r["id"] for r in records.read_jsonl(str(out), warn=warnings.append)] == ["a", "b"]
    assert warnings == [f"{out}:2: not a JSON record; skipped"]  # the fragment, kept in place
    assert b'{"id": "cut\n' in out.read_bytes()
