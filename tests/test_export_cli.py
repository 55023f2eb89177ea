"""`edgeattn export` on the command line: success output, and bad input as one line + exit 1
with no .onnx left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeattn.cli import main

EDGEATTN = Path(sys.executable).with_name("edgeattn")


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, err: str) -> str:
    assert rc != 0
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("hint:")]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:")
    return lines[0]


def test_export_block_prints_table_and_path(tmp_path, capsys):
    out_file = tmp_path / "b.onnx"
    rc, out, err = run(
        [
            "export",
            "block_sima",
            "--tokens",
            "16",
            "--dim",
            "64",
            "--heads",
            "2",
            "-o",
            str(out_file),
        ],
        capsys,
    )
    assert rc == 0, err
    assert out_file.exists() and (tmp_path / "b.onnx.json").exists()
    assert "op census per block" in out and "attn" in out
    assert "softmax-free" in out and "ONNX Runtime vs PyTorch" in out
    assert "b.onnx" in out and "opset 17" in out
    side = json.loads((tmp_path / "b.onnx.json").read_text())
    assert side["spec"]["order"]["resolved"] == "qk_first"  # 16 < head_dim 32


def test_set_overrides_and_dynamic(tmp_path, capsys):
    out_file = tmp_path / "d.onnx"
    rc, out, err = run(
        [
            "export",
            "block_sima",
            "--set",
            "tokens=16",
            "--set",
            "dim=64",
            "--set",
            "heads=2",
            "--dynamic",
            "--no-simplify",
            "-o",
            str(out_file),
        ],
        capsys,
    )
    assert rc == 0, err
    side = json.loads((tmp_path / "d.onnx.json").read_text())
    assert side["spec"]["order"]["mode"] == "runtime_if"
    assert side["spec"]["simplify"]["applied"] is False


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["export", "sima_tiny_12_p61"], "did you mean: sima_tiny_12_p16"),
        (["export", "block_msa", "--opset", "9"], "opsets 13..23"),
        (["export", "soft_tiny", "--img-size", "100"], "multiple of 32"),
        (["export", "block_msa", "--order", "fastest"], "order='fastest'"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, monkeypatch, argv, pattern):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run([*argv, "-o", str(tmp_path / "x.onnx")], capsys)
    line = one_line_error(rc, err)
    assert pattern in line
    assert not list(tmp_path.glob("*.onnx*"))


def test_unwritable_output(tmp_path, capsys):
    rc, out, err = run(["export", "block_msa", "-o", "/proc/edgeattn/x.onnx"], capsys)
    assert "/proc/edgeattn" in one_line_error(rc, err)


def test_strict_softmax_free_on_faithful_soft(tmp_path, capsys):
    out_file = tmp_path / "s.onnx"
    rc, out, err = run(
        ["export", "soft_tiny", "--img-size", "64", "--strict-softmax-free", "-o", str(out_file)],
        capsys,
    )
    line = one_line_error(rc, err)
    assert "block4.0" in line and "block4.1" in line and "not softmax-free" in line
    assert "softmax_free_stage4" in err  # the hint names the option
    assert not list(tmp_path.iterdir())


def test_exit_code_through_the_console_script(tmp_path):
    """The installed entry point: non-zero exit and one line on stderr."""
    p = subprocess.run(
        [str(EDGEATTN), "export", "soft_tiny", "--img-size", "100", "-o", str(tmp_path / "x.onnx")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 1
    assert p.stderr.startswith("error:") and "multiple of 32" in p.stderr.splitlines()[0]
    assert not list(tmp_path.iterdir())


def test_checkpoint_mismatch_is_one_line(tmp_path, capsys):
    import torch

    ckpt = tmp_path / "wrong.pth"
    torch.save({"model": {"not_a_key": torch.zeros(1)}}, ckpt)
    rc, out, err = run(
        ["export", "block_msa", "--checkpoint", str(ckpt), "-o", str(tmp_path / "x.onnx")], capsys
    )
    assert "checkpoint" in one_line_error(rc, err).lower()
    assert not list(tmp_path.glob("*.onnx*"))
