"""One measurement: session, inputs, first run, warm-up, timed runs, stats, memory, profile.

The protocol follows TFLite's ``benchmark_model`` and ``onnxruntime_perf_test``:

1. inputs are generated once from the model's input metadata with ``numpy.random.default_rng(seed)``;
2. the session is created (``create_ms``) and run once (``first_run``), both reported apart;
3. ``warmup`` runs are made and not counted;
4. timed runs (``time.perf_counter`` around each ``session.run``) continue until both ``min_runs``
   and ``min_time_s`` are reached, and stop at ``max_runs`` or ``max_time_s`` whichever comes first;
5. the raw latencies (ms) and their stats are recorded with memory figures;
6. steps 4-5 are one *try*; up to ``tries`` tries are made until two consecutive tries' medians
   agree within ``stability_tolerance`` (the stability rule, see ``stats.py``); the record keeps
   every try and the verdict, and the stats are over the raw latencies of all tries;
7. with ``profile: true`` a *separate* profiled session is run afterwards for per-block times: the
   headline latency always comes from the unprofiled session.

``measure(spec)`` takes one run spec (a dict, see :class:`RunSpec`) and returns one record (see
``records.py``). numpy and onnxruntime are imported inside functions.
"""

from __future__ import annotations

import functools
import gc
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import records
from .session import (
    CPU_PROVIDER,
    DEVICES,
    EXECUTION_MODES,
    FALLBACK_POLICIES,
    OPT_LEVELS,
    RuntimeSpecError,
    apply_fallback_policy,
    create_session,
    probe_node_providers,
)

Log = Callable[[str], None]

_OPT_EXTERNAL_INIT = "session.optimized_model_external_initializers_file_name"
_RAW_DECIMALS = 4  # raw latencies are kept to 0.1 µs; stats are computed from the kept values
_STAT_DECIMALS = 6

_NUMPY_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int16)": "int16",
    "tensor(int8)": "int8",
    "tensor(uint64)": "uint64",
    "tensor(uint32)": "uint32",
    "tensor(uint16)": "uint16",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class RunSpec:
    """One measurement request, validated once (``RuntimeSpecError`` names the bad value).

    Its defaults are the one default of each knob: the host's ``bench.core.Settings`` reads them
    (``run_defaults()``), so a spec without a knob and a bench without the option agree."""

    model: str
    id: Optional[str] = None
    meta: Dict[str, Any] = field(default_factory=dict)
    inputs: Dict[str, List[Optional[int]]] = field(default_factory=dict)
    device: str = "cpu"
    provider_options: Dict[str, Any] = field(default_factory=dict)
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    execution_mode: str = "sequential"
    opt_level: str = "all"
    fallback: str = "error"
    warmup: int = 3
    min_runs: int = 10
    max_runs: int = 1000
    min_time_s: float = 0.5
    max_time_s: float = 10.0
    profile: bool = False
    profile_runs: int = 3
    seed: int = 0
    cv_threshold: float = 0.1
    tries: int = 1  # the isolated pass: latency as deployed; ratios come from paired groups
    stability_tolerance: float = 0.05
    int_range: List[int] = field(default_factory=lambda: [0, 1])

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def field_names(cls) -> List[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, spec: Dict[str, Any], base_dir: Optional[str] = None) -> RunSpec:
        """Build from a spec dict; relative ``model`` paths are resolved against ``base_dir``."""
        if not isinstance(spec, dict):
            raise RuntimeSpecError(f"a run spec must be a JSON object, got {type(spec).__name__}")
        names = cls.field_names()
        unknown = sorted(set(spec) - set(names))
        if unknown:
            raise RuntimeSpecError(
                f"unknown field {unknown[0]!r}; valid fields: {', '.join(names)}"
            )
        if "model" not in spec:
            raise RuntimeSpecError("field 'model' is missing: give the path to an .onnx file")
        kwargs = dict(spec)
        model = kwargs["model"]
        if isinstance(model, str) and model and base_dir and not os.path.isabs(model):
            kwargs["model"] = os.path.normpath(os.path.join(base_dir, model))
        for key in ("meta", "inputs", "provider_options"):
            if kwargs.get(key) is None and key in kwargs:
                del kwargs[key]
        if isinstance(kwargs.get("int_range"), tuple):
            kwargs["int_range"] = list(kwargs["int_range"])
        return cls(**kwargs)

    def validate(self) -> None:
        def bad(name: str, value: Any, valid: str) -> RuntimeSpecError:
            return RuntimeSpecError(f"{name} {value!r} is invalid; expected {valid}")

        if not isinstance(self.model, str) or not self.model:
            raise bad("model", self.model, "a path to an .onnx file")
        if self.id is not None and not isinstance(self.id, str):
            raise bad("id", self.id, "a string")
        if not isinstance(self.meta, dict):
            raise bad("meta", self.meta, "an object")
        if not isinstance(self.provider_options, dict):
            raise bad("provider_options", self.provider_options, "an object")
        if not isinstance(self.device, str) or self.device not in DEVICES:
            raise RuntimeSpecError(
                f"device {self.device!r} is not one of: {', '.join(sorted(DEVICES))}"
            )
        if self.opt_level not in OPT_LEVELS:
            raise RuntimeSpecError(
                f"opt_level {self.opt_level!r} is not one of: {', '.join(OPT_LEVELS)}"
            )
        if self.execution_mode not in EXECUTION_MODES:
            raise RuntimeSpecError(
                f"execution_mode {self.execution_mode!r} is not one of: "
                f"{', '.join(EXECUTION_MODES)}"
            )
        if self.fallback not in FALLBACK_POLICIES:
            raise RuntimeSpecError(
                f"fallback {self.fallback!r} is not one of: {', '.join(FALLBACK_POLICIES)}"
            )
        if not isinstance(self.inputs, dict):
            raise bad(
                "inputs", self.inputs, 'an object {input name: [dims]}, e.g. {"x": [1, 197, 192]}'
            )
        for name, dims in self.inputs.items():
            if not isinstance(dims, list) or not all(
                d is None or (_is_int(d) and (d >= 1 or d == -1)) for d in dims
            ):
                raise bad(
                    f"inputs[{name!r}]",
                    dims,
                    "a list of dims (integers >= 1; null or -1 keeps the model's fixed dim)",
                )
        for name in ("intra_op_threads", "inter_op_threads", "warmup"):
            v = getattr(self, name)
            if not _is_int(v) or v < 0:
                raise bad(name, v, "an integer >= 0")
        for name in ("min_runs", "max_runs", "profile_runs", "tries"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise bad(name, v, "an integer >= 1")
        if self.max_runs < self.min_runs:
            raise bad("max_runs", self.max_runs, f"an integer >= min_runs ({self.min_runs})")
        for name in ("min_time_s", "max_time_s"):
            v = getattr(self, name)
            if not _is_num(v) or v < 0:
                raise bad(name, v, "a number of seconds >= 0")
        if self.max_time_s <= 0:
            raise bad("max_time_s", self.max_time_s, "a number of seconds > 0")
        if self.max_time_s < self.min_time_s:
            raise bad("max_time_s", self.max_time_s, f"a number >= min_time_s ({self.min_time_s})")
        if not isinstance(self.profile, bool):
            raise bad("profile", self.profile, "true or false")
        if not _is_int(self.seed) or self.seed < 0:
            raise bad("seed", self.seed, "an integer >= 0")
        if not _is_num(self.stability_tolerance) or not 0 < self.stability_tolerance < 1:
            raise bad(
                "stability_tolerance", self.stability_tolerance, "a number in (0, 1), e.g. 0.05"
            )
        if not _is_num(self.cv_threshold) or self.cv_threshold <= 0:
            raise bad("cv_threshold", self.cv_threshold, "a number > 0 (e.g. 0.1)")
        ir = self.int_range
        if not (
            isinstance(ir, list) and len(ir) == 2 and all(_is_int(v) for v in ir) and ir[0] <= ir[1]
        ):
            raise bad("int_range", ir, "[low, high] integers with low <= high (inclusive)")

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    def protocol(self) -> Dict[str, Any]:
        return {
            "warmup": self.warmup,
            "min_runs": self.min_runs,
            "max_runs": self.max_runs,
            "min_time_s": self.min_time_s,
            "max_time_s": self.max_time_s,
            "cv_threshold": self.cv_threshold,
            "tries": self.tries,
            "stability_tolerance": self.stability_tolerance,
            "profile_runs": self.profile_runs if self.profile else None,
            "timer": "time.perf_counter",
            "pass": "isolated",  # this model alone in a fresh process: its latency and memory
        }


# ---------------------------------------------------------------------------------------- inputs


def resolve_shape(name: str, model_shape: List[Any], given: Optional[List[Any]]) -> List[int]:
    """Concrete shape of one input from the model's (possibly symbolic) shape and the spec's."""

    def dynamic(d: Any) -> bool:
        return not _is_int(d) or d <= 0

    def example() -> str:
        dims = [str(d) if not dynamic(d) else f"<{d or 'n'}>" for d in model_shape]
        return f'"inputs": {{"{name}": [{", ".join(dims)}]}}'

    if given is None:
        for i, d in enumerate(model_shape):
            if dynamic(d):
                label = f" ({d!r})" if isinstance(d, str) else ""
                raise RuntimeSpecError(
                    f"input {name!r} dim {i}{label} is dynamic and has no size: give it in the "
                    f"spec, e.g. {example()}"
                )
        return [int(d) for d in model_shape]
    if len(given) != len(model_shape):
        raise RuntimeSpecError(
            f"input {name!r}: shape {given} has {len(given)} dims, the model's has "
            f"{len(model_shape)} ({model_shape})"
        )
    shape = []
    for i, (g, d) in enumerate(zip(given, model_shape)):  # noqa: B905 (3.8)
        if g is None or g == -1:
            if dynamic(d):
                raise RuntimeSpecError(
                    f"input {name!r} dim {i} ({d!r}) is dynamic: give its size, e.g. {example()}"
                )
            shape.append(int(d))
        else:
            if not dynamic(d) and g != d:
                raise RuntimeSpecError(
                    f"input {name!r} dim {i}: the model fixes it to {d}, the spec gives {g}"
                )
            shape.append(int(g))
    return shape


def make_inputs(
    session: Any,
    shapes: Optional[Dict[str, List[Any]]] = None,
    seed: int = 0,
    int_range: Tuple[int, int] = (0, 1),
) -> Tuple[Dict[str, Any], Dict[str, Dict[str, Any]]]:
    """Feeds generated once with ``default_rng(seed)`` in the model's input order.

    Floats: standard normal; integers: uniform in ``int_range`` (inclusive); bool: fair coin.
    Returns (feeds, {name: {shape, dtype}}).
    """
    import numpy as np

    shapes = dict(shapes or {})
    metas = session.get_inputs()
    names = [m.name for m in metas]
    unknown = [n for n in shapes if n not in names]
    if unknown:
        raise RuntimeSpecError(
            f"inputs names {unknown[0]!r}, which the model does not have; its inputs: "
            f"{', '.join(names)}"
        )
    rng = np.random.default_rng(seed)
    feeds: Dict[str, Any] = {}
    desc: Dict[str, Dict[str, Any]] = {}
    for m in metas:
        dtype = _NUMPY_DTYPES.get(m.type)
        if dtype is None:
            raise RuntimeSpecError(
                f"input {m.name!r} has type {m.type}, which cannot be generated; supported: "
                f"{', '.join(sorted(_NUMPY_DTYPES))}"
            )
        shape = resolve_shape(m.name, list(m.shape), shapes.get(m.name))
        if dtype == "bool":
            arr = rng.random(shape) < 0.5
        elif dtype.startswith(("int", "uint")):
            arr = rng.integers(int_range[0], int_range[1] + 1, size=shape).astype(dtype)
        else:
            arr = rng.standard_normal(shape).astype(dtype)
        feeds[m.name] = np.ascontiguousarray(arr)
        desc[m.name] = {"shape": shape, "dtype": dtype}
    return feeds, desc


# ----------------------------------------------------------------------------------------- stats


def run_defaults() -> Dict[str, Any]:
    """{knob: its default} of :class:`RunSpec` (the knobs with a plain default)."""
    from dataclasses import MISSING

    return {f.name: f.default for f in fields(RunSpec) if f.default is not MISSING}


def stats(raw_ms: List[float], cv_threshold: float = 0.1) -> Dict[str, Any]:
    """Summary of per-run latencies (ms). ``std`` is the sample std (ddof=1; 0 for one run);
    percentiles use linear interpolation; ``low_cv`` is ``cv <= cv_threshold`` (a spread flag,
    not a stability verdict: that is ``stability.verdict``, from the tries)."""
    import numpy as np

    a = np.asarray(raw_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no latencies to summarise")
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    p50, p90, p99 = (float(v) for v in np.percentile(a, [50, 90, 99]))
    cv = std / mean if mean > 0 else None
    r = _round_stat
    return {
        "runs": int(a.size),
        "median": r(p50),
        "mean": r(mean),
        "std": r(std),
        "min": r(float(a.min())),
        "max": r(float(a.max())),
        "p90": r(p90),
        "p99": r(p99),
        "cv": r(cv) if cv is not None else None,
        "low_cv": bool(cv is not None and cv <= cv_threshold),
        "total_s": r(float(a.sum()) / 1e3),
    }


def _round_stat(x: float) -> float:
    return round(x, _STAT_DECIMALS)


def timed_runs(
    run: Callable[[], Any],
    min_runs: int,
    max_runs: int,
    min_time_s: float,
    max_time_s: float,
) -> Tuple[List[float], str]:
    """Run until min_runs AND min_time_s, capped by max_runs and max_time_s; (ms list, reason)."""
    clock = time.perf_counter
    raw: List[float] = []
    start = clock()
    while True:
        t0 = clock()
        run()
        t1 = clock()
        raw.append((t1 - t0) * 1e3)
        n, elapsed = len(raw), t1 - start
        if n >= max_runs:
            return raw, "max_runs"
        if elapsed >= max_time_s:
            return raw, "max_time_s"
        if n >= min_runs and elapsed >= min_time_s:
            return raw, "min_reached"


# ---------------------------------------------------------------------------------------- memory


def _proc_status() -> Dict[str, int]:
    out: Dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1])  # kB
    except Exception:
        pass
    return out


class MemoryProbe:
    """Current and peak RSS in MiB, by the best method this platform offers.

    Linux: /proc/self/status VmRSS and VmHWM, the peak reset per measurement through
    /proc/self/clear_refs when the kernel allows (``peak_scope: "run"``). Otherwise psutil for the
    current RSS and ``resource.getrusage`` ru_maxrss (KiB on Linux, bytes on macOS) for the peak,
    which is the whole process's high-water mark (``peak_scope: "process"``).
    """

    def __init__(self) -> None:
        self.procfs = "VmRSS" in _proc_status()
        self.psutil = None
        if not self.procfs:
            try:
                import psutil  # type: ignore[import-not-found]

                self.psutil = psutil.Process()
            except Exception:
                self.psutil = None
        self.peak_scope = "process"

    def reset_peak(self) -> None:
        if not self.procfs:
            return
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.peak_scope = "run"
        except Exception:
            self.peak_scope = "process"

    def rss_mb(self) -> Optional[float]:
        if self.procfs:
            kb = _proc_status().get("VmRSS")
            return kb / 1024.0 if kb is not None else None
        if self.psutil is not None:
            try:
                return self.psutil.memory_info().rss / 2**20
            except Exception:
                return None
        return None

    def peak_mb(self) -> Optional[float]:
        if self.procfs:
            kb = _proc_status().get("VmHWM")
            if kb is not None:
                return kb / 1024.0
        if self.psutil is not None:
            peak = getattr(self.psutil.memory_info(), "peak_wset", None)  # Windows
            if peak:
                return peak / 2**20
        try:
            import resource

            maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024.0
        except Exception:
            return None

    def method(self) -> str:
        if self.procfs:
            return "procfs"  # VmRSS / VmHWM
        if self.psutil is not None:
            return "psutil+getrusage"
        return "getrusage"


def round_mb(v: Optional[float]) -> Optional[float]:
    """A memory figure in MB as records hold it (2 decimals), or None."""
    return round(v, 2) if v is not None else None


# -------------------------------------------------------------------------------------- placement


def placement(request: Any) -> Optional[Dict[str, Any]]:
    """The measure spec's ``cpus`` (a list of core ids, or ``"0,2-3"``, ``"big"``, ``"little"``,
    ``"all"``: all the cores this process may use) as ``{"cpus": [...], "request": text}``, or
    None when not asked. ``RuntimeSpecError`` (one line) on bad text, a core this process cannot
    use, or a platform without ``os.sched_setaffinity``."""
    if request is None:
        return None
    from . import conditions

    try:
        cpus = conditions.parse_cpus(request)
    except ValueError as exc:
        raise RuntimeSpecError(str(exc)) from None
    if not hasattr(os, "sched_setaffinity"):
        raise RuntimeSpecError(
            f"cpus {request!r} cannot be applied: this platform ({sys.platform}) has no "
            "sched_setaffinity (Linux only); leave cpus out"
        )
    usable = conditions.usable_cpus()
    if isinstance(request, str) and request.strip().lower() == "all":
        cpus = usable
    missing = [c for c in cpus if c not in usable]
    if missing:
        raise RuntimeSpecError(
            f"cpus {request!r} names core(s) {conditions.cpu_list_text(missing)} this process "
            f"cannot run on; usable cores: {conditions.cpu_list_text(usable)}"
        )
    text = request.strip() if isinstance(request, str) else ",".join(str(c) for c in cpus)
    return {"cpus": cpus, "request": text}


def apply_placement(place: Optional[Dict[str, Any]], specs: List[RunSpec]) -> None:
    """Pin this process (and the ORT threads it starts later) to ``place["cpus"]``; runs that
    leave ``intra_op_threads`` at 0 get one intra-op thread per core."""
    if place is None:
        return
    os.sched_setaffinity(0, place["cpus"])  # type: ignore[attr-defined]
    for rs in specs:
        if rs.intra_op_threads == 0:
            rs.intra_op_threads = len(place["cpus"])


def placement_record(place: Optional[Dict[str, Any]], rec: Dict[str, Any]) -> Any:
    """``rec["placement"]``: the cores, the request as given and the record's intra-op threads."""
    if place is None:
        return None
    session = rec.get("session") or {}
    return {
        "cpus": list(place["cpus"]),
        "request": place["request"],
        "intra_op_threads": session.get("intra_op_threads"),
    }


# ---------------------------------------------------------------------------------------- measure

_FINGERPRINT: Optional[Dict[str, Any]] = None


def device_fingerprint(refresh: bool = False) -> Dict[str, Any]:
    """The sysinfo fingerprint, computed once per process (it runs a few system tools)."""
    global _FINGERPRINT
    if _FINGERPRINT is None or refresh:
        from . import sysinfo

        _FINGERPRINT = sysinfo.fingerprint()
    return _FINGERPRINT


def _run_id(rs: RunSpec) -> str:
    return rs.id or os.path.splitext(os.path.basename(rs.model))[0]


def run_key(rs: RunSpec, model_sha256: Optional[str]) -> str:
    return records.measurement_key(model_sha256, rs.to_dict())


def spec_key(rs: RunSpec) -> Optional[str]:
    """The record key of a run spec (hashes the model file); None when the file is unreadable."""
    try:
        return run_key(rs, records.sha256_file(rs.model))
    except OSError:
        return None


def measure(
    spec: Any,
    *,
    base_dir: Optional[str] = None,
    raise_errors: bool = False,
    log: Optional[Log] = None,
) -> Dict[str, Any]:
    """Measure one run spec (dict or :class:`RunSpec`) and return its record.

    A bad spec raises ``RuntimeSpecError`` before anything runs. A failure while measuring (missing
    file, unavailable provider, ORT error) gives an error record (``status: "error"``) unless
    ``raise_errors``.
    """
    rs = spec if isinstance(spec, RunSpec) else RunSpec.from_dict(spec, base_dir=base_dir)
    say: Log = log or (lambda msg: None)
    from . import __version__, sysinfo

    rec = records.new_record(
        id=_run_id(rs),
        meta=dict(rs.meta),
        seed=rs.seed,
        protocol=rs.protocol(),
        session=_session_block(rs, None),
        model={"path": os.path.basename(rs.model), "sha256": None, "bytes": None, "opset": None},
        runtime_version=__version__,
        notes=[],
    )
    rec["key"] = run_key(rs, None)
    try:
        rec["device"] = device_fingerprint()
        if not os.path.isfile(rs.model):
            raise FileNotFoundError(f"model file not found: {rs.model}")
        rec["model"] = records.model_record(rs.model)
        rec["key"] = run_key(rs, rec["model"]["sha256"])
        before = sysinfo.conditions()
        _measure_into(rec, rs, say)
        rec["conditions"] = {"before": before, "after": sysinfo.conditions()}
    except Exception as exc:
        if raise_errors:
            raise
        rec["status"] = "error"
        rec["error"] = records.one_line(exc)
        rec["error_type"] = type(exc).__name__
        say(f"error: {rec['error']}")
    if not rec["notes"]:
        rec["notes"] = None
    return rec


def _session_block(rs: RunSpec, info: Any) -> Dict[str, Any]:
    block: Dict[str, Any] = {
        "device": rs.device,
        "provider": DEVICES.get(rs.device),
        "providers_requested": None,
        "providers_session": None,
        "node_providers": None,
        "node_providers_method": None,
        "fallback_policy": rs.fallback,
        "fallback": None,
        "intra_op_threads": rs.intra_op_threads,
        "inter_op_threads": rs.inter_op_threads,
        "execution_mode": rs.execution_mode,
        "opt_level": rs.opt_level,
        "provider_options": dict(rs.provider_options),
        "create_ms": None,
        "options": None,
    }
    if info is not None:
        d = info.describe()
        for k in (
            "providers_requested",
            "providers_session",
            "node_providers",
            "node_providers_method",
            "fallback",
            "create_ms",
            "options",
        ):
            block[k] = d[k]
    return block


def session_kwargs(rs: RunSpec) -> Dict[str, Any]:
    """The session knobs of ``rs`` as ``create_session``'s keyword arguments."""
    return {
        "intra_op_threads": rs.intra_op_threads,
        "inter_op_threads": rs.inter_op_threads,
        "execution_mode": rs.execution_mode,
        "opt_level": rs.opt_level,
        "provider_options": dict(rs.provider_options),
        "fallback": rs.fallback,
    }


def _measure_into(rec: Dict[str, Any], rs: RunSpec, say: Log) -> None:
    # Long because the isolated protocol (session, first run, warm-up, tries, stats, memory,
    # profile) fills one record in order; the steps share its state.
    mem = MemoryProbe()
    gc.collect()
    mem.reset_peak()
    rss_before = mem.rss_mb()

    say(f"creating {rs.device} session for {os.path.basename(rs.model)}")
    info = create_session(rs.model, rs.device, **session_kwargs(rs))
    rss_create = mem.rss_mb()
    sess = info.session
    feeds, desc = make_inputs(sess, rs.inputs, rs.seed, (rs.int_range[0], rs.int_range[1]))
    rec["inputs"] = desc

    if info.node_providers is None and info.provider != CPU_PROVIDER:
        say(
            "node placement: probing with one profiled run (this onnxruntime has no assignment API)"
        )
        info.node_providers = probe_node_providers(rs.model, feeds, rs.device, **session_kwargs(rs))
        info.node_providers_method = "profile_probe"
        rec["notes"].append("placement probed with a second session; memory peak includes it")
    rec["session"] = _session_block(rs, info)  # an error record still says where nodes went
    apply_fallback_policy(info, rs.fallback)
    rec["notes"].extend(info.notes)
    rec["session"] = _session_block(rs, info)

    t0 = time.perf_counter()
    sess.run(None, feeds)
    first_ms = (time.perf_counter() - t0) * 1e3
    say(f"session {info.create_ms:.1f} ms, first run {first_ms:.2f} ms")

    warm: List[float] = []
    for _ in range(rs.warmup):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        warm.append((time.perf_counter() - t0) * 1e3)

    rss_timed = mem.rss_mb()
    from . import intervals as _stats

    raw = []
    tries: List[Dict[str, Any]] = []
    stab: Dict[str, Any] = {}
    while True:
        got, reason = timed_runs(
            functools.partial(sess.run, None, feeds),
            rs.min_runs,
            rs.max_runs,
            rs.min_time_s,
            rs.max_time_s,
        )
        raw.extend(got)
        tries.append(
            {
                "runs": len(got),
                "median": round(_stats.median(got), _STAT_DECIMALS),
                "stop_reason": reason,
            }
        )
        stab = _stats.stability(
            [{"median": t["median"]} for t in tries], rs.tries, rs.stability_tolerance
        )
        if stab["verdict"] != "pending":
            break
    rss_after = mem.rss_mb()
    peak = mem.peak_mb()
    raw = [round(v, _RAW_DECIMALS) for v in raw]
    st = stats(raw, rs.cv_threshold)
    rec["protocol"]["stop_reason"] = reason
    rec["latency_ms"] = {
        "first_run": round(first_ms, _RAW_DECIMALS),
        "warmup": rs.warmup,
        "warmup_raw": [round(v, _RAW_DECIMALS) for v in warm],
        "runs": st["runs"],
        "median": st["median"],
        "mean": st["mean"],
        "std": st["std"],
        "min": st["min"],
        "max": st["max"],
        "p90": st["p90"],
        "p99": st["p99"],
        "cv": st["cv"],
        "low_cv": st["low_cv"],
        "total_s": st["total_s"],
        "tries": tries,
        "stability": stab,
        "raw": raw,
    }
    rec["throughput_per_s"] = 1e3 / st["mean"] if st["mean"] > 0 else None
    batch = rs.meta.get("batch")
    if _is_int(batch) and rec["throughput_per_s"] is not None:
        rec["samples_per_s"] = batch * rec["throughput_per_s"]
    growth = rss_after - rss_timed if rss_after is not None and rss_timed is not None else None
    rec["memory"] = {
        "rss_before_mb": round_mb(rss_before),
        "rss_after_create_mb": round_mb(rss_create),
        "rss_before_timed_mb": round_mb(rss_timed),
        "rss_after_mb": round_mb(rss_after),
        "peak_rss_mb": round_mb(peak),
        "growth_mb": round_mb(growth),
        "method": mem.method(),
        "peak_scope": mem.peak_scope,
    }
    cv = "-" if st["cv"] is None else f"{st['cv']:.3f}"
    say(
        f"{st['runs']} runs ({reason}): median {st['median']:.3f} ms, p90 {st['p90']:.3f} ms, "
        f"cv {cv}, {_stats.verdict_text(stab)}"
    )

    del sess, info
    gc.collect()
    if rs.profile:
        rec["profile"] = profile_session(rs, feeds, say)
        if rec["session"]["node_providers"] is None:
            rec["session"]["node_providers"] = rec["profile"]["node_providers"]
            rec["session"]["node_providers_method"] = "profile"


def profile_session(rs: RunSpec, feeds: Dict[str, Any], say: Log) -> Dict[str, Any]:
    """Per-block times from a separate profiled session (first run + warm-up skipped).

    With optimisation on, the session also writes the optimised graph it runs, so fused nodes are
    attributed to the original nodes they replaced (``graph.fusion_origins``); if that cannot be
    had, attribution falls back to node names and ``profile.attribution.graph_error`` says why.
    """
    from . import graph as _graph
    from . import profile as _profile

    tmp = tempfile.mkdtemp(prefix="edgeattn-profile-")
    try:
        opt_path = None if rs.opt_level == "disable" else os.path.join(tmp, "optimized.onnx")
        kwargs = dict(
            enable_profiling=True,
            profile_prefix=os.path.join(tmp, "ort"),
            check_placement=False,
            **session_kwargs(rs),
        )
        graph_error = None
        try:
            info = create_session(
                rs.model,
                rs.device,
                optimized_model_path=opt_path,
                # weights go to a side file: only the node list is read back
                config_entries={_OPT_EXTERNAL_INIT: "optimized.onnx.data"} if opt_path else None,
                **kwargs,
            )
        except Exception as exc:  # e.g. an EP with compiled nodes cannot save its graph
            if opt_path is None:
                raise
            graph_error = f"optimised graph not saved: {str(exc).splitlines()[0][:200]}"
            say(f"profile: {graph_error}; attributing by node names")
            opt_path = None
            info = create_session(rs.model, rs.device, **kwargs)
        sess = info.session
        skip = 1 + rs.warmup
        for _ in range(skip + rs.profile_runs):
            sess.run(None, feeds)
        path = sess.end_profiling()
        del sess, info
        origins = None
        if graph_error is None:
            origins, graph_error = _graph.fusion_origins(rs.model, opt_path)
        summary = _profile.summarize_file(path, skip_runs=skip, origins=origins)
        summary["opt_level"] = rs.opt_level
        summary["attribution"]["graph_error"] = graph_error
        att = summary["attribution"]
        say(
            f"profile: {summary['runs']} runs, node time {summary['total_node_ms']:.3f} ms of "
            f"{summary['wall_ms'] or 0:.3f} ms wall; {att['top_share'] or 0:.1%} in (top) "
            f"(attribution by {att['method']}, {att['fused_nodes']} fused nodes)"
        )
        return summary
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
