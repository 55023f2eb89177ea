"""Paired-ratio statistics and the stability rule. Standard library only (device side, Python 3.8).

Ratios between methods come from *paired* rounds: in each round every method runs once (in a
shuffled order), so a slow spell of a shared or throttling machine hits all of them alike and
cancels in the per-round ratio ``t_a / t_b``. The printed ratio is the median of the per-round
ratios, with a distribution-free confidence interval for that median from order statistics
(the sign-test / binomial interval: no assumption on the shape of the timing distribution, no
random resampling, so the same data always gives the same interval).

The stability rule follows MLPerf Mobile's "repeat until consecutive tries agree": a measurement is
made in up to ``max_tries`` tries; it is ``stable`` as soon as two consecutive tries' medians agree
within ``tolerance`` (relative), else ``unstable after K``.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

CONFIDENCE = 0.95
TOLERANCE = 0.05  # two consecutive tries agree within ±5 % (MLPerf Mobile's rule)


def median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    if n == 0:
        raise ValueError("median of no values")
    mid = n // 2
    return float(s[mid]) if n % 2 else (s[mid - 1] + s[mid]) / 2.0


def _binom_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    # exact sum in log space keeps n in the thousands finite
    log_half_n = -n * math.log(2.0)
    total = 0.0
    for i in range(k + 1):
        total += math.exp(
            math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half_n
        )
    return min(1.0, total)


def median_ci(xs: Sequence[float], confidence: float = CONFIDENCE) -> Tuple[float, float, float]:
    """(low, high, achieved confidence) of the order-statistic interval for the median.

    With the values sorted, ``[x_(j), x_(n-j+1)]`` (1-based) covers the population median with
    probability ``1 - 2 P(Bin(n, 1/2) <= j - 1)``; j is the largest rank whose coverage is still
    >= ``confidence``. With too few values for that (n < 6 at 95 %) the interval is the full range
    and the achieved confidence, lower than asked, is returned so a caller can say so.
    """
    s = sorted(float(x) for x in xs)
    n = len(s)
    if n == 0:
        raise ValueError("no values")
    alpha = (1.0 - confidence) / 2.0
    # the cumulative binomial built one term at a time (the same sum, in the same order, as
    # _binom_cdf): linear in n, so a sustained run's 10^5 rounds take milliseconds, not minutes
    log_norm = math.lgamma(n + 1) - n * math.log(2.0)
    cdf = 0.0  # P(Bin(n, 1/2) <= cand - 1)
    j = 0  # 1-based rank of the lower bound; 0 = none found
    for cand in range(1, n // 2 + 1):
        i = cand - 1
        cdf += math.exp(log_norm - math.lgamma(i + 1) - math.lgamma(n - i + 1))
        if min(1.0, cdf) <= alpha:
            j = cand
        else:
            break
    if j == 0:
        return s[0], s[-1], 1.0 - 2.0 * _binom_cdf(0, n) if n > 1 else 0.0
    achieved = 1.0 - 2.0 * _binom_cdf(j - 1, n)
    return s[j - 1], s[n - j], achieved


def ratio_summary(
    num_ms: Sequence[float], den_ms: Sequence[float], confidence: float = CONFIDENCE
) -> Dict[str, Any]:
    """Median and interval of the per-round ratios ``num / den`` (paired by index)."""
    if len(num_ms) != len(den_ms):
        raise ValueError(f"paired series differ in length: {len(num_ms)} vs {len(den_ms)}")
    ratios = [a / b for a, b in zip(num_ms, den_ms) if b > 0]  # noqa: B905 (3.8)
    if not ratios:
        raise ValueError("no paired rounds with a positive denominator")
    lo, hi, achieved = median_ci(ratios, confidence)
    return {
        "median": round(median(ratios), 6),
        "ci_low": round(lo, 6),
        "ci_high": round(hi, 6),
        "confidence": round(achieved, 4),
        "rounds": len(ratios),
        "contains_one": bool(lo <= 1.0 <= hi),
        "method": "median of per-round ratios; order-statistic (binomial) interval",
    }


def unpaired_ratio(num_ms: Sequence[float], den_ms: Sequence[float]) -> float:
    """Ratio of medians of two independent series (what an unpaired bench reports)."""
    return median(num_ms) / median(den_ms)


def agree(a: float, b: float, tolerance: float = TOLERANCE) -> bool:
    """Whether two positive figures agree within ``tolerance`` relative to the first."""
    if a <= 0 or b <= 0:
        return False
    return abs(b / a - 1.0) <= tolerance


def stability(
    try_values: Sequence[Dict[str, float]], max_tries: int, tolerance: float = TOLERANCE
) -> Dict[str, Any]:
    """The verdict over the tries so far; each try is ``{figure name: median}``.

    ``stable`` when the last two tries agree on every figure within ``tolerance``; ``unstable``
    once ``max_tries`` tries were made without that; ``pending`` otherwise (more tries to run);
    ``untested`` when only one try was asked for.
    """
    deltas: List[Optional[float]] = [None]
    for prev, cur in zip(try_values, try_values[1:]):  # noqa: B905 (3.8)
        worst = 0.0
        for name, v in cur.items():
            p = prev.get(name)
            if p is None or p <= 0 or v is None or v <= 0:
                worst = float("inf")
                continue
            worst = max(worst, abs(v / p - 1.0))
        deltas.append(round(worst, 6) if math.isfinite(worst) else None)
    last = deltas[-1]
    n = len(try_values)
    if max_tries <= 1:
        verdict = "untested"  # one try asked for: nothing to compare it with
    elif n >= 2 and last is not None and last <= tolerance:
        verdict = "stable"
    elif n >= max_tries:
        verdict = "unstable"
    else:
        verdict = "pending"
    return {
        "verdict": verdict,
        "tries": n,
        "max_tries": max_tries,
        "tolerance": tolerance,
        "deltas": deltas,
        "rule": "two consecutive tries' medians agree within the tolerance",
    }


def verdict_text(stab: Optional[Dict[str, Any]]) -> str:
    """'stable', 'unstable after 3 tries', or '' when no stability block."""
    if not stab:
        return ""
    v = stab.get("verdict")
    if v == "unstable":
        return f"unstable after {stab.get('tries')} tries"
    if v == "untested":
        return "single try, stability not tested"
    return str(v or "")
