"""Progress of long steps: a live status line in a terminal, one plain line per step when
stdout is not a terminal (CI logs, ``| tee``): on stdout, or on stderr when stdout is JSON."""

from __future__ import annotations

import json

from edgeattn.cli import main
from edgeattn.cli.console import console, progress
from edgeattn.progress import StageTimings, listening, say


def test_piped_progress_is_one_plain_line_per_step(capsys):
    with progress(console(), "sweep") as step:
        step("export 1/2: a")
        say("export a: build 0.10s")  # the library's stage lines reach the same place
        step("export 2/2: b")
    say("nobody listens now")
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines() == ["export 1/2: a", "export a: build 0.10s", "export 2/2: b"]
    with progress(console(), "bench", err=True) as step:
        step("export 1/1: a")
    assert capsys.readouterr() == ("", "export 1/1: a\n")


def test_quiet_progress_says_nothing(capsys):
    with progress(console(), "bench", quiet=True) as step:
        step("x")
        say("y")
    assert capsys.readouterr() == ("", "")


def test_stage_timings_report_each_stage_but_not_the_total():
    heard: list[str] = []
    with listening(heard.append):
        t = StageTimings(what="block_msa")
        t["build_s"] = 1.5
        t["total_s"] = 2.0
    assert heard == ["export block_msa: build 1.50s"]
    assert dict(t) == {"build_s": 1.5, "total_s": 2.0}
    assert dict(StageTimings(t)) == dict(t)  # copies (dataclasses.asdict) keep the items


def _run(*args: str, capsys) -> tuple[int, str, str]:
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def test_piped_export_and_bench_print_their_steps(tmp_path, monkeypatch, capsys):
    """In-process (stdout is pytest's capture, not a terminal): the same code path as a pipe."""
    monkeypatch.setenv("EDGEATTN_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    rc, out, err = _run("export", "block_msa", "--tokens", "16", "--dim", "16", "--heads", "2",
                        "-o", "b.onnx", capsys=capsys)  # fmt: skip
    assert rc == 0, err[-2000:]
    lines = out.splitlines()
    assert lines[0].startswith("export block_msa: build ")
    assert "export block_msa: verify" in out and "b.onnx" in out
    assert err == ""
    fast = ["--tokens", "16", "--dim", "16", "--heads", "2", "--min-time", "0.02",
            "--max-time", "0.5", "--min-runs", "3", "--pair-time", "0.1"]  # fmt: skip
    rc, out, err = _run("bench", *fast, "--methods", "softmax,sima", "-o", "r.jsonl", capsys=capsys)
    assert rc == 0, err[-2000:]
    steps = out.splitlines()
    assert steps[0] == "export 1/2: softmax/N16/D16/h2/B1"
    assert "export 2/2: sima/N16/D16/h2/B1" in steps
    assert "measuring softmax/N16/D16/h2/B1 alone (1/2)" in steps
    assert any(s.startswith("measuring softmax, sima paired") for s in steps)
    # --json: stdout is the JSON alone, the steps go to stderr
    rc, out, err = _run("bench", *fast, "--methods", "softmax", "--json", "-o", "r2.jsonl",
                        capsys=capsys)  # fmt: skip
    assert rc == 0, err[-2000:]
    assert json.loads(out)["out"] == "r2.jsonl"
    assert "measuring softmax/N16/D16/h2/B1 alone (1/1)" in err.splitlines()
