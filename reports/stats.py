"""Is a row's difference from the baseline more than seed noise? Pure functions over final metrics per seed.

Every row of a grid study trains with the same seeds as the baseline row, so seed ``s`` of a row and seed ``s`` of
the baseline share their initialisation and data order: the comparison is *paired by seed* (Student's paired
t-test on the per-seed differences), which removes the seed-to-seed spread that both rows share. Rows that share
no seed with the baseline (several studies, or seeds changed between runs) are compared with Welch's unequal
variance t-test instead. Fewer than 2 pairs (or, for Welch, fewer than 2 seeds on either side) give no test.

Across the rows of one table the p-values are corrected with Holm's step-down method (it controls the chance of
any false positive among the rows, without assuming the tests are independent). The 95% confidence interval is
the test's own interval for the mean difference (not corrected). Where the corrected p-value is not below
``ALPHA``, ``seeds_for_power`` says how many seeds would detect the observed difference at the observed spread with
80% power, from the noncentral t distribution, for a two-sided test at ``ALPHA / m`` (m = the rows tested): the
level Holm's correction asks of the smallest p-value, so the estimate holds after the correction (for one row it
is ``ALPHA`` itself).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05
POWER = 0.80
MAX_SEEDS = 10_000  # the power search stops here: a difference this small is reported as "> 10000"

PAIRED, WELCH, NO_TEST = "paired", "welch", "n/a"  # NO_TEST: too few seeds for a test


@dataclass(frozen=True)
class Comparison:
    """One row compared with the baseline: ``diff`` = row mean − baseline mean (paired: mean of the differences)."""

    test: str  # PAIRED, WELCH or NO_TEST
    n: int  # pairs (paired) or the row's seeds (Welch)
    n_baseline: int  # pairs (paired) or the baseline's seeds (Welch)
    diff: float
    ci_low: float
    ci_high: float
    p: float
    sd: float  # paired: std of the differences; Welch: pooled std of the two groups (for the power estimate)

    @property
    def ci_excludes_zero(self) -> bool:
        return self.test != NO_TEST and (self.ci_low > 0 or self.ci_high < 0)


def _no_test(n: int, n_base: int, diff: float = math.nan) -> Comparison:
    return Comparison(NO_TEST, n, n_base, diff, math.nan, math.nan, math.nan, math.nan)


def compare(row: pd.Series, baseline: pd.Series, confidence: float = 1 - ALPHA) -> Comparison:
    """Compare two groups' final values, each a Series indexed by seed (NaN values are dropped).

    Paired by seed when the two share at least one seed (only the shared seeds count, and fewer than 2 pairs give
    no test), else Welch's test over all seeds of each.
    """
    row, baseline = row.dropna(), baseline.dropna()
    shared = row.index.intersection(baseline.index)
    if len(shared):
        d = (row.loc[shared] - baseline.loc[shared]).to_numpy(dtype=float)
        if len(d) < 2:
            return _no_test(len(d), len(d), float(d.mean()))
        sd = float(d.std(ddof=1))
        if sd == 0:  # identical differences: the t statistic is undefined (scipy returns NaN)
            return Comparison(PAIRED, len(d), len(d), float(d.mean()), float(d.mean()), float(d.mean()),
                              math.nan if d.mean() == 0 else 0.0, 0.0)
        res = stats.ttest_rel(row.loc[shared].to_numpy(dtype=float), baseline.loc[shared].to_numpy(dtype=float))
        ci = res.confidence_interval(confidence)
        return Comparison(PAIRED, len(d), len(d), float(d.mean()), float(ci.low), float(ci.high),
                          float(res.pvalue), sd)
    a, b = row.to_numpy(dtype=float), baseline.to_numpy(dtype=float)
    diff = float(a.mean() - b.mean()) if len(a) and len(b) else math.nan
    if len(a) < 2 or len(b) < 2:
        return _no_test(len(a), len(b), diff)
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(confidence)
    pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    return Comparison(WELCH, len(a), len(b), diff, float(ci.low), float(ci.high), float(res.pvalue), pooled)


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (same order as given; NaN entries stay NaN and do not count).

    Sorted ascending, the i-th smallest (0-based) of m p-values is multiplied by (m - i); a running maximum keeps
    the adjusted values in the same order as the raw ones, and they are capped at 1.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    if m == 0:
        return out
    order = valid[np.argsort(p[valid], kind="stable")]
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adjusted, 1.0)
    return out


def power(n: int, effect: float, test: str = PAIRED, alpha: float = ALPHA) -> float:
    """Power of a two-sided t-test with ``n`` seeds at standardised effect ``effect`` (difference / std).

    Paired: one-sample t on n differences (df n-1, noncentrality effect·√n). Welch: two groups of n seeds with
    equal spread (df 2n-2, noncentrality effect·√(n/2)), the usual planning approximation.
    """
    if test == PAIRED:
        df, nc = n - 1, effect * math.sqrt(n)
    else:
        df, nc = 2 * n - 2, effect * math.sqrt(n / 2)
    t_crit = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(t_crit, df, nc) + stats.nct.cdf(-t_crit, df, nc))


def seeds_for_power(diff: float, sd: float, test: str = PAIRED, target: float = POWER,
                    alpha: float = ALPHA) -> float:
    """Smallest number of seeds (per group for Welch) whose test reaches ``target`` power for a true difference
    ``diff`` at spread ``sd``; ``inf`` for no difference, NaN when the spread is unknown, 0 for zero spread."""
    if math.isnan(diff) or math.isnan(sd):
        return math.nan
    if sd == 0:
        return 0 if diff else math.inf
    effect = abs(diff) / sd
    if effect == 0:
        return math.inf
    n = 2
    while power(n, effect, test, alpha) < target:
        n = n + 1 if n < 64 else int(n * 1.1) + 1  # exact at small n, coarse only where the answer is large anyway
        if n > MAX_SEEDS:
            return math.inf
    if n > 64:  # refine the coarse step back to the smallest n
        lo = int((n - 1) / 1.1)
        n = next(k for k in range(lo, n + 1) if power(k, effect, test, alpha) >= target)
    return n


def mean_ci(values: pd.Series, confidence: float = 1 - ALPHA) -> tuple[float, float]:
    """Student-t confidence interval of a group's mean over its seeds (NaN for fewer than 2 values)."""
    v = values.dropna().to_numpy(dtype=float)
    if len(v) < 2:
        return math.nan, math.nan
    half = stats.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)


def compare_groups(finished: pd.DataFrame, metric: str, baseline: str, groups: list[str]) -> pd.DataFrame:
    """Every group of ``groups`` other than the baseline against the baseline, on ``metric``.

    ``finished`` holds finished trials with columns ``group``, ``seed`` and ``metric``. Returns one row per
    compared group (index = group): test, n, n_baseline, diff, ci_low, ci_high, p, p_holm (Holm over these rows),
    significant (p_holm < ALPHA), ci_excludes_zero, seeds_needed (where not significant, at ``ALPHA / m`` for the m
    rows tested; NaN otherwise).
    """
    def by_seed(group: str) -> pd.Series:
        """A group's values by repeat: the seed, or (split, seed) where the study repeats over RegDB splits."""
        g = finished[finished["group"] == group]
        split = g["split"] if "split" in g else None
        repeat = g["seed"] if split is None or split.isna().all() else \
            [f"{sp}/{sd}" for sp, sd in zip(split, g["seed"])]
        return pd.Series(g[metric].to_numpy(dtype=float), index=list(repeat)).groupby(level=0).mean()

    base = by_seed(baseline)
    rows = {}
    for group in groups:
        if group == baseline:
            continue
        c = compare(by_seed(group), base)
        rows[group] = {"test": c.test, "n": c.n, "n_baseline": c.n_baseline, "diff": c.diff, "ci_low": c.ci_low,
                       "ci_high": c.ci_high, "p": c.p, "sd": c.sd, "ci_excludes_zero": c.ci_excludes_zero}
    out = pd.DataFrame.from_dict(rows, orient="index",
                                 columns=["test", "n", "n_baseline", "diff", "ci_low", "ci_high", "p", "sd",
                                          "ci_excludes_zero"])
    out["p_holm"] = holm(out["p"].to_numpy(dtype=float)) if len(out) else []
    out["significant"] = out["p_holm"] < ALPHA
    alpha = ALPHA / max(1, int(out["p"].notna().sum()))
    out["seeds_needed"] = [seeds_for_power(r.diff, r.sd, r.test, alpha=alpha)
                           if r.test != NO_TEST and not r.significant else math.nan for r in out.itertuples()]
    return out
