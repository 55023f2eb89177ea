"""Paired ratios read along a sweep's regimes: which named ratios each regime plots (from the
method table), which regime a paired record belongs to, and one row per (record, ratio) with its
interval. Read by ``sweep`` (tables), ``plot`` and ``report``; imports neither of them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgeattn.bench import methods as _methods


def __getattr__(name: str) -> Any:
    """REGIME_RATIOS: {regime: the named ratios it plots, the first its exp-vs-l1 answer}."""
    if name == "REGIME_RATIOS":
        return {r: _methods.regime_ratios(r) for r in _methods.REGIMES}
    raise AttributeError(name)


def regime_of(ratio_names: Sequence[str]) -> str:
    """The regime a paired record belongs to, from the ratios it holds: a channels point pairs
    XCA with SimA only (no softmax MSA); anything else is read along N (the tokens regime, whose
    grid may start below D)."""
    names = set(ratio_names)
    tokens, channels = _methods.regime_ratios("tokens"), _methods.regime_ratios("channels")
    if names & set(tokens) or not names & set(channels):
        return "tokens"
    return "channels"


def ratio_points(
    records: Sequence[dict[str, Any]], all_ratios: bool = False
) -> list[dict[str, Any]]:
    """One row per (paired record, ratio): regime, N, D, h, device, ratio, interval, verdict.

    By default only the ratios its regime plots (``REGIME_RATIOS``); ``all_ratios``: every known
    ratio the record holds (a bench has all of them)."""
    from edgeattn.bench import pairs
    from edgeattn.bench.report import device_label, run_key

    out = []
    for rec in sorted(pairs.paired(records), key=lambda r: r.get("created_utc") or ""):
        meta = rec.get("meta") or {}
        res = pairs.ratio_results(rec)
        reg = regime_of(list(res))
        lat = (rec.get("paired") or {}).get("latency_ms") or {}
        methods = pairs.member_methods(rec)
        names = (
            [n for n in res if n in pairs.RATIO_BY_NAME]
            if all_ratios
            else list(_methods.regime_ratios(reg))
        )
        ref, vs = pairs.vs_reference(rec)
        labels = {n: pairs.RATIO_BY_NAME[n].label for n in names}
        same = {(res[n]["num"], res[n]["den"]) for n in names if n in res}
        for member, r in vs.items():  # every method against the reference, in every regime
            if (r.get("num"), r.get("den")) in same:
                continue  # a named ratio already says it (e.g. exp vs l1 = softmax / sima_qk)
            res[f"{pairs.VS_REF}{member}"] = r
            names = [*names, f"{pairs.VS_REF}{member}"]
            labels[f"{pairs.VS_REF}{member}"] = f"{ref} / {member}"
        for name in names:
            r = res.get(name)
            if not r:
                continue
            out.append(
                {
                    "regime": reg,
                    "tokens": meta.get("tokens"),
                    "dim": meta.get("dim"),
                    "heads": meta.get("heads"),
                    "device": device_label(rec),
                    "run": run_key(rec),
                    "ratio": name,
                    "label": labels[name],
                    "median": r["median"],
                    "ci_low": r["ci_low"],
                    "ci_high": r["ci_high"],
                    "rounds": r["rounds"],
                    "no_difference": r["no_difference"],
                    "stability": r["stability"],
                    "latency_ms": {methods[k]: v["median"] for k, v in lat.items()},
                }
            )
    return out
