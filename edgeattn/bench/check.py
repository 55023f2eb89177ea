"""``edgeattn report --check FILES``: is each file what edgeattn writes, whole and unedited?

Each line of a records file is validated against ``docs/records.schema.json`` (the branch its
``kind``/``status`` selects, so a problem is named by its field, not as "matches no branch"),
then checked for what the schema cannot say (a latency's run count against its raw samples, a
median outside its interval). Runs (``integrity.py``) are then told apart: *complete* (a
``run_end`` whose count and digest match the run's lines), *partial* (no ``run_end``:
interrupted, a host failed, or the file was cut; one continued by a ``--resume`` run that
completed is said so and is not a problem), *edited* (count or digest differ, or a record after
the end). Records without a run id (older files) are counted and are not a problem. An
``.onnx.json`` export sidecar is validated as a whole document, and its sha256 against the
``.onnx`` beside it when that is there.

Every problem is one line ``FILE:LINE: field.path: problem``; each file ends with one summary
line and a line per run. :func:`run_check` returns the exit status: 0 when every file is valid
and every run complete, 1 otherwise. Needs the ``jsonschema`` package (imported here only).
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeattn import integrity
from edgeattn.errors import BenchError

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "docs" / "records.schema.json"
RECORD_SCHEMA = "edgeattn.record/1"
SIDECAR_SCHEMA = "edgeattn.export/1"
KINDS = ("isolated", "paired", integrity.RUN_END)
_MAX_MESSAGE = 160


@dataclass
class Problem:
    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


@dataclass
class Run:
    """One run id's lines in a file, and its verdict once the file is read."""

    run_id: str
    first_line: int = 0
    last_line: int = 0
    lines: list[bytes] = field(default_factory=list)  # the run's record lines before its end
    end: dict[str, Any] | None = None
    end_line: int = 0
    after_end: list[int] = field(default_factory=list)
    state: str = ""  # complete | partial | edited
    detail: str = ""
    continued_by: str | None = None


@dataclass
class FileReport:
    path: str
    problems: list[Problem] = field(default_factory=list)
    kinds: Counter = field(default_factory=Counter)
    runs: dict[str, Run] = field(default_factory=dict)
    no_run_id: int = 0
    sidecar: dict[str, Any] | None = None
    sidecar_note: str = ""

    @property
    def records(self) -> int:
        return sum(self.kinds.values())

    def add(self, line: int, where: str, message: str) -> None:
        if len(message) > _MAX_MESSAGE:
            message = message[: _MAX_MESSAGE - 1] + "…"
        self.problems.append(Problem(self.path, line, where or "(record)", message))

    def summary(self) -> list[str]:
        """One summary line, then one line per run."""
        verdict = f"{len(self.problems)} problem(s)" if self.problems else "valid"
        if self.sidecar is not None:
            onnx = (self.sidecar.get("onnx") or {}).get("file") or "?"
            note = f"; {self.sidecar_note}" if self.sidecar_note else ""
            return [f"{self.path}: export sidecar ({SIDECAR_SCHEMA}) of {onnx}{note}: {verdict}"]
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.kinds.items()))
        states = Counter(r.state for r in self.runs.values())
        runs = ", ".join(f"{states.get(s, 0)} {s}" for s in ("complete", "partial", "edited"))
        old = (
            f"; {self.no_run_id} record(s) with no run id (older records)" if self.no_run_id else ""
        )
        out = [
            f"{self.path}: {self.records} record(s) ({kinds or 'none'}); "
            f"runs: {runs}{old}: {verdict}"
        ]
        for r in self.runs.values():
            end = r.end or {}
            what = ", ".join(
                str(x) for x in (end.get("command"), end.get("started_utc")) if x is not None
            )
            out.append(
                f"  run {r.run_id}{f' ({what})' if what else ''}: {r.state}, "
                f"{len(r.lines) + len(r.after_end)} record(s), lines {r.first_line}-{r.last_line}"
                + (f"; {r.detail}" if r.detail else "")
            )
        return out


# ------------------------------------------------------------------------------------- schema


def load_schema(path: Path = SCHEMA_FILE) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise BenchError(
            f"the records schema {path} is not there",
            hint="report --check reads docs/records.schema.json of a source checkout",
        ) from None


class Validators:
    """One jsonschema validator per ``$defs`` branch of the records schema."""

    def __init__(self, schema: dict[str, Any] | None = None) -> None:
        try:
            import jsonschema
        except ImportError:
            raise BenchError(
                "report --check needs the jsonschema package",
                hint="pip install jsonschema (it is in edgeattn's dev extra)",
            ) from None
        self.jsonschema = jsonschema
        self.schema = schema or load_schema()
        base = {k: v for k, v in self.schema.items() if k not in ("oneOf", "examples")}
        cls = jsonschema.validators.validator_for(self.schema)
        self._by_def = {
            name: cls(dict(base, **{"$ref": f"#/$defs/{name}"}))
            for name in (
                "isolated_record",
                "profile_record",
                "paired_record",
                "error_record",
                integrity.RUN_END,
                "export_sidecar",
            )
        }

    def errors(self, obj: dict[str, Any], branch: str) -> list[tuple[list[Any], str]]:
        """(path, message) of each problem, deduplicated, the most specific per anyOf."""
        out: list[tuple[list[Any], str]] = []
        seen: set[tuple[str, str]] = set()
        for err in self._by_def[branch].iter_errors(obj):
            for leaf in self._leaves(err):
                for item in self._explain(leaf):
                    key = (json.dumps(item[0]), item[1])
                    if key not in seen:
                        seen.add(key)
                        out.append(item)
        return out

    def _leaves(self, err: Any) -> Iterable[Any]:
        if err.validator in ("anyOf", "oneOf") and err.context:
            non_null = [
                c
                for c in err.context
                if not (c.validator == "type" and c.validator_value == "null")
            ]
            yield from self._leaves(self.jsonschema.exceptions.best_match(non_null or err.context))
        else:
            yield err

    @staticmethod
    def _explain(err: Any) -> list[tuple[list[Any], str]]:
        path = list(err.absolute_path)
        if err.validator == "required" and isinstance(err.instance, dict):
            missing = [k for k in err.validator_value if k not in err.instance]
            return [(path + [k], "missing (a required field)") for k in missing]
        if err.validator == "const":
            return [(path, f"{_short(err.instance)} where {err.validator_value!r} was expected")]
        if err.validator == "type":
            want = err.validator_value
            want = " or ".join(want) if isinstance(want, list) else want
            return [(path, f"{_short(err.instance)} is not of type {want}")]
        return [(path, err.message)]


def _short(v: Any) -> str:
    text = json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else repr(v)
    return text if len(text) <= 60 else text[:57] + "…"


def dotted(path: Sequence[Any]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def branch_of(obj: dict[str, Any]) -> str:
    """The schema branch a record is checked against (the schema's oneOf, told by its fields)."""
    if obj.get("schema") == SIDECAR_SCHEMA:
        return "export_sidecar"
    if obj.get("kind") == integrity.RUN_END:
        return integrity.RUN_END
    if obj.get("status") == "error":
        return "error_record"
    if obj.get("kind") == "paired":
        return "paired_record"
    if obj.get("profile") is not None:
        return "profile_record"
    return "isolated_record"


# ------------------------------------------------------------------------ beyond the schema


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def semantic_problems(obj: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, problem) the schema cannot express: counts against samples, order of figures."""
    out: list[tuple[str, str]] = []
    created = obj.get("created_utc")
    if isinstance(created, str):
        try:
            datetime.datetime.strptime(created.rstrip("Z")[:26], "%Y-%m-%dT%H:%M:%S.%f")
        except ValueError:
            try:
                datetime.datetime.strptime(created.rstrip("Z"), "%Y-%m-%dT%H:%M:%S")
            except ValueError:
                out.append(("created_utc", f"{created!r} is not a valid time"))
    lat = obj.get("latency_ms")
    if isinstance(lat, dict):
        raw, runs = lat.get("raw"), lat.get("runs")
        if isinstance(raw, list) and _num(runs) and raw and runs != len(raw):
            out.append(("latency_ms.runs", f"{runs} but latency_ms.raw holds {len(raw)} samples"))
        lo, med, hi = lat.get("min"), lat.get("median"), lat.get("max")
        if _num(lo) and _num(med) and _num(hi) and not lo <= med <= hi:
            out.append(("latency_ms.median", f"{med} is outside [min {lo}, max {hi}]"))
    paired = obj.get("paired")
    if isinstance(paired, dict):
        for i, r in enumerate(paired.get("ratios") or []):
            if not isinstance(r, dict):
                continue
            lo, med, hi = r.get("ci_low"), r.get("median"), r.get("ci_high")
            if _num(lo) and _num(med) and _num(hi) and not lo <= med <= hi:
                out.append(
                    (f"paired.ratios[{i}].median", f"{med} is outside its interval [{lo}, {hi}]")
                )
    return out


# -------------------------------------------------------------------------------------- files


def _locate(text: str, path: Sequence[Any]) -> int:
    """The line of ``path`` in an indented JSON document (best effort; 1 when not found)."""
    pos = 0
    for p in path:
        if isinstance(p, int):
            continue
        i = text.find(json.dumps(p) + ":", pos)
        if i < 0:
            break
        pos = i
    return text.count("\n", 0, pos) + 1


def _check_sidecar(rep: FileReport, doc: dict[str, Any], text: str, v: Validators) -> None:
    rep.sidecar = doc
    for path, msg in v.errors(doc, "export_sidecar"):
        rep.add(_locate(text, path), dotted(path), msg)
    onnx = doc.get("onnx") if isinstance(doc.get("onnx"), dict) else {}
    name = onnx.get("file")
    if not isinstance(name, str) or not name:
        return
    model = Path(rep.path).with_name(Path(rep.path).name[: -len(".json")])
    if not str(rep.path).endswith(".onnx.json") or not model.is_file():
        rep.sidecar_note = f"{model.name} not beside it (not compared)"
        return
    h = hashlib.sha256()
    with open(model, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    if onnx.get("sha256") != h.hexdigest():
        rep.add(
            _locate(text, ["onnx", "sha256"]),
            "onnx.sha256",
            f"{model.name} beside it has sha256 {h.hexdigest()[:16]}…: it is not the file "
            "this sidecar describes (changed or replaced)",
        )
    else:
        rep.sidecar_note = f"sha256 of {model.name} matches"


def check_file(path: str | Path, v: Validators) -> FileReport:
    rep = FileReport(str(path))
    p = Path(path)
    if not p.is_file():
        rep.add(0, "(file)", "no such file" if not p.exists() else "not a regular file")
        return rep
    data = p.read_bytes()
    if not data.strip():
        rep.add(0, "(file)", "empty: no records")
        return rep
    try:  # a whole JSON document: an export sidecar (a one-line records file is a record)
        doc = json.loads(data.decode("utf-8"))
    except ValueError:
        doc = None
    if isinstance(doc, dict) and doc.get("schema") == SIDECAR_SCHEMA:
        _check_sidecar(rep, doc, data.decode("utf-8"), v)
        return rep
    for n, raw, obj in integrity.scan(p):
        _check_line(rep, n, raw, obj, v)
    _judge_runs(rep)
    return rep


def _check_line(rep: FileReport, n: int, raw: bytes, obj: Any, v: Validators) -> None:
    if obj is None:
        cut = not raw.endswith(b"\n")
        rep.add(n, "(line)", "a cut last line (no newline)" if cut else "not a JSON line")
        return
    if not isinstance(obj, dict):
        rep.add(n, "(line)", f"a JSON {type(obj).__name__}, not a record object")
        return
    schema = obj.get("schema")
    if schema != RECORD_SCHEMA:
        what = "missing" if schema is None else f"{_short(schema)}"
        rep.add(n, "schema", f"{what}: not an edgeattn record (expected {RECORD_SCHEMA!r})")
        return
    kind = obj.get("kind")
    if kind is not None and kind not in KINDS:
        rep.add(n, "kind", f"{_short(kind)} is not a record kind ({', '.join(KINDS)})")
        return
    rep.kinds[kind or "isolated"] += 1
    for path, msg in v.errors(obj, branch_of(obj)):
        rep.add(n, dotted(path), msg)
    for where, msg in semantic_problems(obj):
        rep.add(n, where, msg)
    rid = obj.get("run_id")
    if not isinstance(rid, str):
        if kind != integrity.RUN_END:
            rep.no_run_id += 1
        return
    run = rep.runs.get(rid)
    if run is None:
        run = rep.runs[rid] = Run(rid, first_line=n)
    run.last_line = n
    if kind == integrity.RUN_END:
        if run.end is not None:
            rep.add(n, "kind", f"run {rid}: a second run_end (the first is line {run.end_line})")
        else:
            run.end, run.end_line = obj, n
    elif run.end is not None:
        run.after_end.append(n)
    else:
        run.lines.append(raw)


def _judge_runs(rep: FileReport) -> None:
    for r in rep.runs.values():
        if r.end is None:
            continue
        why = _edited(r)
        if why:
            r.state, r.detail = "edited", why
            rep.add(r.end_line, "run_end", f"run {r.run_id}: edited ({why})")
        else:
            r.state = "complete"
    resumed: dict[str, str] = {}
    for r in rep.runs.values():
        if r.state == "complete":
            for old in r.end.get("resumes") or []:  # type: ignore[union-attr]
                resumed.setdefault(old, r.run_id)
    for r in rep.runs.values():
        if r.end is not None:
            continue
        r.state = "partial"
        r.continued_by = resumed.get(r.run_id)
        if r.continued_by:
            r.detail = f"continued by the --resume run {r.continued_by}"
            continue
        r.detail = "no run_end: interrupted, a host failed, or the file was cut"
        rep.add(
            r.last_line,
            "run_id",
            f"run {r.run_id}: partial ({len(r.lines)} record(s), no run_end: interrupted, "
            "a host failed, or the file was cut after this line)",
        )


def _edited(r: Run) -> str:
    if r.end is None:
        return ""
    said, have = r.end.get("records"), len(r.lines)
    bits = []
    if said != have:
        bits.append(f"{have} record(s) before its run_end, which says {said}")
    elif r.end.get("sha256") != integrity.digest(r.lines):
        bits.append("the digest of its records differs from the run_end's: a record was changed")
    if r.after_end:
        bits.append(f"record(s) of the run after its run_end, line(s) {r.after_end[:5]}")
    return "; ".join(bits)


# ---------------------------------------------------------------------------------------- cli


def check_files(files: Iterable[str | Path]) -> list[FileReport]:
    v = Validators()
    return [check_file(f, v) for f in files]


def run_check(files: Sequence[str | Path], echo: Callable[[str], None] = print) -> int:
    """Check ``files``; print each problem then each file's summary; 0 when all are valid."""
    if not files:
        raise BenchError("report --check: no files given")
    reports = check_files(files)
    for rep in reports:
        for pr in rep.problems:
            echo(str(pr))
    for rep in reports:
        for line in rep.summary():
            echo(line)
    return 1 if any(rep.problems for rep in reports) else 0
