"""The paired-ratio interval and the stability rule, on synthetic data with known answers."""

from __future__ import annotations

import math
import random

import pytest

from edgeattn.runtime import intervals as I


def _binom_ci_reference(n: int, conf: float = 0.95) -> int:
    """Lower rank j (1-based) of the order-statistic interval, by brute force over the pmf."""
    pmf = [math.comb(n, i) / 2**n for i in range(n + 1)]
    j = 0
    for cand in range(1, n // 2 + 1):
        if 2 * sum(pmf[:cand]) <= 1 - conf:
            j = cand
    return j


@pytest.mark.parametrize("n", [6, 10, 20, 57, 200, 1001, 3000])
def test_median_ci_ranks_match_the_binomial(n):
    xs = list(range(1, n + 1))  # x_(k) == k
    lo, hi, conf = I.median_ci(xs)
    j = _binom_ci_reference(n)
    assert (lo, hi) == (j, n - j + 1)
    assert conf >= 0.95
    # one rank narrower would fall below 95 %
    assert 1 - 2 * sum(math.comb(n, i) / 2**n for i in range(j + 1)) < 0.95


def test_median_ci_scales_to_a_sustained_run():
    """120k rounds (a 2-minute run of 1 ms rounds): the rank is the normal approximation's
    n/2 - 1.96·sqrt(n)/2 (within a rank or two), computed without a quadratic sum."""
    n = 120_000
    lo, hi, conf = I.median_ci(list(range(1, n + 1)))
    approx = n / 2 - 1.959964 * math.sqrt(n) / 2
    assert abs(lo - approx) <= 2 and hi == n - lo + 1
    assert 0.95 <= conf < 0.951


def test_median_ci_too_few_values_says_so():
    lo, hi, conf = I.median_ci([3.0, 1.0, 2.0, 5.0, 4.0])
    assert (lo, hi) == (1.0, 5.0) and conf < 0.95


def test_known_ratio_is_recovered_with_coverage():
    """1.3× with lognormal noise: the interval covers the true ratio in ~95 % of repetitions."""
    rng = random.Random(1)
    covered = 0
    trials = 200
    for _ in range(trials):
        a = [1.3 * 10 * math.exp(rng.gauss(0, 0.1)) for _ in range(40)]
        b = [10 * math.exp(rng.gauss(0, 0.1)) for _ in range(40)]
        s = I.ratio_summary(a, b)
        covered += s["ci_low"] <= 1.3 <= s["ci_high"]
    assert 0.90 <= covered / trials <= 0.995
    assert s["median"] == pytest.approx(1.3, rel=0.08)


def test_identical_inputs_contain_one():
    rng = random.Random(2)
    a = [10 * math.exp(rng.gauss(0, 0.2)) for _ in range(60)]
    b = [10 * math.exp(rng.gauss(0, 0.2)) for _ in range(60)]
    s = I.ratio_summary(a, b)
    assert s["contains_one"] and s["ci_low"] < 1 < s["ci_high"]
    assert I.ratio_summary(a, a)["median"] == 1.0


def test_drifting_clock_cancels_in_paired_ratios_not_unpaired():
    """The machine slows down 3× over the run (throttling, another tenant). Method A (true 1.2×
    B) is measured alone first and B alone after, as separate runs would; paired rounds see both
    at the same moment."""
    rng = random.Random(3)
    n = 50
    slow = [1 + 2 * i / (2 * n) for i in range(2 * n)]  # drift over the whole session

    def noise():
        return math.exp(rng.gauss(0, 0.03))

    # unpaired: A's runs in the first half, B's in the second half
    a_alone = [12 * slow[i] * noise() for i in range(n)]
    b_alone = [10 * slow[n + i] * noise() for i in range(n)]
    unpaired = I.unpaired_ratio(a_alone, b_alone)
    # paired: round i runs A and B back to back at drift slow[2i]
    a_pair = [12 * slow[2 * i] * noise() for i in range(n)]
    b_pair = [10 * slow[2 * i] * noise() for i in range(n)]
    s = I.ratio_summary(a_pair, b_pair)
    assert s["ci_low"] <= 1.2 <= s["ci_high"]
    assert abs(s["median"] / 1.2 - 1) < 0.03
    assert unpaired < 1.0  # drift turned A's 20 % handicap into an apparent win


@pytest.mark.parametrize(
    "medians, max_tries, verdict, deltas_last",
    [
        ([10.0, 10.3], 3, "stable", 0.03),
        ([10.0, 12.0], 3, "pending", 0.2),
        ([10.0, 12.0, 12.4], 3, "stable", 0.033333),
        ([10.0, 12.0, 14.0], 3, "unstable", 0.166667),
        ([10.0], 1, "untested", None),
        ([10.0], 3, "pending", None),
        ([10.0, 9.0, 8.0, 7.9], 5, "stable", 0.0125),
    ],
)
def test_stability_verdicts_on_scripted_timings(medians, max_tries, verdict, deltas_last):
    st = I.stability([{"m": v} for v in medians], max_tries)
    assert st["verdict"] == verdict
    assert st["tries"] == len(medians)
    if deltas_last is None:
        assert st["deltas"][-1] is None
    else:
        assert st["deltas"][-1] == pytest.approx(deltas_last, abs=1e-5)


def test_stability_needs_every_figure_to_agree():
    tries = [{"a": 1.0, "b": 2.0}, {"a": 1.01, "b": 2.5}]
    assert I.stability(tries, 2)["verdict"] == "unstable"
    tries[1]["b"] = 2.02
    assert I.stability(tries, 2)["verdict"] == "stable"


def test_verdict_text():
    assert I.verdict_text({"verdict": "unstable", "tries": 3}) == "unstable after 3 tries"
    assert I.verdict_text({"verdict": "stable", "tries": 2}) == "stable"
    assert I.verdict_text(None) == ""
