"""docs/records.schema.json, the published records format, against the code: it validates (with
the jsonschema package) what a real bench, profile, failed run and export write, its fields are
the runtime's, and what it refuses is what ``report --check`` names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeattn import integrity
from edgeattn.export.sidecar import SIDECAR_SCHEMA
from edgeattn.runtime import __main__ as rt
from edgeattn.runtime import records as R

jsonschema = pytest.importorskip("jsonschema")

DOCS = Path(__file__).resolve().parents[1] / "docs"
SCHEMA = json.loads((DOCS / "records.schema.json").read_text())
SPEC_SCHEMA = json.loads((DOCS / "spec.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
EXE = [sys.executable, "-m", "edgeattn.cli"]
BENCH = ["--tokens", "64", "--dim", "32", "--heads", "2", "--methods", "softmax,sima_qk"]
FAST = ["--min-time", "0.05", "--max-time", "0.2", "--pair-time", "0.2"]


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, Path]:
    """What the tool really writes: a tiny bench, a profile of one of its exports, a failed
    run's error record, and the export sidecars of the bench's cache."""
    d = tmp_path_factory.mktemp("records")
    env = dict(os.environ, EDGEATTN_CACHE=str(d / "cache"))
    env.pop(rt.RUN_ID_ENV, None)
    r = cli("bench", *BENCH, *FAST, "-o", str(d / "b.jsonl"), env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    onnx = sorted((d / "cache").glob("block_msa_*.onnx"))[0]
    r = cli("profile", str(onnx), "--min-time", "0.05", "--runs", "2", "-o", str(d / "p.jsonl"), env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    (d / "spec.json").write_text(json.dumps({"runs": [{"model": "gone.onnx"}], "run_id": "r-1"}))
    r = subprocess.run(
        [sys.executable, "-m", "edgeattn.runtime", "measure", "--spec", str(d / "spec.json"),
         "--out", str(d / "e.jsonl"), "--quiet"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert r.returncode == rt.EXIT_RUN_FAILED, r.stderr
    return {"bench": d / "b.jsonl", "profile": d / "p.jsonl", "error": d / "e.jsonl", "dir": d}


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def branches(obj: dict) -> list[str]:
    """The oneOf branches ``obj`` matches (exactly one for a valid instance)."""
    return [
        b["$ref"].rsplit("/", 1)[1]
        for b in SCHEMA["oneOf"]
        if jsonschema.Draft202012Validator(dict(SCHEMA, oneOf=[b])).is_valid(obj)
    ]


def errors(obj: dict) -> list[str]:
    return [e.message for e in VALIDATOR.iter_errors(obj)]


# ------------------------------------------------------------------------------- the schema


def test_the_schema_is_valid_and_versioned_like_the_code():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$id"].endswith(R.SCHEMA) and R.SCHEMA == "edgeattn.record/1"
    assert SCHEMA["x-edgeattn-versions"] == {"record": R.SCHEMA, "export": SIDECAR_SCHEMA}
    defs = SCHEMA["$defs"]
    assert defs["record_fields"]["properties"]["schema"]["const"] == R.SCHEMA
    assert defs["run_end"]["properties"]["schema"]["const"] == R.SCHEMA
    assert defs["run_end"]["properties"]["kind"]["const"] == integrity.RUN_END
    assert defs["export_sidecar"]["properties"]["schema"]["const"] == SIDECAR_SCHEMA


def test_every_record_field_the_code_writes_is_typed():
    props = SCHEMA["$defs"]["record_fields"]["properties"]
    assert set(R.RECORD_FIELDS) <= set(props)
    assert set(SCHEMA["$defs"]["record_fields"]["required"]) <= set(R.RECORD_FIELDS)
    # the run id a spec may carry is the one records carry
    assert SPEC_SCHEMA["properties"]["run_id"]["pattern"] == SCHEMA["$defs"]["run_id"]["pattern"]
    assert "run_id" in rt.SPEC_KEYS


# ------------------------------------------------------------------- what the code writes


def test_a_real_bench_validates_and_closes_its_run(written):
    recs = lines(written["bench"])
    assert [r["kind"] for r in recs] == ["isolated", "isolated", "paired", integrity.RUN_END]
    for r in recs:
        assert errors(r) == [], r.get("id")
    assert [branches(r) for r in recs] == [
        ["isolated_record"],
        ["isolated_record"],
        ["paired_record"],
        ["run_end"],
    ]
    end = recs[-1]
    assert {r["run_id"] for r in recs} == {end["run_id"]} and len(end["run_id"]) == 32
    assert end["records"] == 3 and end["command"] == "bench"
    raw = [x for x in written["bench"].read_bytes().splitlines(keepends=True) if x.strip()]
    assert end["sha256"] == integrity.digest(raw[:3])


def test_a_real_profile_validates(written):
    recs = lines(written["profile"])
    assert [branches(r) for r in recs] == [["profile_record"], ["run_end"]]
    assert recs[0]["run_id"] == recs[1]["run_id"] and recs[1]["command"] == "profile"


def test_an_error_record_validates_and_carries_the_specs_run_id(written):
    (rec,) = lines(written["error"])  # the runtime alone: no host command, no run_end
    assert rec["status"] == "error" and rec["run_id"] == "r-1"
    assert branches(rec) == ["error_record"]


def test_the_export_sidecars_validate(written):
    sides = sorted((written["dir"] / "cache").glob("*.onnx.json"))
    assert len(sides) >= 2
    for s in sides:
        doc = json.loads(s.read_text())
        assert errors(doc) == [], s.name
        assert branches(doc) == ["export_sidecar"]


def test_older_records_without_kind_run_id_or_paired_still_validate(written):
    rec = lines(written["bench"])[0]
    for k in ("kind", "run_id", "paired"):
        del rec[k]
    assert errors(rec) == []
    rec["host"] = {"spec": "pi@board", "target": "pi@board", "python": "python3"}
    rec["a_field_added_tomorrow"] = {"x": 1}
    assert errors(rec) == []  # new fields do not break it


@pytest.mark.parametrize(
    "path, value",
    [
        (("latency_ms", "median"), "fast"),
        (("key",), "not-a-sha"),
        (("status",), "fine"),
        (("model", "bytes"), -1),
        (("created_utc",), "yesterday"),
    ],
)
def test_a_broken_field_is_refused(written, path, value):
    rec = lines(written["bench"])[0]
    target = rec
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    assert errors(rec)


def test_a_run_end_needs_its_count_and_digest(written):
    end = lines(written["bench"])[-1]
    assert errors(end) == []
    for k in ("records", "sha256", "run_id"):
        broken = {x: v for x, v in end.items() if x != k}
        assert errors(broken), k


# ---------------------------------------------------------------------- the runtime's run_id


def test_the_runtime_takes_a_run_id_from_the_spec_or_the_environment(monkeypatch):
    monkeypatch.delenv(rt.RUN_ID_ENV, raising=False)
    assert rt.spec_run_id({"runs": []}) is None
    assert rt.spec_run_id({"run_id": "abc"}) == "abc"
    monkeypatch.setenv(rt.RUN_ID_ENV, "from-env")
    assert rt.spec_run_id({}) == "from-env"
    assert rt.spec_run_id({"run_id": "spec-wins"}) == "spec-wins"


@pytest.mark.parametrize("bad", ["", "has space", 5, "x" * 129])
def test_a_bad_run_id_is_refused_like_the_schema_refuses_it(bad, tmp_path, monkeypatch):
    monkeypatch.delenv(rt.RUN_ID_ENV, raising=False)
    spec = {"runs": [{"model": "a.onnx"}], "run_id": bad}
    assert list(jsonschema.Draft202012Validator(SPEC_SCHEMA).iter_errors(spec))
    with pytest.raises(rt.UsageError, match="run_id"):
        rt.parse_spec(spec, str(tmp_path))
