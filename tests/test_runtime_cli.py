"""``python -m edgeattn.runtime``: the contract the remote helper and the bench build on."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from onnx_factory import attention_model

import edgeattn
from edgeattn.runtime import __main__ as cli
from edgeattn.runtime import __version__, records

REPO = Path(__file__).resolve().parents[1]
RUNTIME = REPO / "edgeattn" / "runtime"
FAST = {"warmup": 1, "min_runs": 3, "max_runs": 50, "min_time_s": 0.01, "max_time_s": 1.0}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    attention_model(d / "attn.onnx")
    return d


def _env():
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def _run(args, stdin=None, cwd=REPO, python_flags=()):
    return subprocess.run(
        [sys.executable, *python_flags, "-m", "edgeattn.runtime", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(),
        timeout=120,
    )


def _spec(runs, **defaults):
    return json.dumps({"defaults": dict(FAST, **defaults), "runs": runs})


def test_measure_stdin_exit_0(model_dir):
    spec = _spec([{"model": "attn.onnx", "id": "a", "meta": {"tokens": 16}}], meta={"dim": 32})
    res = _run(["measure", "--spec", "-"], stdin=spec, cwd=model_dir)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["status"] == "ok" and rec["id"] == "a" and rec["meta"] == {"dim": 32, "tokens": 16}
    assert rec["latency_ms"]["runs"] >= 3
    err = res.stderr.splitlines()
    assert err and all(line.startswith("[edgeattn-runtime]") for line in err)


def test_measure_failed_run_exit_3(model_dir):
    spec = _spec([{"model": "attn.onnx"}, {"model": "missing.onnx"}, {"model": "attn.onnx"}])
    res = _run(["measure", "--spec", "-", "--quiet"], stdin=spec, cwd=model_dir)
    assert res.returncode == 3, res.stderr
    recs = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["status"] for r in recs] == ["ok", "error", "ok"]
    assert [r["id"] for r in recs] == ["attn#0", "missing", "attn#2"]
    assert "model file not found" in recs[1]["error"] and "\n" not in recs[1]["error"]
    assert res.stderr == ""


def test_measure_bad_spec_exit_2(model_dir):
    res = _run(["measure", "--spec", "-"], stdin=_spec([{"model": "attn.onnx", "device": "gpu"}]))
    assert res.returncode == 2 and res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1
    assert "runs[0]" in res.stderr and "device 'gpu'" in res.stderr and "cpu" in res.stderr


@pytest.mark.parametrize(
    "argv, stdin, pattern",
    [
        ([], None, "a command is needed"),
        (["frobnicate"], None, "invalid choice"),
        (["measure"], None, "--spec"),
        (["measure", "--spec", "-", "--resume"], "{}", "--resume needs --out"),
        (["measure", "--spec", "/no/such/spec.json"], None, "cannot read spec"),
        (["measure", "--spec", "-"], "{not json", "not JSON"),
        (["measure", "--spec", "-"], '{"runs": [], "x": 1}', "unknown top-level field 'x'"),
        (["measure", "--spec", "-"], '{"runs": []}', "'runs' must be a non-empty list"),
        (
            ["measure", "--spec", "-"],
            '{"runs": [{"model": "a.onnx", "id": "x"}, {"model": "b.onnx", "id": "x"}]}',
            "'x' is used more than once",
        ),
    ],
)
def test_bad_usage_exit_2_one_line(argv, stdin, pattern, capsys, monkeypatch):
    if stdin is not None:
        import io

        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and pattern in err


def test_out_and_resume(model_dir, capsys):
    out = model_dir / "records.jsonl"
    spec = model_dir / "spec.json"
    spec.write_text(
        _spec(
            [
                {"model": "attn.onnx", "id": "a"},
                {"model": "attn.onnx", "id": "b", "intra_op_threads": 1},
            ]
        )
    )
    assert cli.main(["measure", "--spec", str(spec), "--out", str(out), "--quiet"]) == 0
    printed = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    stored = records.read_jsonl(str(out))
    assert [r["id"] for r in printed] == [r["id"] for r in stored] == ["a", "b"]
    assert records.done_keys(str(out)) == {r["key"] for r in stored}

    # a third run is added; --resume measures only that one
    spec.write_text(
        _spec(
            [
                {"model": "attn.onnx", "id": "a"},
                {"model": "attn.onnx", "id": "b", "intra_op_threads": 1},
                {"model": "attn.onnx", "id": "c", "intra_op_threads": 2},
            ]
        )
    )
    assert cli.main(["measure", "--spec", str(spec), "--out", str(out), "--resume"]) == 0
    cap = capsys.readouterr()
    assert [json.loads(x)["id"] for x in cap.out.splitlines()] == ["c"]
    assert cap.err.count("skipped (already in") == 2
    assert [r["id"] for r in records.read_jsonl(str(out))] == ["a", "b", "c"]


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"edgeattn-runtime {__version__}"
    assert __version__ == edgeattn.__version__


# ---------------------------------------------------------------------- device-side hygiene


@pytest.mark.parametrize("command", ["check", "env"])
def test_check_env_without_numpy_and_onnxruntime(command):
    # -S: no site-packages, so numpy/onnxruntime/psutil are not importable; cwd (repo) is on the path
    res = _run([command], python_flags=("-S",))
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["numpy_version"] is None and data["onnxruntime_version"] is None
    assert data["providers"] is None
    if command == "check":
        assert data["ok"] is False and data["disk_free_mb"] > 0
        assert any("onnxruntime cannot be imported" in p for p in data["problems"])
        assert data["python"]["ok"] is True and data["cpu"]["cores_logical"] >= 1
    else:
        assert data["fingerprint_id"] and data["cores_logical"] >= 1


def test_check_with_everything_installed():
    res = _run(["check"])
    data = json.loads(res.stdout)
    assert res.returncode == 0 and data["ok"] is True, data["problems"]
    assert "CPUExecutionProvider" in data["providers"]


def test_runtime_imports_no_torch_or_onnx():
    code = (
        "import sys, edgeattn.runtime.__main__, edgeattn.runtime.measure, "
        "edgeattn.runtime.session, edgeattn.runtime.profile, edgeattn.runtime.sysinfo, "
        "edgeattn.runtime.records\n"
        "bad = [m for m in ('torch', 'onnx', 'onnxsim', 'rich', 'typer') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr


def test_runtime_imports_are_stdlib_numpy_ort_only():
    allowed = set(sys.stdlib_module_names) | {"numpy", "onnxruntime", "psutil", "__future__"}
    for path in sorted(RUNTIME.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: inside edgeattn.runtime
                    continue
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


def test_vermin_min_version_3_8():
    exe = shutil.which("vermin") or str(Path(sys.executable).with_name("vermin"))
    if not Path(exe).exists():
        pytest.skip("vermin not installed (dev extra)")
    res = subprocess.run(
        [exe, "-t=3.8-", "--no-tips", "--violations", "--eval-annotations", str(RUNTIME)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    line = next(x for x in res.stdout.splitlines() if x.startswith("Minimum required versions"))
    version = line.split(":", 1)[1].strip().split(",")[-1].strip()
    assert tuple(int(p) for p in version.split(".")) <= (3, 8), line


def test_runtime_parses_as_python_3_8():
    for path in sorted(RUNTIME.glob("*.py")):
        ast.parse(path.read_text(), str(path), feature_version=(3, 8))


def test_stdout_carries_only_records():
    code = (
        "import os\n"
        "from edgeattn.runtime.__main__ import _records_channel\n"
        "with _records_channel() as emit:\n"
        "    os.write(1, b'native noise\\n')\n"
        "    print('python noise')\n"
        "    emit('{\"id\": 1}')\n"
        "print('after')\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == '{"id": 1}\nafter\n'
    assert "native noise" in res.stderr and "python noise" in res.stderr
