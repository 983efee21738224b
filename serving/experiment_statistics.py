"""The statistics of an experiment report, with the customer as the unit (it is what is randomised).

A customer with several invoices contributes several decisions, and their outcomes are not
independent: a rate over decisions treated as independent trials has intervals that are too
narrow. Rates over decisions are therefore ratio metrics (sum over customers of the numerator /
sum of the decisions), with the delta-method variance, which is the cluster-robust (CR1) variance
with customers as clusters. Proportions of customers (churned, objected) use Wilson intervals and
Newcombe's difference interval (statsmodels); distributions come from scipy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    test_proportions_2indep,
)

CONFIDENCE = 0.95
ALPHA = 0.05  # 1 - CONFIDENCE, written out so that the report shows 0.05, not 0.050000000000000044
# The minimum detectable effect: the smallest true difference found with this probability.
POWER = 0.8
# A sample-ratio mismatch this unlikely under the weights means the split or the logging is broken;
# strict, because a report is read many times and each reading is a test.
SRM_P_VALUE = 0.001


@dataclass(frozen=True)
class Estimate:
    """A metric's value and the variance of that value (NaN when it cannot be estimated)."""

    value: float
    variance: float

    def interval(self, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
        """Normal interval around the value; None without a variance."""
        if not math.isfinite(self.variance):
            return None
        half = float(stats.norm.ppf(0.5 + confidence / 2)) * math.sqrt(self.variance)
        return self.value - half, self.value + half


@dataclass(frozen=True)
class Comparison:
    """A variant's metric minus the control's, its interval and the two-sided p-value."""

    value: float
    low: float
    high: float
    p_value: float | None


def ratio_estimate(numerators: Sequence[float], denominators: Sequence[float]) -> Estimate | None:
    """Σ numerators / Σ denominators over customers, with the delta-method variance.

    Var = K / (K − 1) · Σ (yᵢ − R·nᵢ)² / (Σ nᵢ)², the cluster-robust variance of the same ratio
    with each customer a cluster. None without any denominator; the variance is NaN for a single
    customer.
    """
    y = np.asarray(numerators, dtype=float)
    n = np.asarray(denominators, dtype=float)
    total = float(n.sum())
    if y.size == 0 or total <= 0:
        return None
    ratio = float(y.sum()) / total
    customers = y.size
    if customers < 2:
        return Estimate(ratio, math.nan)
    residuals = y - ratio * n
    variance = customers / (customers - 1) * float(residuals @ residuals) / total**2
    return Estimate(ratio, variance)


def ratio_estimates_by_column(
    numerators: np.ndarray, denominators: np.ndarray
) -> list[Estimate | None]:
    """:func:`ratio_estimate` of every column of two customers × columns arrays at once (the
    cumulative results: one column per date). A customer whose denominator in a column is 0 is
    not yet counted there; a column without any denominator is None."""
    y = np.asarray(numerators, dtype=float)
    n = np.asarray(denominators, dtype=float)
    counted = (n > 0).sum(axis=0)
    totals = n.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = y.sum(axis=0) / totals
        squares = ((y - ratios * n) ** 2).sum(axis=0)
        variances = counted / (counted - 1) * squares / totals**2
    return [
        None
        if totals[column] <= 0
        else Estimate(
            float(ratios[column]),
            float(variances[column]) if counted[column] >= 2 else math.nan,
        )
        for column in range(y.shape[1])
    ]


def mean_estimate(values: Sequence[float]) -> Estimate | None:
    """The mean over customers and its variance (sample variance / K)."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        return None
    if array.size < 2:
        return Estimate(float(array.mean()), math.nan)
    return Estimate(float(array.mean()), float(array.var(ddof=1)) / array.size)


def difference(this: Estimate, control: Estimate, confidence: float = CONFIDENCE) -> Comparison:
    """``this`` minus ``control``: normal interval and two-sided z-test of independent samples."""
    value = this.value - control.value
    variance = this.variance + control.variance
    if not math.isfinite(variance):
        return Comparison(value, math.nan, math.nan, None)
    error = math.sqrt(variance)
    half = float(stats.norm.ppf(0.5 + confidence / 2)) * error
    p_value = None if error == 0 else float(2 * stats.norm.sf(abs(value) / error))
    return Comparison(value, value - half, value + half, p_value)


def proportion_interval(
    successes: int, trials: int, confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """Wilson score interval of a proportion of customers; None without any."""
    if trials <= 0:
        return None
    low, high = proportion_confint(successes, trials, alpha=1 - confidence, method="wilson")
    # At 0 (or all) successes the bound is exactly 0 (or 1); the float sum leaves ~1e-17.
    low = 0.0 if successes <= 0 else max(0.0, float(low))
    high = 1.0 if successes >= trials else min(1.0, float(high))
    return low, high


def proportion_difference(
    successes: int,
    trials: int,
    control_successes: int,
    control_trials: int,
    confidence: float = CONFIDENCE,
) -> Comparison | None:
    """Difference of two proportions of customers: Newcombe's interval and the score test's
    p-value (None when neither side has a success or a failure to test with)."""
    if trials <= 0 or control_trials <= 0:
        return None
    low, high = confint_proportions_2indep(
        successes,
        trials,
        control_successes,
        control_trials,
        method="newcomb",
        compare="diff",
        alpha=1 - confidence,
    )
    pooled = (successes + control_successes) / (trials + control_trials)
    p_value = None
    if 0 < pooled < 1:
        # The test also reports an odds ratio, which divides by zero at a share of 0 or 1.
        with np.errstate(divide="ignore", invalid="ignore"):
            tested = test_proportions_2indep(
                successes, trials, control_successes, control_trials, method="score", compare="diff"
            )
        p_value = float(tested.pvalue)
    value = successes / trials - control_successes / control_trials
    return Comparison(value, float(low), float(high), p_value)


@dataclass(frozen=True)
class SampleRatio:
    """Customers per variant against the split the weights promise (chi-square test)."""

    observed: dict[str, int]
    expected: dict[str, float]
    chi_square: float
    p_value: float
    failed: bool


def sample_ratio_mismatch(
    customers: Mapping[str, int], weights: Mapping[str, float], threshold: float = SRM_P_VALUE
) -> SampleRatio | None:
    """Chi-square goodness of fit of customers per variant to the weights; None with fewer than
    two variants or no customer."""
    names = list(weights)
    total = sum(customers.get(name, 0) for name in names)
    if len(names) < 2 or total == 0:
        return None
    observed = [customers.get(name, 0) for name in names]
    scale = total / math.fsum(weights.values())
    expected = [weights[name] * scale for name in names]
    chi_square, p_value = stats.chisquare(observed, f_exp=expected)
    return SampleRatio(
        observed=dict(zip(names, observed, strict=True)),
        expected=dict(zip(names, expected, strict=True)),
        chi_square=float(chi_square),
        p_value=float(p_value),
        failed=bool(p_value < threshold),
    )


def minimum_detectable_effect(
    this: Estimate, control: Estimate, *, alpha: float = ALPHA, power: float = POWER
) -> float | None:
    """The smallest absolute difference a two-sided test at ``alpha`` finds with ``power``, for
    samples with these variances: (z₁₋α/₂ + z_power) · √(v + v_control). None while no variance
    can be estimated (fewer than two customers, or no outcome yet on either side)."""
    variance = this.variance + control.variance
    if not math.isfinite(variance) or variance <= 0:
        return None
    z = float(stats.norm.ppf(1 - alpha / 2)) + float(stats.norm.ppf(power))
    return z * math.sqrt(variance)
