"""docs/spec.schema.json, the documented ``remote run --spec`` format, against the code: its
fields are the runtime's, a spec the bench builds validates, the runtime takes the schema's
example. Uses ``jsonschema`` when installed, else a small hand check of the subset it uses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edgeattn.bench import core
from edgeattn.runtime import __main__ as rt
from edgeattn.runtime.measure import RunSpec
from edgeattn.runtime.paired import GROUP_FIELDS
from edgeattn.runtime.session import DEVICES

SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "spec.schema.json").read_text())

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def _errors(inst: Any, sch: dict, path: str = "$") -> list[str]:
    """The schema keywords the file uses: $ref, allOf, type, enum, required, properties,
    additionalProperties, items, min/maxItems, uniqueItems, minLength, (exclusive) bounds."""
    if "$ref" in sch:
        sch = SCHEMA["$defs"][sch["$ref"].rsplit("/", 1)[1]]
    out: list[str] = []
    for sub in sch.get("allOf", []):
        out += _errors(inst, sub, path)
    if "type" in sch:
        types = sch["type"] if isinstance(sch["type"], list) else [sch["type"]]

        def ok(t: str) -> bool:
            if t == "integer":
                return isinstance(inst, int) and not isinstance(inst, bool)
            if t == "number":
                return isinstance(inst, (int, float)) and not isinstance(inst, bool)
            return isinstance(inst, _TYPES[t])

        if not any(ok(t) for t in types):
            return [f"{path}: {inst!r} is not {types}"]
    if "enum" in sch and inst not in sch["enum"]:
        out.append(f"{path}: {inst!r} not in enum")
    if isinstance(inst, dict):
        props = sch.get("properties", {})
        out += [f"{path}: {k} is required" for k in sch.get("required", []) if k not in inst]
        for k, v in inst.items():
            if k in props:
                out += _errors(v, props[k], f"{path}.{k}")
            elif sch.get("additionalProperties") is False and "properties" in sch:
                out.append(f"{path}: unknown field {k}")
            elif isinstance(sch.get("additionalProperties"), dict):
                out += _errors(v, sch["additionalProperties"], f"{path}.{k}")
    if isinstance(inst, list):
        if len(inst) < sch.get("minItems", 0) or len(inst) > sch.get("maxItems", 1 << 30):
            out.append(f"{path}: {len(inst)} items")
        if sch.get("uniqueItems") and len({json.dumps(x) for x in inst}) != len(inst):
            out.append(f"{path}: items not unique")
        for i, x in enumerate(inst):
            out += _errors(x, sch.get("items", {}), f"{path}[{i}]")
    if isinstance(inst, str) and len(inst) < sch.get("minLength", 0):
        out.append(f"{path}: too short")
    if isinstance(inst, (int, float)) and not isinstance(inst, bool):
        if "minimum" in sch and inst < sch["minimum"]:
            out.append(f"{path}: {inst} < {sch['minimum']}")
        if "exclusiveMinimum" in sch and inst <= sch["exclusiveMinimum"]:
            out.append(f"{path}: {inst} <= {sch['exclusiveMinimum']}")
        if "exclusiveMaximum" in sch and inst >= sch["exclusiveMaximum"]:
            out.append(f"{path}: {inst} >= {sch['exclusiveMaximum']}")
    return out


def validate(spec: dict) -> list[str]:
    try:
        import jsonschema
    except ImportError:
        return _errors(spec, SCHEMA)
    return [e.message for e in jsonschema.Draft202012Validator(SCHEMA).iter_errors(spec)]


def test_schema_fields_are_the_runtimes():
    assert set(SCHEMA["properties"]) == set(rt.SPEC_KEYS)
    run_fields = SCHEMA["$defs"]["run_fields"]["properties"]
    assert list(run_fields) == RunSpec.field_names()
    assert list(SCHEMA["$defs"]["group"]["properties"]) == list(GROUP_FIELDS)
    assert run_fields["device"]["enum"] == sorted(DEVICES)


def _bench_spec(tmp_path: Path) -> dict:
    """The spec ``bench --host`` sends (core.run_on_hosts): every method at one shape, paired."""
    st = core.Settings(profile=True)
    jobs = [
        core.Job(core.METHODS[m], core.Shape(64, 32, 2)) for m in ("softmax", "sima_qk", "sima")
    ]
    for j in jobs:
        j.onnx_path = tmp_path / f"{j.method.key}.onnx"
    runs = [core.job_run_spec(j, st, model_ref=j.onnx_path.name) for j in jobs]
    return {"runs": runs, "paired": core.paired_specs(jobs, st)}


def test_a_spec_the_bench_builds_validates(tmp_path):
    spec = _bench_spec(tmp_path)
    assert validate(spec) == []
    specs = rt.parse_spec(spec, str(tmp_path))  # and the runtime takes it
    groups, isolated = rt.parse_paired(spec, specs)
    assert len(specs) == 3 and len(groups) == 1 and isolated


def test_the_schema_example_is_a_spec_the_runtime_takes(tmp_path):
    (example,) = SCHEMA["examples"]
    assert validate(example) == []
    specs = rt.parse_spec(example, str(tmp_path))
    assert [s.id for s in specs] == ["softmax/N1024", "sima/N1024"]
    assert specs[0].meta == {"dim": 384} and specs[0].min_time_s == 1


@pytest.mark.parametrize(
    "bad",
    [
        {"runs": []},
        {"runs": [{"model": "a.onnx", "warmpu": 3}]},
        {"runs": [{"id": "x"}]},
        {"runs": [{"model": "a.onnx", "device": "gpu"}]},
        {"runs": [{"model": "a.onnx"}], "pairs": []},
        {"runs": [{"model": "a.onnx", "min_runs": 0}]},
    ],
)
def test_what_the_schema_refuses_the_runtime_refuses(bad, tmp_path):
    assert validate(bad)
    with pytest.raises(rt.UsageError):
        rt.parse_spec(bad, str(tmp_path))
