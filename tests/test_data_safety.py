"""Only edgeattn's own files, and every check before any export (issue 21, item 7).

``cache --clear`` removes only what edgeattn wrote; ``bench``/``sweep``/``profile -o`` refuse a file
that is not an edgeattn records file (``--force`` appends anyway); ``export`` and ``profile`` have a
memory guard; ``remote run --spec`` is validated here before any host is contacted; bad values of
``--depth``, ``--max-time``, ``--threads``, ``--calibration``, ``--opset``/``--exporter`` and empty
grids are refused before any export; messages never start with a Python exception name.

Each refusal: exit non-zero, one ``error:`` line naming the path or value (a ``hint:`` may follow),
foreign files byte for byte as they were, nothing exported. The CLI runs as a real subprocess
(``python -m edgeattn.cli``). The memory guards must answer in <= 5 s; the tests allow 20 s (a
loaded 2-core CI box: the interpreter start and the imports alone take 1-2 s there).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeattn.bench import preflight
from edgeattn.errors import BenchError

EXE = [sys.executable, "-m", "edgeattn.cli"]
GUARD_S = 20  # the guards' bound is 5 s; generous here for a loaded machine (see module doc)


from test_preflight import run_cli  # noqa: E402 (the CLI in a subprocess, one export cache)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    """Non-zero exit, no traceback, exactly one ``error:`` line (a ``hint:`` line may follow),
    and no line starting with a Python exception name."""
    assert r.returncode != 0, r.stdout + r.stderr
    text = r.stdout + r.stderr
    assert "Traceback" not in text and "internal error" not in text, text
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("hint:")]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error:"), r.stderr
    first = lines[0][len("error:") :].strip().split(":")[0]
    assert not first.endswith(("Error", "Exception")), lines[0]
    return lines[0]


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (links as their target text): relative path -> sha256."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = "link:" + os.readlink(p)
        elif p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def no_export(cache: Path) -> None:
    assert not cache.exists() or not any(cache.iterdir()), list(cache.iterdir())


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"  # must stay missing or empty: nothing was exported


# ------------------------------------------------------------------------------- cache --clear


def _ours(cache: Path) -> list[Path]:
    """What edgeattn writes in the cache: an export entry and its sidecar, a bench op graph
    (named by the hash of its bytes), an old temporary file of an interrupted write."""
    from edgeattn.bench import ops

    entry = cache / "block_sima_n64_op17-0123456789abcdef.onnx"
    entry.write_bytes(b"onnx bytes")
    side = cache / (entry.name + ".json")
    side.write_text(json.dumps({"schema": "edgeattn.export/1", "spec": {}}))
    graph = ops.export("op_l1", 1, 2, 8, 17, cache)
    tmp = cache / f".{entry.name}.k2j3h4g5.tmp"
    tmp.write_bytes(b"cut")
    old = time.time() - 3600
    os.utime(tmp, (old, old))
    return [entry, side, graph, tmp]


def _foreign(cache: Path) -> None:
    """Files edgeattn did not write, some named like its own."""
    (cache / "sub" / "deeper").mkdir(parents=True)
    (cache / "notes.txt").write_text("mine\n")
    (cache / "sub" / "y.onnx").write_bytes(b"y")
    (cache / "sub" / "deeper" / "z-0123456789abcdef.onnx").write_bytes(b"z")
    # our naming, but its sidecar is not an edgeattn export's
    (cache / "m-fedcba9876543210.onnx").write_bytes(b"m")
    (cache / "m-fedcba9876543210.onnx.json").write_text("{}")
    # a bench graph's naming, but its bytes do not hash to its name
    (cache / "op_l1_B1_h2_N8_op17_0000000000000000.onnx").write_bytes(b"not a graph")
    (cache / "link-0123456789abcdef.onnx").symlink_to(cache / "notes.txt")
    (cache / ".hidden").write_text("h")


def test_cache_clear_removes_only_edgeattns_files(tmp_path):
    cache = tmp_path / "d"
    cache.mkdir()
    ours = _ours(cache)
    young = cache / ".edgeattn-probe-abcdef12"  # a write still running: left alone
    young.write_bytes(b"")
    _foreign(cache)
    before = snapshot(cache)
    foreign = {k: v for k, v in before.items() if cache / k not in ours and cache / k != young}
    assert len(foreign) == 8

    r = run_cli("cache", cache=cache)
    assert r.returncode == 0, r.stderr
    assert "8 of them not written by edgeattn" in r.stdout
    r = run_cli("cache", "--clear", cache=cache)
    assert r.returncode == 0, r.stderr
    assert "cleared 2 model(s), 4 file(s)" in r.stdout, r.stdout
    assert "left 8 file(s) that edgeattn did not write" in r.stdout, r.stdout
    after = snapshot(cache)
    assert {k: v for k, v in after.items() if cache / k != young} == foreign  # byte for byte
    assert young.exists() and not any(p.exists() for p in ours)

    r = run_cli("cache", "--clear", "--json", cache=cache)
    assert r.returncode == 0
    info = json.loads(r.stdout)
    assert info["removed_files"] == 0 and info["left_files"] == 8
    assert snapshot(cache) == after


@pytest.mark.parametrize("args", [[], ["--clear"], ["--json"]])
def test_cache_path_that_is_a_file_is_refused(tmp_path, args):
    f = tmp_path / "cache-file"
    f.write_text("precious\n")
    r = run_cli("cache", *args, cache=f)
    line = one_error_line(r)
    assert str(f) in line and "is not a directory" in line
    assert f.read_text() == "precious\n"


# ------------------------------------------------------------------------------ -o FILE refusal

FOREIGN_TEXT = b"my notes about the runs\n\xc3\xa9t\xc3\xa9\nlast line, no newline"

OUT_CMDS = [
    ["bench", "--methods", "sima", "--tokens", "64", "--dim", "32", "--heads", "2"],
    ["sweep", "--regime", "tokens", "--tokens-grid", "64", "--dim", "32", "--heads", "2"],
    ["profile", "soft_tiny"],
]


@pytest.mark.parametrize("cmd", OUT_CMDS, ids=lambda c: c[0])
def test_out_that_is_not_a_records_file_is_refused(cmd, tmp_path, cache):
    notes = tmp_path / "notes.txt"
    notes.write_bytes(FOREIGN_TEXT)
    t0 = time.monotonic()
    r = run_cli(*cmd, "-o", str(notes), cache=cache, cwd=tmp_path)
    assert time.monotonic() - t0 < GUARD_S
    line = one_error_line(r)
    assert str(notes) in line and "not an edgeattn records file" in line and "--force" in line
    assert notes.read_bytes() == FOREIGN_TEXT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no .partial-*, no cache
    no_export(cache)


@pytest.mark.parametrize("cmd", OUT_CMDS, ids=lambda c: c[0])
def test_force_is_an_option_of_the_records_commands(cmd):
    r = subprocess.run([*EXE, cmd[0], "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--force" in r.stdout


def test_check_out_accepts_empty_missing_and_records_files(tmp_path):
    from edgeattn.runtime.records import SCHEMA

    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    preflight.check_out(empty)
    preflight.check_out(tmp_path / "new.jsonl")
    assert not (tmp_path / "new.jsonl").exists()  # made only to try, removed
    recs = tmp_path / "r.jsonl"
    recs.write_text(json.dumps({"schema": SCHEMA, "id": "x"}) + "\n")
    preflight.check_out(recs)
    cut = tmp_path / "cut.jsonl"  # an interrupted first write of ours
    cut.write_text(f'{{"schema": "{SCHEMA}", "id": "x", "lat')
    preflight.check_out(cut)

    other = tmp_path / "other.jsonl"  # JSON Lines of another schema
    other.write_text('{"schema": "someone.else/1"}\n')
    with pytest.raises(BenchError, match="not an edgeattn records file"):
        preflight.check_out(other)
    preflight.check_out(other, force=True)
    with preflight.appending_anyway(True):
        preflight.check_out(other)
    with pytest.raises(BenchError, match="--force appends anyway"):
        preflight.check_out(other)  # outside the block: refused again
    assert other.read_text() == '{"schema": "someone.else/1"}\n'


def test_out_fifo_is_refused_without_blocking(tmp_path, cache):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    r = run_cli("bench", "--methods", "sima", "-o", str(fifo), cache=cache, timeout=60)
    line = one_error_line(r)
    assert str(fifo) in line and "not a regular file" in line
    no_export(cache)


# -------------------------------------------------------------------------------- memory guards

GUARDED = [
    (["export", "soft_tiny", "--img-size", "20000"], "soft_tiny at 20000×20000 px"),
    (["profile", "soft_tiny", "--img-size", "16000"], "soft_tiny at 16000×16000 px"),
    (["export", "block_msa", "--tokens", "60000"], "block_msa at N=60000"),
]


@pytest.mark.parametrize("args,what", GUARDED, ids=[" ".join(a) for a, _ in GUARDED])
def test_memory_guard_refuses_fast(args, what, tmp_path, cache):
    name = args[1]
    kw = {"img_size": int(args[3])} if args[2] == "--img-size" else {"tokens": int(args[3])}
    need = preflight.estimate_model_mb(name, **kw)[0]
    have = preflight.available_mb()
    if have is None or have > need:
        pytest.skip(f"this machine has {have} MB available, enough for {what}")
    t0 = time.monotonic()
    r = run_cli(*args, "-o", str(tmp_path / "x.out"), cache=cache, cwd=tmp_path)
    took = time.monotonic() - t0
    assert took < GUARD_S, took
    line = one_error_line(r)
    assert what in line and "needs ≈" in line and "available" in line
    assert "--no-memory-guard" in line
    assert not any(tmp_path.iterdir()) or list(tmp_path.iterdir()) == [cache]
    no_export(cache)


def test_memory_guard_passes_the_default_cases():
    """The defaults (soft_tiny at 224, the bench's N=4096 blocks, SimA at N=16384) stay far
    below any machine that runs the bench: under 2 GB each."""
    for name, kw in [
        ("soft_tiny", {}),
        ("sima_tiny_12_p16", {}),
        ("deit_small_patch16_224", {}),
        ("block_msa", {}),
        ("block_msa_fused", {}),
        ("block_soft", {"tokens": 4096}),
        ("block_sima", {"tokens": 16384}),
    ]:
        mb, _ = preflight.estimate_model_mb(name, **kw)
        assert mb < 2000, (name, mb)
    preflight.check_model_memory("soft_tiny", available=2000.0)
    with pytest.raises(BenchError, match=r"soft_tiny at 20000×20000 px needs ≈ .* 2\.0 GB"):
        preflight.check_model_memory("soft_tiny", img_size=20000, available=2000.0)
    # the released SOFT keeps softmax in stage 4: its N×N map is what makes 20000 px impossible
    free = preflight.estimate_model_mb(
        "soft_tiny", img_size=20000, overrides={"softmax_free_stage4": True}
    )[0]
    assert free < preflight.estimate_model_mb("soft_tiny", img_size=20000)[0] / 40


# ------------------------------------------------------------------------ remote run --spec


def _spec_dir(tmp_path: Path) -> Path:
    d = tmp_path / "specs"
    d.mkdir()
    (d / "m.onnx").write_bytes(b"not really onnx; never read before the checks")
    return d


BAD_SPECS = [
    ({"runs": [{"model": "../../../../etc/passwd"}]}, "'../../../../etc/passwd' leads out of"),
    ({"runs": [{"model": "m.onnx", "bogus": 1}]}, "unknown field 'bogus'"),
    ({"runs": [{"model": "m.onnx", "warmup": "x"}]}, "warmup 'x' is invalid"),
    ({"runs": [{"model": "m.onnx"}], "paired": [{"id": "g", "runs": ["nope"]}]}, "nope"),
    ({"runs": [{"model": "m.onnx"}], "extra": 1}, "unknown top-level field 'extra'"),
    ({"runs": [{"model": "missing.onnx"}]}, "missing.onnx"),
]


@pytest.mark.parametrize("spec,names", BAD_SPECS, ids=[n for _, n in BAD_SPECS])
def test_remote_spec_is_validated_before_connecting(spec, names, tmp_path, cache):
    d = _spec_dir(tmp_path)
    f = d / "s.json"
    f.write_text(json.dumps(spec))
    before = snapshot(tmp_path)
    # an unroutable host: had the command tried to connect, the error would name the host
    r = run_cli(
        "remote", "run", "nosuchhost.invalid", "--spec", str(f), "--connect-timeout", "2",
        "-o", str(tmp_path / "out.jsonl"), cache=cache, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    line = one_error_line(r)
    assert str(f) in line and names in line, line
    assert "nosuchhost" not in line
    assert snapshot(tmp_path) == before  # no records file, nothing else


def test_spec_paths_inside_the_folder_or_absolute_are_taken(tmp_path):
    from edgeattn.remote.spec import prepare_spec

    d = _spec_dir(tmp_path)
    (d / "sub").mkdir()
    (d / "sub" / "n.onnx").write_bytes(b"n")
    outside = tmp_path / "o.onnx"
    outside.write_bytes(b"o")
    spec = {"runs": [{"model": "m.onnx"}, {"model": "sub/../sub/n.onnx"}, {"model": str(outside)}]}
    _, files = prepare_spec(spec, base_dir=d)
    assert [f.local.name for f in files] == ["m.onnx", "n.onnx", "o.onnx"]
    with pytest.raises(ValueError, match="leads out of the spec's folder"):
        prepare_spec({"runs": [{"model": "../o.onnx"}]}, base_dir=d)


# ----------------------------------------------------------------- checks before any export

EARLY = [
    (["profile", "soft_tiny", "--depth", "stages"], "--depth 'stages'"),
    (["bench", "--max-time", "inf"], "--max-time inf"),
    (["bench", "--max-time", "nan"], "--max-time nan"),
    (["sweep", "--max-time", "-1"], "--max-time -1"),
    (["bench", "--min-time", "inf"], "--min-time inf"),
    (["bench", "--threads", "100000"], "--threads 100000"),
    (["sweep", "--threads", "100000"], "--threads 100000"),
    (["profile", "soft_tiny", "--threads", "100000"], "--threads 100000"),
    (["sweep", "--tokens-grid", ""], "--tokens-grid ''"),
    (["sweep", "--regime", "tokens", "--tokens-grid", " , "], "--tokens-grid ' , '"),
    (["sweep", "--regime", "channels", "--channels-grid", ""], "--channels-grid ''"),
]


@pytest.mark.parametrize("args,names", EARLY, ids=[" ".join(a) for a, _ in EARLY])
def test_bad_values_are_refused_before_any_export(args, names, tmp_path, cache):
    out = tmp_path / "r.jsonl"
    t0 = time.monotonic()
    r = run_cli(*args, "--out", str(out), cache=cache, cwd=tmp_path)
    assert time.monotonic() - t0 < GUARD_S
    line = one_error_line(r)
    assert names in line, line
    assert "r.jsonl" not in line and "records" not in r.stdout  # names no file it never wrote
    assert not out.exists()
    no_export(cache)


EXPORT_EARLY = [
    (["--opset", "21", "--exporter", "torchscript"], "opset 21"),
    (["--opset", "17", "--exporter", "dynamo"], "opset 17"),
    (["--precision", "int8-static", "--calibration", "{tmp}/no-such-dir"], "no-such-dir"),
    (["--precision", "int8-static", "--calibration", "{tmp}/a-file"], "a-file"),
    (["--calibration", "{tmp}"], "int8-static only"),
]


@pytest.mark.parametrize("args,names", EXPORT_EARLY, ids=[" ".join(a) for a, _ in EXPORT_EARLY])
def test_export_checks_before_building(args, names, tmp_path, cache, monkeypatch):
    (tmp_path / "a-file").write_text("x")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    names = names.replace("{tmp}", str(tmp_path))
    from edgeattn.export import onnx as export_module

    def no_build(req):  # pragma: no cover - reached only if a check came too late
        raise AssertionError("the model was built before the check")

    monkeypatch.setattr(export_module, "build_model", no_build)
    from edgeattn.errors import EdgeAttnError
    from edgeattn.export import export_onnx

    kw: dict = {"output": tmp_path / "x.onnx"}
    it = iter(args)
    for a in it:
        v = next(it)
        key = {"--opset": "opset", "--exporter": "exporter", "--precision": "precision"}.get(a)
        if key == "opset":
            kw["opset"] = int(v)
        elif key:
            kw[key] = v
        else:
            kw["calibration"] = v
    with pytest.raises(EdgeAttnError, match=names):
        export_onnx("block_msa", **kw)
    assert not (tmp_path / "x.onnx").exists()


def test_export_cli_opset_exporter_is_one_line_fast(tmp_path, cache):
    t0 = time.monotonic()
    r = run_cli(
        "export", "block_msa", "--opset", "21", "--exporter", "torchscript", "-o",
        str(tmp_path / "x.onnx"), cache=cache,
    )  # fmt: skip
    assert time.monotonic() - t0 < GUARD_S
    line = one_error_line(r)
    assert "opset 21" in line and "TorchScript" in line
    assert not (tmp_path / "x.onnx").exists()


# ------------------------------------------------------------------------------------- messages


def test_report_csv_on_an_unwritable_place_is_one_clean_line(tmp_path, cache):
    from edgeattn.runtime.records import SCHEMA

    recs = tmp_path / "r.jsonl"
    recs.write_text(json.dumps({"schema": SCHEMA, "id": "x", "status": "ok", "kind": "x"}) + "\n")
    r = run_cli("report", str(recs), "--csv", "/proc/x.csv", cache=cache, cwd=tmp_path)
    line = one_error_line(r)
    assert "'/proc/x.csv'" in line and "cannot write" in line and ".tmp" not in line


def test_report_csv_on_a_read_only_mount(tmp_path, cache):
    from edgeattn.runtime.records import SCHEMA

    recs = tmp_path / "r.jsonl"
    recs.write_text(json.dumps({"schema": SCHEMA, "id": "x", "status": "ok", "kind": "x"}) + "\n")
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    m = subprocess.run(["mount", "--bind", str(src), str(ro)], capture_output=True, text=True)
    if m.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {m.stderr.strip()}")
    try:
        r0 = subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True)
        if r0.returncode != 0:
            pytest.skip("cannot remount read-only here")
        r = run_cli("report", str(recs), "--csv", str(ro / "a.csv"), cache=cache)
        line = one_error_line(r)
        assert str(ro / "a.csv") in line and "Read-only file system" in line
    finally:
        subprocess.run(["umount", str(ro)], check=False)
    assert not any(src.iterdir())


def test_report_names_directories_and_fifos(tmp_path, cache):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path, why in [
        (tmp_path, "is a directory"),
        (fifo, "is not a regular file"),
        (tmp_path / "nope.jsonl", "no such file"),
    ]:
        r = run_cli("report", str(path), cache=cache, timeout=60)
        line = one_error_line(r)
        assert str(path) in line and why in line, line


def test_main_never_prints_an_exception_name(monkeypatch, capsys):
    """ValueError and OSError (a full disk under an atomic write's temporary name) reach the
    user as the message alone: the path it stood for and the reason, with a hint."""
    import errno

    import edgeattn.cache as cache_mod
    from edgeattn.cli import main

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/.x.csv.p96ipb_p.tmp")

    monkeypatch.setattr(cache_mod, "cache_info", full)
    assert main(["cache"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: /data/x.csv: No space left on device [ENOSPC]"), err
    assert "OSError" not in err and "internal error" not in err and "hint: free some space" in err

    def bad(*a, **k):
        raise ValueError("runs[0]: something is off")

    monkeypatch.setattr(cache_mod, "cache_info", bad)
    assert main(["cache"]) == 1
    assert capsys.readouterr().err.strip() == "error: runs[0]: something is off"

    def oom(*a, **k):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:118] . DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 86000000000 bytes. Error code 12 (Cannot allocate memory)"
        )

    monkeypatch.setattr(cache_mod, "cache_info", oom)
    assert main(["cache"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory: you tried to allocate 86000000000 bytes")
    assert "internal error" not in err and "enforce fail" not in err


def test_ansible_hint_names_the_extra_that_provides_it():
    import tomllib

    root = Path(__file__).resolve().parents[1]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(d.startswith("ansible-core") for d in extras["ansible"])
    src = (root / "edgeattn" / "remote" / "inventory.py").read_text()
    assert "pip install 'edgeattn[ansible]'" in src and "pip install 'edgeattn'" not in src
