"""Statistics of the baseline comparison, checked against hand-computed values and published power tables.

Expected values are worked out here by hand (closed forms of the t distribution with 2 degrees of freedom) or taken
from standard tables (G*Power / Cohen's sample sizes), never from the functions under test.
"""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from reports.stats import NO_TEST, PAIRED, WELCH, compare, compare_groups, holm, mean_ci, power, seeds_for_power


def by_seed(values: dict) -> pd.Series:
    return pd.Series(values, dtype=float)


def test_paired_by_seed_matches_the_hand_computation():
    # per-seed differences 1, 2, 3: mean 2, sd 1, se 1/sqrt(3), t = 2*sqrt(3) = 3.4641, df 2.
    # With 2 df the t CDF is 1/2 + t / (2 sqrt(t^2 + 2)): two-sided p = 1 - t/sqrt(t^2+2) = 1 - 3.4641/3.7417,
    # and the 97.5% quantile solves t/sqrt(t^2+2) = 0.95: t = sqrt(1.805/0.0975) = 4.30265.
    base = by_seed({0: 90.0, 1: 91.0, 2: 92.5})
    row = by_seed({2: 95.5, 0: 91.0, 1: 93.0})  # seed order differs: pairing is by seed, not position
    c = compare(row, base)
    assert (c.test, c.n, c.n_baseline) == (PAIRED, 3, 3)
    assert c.diff == pytest.approx(2.0)
    assert c.p == pytest.approx(1 - math.sqrt(12) / math.sqrt(14), abs=1e-9)  # 0.074180
    half = math.sqrt(1.805 / 0.0975) / math.sqrt(3)
    assert (c.ci_low, c.ci_high) == (pytest.approx(2 - half), pytest.approx(2 + half))  # [-0.4841, 4.4841]
    assert not c.ci_excludes_zero and c.sd == pytest.approx(1.0)


def test_pairing_removes_the_shared_seed_spread():
    """Seeds move both rows together: unpaired the difference is noise, paired it is clear."""
    base = by_seed({0: 60.0, 1: 70.0, 2: 80.0})
    row = by_seed({0: 61.0, 1: 71.5, 2: 80.5})  # differences 1.0, 1.5, 0.5: mean 1, sd 0.5
    c = compare(row, base)
    t = 1.0 / (0.5 / math.sqrt(3))  # 3.4641 again, df 2
    assert c.p == pytest.approx(1 - t / math.sqrt(t * t + 2), abs=1e-9)
    unpaired = compare(by_seed({10: 61.0, 11: 71.5, 12: 80.5}), base)  # same values, no shared seed
    assert unpaired.test == WELCH and unpaired.p > 0.8


def test_welch_when_no_seed_is_shared():
    # a = 1, 2, 3 (var 1), b = 4, 6, 8 (var 4): se = sqrt(1/3 + 4/3), t = -4 / se = -3.0984,
    # Welch-Satterthwaite df = (5/3)^2 / ((1/3)^2/2 + (4/3)^2/2) = 50/17.
    row, base = by_seed({0: 1.0, 1: 2.0, 2: 3.0}), by_seed({5: 4.0, 6: 6.0, 7: 8.0})
    c = compare(row, base)
    se, df = math.sqrt(5 / 3), 50 / 17
    assert (c.test, c.n, c.n_baseline) == (WELCH, 3, 3)
    assert c.diff == pytest.approx(-4.0)
    assert c.p == pytest.approx(2 * sps.t.sf(4 / se, df))
    q = sps.t.ppf(0.975, df)
    assert (c.ci_low, c.ci_high) == (pytest.approx(-4 - q * se), pytest.approx(-4 + q * se))
    assert c.sd == pytest.approx(math.sqrt(2.5))  # pooled: sqrt((1 + 4) / 2)


@pytest.mark.parametrize("row, base", [
    ({0: 95.0}, {0: 90.0, 1: 91.0}),  # one shared seed: one pair
    ({0: 95.0, 9: 96.0}, {0: 90.0, 1: 91.0}),  # still one pair: seed 9 has no partner
    ({5: 95.0}, {0: 90.0, 1: 91.0}),  # no shared seed, and one seed only: no Welch either
    ({0: 95.0, 1: float("nan")}, {0: 90.0, 1: 91.0}),  # a missing value is no pair
])
def test_fewer_than_two_pairs_is_no_test(row, base):
    c = compare(by_seed(row), by_seed(base))
    assert c.test == NO_TEST and math.isnan(c.p) and math.isnan(c.ci_low) and not c.ci_excludes_zero


def test_identical_differences():
    c = compare(by_seed({0: 3.0, 1: 4.0}), by_seed({0: 1.0, 1: 2.0}))
    assert (c.diff, c.ci_low, c.ci_high, c.p) == (2.0, 2.0, 2.0, 0.0) and c.ci_excludes_zero


@pytest.mark.parametrize("raw, adjusted", [
    # sorted 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04; running max 0.03, 0.06, 0.06
    ([0.01, 0.04, 0.03], [0.03, 0.06, 0.06]),
    ([0.04, 0.01], [0.04, 0.02]),
    ([0.6, 0.7], [1.0, 1.0]),  # 1.2 and 1.2, capped at 1
    ([0.02, float("nan"), 0.5], [0.04, float("nan"), 0.5]),  # NaN does not count in m
    ([0.005, 0.011, 0.02, 0.04, 0.13], [0.025, 0.044, 0.06, 0.08, 0.13]),
])
def test_holm(raw, adjusted):
    np.testing.assert_allclose(holm(raw), adjusted, rtol=1e-12)


@pytest.mark.parametrize("effect, test, n, achieved", [
    # Sample sizes of the two-sided t-test at alpha 0.05 and 80% power (G*Power; Cohen 1988, tables 2.4.1 and
    # 2.3.2); the power reached at that n as G*Power prints it.
    (1.0, PAIRED, 10, 0.8031),
    (0.5, PAIRED, 34, 0.8078),
    (1.0, WELCH, 17, 0.8070),
    (0.5, WELCH, 64, 0.8015),
])
def test_seeds_for_80_percent_power(effect, test, n, achieved):
    assert seeds_for_power(effect * 2.0, 2.0, test) == n
    assert power(n, effect, test) == pytest.approx(achieved, abs=2e-3)
    assert power(n - 1, effect, test) < 0.8


def test_seeds_for_power_edge_cases():
    assert seeds_for_power(0.0, 1.0) == math.inf
    assert math.isnan(seeds_for_power(1.0, float("nan")))
    assert seeds_for_power(0.01, 10.0) == math.inf  # needs more than MAX_SEEDS
    # d = 0.1 needs hundreds of pairs: the normal approximation ((1.96 + 0.8416) / 0.1)^2 = 785, plus ~2 for t
    assert 785 <= seeds_for_power(0.1, 1.0) <= 790


def test_mean_ci_of_a_group():
    lo, hi = mean_ci(pd.Series([90.0, 91.0, 92.0]))  # mean 91, sd 1, df 2: 91 ± 4.30265/sqrt(3)
    half = math.sqrt(1.805 / 0.0975) / math.sqrt(3)
    assert (lo, hi) == (pytest.approx(91 - half), pytest.approx(91 + half))
    assert all(math.isnan(v) for v in mean_ci(pd.Series([90.0])))


def test_compare_groups_table():
    rows = [("base", s, v) for s, v in enumerate([90.0, 91.0, 92.5])]
    rows += [("a", s, v) for s, v in enumerate([91.0, 93.0, 95.5])]  # diffs 1, 2, 3: p 0.0742
    rows += [("b", s, v) for s, v in enumerate([100.0, 101.0, 102.7])]  # diffs 10, 10, 10.2: p tiny
    rows += [("c", 0, 95.0)]  # one pair
    trials = pd.DataFrame(rows, columns=["group", "seed", "rank1"])
    out = compare_groups(trials, "rank1", "base", ["base", "a", "b", "c"])
    assert list(out.index) == ["a", "b", "c"] and out.loc["c", "test"] == NO_TEST
    # diffs of b: 10, 10, 10.2: mean 10.0667, sd 0.11547, t = 151.0, df 2
    t_b = 10.0666667 / (0.11547005 / math.sqrt(3))
    p_b = 1 - t_b / math.sqrt(t_b ** 2 + 2)
    p_a = 1 - math.sqrt(12) / math.sqrt(14)
    assert out.loc["b", "p"] == pytest.approx(p_b, rel=1e-5)
    assert out.loc["b", "p_holm"] == pytest.approx(2 * p_b, rel=1e-5)  # smallest of 2: times 2
    assert out.loc["a", "p_holm"] == pytest.approx(p_a)  # largest: times 1 (and above b's)
    assert bool(out.loc["b", "significant"]) and not bool(out.loc["a", "significant"])
    assert math.isnan(out.loc["b", "seeds_needed"])
    # a: observed difference 2 at sd 1; two rows tested, so the power is for a test at 0.05 / 2. A simulation of
    # the paired t-test (true difference 2, sd 1) gives the power at the reported number of pairs (>= 80%) and one
    # pair fewer (< 80%).
    n = int(out.loc["a", "seeds_needed"])
    rng = np.random.default_rng(0)
    for k, reached in ((n, True), (n - 1, False)):
        d = rng.normal(2.0, 1.0, size=(100_000, k))
        t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(k))
        assert (np.mean(np.abs(t) > sps.t.ppf(1 - 0.025 / 2, k - 1)) >= 0.8) == reached
    assert math.isnan(out.loc["c", "seeds_needed"]) and math.isnan(out.loc["c", "p_holm"])
