"""Every command's and sub-command's ``--help``, as a newcomer reads it piped at 80 columns: it
ends with examples, every option says what it does, flags show no ``<bool>``, nothing is cut.
Also: one style (the shared options are the same everywhere) and the shared exit codes."""

from __future__ import annotations

import pytest
import typer

from edgeattn.cli import app, main


def _walk(cmd, path=()):
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield from _walk(sub, (*path, name))


COMMANDS = list(_walk(typer.main.get_command(app)))
IDS = [" ".join(p) or "edgeattn" for p, _ in COMMANDS]


def test_every_command_is_walked():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"list", "export", "bench", "sweep", "profile", "report", "env", "cache"} <= names
    assert {"remote", "remote check", "remote setup", "remote run"} <= names


@pytest.fixture
def help_text(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("TERM", "dumb")

    def get(path):
        rc = main([*path, "--help"])
        out, err = capsys.readouterr()
        assert rc == 0, err
        return out

    return get


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=IDS)
def test_help_has_examples_and_every_option_says_what_it_does(path, cmd, help_text):
    text = help_text(path)
    assert "Examples:" in text, text
    tail = text.rsplit("Examples:", 1)[1]
    assert "edgeattn" in tail  # at least one runnable example line, at the end
    assert "<bool>" not in text
    assert "…" not in text
    for line in text.splitlines():
        assert len(line) <= 80 or line.startswith("    edgeattn "), line
    bare = [p.opts or [p.name] for p in cmd.params if not getattr(p, "help", None)]
    assert not bare, f"options or arguments without help: {bare}"
    assert not [p.name for p in cmd.params if getattr(p, "hidden", False)]


def test_short_helps_are_whole_in_the_command_lists(help_text):
    for path in ((), ("remote",)):
        commands = help_text(path).split("Commands:", 1)[1].split("Examples:", 1)[0]
        assert "..." not in commands, commands


def test_completion_is_on(help_text):
    text = help_text(())
    assert "--install-completion" in text and "--show-completion" in text


def _opt(path, name):
    cmd = dict(COMMANDS)[tuple(path)]
    (p,) = [p for p in cmd.params if name in p.opts]
    return p


@pytest.mark.parametrize(
    "name", ["--ssh-option", "--identity", "--ssh-config", "--accept-new-host-key", "--remote-python",
             "--remote-dir", "--remote-cache", "--keep-remote", "--connect-timeout", "--timeout",
             "--inventory", "--hosts", "--quiet", "--out"],
)  # fmt: skip
def test_bench_host_takes_every_remote_run_option(name):
    a, b = _opt(["bench"], name), _opt(["remote", "run"], name)
    assert (a.opts, a.help, a.metavar) == (b.opts, b.help, b.metavar)


def test_shared_options_read_the_same_everywhere():
    for path in (["bench"], ["sweep"], ["profile"], ["remote", "run"]):
        assert _opt(path, "--out").opts == ["--out", "-o"]
    assert _opt(["export"], "--out").opts[:2] == ["--out", "-o"]  # and --output, as before
    for path in (["bench"], ["sweep"], ["profile"]):
        assert _opt(path, "--device").help == _opt(["bench"], "--device").help
    assert _opt(["export"], "--set").help == _opt(["profile"], "--set").help


def test_exit_codes_match_the_device_runtime():
    from edgeattn import errors
    from edgeattn.runtime import __main__ as rt

    for name in ("EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_RUN_FAILED", "EXIT_INTERRUPTED"):
        assert getattr(errors, name) == getattr(rt, name)


def test_export_help_names_every_keep_fp32_group(help_text):
    """``--keep-fp32``'s help is typed out (the CLI does not import onnx to parse): it must
    name every node group of :data:`edgeattn.export.precision_groups.GROUPS`."""
    from edgeattn.export.precision_groups import GROUPS

    text = " ".join(help_text(("export",)).split())  # rewrapped at 80 columns
    missing = [g for g in GROUPS if g not in text.replace("_ ", "_")]
    assert not missing, missing
