"""Small shared pieces behind the CLI: the one ``--set`` parser, the export cache command,
``list --family``, SIGTERM as an interrupt."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from edgeattn.cli import main
from edgeattn.errors import ModelError
from edgeattn.overrides import parse_set


def test_one_set_parser_reads_every_kind_of_value():
    got = parse_set(["a=1", "b=0.5", "c=True", "d=none", "e=[1, 2]", "f=text", "g=null", "h= x=y"])
    assert got == {"a": 1, "b": 0.5, "c": True, "d": None, "e": [1, 2], "f": "text", "g": None,
                   "h": " x=y"}  # fmt: skip
    assert type(got["a"]) is int
    with pytest.raises(ModelError, match="--set 'oops': expected KEY=VALUE"):
        parse_set(["oops"])
    from edgeattn.cli.export_cmd import parse_set as from_export

    assert from_export is parse_set  # export and profile share it


def test_cache_command_shows_and_clears(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "exports"
    monkeypatch.setenv("EDGEATTN_CACHE", str(cache))
    assert main(["cache"]) == 0
    assert "not created yet" in capsys.readouterr().out
    (cache / "sub").mkdir(parents=True)
    (cache / "m-0123456789abcdef.onnx").write_bytes(b"x" * 2048)
    (cache / "m-0123456789abcdef.onnx.json").write_text('{"schema": "edgeattn.export/1"}')
    (cache / "sub" / "y.onnx").write_bytes(b"y")  # not edgeattn's: --clear leaves it
    assert main(["cache", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info == {"path": str(cache), "exists": True, "files": 3, "models": 2, "bytes": 2080,
                    "foreign_files": 1, "cleared": False}  # fmt: skip
    assert main(["cache", "--clear"]) == 0
    out = capsys.readouterr().out
    assert "cleared 1 model(s), 2 file(s), 2.0 KB" in out
    assert "left 1 file(s) that edgeattn did not write" in out
    assert [p.name for p in cache.rglob("*")] == ["sub", "y.onnx"]


def test_list_unknown_family_names_the_valid_ones(capsys):
    assert main(["list", "--family", "foo"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.strip().splitlines()
    assert line.startswith("error: --family 'foo' is not a model family; valid: ")
    assert all(f in line for f in ("soft", "sima", "xcit", "deit", "block"))


def test_sigterm_becomes_terminated_and_the_handler_is_restored():
    from edgeattn.signals import Terminated, sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated), sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here
    assert signal.getsignal(signal.SIGTERM) is before
    assert issubclass(Terminated, KeyboardInterrupt)


def test_only_if_default_leaves_a_callers_handler():
    from edgeattn.signals import sigterm_as_interrupt

    def mine(signum, frame):
        return None

    old = signal.signal(signal.SIGTERM, mine)
    try:
        with sigterm_as_interrupt(only_if_default=True):
            assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, old)
