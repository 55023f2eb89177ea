"""Output that fits the reader: the real CLI, piped (stdout a pipe, as in CI logs and ``| tee``),
at ``COLUMNS=80`` and ``COLUMNS=200``.

Tables fit ``COLUMNS``; names and paths are never cut ("cls_attn_blo…") nor broken by a hard line
break; ``list`` is one line per model; ``env`` reads as text (no ``None``, no JSON) and
``env --json`` stays the machine-readable fingerprint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.table import Table

from edgeattn.cli.console import PIPE_WIDTH, console, keep_whole, piped_width
from edgeattn.cli.env_view import env_rows, plain
from edgeattn.models.registry import list_models

EXE = [sys.executable, "-m", "edgeattn.cli"]
WIDTHS = (80, 200)
BOX = "┏┃┡│└┌├┗┣╭╰━─"


def run_cli(*args: str, columns: int, cache: Path, cwd: Path | None = None, timeout: int = 300):
    env = dict(os.environ, COLUMNS=str(columns), EDGEATTN_CACHE=str(cache), TERM="dumb")
    env.pop("EDGEATTN_DEBUG", None)
    r = subprocess.run(
        [*EXE, *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def too_wide(lines: list[str], columns: int) -> list[str]:
    return [ln for ln in lines if cell_len(ln.rstrip()) > columns]


def table_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln[:1] in BOX]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("export-cache")


# ------------------------------------------------------------------------ the console factory


@pytest.mark.parametrize(
    ("value", "width"),
    [("80", 80), (" 200 ", 200), ("0", PIPE_WIDTH), ("-3", PIPE_WIDTH), ("wide", PIPE_WIDTH)],
)
def test_piped_width_is_columns_when_a_positive_integer(value, width):
    assert piped_width({"COLUMNS": value}) == width
    assert piped_width({}) == PIPE_WIDTH


def test_piped_console_honours_columns_and_never_breaks_a_line(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    con = console()  # stdout is captured: not a terminal
    assert con.width == 80
    path = "/very/" + "long_folder_name/" * 8 + "records.jsonl"  # 147 characters, no space
    con.print(f"records: {path} (table: each method alone, ratios: all methods interleaved)")
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1 and path in out


@pytest.mark.parametrize("columns", [40, 80])
def test_keep_whole_never_cuts_a_name(capsys, monkeypatch, columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    names = ["cls_attn_blocks.0.attn", "blocks.11.mlp", "patch_embed.proj"]
    t = Table(title="per block")
    t.add_column("name")
    t.add_column("ms", justify="right")
    t.add_column("top ops", overflow="fold")  # free text: wrapped, folded if it must be
    for n in names:
        t.add_row(n, "0.123", "MatMul 0.05, Softmax 0.03, Add 0.01, LayerNormalization 0.01")
    console().print(keep_whole(t, "name", 1))
    out = capsys.readouterr().out
    assert "…" not in out
    lines = out.splitlines()
    assert all(any(n in ln for ln in lines) for n in names), out
    assert not too_wide(lines, columns), out


# --------------------------------------------------------------------------------------- list


@pytest.mark.parametrize("columns", WIDTHS)
def test_list_is_one_whole_line_per_model(columns, cache):
    out = run_cli("list", columns=columns, cache=cache).stdout
    lines = out.splitlines()
    models = list_models()
    firsts = [ln.split()[0] for ln in lines if ln.strip()]
    assert sorted(f for f in firsts if f in models) == sorted(models)  # each exactly once
    assert len(lines) - len(models) <= 6, out  # header, and the convention under the table
    assert "…" not in out
    assert not too_wide(lines, columns), out
    soft_tiny = next(ln for ln in lines if ln.split()[0] == "soft_tiny")
    assert "13.07M" in soft_tiny and "1.97G (+0.19G Newton)" in soft_tiny


@pytest.mark.parametrize("columns", WIDTHS)
def test_list_details_keeps_descriptions_and_whole_names(columns, cache):
    out = run_cli("list", "soft_*", "--details", columns=columns, cache=cache).stdout
    lines = out.splitlines()
    models = list_models("soft_*")
    assert sorted(ln for ln in lines if ln in models) == sorted(models)  # a line of its own
    assert "Newton" in out and "3×224×224" in out and "SOFT README" in out
    assert "…" not in out
    assert not too_wide(lines, columns), out
    short = run_cli("list", "soft_*", "-v", columns=columns, cache=cache).stdout
    assert short == out


# ---------------------------------------------------------------------------------------- env


def _no_blobs(text: str) -> None:
    assert "None" not in text and "null" not in text, text
    assert "{" not in text and "[" not in text, text


@pytest.mark.parametrize("columns", WIDTHS)
def test_env_reads_as_text(columns, cache):
    out = run_cli("env", columns=columns, cache=cache).stdout
    _no_blobs(out)
    assert not too_wide(out.splitlines(), columns), out
    fp = json.loads(run_cli("env", "--json", columns=columns, cache=cache).stdout)
    assert {"hostname", "cpufreq", "python", "providers", "fingerprint_id"} <= set(fp)
    assert fp["fingerprint_id"] in out
    assert "CPUExecutionProvider" in fp["providers"] and "CPUExecutionProvider" in out


def test_env_rows_of_any_fingerprint_have_no_none_or_json():
    fp = {
        "hostname": "pi",
        "device_model": None,
        "cores_physical": None,
        "cores_logical": 4,
        "cores_usable": 4,
        "cpufreq": {"governor": None, "cur_mhz": None, "min_mhz": None, "max_mhz": None},
        "temperature_c": 48.3,
        "thermal_zones": {"cpu-thermal": 48.3},
        "throttled": None,
        "jetson": None,
        "gpu": None,
        "python": {"version": "3.11.2", "implementation": "CPython"},
        "emulated": None,
        "emulated_hint": None,
        "fp16_native": None,
        "fp16_evidence": None,
        "ram_total_mb": 8192.0,
        "ram_available_mb": None,
        "onnxruntime_version": "1.20.0",
        "numpy_version": None,
        "providers": ["CPUExecutionProvider", "XnnpackExecutionProvider"],
        "ort_device": None,
        "fingerprint_id": "0123456789abcdef",
        "a_field_added_later": {"k": [1, None, 2], "n": None},
    }
    rows = dict(env_rows(fp))
    for text in rows.values():
        _no_blobs(text)
    assert rows["memory"] == "8.0 GiB total"
    assert rows["cores"] == "4 logical, 4 usable"
    assert rows["providers"] == "CPUExecutionProvider, XnnpackExecutionProvider"
    assert rows["temperature"] == "48.3 °C; zones: cpu-thermal 48.3 °C"
    assert rows["software"] == "onnxruntime 1.20.0, numpy not installed"
    assert rows["emulated"] == "no"
    assert rows["a field added later"] == "k 1, 2"
    missing = rows["not reported"]
    assert "device model" in missing and "cpu frequency" in missing and "gpu" not in missing
    assert plain(None) == "unknown" and plain(True) == "yes"


# ------------------------------------------------------------------------ cache, bench, report


@pytest.mark.parametrize("columns", WIDTHS)
def test_cache_path_is_never_broken(columns, tmp_path):
    deep = tmp_path / ("a_rather_long_folder_name_" * 4) / "exports"  # wider than 80 columns
    out = run_cli("cache", columns=columns, cache=deep).stdout
    assert str(deep) in out


@pytest.fixture(scope="module")
def records(tmp_path_factory, cache) -> tuple[Path, str]:
    """One tiny bench (about 6 s), piped at 80 columns; its records file has a long path."""
    folder = tmp_path_factory.mktemp("output") / ("records_of_a_tiny_bench_" * 3)
    folder.mkdir()
    out = folder / "b.jsonl"
    r = run_cli(
        "bench",
        *("--tokens", "64", "--dim", "32", "--heads", "2", "--methods", "softmax,sima_qk"),
        *("--min-time", "0.05", "--max-time", "0.2", "--pair-time", "0.2", "-o", str(out)),
        columns=80,
        cache=cache,
        timeout=600,
    )
    return out, r.stdout


def test_bench_names_its_records_file_whole(records):
    out, stdout = records
    assert str(out) in stdout  # one line, not broken at the console width


def test_bench_tables_fit_80_columns_and_keep_names(records):
    _, stdout = records
    assert "…" not in stdout
    assert not too_wide(table_lines(stdout), 80), stdout
    # the bench's tables are borderless: their header and method rows, whole and within 80
    rows = [
        ln
        for ln in stdout.splitlines()
        if ln.split()[:1] in (["method"], ["softmax"], ["sima_qk"]) or ln.strip().startswith("───")
    ]
    assert len(rows) >= 6, stdout
    assert not too_wide(rows, 80), stdout


@pytest.mark.parametrize("columns", WIDTHS)
def test_report_fits_and_keeps_names(records, columns, cache):
    out, _ = records
    stdout = run_cli("report", str(out), columns=columns, cache=cache).stdout
    assert "…" not in stdout
    assert "softmax" in stdout and "sima_qk" in stdout
    assert not too_wide(table_lines(stdout), columns), stdout
