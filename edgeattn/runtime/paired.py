"""Paired, interleaved measurement: several models timed in rounds inside one process.

A ratio between two methods measured in two separate processes at two different times carries the
machine's drift between them (another tenant, a governor step, thermal throttling): on a shared
2-core machine the same softmax/SimA ratio came out anywhere from 0.60x to 1.64x in six runs. Here
all members of a *group* get their sessions created, their first run and warm-up done, and then run
in rounds: in each round every member runs once, in an order shuffled per round (seeded), so drift
hits all of them alike and cancels in the per-round ratio. The record keeps every round's times.

A group is measured in up to ``tries`` tries of ``min_rounds``.. rounds each (bounded in time); the
stability rule (``stats.stability``) stops as soon as two consecutive tries' median ratios agree
within ``tolerance``. Ratios are summarised over the rounds of all tries (median of per-round
ratios, order-statistic 95 % interval). Optionally some members also get a profiled pass (ORT's
profiler, separate sessions) for the op-level breakdown.

Between rounds (outside every member's timed span) ``conditions.RoundLog`` samples the device's
conditions: each round gets ``round_conditions`` (temperature, lowest core MHz, Pi throttle bits,
``marked`` when throttled or below ``freq_floor`` x max MHz), and where an energy counter is readable
``round_energy_uj`` per member run; ``conditions_overhead_us`` is the median sampling cost per round.
``sustained_s`` runs one try of rounds back to back for that long (no stability stop, every round
kept, max_rounds ignored); ``cooldown`` waits before each try (``{"seconds": S}`` or
``{"until_within_c": X, "max_s": S}``: until the temperature is back within X °C of the group's
start), the wait recorded in the try as ``cooldown_s``.

Peak memory here is the whole group's (all sessions share the process): per-method memory comes
from each method's own isolated record (``kind: "isolated"``), and this record says so.

Spec (inside a ``measure`` spec, next to ``runs``)::

    "paired": [{"id": "paired/N4096", "runs": ["softmax/N4096", "sima_qk/N4096"],
                "ratios": [{"name": "exp_vs_l1_fixed_order", "num": "softmax/N4096",
                            "den": "sima_qk/N4096"}],
                "min_rounds": 20, "max_rounds": 500, "min_time_s": 2, "max_time_s": 20,
                "tries": 3, "tolerance": 0.05, "seed": 0,
                "profile": ["softmax/N4096", "sima_qk/N4096"], "profile_runs": 3,
                "freq_floor": 0.9, "cooldown": {"seconds": 10}}],  # or "sustained_s": 120
    "isolated": true      # false: measure only the groups, not each run alone

Python 3.8, numpy + onnxruntime only (imported lazily through ``measure``).
"""

from __future__ import annotations

import gc
import os
import random
import time
from typing import Any, Callable, Dict, List, Optional

from . import conditions as cond
from . import intervals as stats
from . import records
from .conditions import DEFAULT_FREQ_FLOOR
from .session import RuntimeSpecError

Log = Callable[[str], None]

GROUP_FIELDS = (
    "id",
    "runs",
    "ratios",
    "min_rounds",
    "max_rounds",
    "min_time_s",
    "max_time_s",
    "tries",
    "tolerance",
    "seed",
    "profile",
    "profile_runs",
    "target_halfwidth",
    "budget_s",
    "meta",
    "freq_floor",
    "sustained_s",
    "cooldown",
)
#: the one default of each paired-group knob (the host's ``Settings.pair_*`` read these)
GROUP_DEFAULTS: Dict[str, Any] = {
    "min_rounds": 10,
    "max_rounds": 1000,
    "min_time_s": 2.0,
    "max_time_s": 15.0,
    "tries": 3,
    "tolerance": stats.TOLERANCE,
    "seed": 0,
    # 9 profiled runs: a 95 % interval of the median that leaves out the slowest and the
    # fastest run (a one-off stall cannot set its width)
    "profile_runs": 9,
    "target_halfwidth": 0.02,
    "budget_s": 20.0,
    # a round with a core in use below freq_floor x its max MHz is marked (0: never)
    "freq_floor": DEFAULT_FREQ_FLOOR,
}
_RAW_DECIMALS = 4
#: Thread-pool spinning off in every member session: after a run, ORT's intra-op threads spin for
#: a while waiting for more work, and in one process those spinning threads steal the cores the
#: next member's run needs (measured on 2 cores: a 2.0 ms block took 4.1 ms interleaved with
#: spinning on, 2.1 ms with it off). The isolated pass keeps ORT's default.
NO_SPIN = {"session.intra_op.allow_spinning": "0", "session.inter_op.allow_spinning": "0"}


class Group:
    """One validated paired group (``RuntimeSpecError`` names the bad field)."""

    def __init__(self, d: Dict[str, Any], run_ids: List[str]) -> None:
        if not isinstance(d, dict):
            raise RuntimeSpecError("a paired group must be an object")
        unknown = sorted(set(d) - set(GROUP_FIELDS))
        if unknown:
            raise RuntimeSpecError(
                f"unknown field {unknown[0]!r}; valid fields: {', '.join(GROUP_FIELDS)}"
            )
        self.id = d.get("id")
        if not isinstance(self.id, str) or not self.id:
            raise RuntimeSpecError(f"id {self.id!r} is invalid; expected a non-empty string")
        runs = d.get("runs")
        if not isinstance(runs, list) or len(runs) < 2 or len(set(runs)) != len(runs):
            raise RuntimeSpecError(
                f"runs {runs!r} is invalid; expected a list of >= 2 distinct run ids"
            )
        for r in runs:
            if r not in run_ids:
                raise RuntimeSpecError(
                    f"runs names {r!r}, which is not a run id of this spec; run ids: "
                    f"{', '.join(run_ids)}"
                )
        self.runs: List[str] = list(runs)
        self.ratios: List[Dict[str, str]] = []
        for i, rt in enumerate(d.get("ratios") or []):
            if not isinstance(rt, dict) or not all(
                isinstance(rt.get(k), str) for k in ("name", "num", "den")
            ):
                raise RuntimeSpecError(f"ratios[{i}] must be {{name, num, den}} strings")
            for k in ("num", "den"):
                if rt[k] not in self.runs:
                    raise RuntimeSpecError(
                        f"ratios[{i}].{k} {rt[k]!r} is not a member; members: "
                        f"{', '.join(self.runs)}"
                    )
            self.ratios.append({"name": rt["name"], "num": rt["num"], "den": rt["den"]})

        def num(name: str, default: float, lo: float, integer: bool = False) -> Any:
            v = d.get(name, default)
            ok = isinstance(v, int) if integer else isinstance(v, (int, float))
            if isinstance(v, bool) or not ok or v < lo:
                kind = "an integer" if integer else "a number"
                raise RuntimeSpecError(f"{name} {v!r} is invalid; expected {kind} >= {lo}")
            return v

        self.min_rounds = num("min_rounds", GROUP_DEFAULTS["min_rounds"], 1, True)
        self.max_rounds = num("max_rounds", GROUP_DEFAULTS["max_rounds"], 1, True)
        if self.max_rounds < self.min_rounds:
            raise RuntimeSpecError(
                f"max_rounds {self.max_rounds} is invalid; expected >= min_rounds "
                f"({self.min_rounds})"
            )
        self.min_time_s = num("min_time_s", GROUP_DEFAULTS["min_time_s"], 0)
        self.max_time_s = num("max_time_s", GROUP_DEFAULTS["max_time_s"], 0)
        if self.max_time_s <= 0 or self.max_time_s < self.min_time_s:
            raise RuntimeSpecError(
                f"max_time_s {self.max_time_s} is invalid; expected > 0 and >= min_time_s"
            )
        self.tries = num("tries", GROUP_DEFAULTS["tries"], 1, True)
        self.tolerance = num("tolerance", GROUP_DEFAULTS["tolerance"], 0)
        if not 0 < self.tolerance < 1:
            raise RuntimeSpecError(f"tolerance {self.tolerance} is invalid; expected in (0, 1)")
        self.seed = num("seed", GROUP_DEFAULTS["seed"], 0, True)
        prof = d.get("profile") or []
        if not isinstance(prof, list) or any(p not in self.runs for p in prof):
            raise RuntimeSpecError(f"profile {prof!r} is invalid; expected a list of member ids")
        self.profile: List[str] = list(prof)
        self.profile_runs = num("profile_runs", GROUP_DEFAULTS["profile_runs"], 1, True)
        # adaptive length: once the tries agree, more rounds only while the widest ratio interval
        # is wider than ±target_halfwidth (relative) and the group's budget_s is not spent
        self.target_halfwidth = num("target_halfwidth", GROUP_DEFAULTS["target_halfwidth"], 0)
        self.budget_s = num("budget_s", GROUP_DEFAULTS["budget_s"], 0)
        meta = d.get("meta") or {}
        if not isinstance(meta, dict):
            raise RuntimeSpecError("meta must be an object")
        self.meta: Dict[str, Any] = dict(meta)
        self.freq_floor = num("freq_floor", GROUP_DEFAULTS["freq_floor"], 0)
        if not 0 <= self.freq_floor <= 1:
            raise RuntimeSpecError(
                f"freq_floor {self.freq_floor!r} is invalid; expected a fraction in [0, 1] "
                "(0 disables)"
            )
        self.sustained_s: Optional[float] = None
        if d.get("sustained_s") is not None:
            self.sustained_s = num("sustained_s", 0, 0)
            if not 0 < self.sustained_s < float("inf"):
                raise RuntimeSpecError(
                    f"sustained_s {self.sustained_s!r} is invalid; expected seconds > 0"
                )
        self.cooldown = _cooldown(d.get("cooldown"))

    def protocol(self) -> Dict[str, Any]:
        return {
            "pass": "paired",
            "order": "all members once per round, order shuffled per round (seeded)",
            "min_rounds": self.min_rounds,
            "max_rounds": self.max_rounds,
            "min_time_s": self.min_time_s,
            "max_time_s": self.max_time_s,
            "tries": self.tries,
            "tolerance": self.tolerance,
            "seed": self.seed,
            "profile_runs": self.profile_runs if self.profile else None,
            "target_halfwidth": self.target_halfwidth or None,
            "budget_s": self.budget_s or None,
            "freq_floor": self.freq_floor,
            "sustained_s": self.sustained_s,
            "cooldown": self.cooldown,
            "timer": "time.perf_counter",
            "session_config": dict(NO_SPIN),
        }


def _cooldown(v: Any) -> Optional[Dict[str, float]]:
    """The group's ``cooldown``: {"seconds": S} or {"until_within_c": X, "max_s": S}."""
    if v is None:
        return None
    valid = 'expected {"seconds": S} or {"until_within_c": X, "max_s": S} with numbers >= 0'

    def ok(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x < float("inf")

    if isinstance(v, dict) and set(v) == {"seconds"} and ok(v["seconds"]):
        return {"seconds": float(v["seconds"])}
    if (
        isinstance(v, dict)
        and set(v) == {"until_within_c", "max_s"}
        and ok(v["until_within_c"])
        and ok(v["max_s"])
        and v["until_within_c"] > 0
    ):
        return {"until_within_c": float(v["until_within_c"]), "max_s": float(v["max_s"])}
    raise RuntimeSpecError(f"cooldown {v!r} is invalid; {valid} (until_within_c > 0)")


def parse_groups(raw: Any, run_ids: List[str]) -> List[Group]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise RuntimeSpecError("'paired' must be a list of group objects")
    out = []
    seen = set()
    for i, g in enumerate(raw):
        try:
            grp = Group(g, run_ids)
        except RuntimeSpecError as exc:
            raise RuntimeSpecError(f"paired[{i}]: {exc}") from None
        if grp.id in seen:
            raise RuntimeSpecError(f"paired[{i}]: id {grp.id!r} is used more than once")
        seen.add(grp.id)
        out.append(grp)
    return out


def group_key(group: Group, member_keys: List[Optional[str]]) -> str:
    """The paired record's key: its members' measurement keys (model hashes + knobs) in order."""
    return records.measurement_key(
        None, {"meta": {"paired": group.id, "members": member_keys, "ratios": group.ratios}}
    )


def _rounds(
    runners: List[Callable[[], Any]],
    g: Group,
    rng: random.Random,
    log: Optional[cond.RoundLog] = None,
) -> Any:
    """One try: rounds until min_rounds AND min_time_s, capped by max_rounds / max_time_s (a
    sustained group: rounds until sustained_s, nothing else). ``log`` samples the conditions
    between rounds and reads the energy after each member run, outside each run's timed span."""
    clock = time.perf_counter
    k = len(runners)
    times: List[List[float]] = []
    orders: List[List[int]] = []
    energy = log is not None and log.energy
    if log is not None:
        log.start_try()
    start = clock()
    reason = "min_reached"
    while True:
        order = list(range(k))
        rng.shuffle(order)
        row = [0.0] * k
        for i in order:
            t0 = clock()
            runners[i]()
            row[i] = (clock() - t0) * 1e3
            if energy:
                log.member_done(i)  # type: ignore[union-attr]
        if log is not None:
            log.end_round(order)
        times.append([round(v, _RAW_DECIMALS) for v in row])
        orders.append(order)
        n, elapsed = len(times), clock() - start
        if g.sustained_s is not None:
            if elapsed >= g.sustained_s:
                reason = "sustained_s"
                break
            continue
        if n >= g.max_rounds:
            reason = "max_rounds"
            break
        if elapsed >= g.max_time_s:
            reason = "max_time_s"
            break
        if n >= g.min_rounds and elapsed >= g.min_time_s:
            break
    if log is not None:
        log.end_try()  # decode and judge the try's samples, off the clock
    return times, orders, reason


def _try_figures(g: Group, idx: Dict[str, int], times: List[List[float]]) -> Dict[str, float]:
    """The figures the stability rule compares: each ratio's median (or each member's median)."""
    if g.ratios:
        return {
            r["name"]: stats.median([row[idx[r["num"]]] / row[idx[r["den"]]] for row in times])
            for r in g.ratios
        }
    return {rid: stats.median([row[idx[rid]] for row in times]) for rid in g.runs}


def widest_halfwidth(g: Group, idx: Dict[str, int], times: List[List[float]]) -> float:
    """The widest relative half-width of the group's ratio intervals over ``times``."""
    worst = 0.0
    for r in g.ratios:
        num = [row[idx[r["num"]]] for row in times]
        den = [row[idx[r["den"]]] for row in times]
        s = stats.ratio_summary(num, den)
        if s["median"] > 0:
            worst = max(worst, (s["ci_high"] - s["ci_low"]) / 2.0 / s["median"])
    return worst


def measure_group(g: Group, specs: Dict[str, Any], log: Optional[Log] = None) -> Dict[str, Any]:
    """Measure one group; return its ``kind: "paired"`` record (an error record on failure)."""
    # Long because it is one protocol read top to bottom: sessions, tries, the adaptive extension,
    # summaries, profiles; each step a few lines, split further it would pass a dozen locals
    # around.
    from . import __version__, sysinfo
    from .measure import (
        MemoryProbe,
        apply_fallback_policy,
        create_session,
        device_fingerprint,
        make_inputs,
        profile_session,
        round_mb,
        run_key,
        session_kwargs,
    )

    say: Log = log or (lambda msg: None)
    members = [specs[r] for r in g.runs]
    rec = records.new_record(
        id=g.id,
        meta=dict(g.meta),
        seed=g.seed,
        protocol=g.protocol(),
        runtime_version=__version__,
        notes=[
            "peak memory is the whole group's (all members' sessions in one process); each "
            "method's own peak is in its isolated record"
        ],
    )
    rec["kind"] = "paired"
    first = members[0]
    # the knobs the members share (the bench pairs methods of one device and thread setting)
    rec["session"] = {
        "device": first.device,
        "intra_op_threads": first.intra_op_threads,
        "opt_level": first.opt_level,
    }
    rec["key"] = group_key(g, [None] * len(members))
    sampler: Optional[cond.Sampler] = None
    try:
        rec["device"] = device_fingerprint()
        infos = []
        member_blocks = []
        for rs in members:
            if not os.path.isfile(rs.model):
                raise FileNotFoundError(f"model file not found: {rs.model}")
            model = records.model_record(rs.model)
            member_blocks.append(
                {
                    "id": rs.id,
                    "model": model,
                    "key": run_key(rs, model["sha256"]),
                    "meta": dict(rs.meta),
                    "session": {
                        "device": rs.device,
                        "intra_op_threads": rs.intra_op_threads,
                        "opt_level": rs.opt_level,
                    },
                }
            )
        rec["key"] = group_key(g, [m["key"] for m in member_blocks])
        mem = MemoryProbe()
        gc.collect()
        mem.reset_peak()
        before = sysinfo.conditions()
        sampler = cond.Sampler()  # the cores in use: this process's affinity
        start_c = sampler.temperature_c()
        log = cond.RoundLog(sampler, len(members), g.freq_floor)
        feeds_by = []
        for rs, block in zip(members, member_blocks):  # noqa: B905 (3.8)
            say(f"session for {rs.id}")
            info = create_session(
                rs.model, rs.device, config_entries=dict(NO_SPIN), **session_kwargs(rs)
            )
            apply_fallback_policy(info, rs.fallback)
            feeds, desc = make_inputs(
                info.session, rs.inputs, rs.seed, (rs.int_range[0], rs.int_range[1])
            )
            block["inputs"] = desc
            block["session"]["providers_session"] = info.describe().get("providers_session")
            info.session.run(None, feeds)  # first run
            for _ in range(rs.warmup):
                info.session.run(None, feeds)
            infos.append(info)
            feeds_by.append(feeds)
        runners = [
            (lambda s=info.session, f=feeds: s.run(None, f))
            for info, feeds in zip(infos, feeds_by)  # noqa: B905 (3.8)
        ]
        idx = {rid: i for i, rid in enumerate(g.runs)}
        rng = random.Random(g.seed)
        all_times: List[List[float]] = []
        all_orders: List[List[int]] = []
        round_try: List[int] = []
        tries: List[Dict[str, Any]] = []
        figures: List[Dict[str, float]] = []
        stab: Dict[str, Any] = {}
        started = time.perf_counter()
        pending_extension = False
        while True:
            waited, note = cond.cool_down(g.cooldown, sampler, start_c)
            if g.cooldown:
                say(
                    f"cooldown before try {len(tries) + 1}: {waited:.1f} s"
                    + (f" ({note})" if note else "")
                )
            if note:
                rec["notes"].append(f"cooldown before try {len(tries) + 1}: {note}")
            times, orders, reason = _rounds(runners, g, rng, log)
            slow_bits = sampler.throttle_slow()  # vcgencmd: once per try, never per round
            t = len(tries)
            all_times += times
            all_orders += orders
            round_try += [t] * len(times)
            fig = _try_figures(g, idx, times)
            figures.append(fig)
            tries.append(
                {
                    "rounds": len(times),
                    **({"extension": True} if pending_extension else {}),
                    "stop_reason": reason,
                    **({"cooldown_s": waited} if g.cooldown else {}),
                    **({"throttle_bits": slow_bits} if slow_bits is not None else {}),
                    "figures": {k: round(v, 6) for k, v in fig.items()},
                    "medians_ms": {
                        rid: round(stats.median([row[idx[rid]] for row in times]), 6)
                        for rid in g.runs
                    },
                }
            )
            if g.sustained_s is not None:
                stab = stats.stability(figures, 1, g.tolerance)  # one try, every round kept
            elif tries[-1].get("extension"):
                pass  # an extension adds rounds; the verdict stays that of the agreeing tries
            else:
                stab = stats.stability(figures, g.tries, g.tolerance)
            say(
                f"try {t + 1}: {len(times)} rounds ({reason}); "
                + ", ".join(f"{k} {v:.3f}" for k, v in fig.items())
            )
            if stab["verdict"] == "pending":
                continue
            if g.sustained_s is not None:
                break
            if stab["verdict"] not in ("stable", "untested") or not (
                g.target_halfwidth and g.ratios
            ):
                break  # an unstable group gains nothing from more rounds of the same kind
            width = widest_halfwidth(g, idx, all_times)
            spent = time.perf_counter() - started
            per_try = spent / max(len(tries), 1)
            if width <= g.target_halfwidth or not g.budget_s or spent + per_try > g.budget_s:
                stab["halfwidth"] = round(width, 6)
                stab["target_halfwidth"] = g.target_halfwidth
                break
            say(f"widest interval ±{width:.1%} > ±{g.target_halfwidth:.1%}: more rounds")
            pending_extension = True
        rss_after = mem.rss_mb()
        peak = mem.peak_mb()
        del runners, infos
        gc.collect()
        latency = {}
        for rid in g.runs:
            col = [row[idx[rid]] for row in all_times]
            lo, hi, conf = stats.median_ci(col)
            latency[rid] = {
                "median": round(stats.median(col), 6),
                "ci_low": round(lo, 6),
                "ci_high": round(hi, 6),
                "min": round(min(col), 6),
                "rounds": len(col),
            }
        ratios = []
        for r in g.ratios:
            num = [row[idx[r["num"]]] for row in all_times]
            den = [row[idx[r["den"]]] for row in all_times]
            summ = stats.ratio_summary(num, den)
            summ.update(name=r["name"], num=r["num"], den=r["den"])
            summ["unpaired_ratio_of_medians"] = round(stats.unpaired_ratio(num, den), 6)
            ratios.append(summ)
        profiles = {}
        for rid in g.profile:
            from dataclasses import replace

            # a fresh profiled session: its first run plus one warm-up run are skipped (the
            # members' own warm-up count would spend seconds on runs the op table never reads)
            rs_prof = replace(specs[rid], profile_runs=g.profile_runs, warmup=1)
            profiles[rid] = profile_session(rs_prof, feeds_by[idx[rid]], say)
        rec["paired"] = {
            "members": member_blocks,
            "ratios": ratios,
            "latency_ms": latency,
            "stability": stab,
            "tries": tries,
            "rounds_ms": all_times,
            "round_order": all_orders,
            "round_try": round_try,
            "profiles": profiles or None,
            **({"sustained": True} if g.sustained_s is not None else {}),
            **log.block(),
        }
        rec["memory"] = {
            "rss_after_mb": round_mb(rss_after),
            "peak_rss_mb": round_mb(peak),
            "method": mem.method(),
            "peak_scope": "group",
        }
        rec["conditions"] = {"before": before, "after": sysinfo.conditions()}
    except Exception as exc:
        rec["status"] = "error"
        rec["error"] = records.one_line(exc)
        rec["error_type"] = type(exc).__name__
        say(f"error: {rec['error']}")
    finally:
        if sampler is not None:
            sampler.close()
    return rec
