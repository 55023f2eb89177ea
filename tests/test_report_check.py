"""``edgeattn report --check``: accepts what the tool writes, names FILE:LINE: field for a
hand-broken record, and tells complete, partial (truncated) and edited runs apart."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgeattn import integrity
from edgeattn.bench import check
from edgeattn.runtime import __main__ as rt
from edgeattn.runtime import records as R

pytest.importorskip("jsonschema")

EXE = [sys.executable, "-m", "edgeattn.cli"]
BENCH = ["--tokens", "64", "--dim", "32", "--heads", "2", "--methods", "softmax,sima_qk"]
FAST = ["--min-time", "0.05", "--max-time", "0.2", "--pair-time", "0.2"]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*EXE, *args], capture_output=True, text=True, timeout=600, env=env or dict(os.environ)
    )


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """A real tiny bench's records (and its export cache beside them)."""
    d = tmp_path_factory.mktemp("check")
    env = dict(os.environ, EDGEATTN_CACHE=str(d / "cache"))
    env.pop(rt.RUN_ID_ENV, None)
    r = cli("bench", *BENCH, *FAST, "-o", str(d / "b.jsonl"), env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    return d / "b.jsonl"


def copy_lines(src: Path, dst: Path, edit=None) -> Path:
    """``src`` to ``dst``, each line through ``edit(index, line) -> line or None (dropped)``."""
    out = []
    for i, line in enumerate(src.read_text().splitlines()):
        line = edit(i, line) if edit else line
        if line is not None:
            out.append(line + "\n")
    dst.write_text("".join(out))
    return dst


def edit_json(index: int, fn):
    def edit(i: int, line: str) -> str:
        if i != index:
            return line
        rec = json.loads(line)
        fn(rec)
        return R.dumps(rec)

    return edit


def checked(*files: Path) -> tuple[int, list[str]]:
    out: list[str] = []
    return check.run_check(list(files), out.append), out


# ------------------------------------------------------------------------- what it accepts


def test_the_cli_accepts_what_the_tool_writes(bench):
    sidecar = sorted((bench.parent / "cache").glob("*.onnx.json"))[0]
    r = cli("report", "--check", str(bench), str(sidecar))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    run_id = json.loads(bench.read_text().splitlines()[-1])["run_id"]
    assert (
        f"{bench}: 4 record(s) (isolated 2, paired 1, run_end 1); runs: 1 complete, 0 partial, "
        "0 edited: valid"
    ) in lines
    assert any(
        x.startswith(f"  run {run_id} (bench, ") and ": complete, 3 record(s)" in x for x in lines
    )
    assert any(x.startswith(f"{sidecar}: export sidecar") and "matches: valid" in x for x in lines)


def test_older_records_without_a_run_id_are_not_an_error(bench, tmp_path):
    def strip(i: int, line: str) -> str | None:
        rec = json.loads(line)
        if rec["kind"] == integrity.RUN_END:
            return None
        del rec["run_id"]
        return R.dumps(rec)

    old = copy_lines(bench, tmp_path / "old.jsonl", strip)
    code, out = checked(old)
    assert code == 0, out
    assert "3 record(s) with no run id (older records)" in out[0]


# ---------------------------------------------------------------------------- what it names


def test_a_hand_broken_field_is_named_by_file_line_and_field(bench, tmp_path):
    bad = copy_lines(
        bench, tmp_path / "bad.jsonl", edit_json(1, lambda r: r["latency_ms"].update(median="x"))
    )
    r = cli("report", "--check", str(bad))
    assert r.returncode == 1
    assert f"{bad}:2: latency_ms.median: 'x' is not of type number or null" in r.stdout
    assert f"{bad}:4: run_end: run " in r.stdout and "edited" in r.stdout  # and its run says so


def test_a_truncated_run_is_partial(bench, tmp_path):
    cut = copy_lines(bench, tmp_path / "cut.jsonl", lambda i, x: None if i >= 2 else x)
    code, out = checked(cut)
    run_id = json.loads(cut.read_text().splitlines()[0])["run_id"]
    assert code == 1
    assert out[0].startswith(f"{cut}:2: run_id: run {run_id}: partial (2 record(s), no run_end")
    assert "runs: 0 complete, 1 partial, 0 edited" in out[1]


def test_an_edited_number_makes_the_run_edited(bench, tmp_path):
    def less_memory(rec):  # still a valid record: only the digest can tell
        rec["memory"]["peak_rss_mb"] = round(rec["memory"]["peak_rss_mb"] - 1.0, 2)

    ed = copy_lines(bench, tmp_path / "ed.jsonl", edit_json(0, less_memory))
    code, out = checked(ed)
    assert code == 1
    (problem,) = [x for x in out if x.startswith(f"{ed}:") and x.split(":")[1].isdigit()]
    assert problem.startswith(f"{ed}:4: run_end: run ") and "a record was changed" in problem
    assert "runs: 0 complete, 0 partial, 1 edited" in out[1]


def test_a_removed_record_makes_the_run_edited(bench, tmp_path):
    gone = copy_lines(bench, tmp_path / "gone.jsonl", lambda i, x: None if i == 0 else x)
    code, out = checked(gone)
    assert code == 1
    assert any("2 record(s) before its run_end, which says 3" in x for x in out)


def test_bad_lines_and_foreign_objects_are_named(bench, tmp_path):
    f = tmp_path / "mixed.jsonl"
    f.write_text(
        bench.read_text() + 'not json\n{"schema": "other/1"}\n[1]\n{"schema": "edgeattn.rec'
    )
    code, out = checked(f)
    assert code == 1
    assert f"{f}:5: (line): not a JSON line" in out
    assert any(x.startswith(f"{f}:6: schema: 'other/1': not an edgeattn record") for x in out)
    assert f"{f}:7: (line): a JSON list, not a record object" in out
    assert f"{f}:8: (line): a cut last line (no newline)" in out


def test_a_sidecar_whose_onnx_changed_is_named(bench, tmp_path):
    side = sorted((bench.parent / "cache").glob("*.onnx.json"))[0]
    onnx = side.with_name(side.name[: -len(".json")])
    shutil.copy(side, tmp_path / side.name)
    (tmp_path / onnx.name).write_bytes(onnx.read_bytes() + b"\0")
    code, out = checked(tmp_path / side.name)
    assert code == 1
    line = next(x for x in out if "onnx.sha256" in x)
    n = int(line.split(":")[1])
    assert '"sha256"' in (tmp_path / side.name).read_text().splitlines()[n - 1]


def test_a_missing_or_empty_file_is_a_problem(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    code, out = checked(tmp_path / "nope.jsonl", tmp_path / "empty.jsonl")
    assert code == 1
    assert f"{tmp_path / 'nope.jsonl'}:0: (file): no such file" in out
    assert f"{tmp_path / 'empty.jsonl'}:0: (file): empty: no records" in out


# ----------------------------------------------------------------------- the integrity helper


def _record(run_id: str | None, n: int) -> dict:
    return R.new_record(
        id=f"r{n}", key="0" * 64, run_id=run_id, status="error", error="x: y", error_type="x"
    )


def test_a_run_closes_only_when_it_ends_normally(tmp_path, monkeypatch):
    monkeypatch.delenv(rt.RUN_ID_ENV, raising=False)
    out = tmp_path / "r.jsonl"
    with pytest.raises(KeyboardInterrupt):
        with integrity.run(out, "bench") as rid:
            assert os.environ[rt.RUN_ID_ENV] == rid == integrity.current()
            R.append_jsonl(str(out), _record(rid, 1))
            raise KeyboardInterrupt
    assert rt.RUN_ID_ENV not in os.environ and integrity.current() is None
    with integrity.run(out, "remote run") as rid2:
        R.append_jsonl(str(out), _record(rid2, 2))
        integrity.mark_failed()  # e.g. one host of two failed
    with integrity.run(out, "bench") as rid3:
        with integrity.run(out, "sweep") as inner:  # nested: the outer run
            assert inner == rid3
        R.append_jsonl(str(out), _record(rid3, 3))
    kinds = [(r.get("run_id"), r.get("kind")) for r in R.read_jsonl(str(out))]
    assert kinds == [(rid, "isolated"), (rid2, "isolated"), (rid3, "isolated"), (rid3, "run_end")]
    (rep,) = check.check_files([out])
    assert {r.run_id: r.state for r in rep.runs.values()} == {
        rid: "partial",
        rid2: "partial",
        rid3: "complete",
    }


def test_a_resumed_run_says_which_partial_run_it_continues(tmp_path, monkeypatch):
    monkeypatch.delenv(rt.RUN_ID_ENV, raising=False)
    out = tmp_path / "r.jsonl"
    R.append_jsonl(str(out), _record("interrupted", 1))
    with integrity.run(out, "sweep", resume=True) as rid:
        R.append_jsonl(str(out), _record(rid, 2))
    end = R.read_jsonl(str(out))[-1]
    assert end["resumes"] == ["interrupted"] and end["records"] == 1
    code, out_lines = checked(out)
    assert code == 0, out_lines
    assert any(
        "run interrupted: partial" in x and f"continued by the --resume run {rid}" in x
        for x in out_lines
    )


def test_with_run_id_puts_the_open_run_in_a_remote_spec(monkeypatch, tmp_path):
    monkeypatch.delenv(rt.RUN_ID_ENV, raising=False)
    spec = {"runs": [{"model": "a.onnx"}]}
    assert integrity.with_run_id(spec) is spec
    with integrity.run(tmp_path / "none.jsonl", "remote run") as rid:
        assert integrity.with_run_id(spec) == {**spec, "run_id": rid}
    assert not (tmp_path / "none.jsonl").exists()  # nothing measured: no file made for run_end
