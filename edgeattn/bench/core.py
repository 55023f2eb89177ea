"""Bench machinery shared by ``bench``, ``sweep`` and ``profile``.

A *method* is a named attention block configuration (softmax, SimA at a fixed order, SimA with the
dynamic order, SOFT, XCA, ORT's fused softmax attention). A *job* is a method at one shape. Jobs are
exported (content-hash cached), turned into runtime specs, and measured by ``edgeattn.runtime``:
locally in a fresh ``python -m edgeattn.runtime`` subprocess per job, so each record's peak memory
belongs to that measurement alone and the torch-laden host process never pollutes it; or on a
remote device over SSH (``edgeattn.remote``). Either way the timing code is the same.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeattn.bench import methods as _methods
from edgeattn.bench.grid import grid_for
from edgeattn.bench.methods import BenchMethod
from edgeattn.defaults import OPSET
from edgeattn.errors import EXIT_OK, EXIT_RUN_FAILED, BenchError
from edgeattn.runtime.measure import run_defaults
from edgeattn.runtime.paired import GROUP_DEFAULTS

#: a bench method: one entry of the method table (``edgeattn.bench.methods``)
Method = BenchMethod
#: the method table, read live (a method registered later is seen everywhere)
METHODS = _methods.METHODS


def __getattr__(name: str) -> Any:
    """The derived method sets, computed from the table when read (so they include every
    registered method): DEFAULT_METHODS, OP_METHODS, FLOOR_METHODS, GRAPH_METHODS."""
    if name == "DEFAULT_METHODS":
        return _methods.default_methods()
    if name == "OP_METHODS":
        return _methods.of_kind("op")
    if name == "FLOOR_METHODS":
        return _methods.of_kind("floor")
    if name == "GRAPH_METHODS":
        return _methods.graph_models()
    raise AttributeError(name)


def parse_methods(spec: str | Sequence[str] | None) -> list[str]:
    """``--methods``: keys of the method table, or the sets all (every block), ops, floors."""
    table = _methods.METHODS
    if spec is None:
        return list(_methods.default_methods())
    items = spec.split(",") if isinstance(spec, str) else [s for x in spec for s in x.split(",")]
    sets = {
        "all": [k for k, m in table.items() if not m.is_graph],
        **{name: list(keys) for name, keys in _methods.sets().items()},
        "ops": list(_methods.of_kind("op")),
        "floors": list(_methods.of_kind("floor")),
    }
    out: list[str] = []
    for it in (s.strip() for s in items):
        if not it:
            continue
        if it in sets:
            out.extend(k for k in sets[it] if k not in out)
            continue
        if it not in table:
            raise BenchError(f"unknown method {it!r}; valid: {', '.join(table)}, {', '.join(sets)}")
        if it not in out:
            out.append(it)
    if not out:
        raise BenchError(f"no methods given; valid: {', '.join(table)}")
    return out


@dataclass(frozen=True)
class Shape:
    tokens: int
    dim: int
    heads: int
    batch: int = 1

    def __post_init__(self) -> None:
        for name in ("tokens", "dim", "heads", "batch"):
            v = getattr(self, name)
            if not isinstance(v, int) or v <= 0:
                raise BenchError(f"--{name} {v!r} must be a positive integer")
        if self.dim % self.heads:
            raise BenchError(
                f"--dim {self.dim} is not divisible by --heads {self.heads}; "
                f"head_dim must be an integer (try --heads {_divisor_near(self.dim, self.heads)})"
            )

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


def _divisor_near(n: int, h: int) -> int:
    divs = [d for d in range(1, n + 1) if n % d == 0]
    return min(divs, key=lambda d: abs(d - h))


_RUN = run_defaults()
_GROUP = GROUP_DEFAULTS
#: the Settings fields that are RunSpec fields (sent with every run)
RUNTIME_KNOBS = (
    "device", "intra_op_threads", "opt_level", "warmup", "min_runs", "max_runs", "min_time_s",
    "max_time_s", "profile", "profile_runs", "seed", "tries", "stability_tolerance",
)  # fmt: skip


#: the longest a ``--cooldown-within`` waits for the temperature when --cooldown gives no bound
COOLDOWN_MAX_S = 300.0


def cpus_request(text: str) -> list[int] | str:
    """``--cpus`` as the measure spec carries it: a list of core ids (checked here, and against
    this machine's usable cores by the caller of a local run) or a cluster name (``big``,
    ``little``, ``all``: resolved on the device). One-line ``BenchError`` on bad text."""
    from edgeattn.runtime.conditions import parse_cpus

    word = str(text).strip()
    if word in ("big", "little", "all"):
        return word
    try:
        got = parse_cpus(word)
    except ValueError as exc:
        msg = str(exc).splitlines()[0]
        raise BenchError(
            msg.replace("cpus ", "--cpus ", 1) if msg.startswith("cpus ") else msg
        ) from None
    if isinstance(got, str):
        return got
    return sorted(int(c) for c in got)


@dataclass(frozen=True)
class Settings:
    """What shapes a bench's measurements, host side. One name and one default per knob: the
    runtime knobs are the device runtime's ``RunSpec`` fields under their names, with its defaults
    (``edgeattn.runtime.measure.run_defaults``); the paired-group knobs are ``pair_`` + the group's
    field, with its defaults (``edgeattn.runtime.paired.GROUP_DEFAULTS``). Documented there once."""

    # the runtime's knobs (RunSpec): the isolated pass, one process per method
    device: str = _RUN["device"]
    intra_op_threads: int = _RUN["intra_op_threads"]  # 0 = ORT's default
    opt_level: str = _RUN["opt_level"]
    warmup: int = _RUN["warmup"]
    min_runs: int = _RUN["min_runs"]
    max_runs: int = _RUN["max_runs"]
    min_time_s: float = _RUN["min_time_s"]
    max_time_s: float = _RUN["max_time_s"]
    profile: bool = _RUN["profile"]
    profile_runs: int = _RUN["profile_runs"]
    seed: int = _RUN["seed"]
    tries: int = _RUN["tries"]  # isolated: latency as deployed and peak memory, never a ratio
    # the stability rule's tolerance, for the isolated tries and the paired groups alike
    stability_tolerance: float = _RUN["stability_tolerance"]
    opset: int = OPSET
    # the paired pass: all methods of a shape in one process, interleaved rounds per try; two
    # agreeing tries of >= pair_min_rounds rounds, then more rounds only while the widest ratio
    # interval is wider than ±pair_target_halfwidth and pair_budget_s is not spent
    paired: bool = True
    pair_min_rounds: int = _GROUP["min_rounds"]
    pair_max_rounds: int = _GROUP["max_rounds"]
    pair_min_time_s: float = _GROUP["min_time_s"]
    pair_max_time_s: float = _GROUP["max_time_s"]
    pair_tries: int = _GROUP["tries"]
    pair_target_halfwidth: float = _GROUP["target_halfwidth"]
    pair_budget_s: float = _GROUP["budget_s"]
    pair_profile: bool = True  # profile the table's profiled pair for the op-level table
    pair_profile_runs: int = _GROUP["profile_runs"]
    # device conditions (issue 23; None = the runtime's default, the field left out of the spec):
    # a round below freq_floor x the cores' max MHz is marked (0 disables); sustained_s runs one
    # paired group back to back for that long (no isolated pass, every round kept); cooldown_s
    # waits before each try, or with cooldown_within_c until the temperature is back within that
    # many °C of the start (at most cooldown_s, else COOLDOWN_MAX_S); cpus: "0,2-3", "big", ...
    freq_floor: float | None = None
    sustained_s: float | None = None
    cooldown_s: float | None = None
    cooldown_within_c: float | None = None
    cpus: str | None = None

    def __post_init__(self) -> None:
        for name in ("tries", "pair_tries"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                flag = "--tries" if name == "pair_tries" else name
                raise BenchError(f"{flag} {v!r} must be an integer >= 1 (e.g. 3)")
        if not self.pair_min_time_s > 0:
            raise BenchError(f"--pair-time {self.pair_min_time_s!r} must be > 0 seconds (e.g. 2)")
        if not 0 < self.stability_tolerance < 1:
            raise BenchError(
                f"stability_tolerance {self.stability_tolerance!r} must be in (0, 1), e.g. 0.05"
            )
        self._check_conditions()

    def _check_conditions(self) -> None:
        def bad(flag: str, v: Any, valid: str) -> BenchError:
            return BenchError(f"{flag} {v!r} is invalid; expected {valid}")

        def number(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v

        if self.freq_floor is not None and not (
            number(self.freq_floor) and 0 <= self.freq_floor <= 1
        ):
            raise bad(
                "--freq-floor", self.freq_floor, "a fraction in [0, 1], e.g. 0.9 (0 disables)"
            )
        if self.sustained_s is not None and not (number(self.sustained_s) and self.sustained_s > 0):
            raise bad("--sustained", self.sustained_s, "a duration > 0 such as 90s, 2m or 1.5m")
        if self.sustained_s is not None and not self.paired:
            raise BenchError("--sustained runs the paired group; drop --no-paired")
        if self.cooldown_s is not None and not (number(self.cooldown_s) and self.cooldown_s >= 0):
            raise bad("--cooldown", self.cooldown_s, "seconds >= 0, e.g. 30")
        w = self.cooldown_within_c
        if w is not None and not (number(w) and w > 0):
            raise bad("--cooldown-within", w, "degrees C > 0, e.g. 2")
        if self.cpus is not None:
            cpus_request(self.cpus)  # a bad list fails here, before any export

    def cooldown(self) -> dict[str, float] | None:
        """The group's ``cooldown`` field, or None."""
        if self.cooldown_within_c is not None:
            return {
                "until_within_c": float(self.cooldown_within_c),
                "max_s": float(self.cooldown_s if self.cooldown_s is not None else COOLDOWN_MAX_S),
            }
        if self.cooldown_s:
            return {"seconds": float(self.cooldown_s)}
        return None

    def group_fields(self) -> dict[str, Any]:
        """The conditions fields of a paired group spec (only those set)."""
        out: dict[str, Any] = {}
        if self.freq_floor is not None:
            out["freq_floor"] = float(self.freq_floor)
        if self.sustained_s is not None:
            out["sustained_s"] = float(self.sustained_s)
        cd = self.cooldown()
        if cd:
            out["cooldown"] = cd
        return out

    def spec_fields(self) -> dict[str, Any]:
        """The measure-spec level fields (``cpus``), only when set."""
        return {} if self.cpus is None else {"cpus": cpus_request(self.cpus)}

    def runtime_fields(self) -> dict[str, Any]:
        """The runtime knobs, as a ``RunSpec`` spells them (the same names)."""
        return {k: getattr(self, k) for k in RUNTIME_KNOBS}


@dataclass
class Job:
    method: Method
    shape: Shape
    extra: dict[str, Any] = field(default_factory=dict)  # per-job overrides (e.g. crossover)
    onnx_path: Path | None = None
    spec: dict[str, Any] = field(default_factory=dict)  # the export sidecar's spec section
    audit: dict[str, Any] = field(default_factory=dict)  # the export's op census
    cost: dict[str, Any] = field(default_factory=dict)  # FLOPs at this shape (models.cost)
    # export precision (edgeattn.export.precision); fp32 ids stay as they were
    precision: str = "fp32"
    precision_info: dict[str, Any] = field(default_factory=dict)  # the sidecar's "precision"

    @property
    def id(self) -> str:
        s = self.shape
        p = "" if self.precision == "fp32" else f"/{self.precision}"
        return f"{self.method.key}/N{s.tokens}/D{s.dim}/h{s.heads}/B{s.batch}{p}"

    @property
    def pair_key(self) -> str:
        """The member key in a paired group: the method, ``method@precision`` below fp32."""
        return (
            self.method.key if self.precision == "fp32" else f"{self.method.key}@{self.precision}"
        )

    def overrides(self) -> dict[str, Any]:
        ov = dict(self.method.overrides)
        ov.update(self.extra)
        if self.method.needs_grid:
            g = grid_for(self.shape.tokens)
            if g is None:
                raise BenchError(
                    f"{self.method.key} needs a token grid but --tokens {self.shape.tokens} has no H×W "
                    "factorisation with both sides >= 2; use e.g. a square token count"
                )
            ov.setdefault("grid", g)
        return ov


def default_cache_dir() -> Path:
    env = os.environ.get("EDGEATTN_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeattn" / "exports"


def prepare(
    jobs: Iterable[Job],
    settings: Settings,
    cache_dir: Path | None = None,
    on_progress: Callable[[str], None] | None = None,
) -> list[Job]:
    """Export each job's model (cached by content hash) and attach its path, spec and audit."""
    from edgeattn.export import export_onnx

    cache = Path(cache_dir or default_cache_dir())
    cache.mkdir(parents=True, exist_ok=True)
    done = []
    for job in jobs:
        s = job.shape
        ov = job.overrides()
        order = ov.pop("order", "auto")  # a method with an evaluation order names it here
        crossover = ov.pop("crossover", None)
        if on_progress:
            on_progress(f"export {job.id}")
        if job.method.is_graph:  # built here, not exported: float32 only
            if job.precision != "fp32":
                raise BenchError(f"{job.method.key} is a {job.method.kind} graph: float32 only")
            job.onnx_path, macs = job.method.build(job.method, s, settings.opset, cache)
            if macs is not None:
                job.cost = {"gflops": macs / 1e9, "newton_gflops": 0.0, "counted": "matmul"}
            job.spec, job.audit = {"opset": settings.opset}, {}
            done.append(job)
            continue
        res = export_onnx(
            job.method.model,
            opset=settings.opset,
            tokens=s.tokens,
            dim=s.dim,
            heads=s.heads,
            batch=s.batch,
            order=order,
            crossover=crossover,
            overrides=ov or None,
            cache_dir=cache,
            precision=job.precision,
            keep_fp32=(job.method.keep_fp32 or {}).get(job.precision),
            allow_degraded=True,  # measured and marked (meta.precision_info), not dropped
        )
        job.onnx_path = Path(res.path)
        job.spec, job.audit = res.spec, res.audit
        if job.precision != "fp32":
            job.precision_info = json.loads(Path(res.sidecar_path).read_text())["precision"]
        job.cost = _block_cost(job, order, crossover, ov)
        done.append(job)
    return done


def _block_cost(
    job: Job, order: str, crossover: int | None, overrides: dict[str, Any]
) -> dict[str, Any]:
    """FLOPs (one multiply-add = one FLOP) of the job's block at its shape, counted on the meta
    device by ``edgeattn.models.cost``; {} when it cannot be counted (it never fails a bench)."""
    from edgeattn.models.cost import count_cost

    s = job.shape
    name = job.method.model  # block_msa_fused is a registered block too (the same FLOPs)
    ov = dict(overrides, tokens=s.tokens, dim=s.dim, heads=s.heads)
    if "order" in job.method.overrides:
        ov["order"] = order
        if crossover is not None:
            ov["crossover"] = crossover
    try:
        c = count_cost(name, (s.batch, s.tokens, s.dim), **ov)
    except Exception:  # a cost is a nicety; the measurement is what matters
        return {}
    return {"gflops": c.gflops, "newton_gflops": c.newton_gflops, "counted": "matmul+conv"}


def job_meta(job: Job) -> dict[str, Any]:
    totals = job.audit.get("totals") or {}
    order = job.spec.get("order") or {}
    s = job.shape
    return {
        "name": job.method.model,
        "method": job.method.key,
        "label": job.method.label,
        "normaliser": job.method.normaliser,
        "order_policy": job.method.order_policy or job.method.overrides.get("order"),
        "order": order.get("resolved"),
        "tokens": s.tokens,
        "dim": s.dim,
        "heads": s.heads,
        "head_dim": s.head_dim,
        "batch": s.batch,
        "opset": job.spec.get("opset"),
        "ops": {k: totals.get(k, 0) for k in ("Softmax", "Exp", "ReduceL1", "MatMul", "If")},
        "fused_attention": totals.get("fused_attention", 0),
        "softmax_free": job.audit.get("softmax_free"),
        "gflops": job.cost.get("gflops"),
        "precision": job.precision,
        **({"precision_info": _precision_meta(job)} if job.precision != "fp32" else {}),
        **({"extra": job.extra} if job.extra else {}),
    }


def _precision_meta(job: Job) -> dict[str, Any]:
    """What shaped a precision variant and its error vs fp32 (from the export sidecar)."""
    p = job.precision_info
    v = p.get("verification") or {}
    keys = ("max_abs", "max_rel", "cosine_min", "cosine_mean", "top1_agreement", "degraded")
    return {
        "keep_fp32": p.get("keep_fp32"),
        "quantization": p.get("quantization"),
        "tool": p.get("tool"),
        "error_vs_fp32": {k: v[k] for k in keys if k in v},
        "quant_ops": (job.audit.get("quantization") or {}).get("totals"),
    }


def job_run_spec(job: Job, settings: Settings, model_ref: str | None = None) -> dict[str, Any]:
    assert job.onnx_path is not None
    s = job.shape
    if job.method.kind == "floor":
        inputs = {}  # static shapes, several inputs: the graph says them all
    elif job.method.kind == "op":
        inputs = _methods.op_inputs(s)
    else:
        inputs = {"x": [s.batch, s.tokens, s.dim]}
    return {
        "id": job.id,
        "model": model_ref or str(job.onnx_path),
        "meta": job_meta(job),
        "inputs": inputs,
        **settings.runtime_fields(),
    }


def shape_groups(jobs: Sequence[Job]) -> list[list[Job]]:
    """Jobs grouped by shape (in first-seen order): each group is measured paired."""
    groups: dict[Shape, list[Job]] = {}
    for j in jobs:
        groups.setdefault(j.shape, []).append(j)
    return list(groups.values())


def paired_specs(jobs: Sequence[Job], settings: Settings) -> list[dict[str, Any]]:
    """One runtime paired-group spec per shape with >= 2 methods (see ``bench.pairs``)."""
    from edgeattn.bench.pairs import group_spec

    out = []
    for grp in shape_groups(jobs):
        if len(grp) < 2:
            continue
        s = grp[0].shape
        spec = group_spec(
            f"paired/N{s.tokens}/D{s.dim}/h{s.heads}/B{s.batch}",
            [(j.pair_key, j.id) for j in grp],
            settings,
            meta={
                "tokens": s.tokens,
                "dim": s.dim,
                "heads": s.heads,
                "head_dim": s.head_dim,
                "batch": s.batch,
                "methods": [j.method.key for j in grp],
            },
        )
        # speed-up vs fp32 of each method's precision variants, from the same rounds
        fp32 = {j.method.key: j.id for j in grp if j.precision == "fp32"}
        for j in grp:
            if j.precision != "fp32" and j.method.key in fp32:
                spec["ratios"].append(
                    {
                        "name": f"speedup_vs_fp32/{j.method.key}/{j.precision}",
                        "num": fp32[j.method.key],
                        "den": j.id,
                    }
                )
        if any(j.precision != "fp32" for j in grp):
            spec["meta"]["precisions"] = [j.precision for j in grp]
        spec.update(settings.group_fields())
        if settings.sustained_s is not None:  # one try, back to back: no profiled pass
            spec["profile"] = []
        out.append(spec)
    return out


def measure_local(
    jobs: Sequence[Job],
    settings: Settings,
    out: Path | None,
    resume: bool = False,
    on_progress: Callable[[str], None] | None = None,
    timing: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """The local bench: each job alone in a fresh process (its latency and peak memory), then,
    per shape, all its methods paired in one process (the ratios)."""
    import time

    records: list[dict[str, Any]] = []
    t0 = time.monotonic()
    extra = settings.spec_fields()
    alone = [] if settings.sustained_s is not None else jobs  # sustained: the paired group only
    for i, job in enumerate(alone, 1):
        if on_progress:
            on_progress(f"measuring {job.id} alone ({i}/{len(jobs)})")
        records += run_local(
            [job_run_spec(job, settings)], out=out, resume=resume, spec_extra=extra
        )
    if timing is not None and alone:
        timing["isolated_s"] = time.monotonic() - t0
    t0 = time.monotonic()
    if settings.paired:
        for grp in shape_groups(jobs):
            specs = paired_specs(grp, settings)
            if not specs:
                continue
            if on_progress:
                how = (
                    f"sustained for {settings.sustained_s:g} s"
                    if settings.sustained_s is not None
                    else "paired, interleaved"
                )
                on_progress(
                    f"measuring {', '.join(j.method.key for j in grp)} {how} "
                    f"(N={grp[0].shape.tokens})"
                )
            runs = [job_run_spec(j, settings) for j in grp]
            records += run_local(runs, out=out, resume=resume, paired=specs, spec_extra=extra)
    if timing is not None:
        timing["paired_s"] = time.monotonic() - t0
    return records


def run_local(
    runs: Sequence[dict[str, Any]],
    out: Path | None,
    resume: bool = False,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    on_progress: Callable[[str], None] | None = None,
    paired: Sequence[dict[str, Any]] | None = None,
    spec_extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Measure each run in its own ``python -m edgeattn.runtime`` process (see module doc).

    With ``paired`` (runtime group specs over these runs' ids): one process measures only the
    groups, all their members' sessions side by side in interleaved rounds (``kind: "paired"``).
    ``spec_extra``: measure-spec level fields of every spec (``cpus``: the process's placement).
    """
    records: list[dict[str, Any]] = []
    env = dict(os.environ)
    env.pop("PYTHONSTARTUP", None)
    if paired:
        specs = [({"runs": list(runs), "paired": list(paired), "isolated": False}, "paired")]
    else:
        specs = [({"runs": [run]}, run.get("id")) for run in runs]
    for spec, _ in specs:
        spec.update(spec_extra or {})
    from edgeattn import integrity

    run_id = integrity.current()
    for spec, label in specs:
        if run_id:
            spec["run_id"] = run_id  # the host command's run, named in every record
        with tempfile.TemporaryDirectory(prefix="edgeattn-bench-") as td:
            spec_path = Path(td) / "spec.json"
            spec_path.write_text(json.dumps(spec))
            cmd = [sys.executable, "-m", "edgeattn.runtime", "measure", "--spec", str(spec_path)]
            if out is not None:
                cmd += ["--out", str(out)]
                if resume:
                    cmd.append("--resume")
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
            try:
                stdout, stderr = proc.communicate()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        got = [json.loads(line) for line in stdout.splitlines() if line.strip().startswith("{")]
        if proc.returncode not in (EXIT_OK, EXIT_RUN_FAILED):
            # 1 (e.g. the record could not be written to --out) or 2 is a failure even when a
            # record came back on stdout: say the runtime's own last line, never drop it
            last = (stderr.strip().splitlines() or ["(no output)"])[-1]
            if proc.returncode < 0:
                last = f"killed by signal {-proc.returncode}; {last}"
            raise BenchError(f"runtime failed on {label}: {last}")
        if on_progress and not got and resume:
            on_progress(f"skip {label} (already in {out})")
        for rec in got:
            records.append(rec)
            if on_record:
                on_record(rec)
    return records


def run_on_hosts(
    hosts: Sequence[str],
    jobs: Sequence[Job],
    settings: Settings,
    *,
    out: Path,
    ssh: Any = None,
    resume: bool = False,
    console: Any = None,
    remote_python: str | None = None,
    remote_dir: str | None = None,
    remote_cache: str | None = None,
    keep_remote: bool = False,
) -> list[dict[str, Any]]:
    """The same measurements on SSH hosts (in parallel, one thread per host) with the device
    runtime; records stream into ``out`` tagged with the host. Only numpy + onnxruntime are
    needed on the device: the models were exported here. ``ssh``: ``edgeattn.remote.SSHOptions``."""
    from edgeattn.errors import RemoteError
    from edgeattn.remote import run_many

    if resume:
        raise BenchError("--resume is not supported with --host yet; use a new --out file")
    model_files: dict[str, str] = {}
    runs = []
    for j in jobs:
        assert j.onnx_path is not None
        ref = j.onnx_path.name  # content-hashed names from the export cache: unique per model
        model_files[ref] = str(j.onnx_path)
        runs.append(job_run_spec(j, settings, model_ref=ref))

    def progress(host_or_msg: Any, msg: Any = None) -> None:
        if console is not None:
            console.print(f"[dim]{host_or_msg if msg is None else f'{host_or_msg}: {msg}'}[/]")

    spec: dict[str, Any] = {"runs": runs, **settings.spec_fields()}
    if settings.paired:
        spec["paired"] = paired_specs(jobs, settings)
    if settings.sustained_s is not None and spec.get("paired"):
        spec["isolated"] = False  # sustained: the paired group only
    outcomes = run_many(
        list(hosts),
        spec,
        model_files,
        out=str(out),
        ssh=ssh,
        remote_python=remote_python,
        remote_dir=remote_dir,
        remote_cache=remote_cache,
        keep_remote=keep_remote,
        on_progress=progress,
    )
    records: list[dict[str, Any]] = []
    errors = []
    for o in outcomes:
        if o.result is not None:
            records += o.result.records
        if o.error is not None:
            errors.append(
                f"{o.host}: {str(o.error).splitlines()[0] if str(o.error) else type(o.error).__name__}"
            )
    if errors and not records:
        raise RemoteError("; ".join(errors))
    if errors and console is not None:
        for e in errors:
            console.print(f"[red]error:[/] {e}")
    return records
