"""Offer experiments: variants by weight, a stable assignment per customer, and the report.

A customer's variant comes from hashing (experiment key, customer id), so every invoice of that
customer lands in the same variant, on every replica, without storing an assignment. An invoice
dated D belongs to an experiment when ``start <= D 00:00 UTC <= end``; when several experiments
cover one date, the one created first assigns.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from core.settings import get_settings
from serving.decision.consent import MODEL_PREFIX
from serving.decision_log import DecisionLog
from serving.decision_log.experiments import (
    all_experiments,
    find_experiment,
    insert_experiment,
    variant_counts,
)
from serving.decision_log.records import Experiment, ExperimentSpec, Variant, VariantCounts

Z_95 = 1.959963984540054  # two-sided 95 % normal quantile
CONFIDENCE = 0.95
REFRESH_SECONDS = 5.0
# A report counts every decision of an experiment: past the request path's deadline on a large
# log, but bounded by the server's statement_timeout (10 s) when the database answers.
REPORT_DEADLINE_SECONDS = 15.0


class ExperimentExists(Exception):
    """An experiment with this key already exists."""


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion; None without trials."""
    if trials <= 0:
        return None
    p = successes / trials
    z2 = z * z
    denominator = 1.0 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    # At 0 (or all) successes the bound is exactly 0 (or 1); the float sum leaves ~1e-17.
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= trials else min(1.0, centre + half)
    return low, high


def difference_interval(
    successes: int, trials: int, control_successes: int, control_trials: int, z: float = Z_95
) -> tuple[float, float, float] | None:
    """Rate difference (this minus control) with Newcombe's interval from two Wilson intervals."""
    this = wilson_interval(successes, trials, z)
    control = wilson_interval(control_successes, control_trials, z)
    if this is None or control is None:
        return None
    p1, p2 = successes / trials, control_successes / control_trials
    (l1, u1), (l2, u2) = this, control
    difference = p1 - p2
    low = difference - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = difference + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return difference, low, high


def assign_variant(key: str, customer_id: str, variants: Sequence[Variant]) -> Variant:
    """The customer's variant: a uniform number from hashing (key, customer), over the weights."""
    digest = hashlib.sha256(f"{key}\x1f{customer_id}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2.0**64
    cumulative = 0.0
    for variant in variants:
        cumulative += variant.weight
        if position < cumulative:
            return variant
    return variants[-1]  # weights sum to 1 within rounding


def control_variant(variants: Sequence[Variant]) -> Variant:
    """The holdout variant, or the first."""
    return next((variant for variant in variants if variant.policy == "holdout"), variants[0])


def covers(experiment: ExperimentSpec, day: dt.date) -> bool:
    """Whether invoices dated ``day`` fall within the experiment."""
    moment = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return experiment.start <= moment <= experiment.end


@dataclass(frozen=True)
class RateInterval:
    low: float
    high: float


@dataclass(frozen=True)
class RateDifference:
    """A variant's acceptance rate minus the control's, with its 95 % interval (Newcombe)."""

    against: str
    value: float
    interval: RateInterval


@dataclass(frozen=True)
class VariantResult:
    """One variant's row of the report: what was decided and how often an offer was accepted."""

    name: str
    policy: str
    weight: float
    customers: int
    decisions: int
    offers_shown: int
    accepted: int
    acceptance_rate: float | None
    acceptance_interval: RateInterval | None
    difference: RateDifference | None


@dataclass(frozen=True)
class ExperimentResults:
    """An experiment's report: per variant, acceptance and its difference to the control."""

    key: str
    description: str
    start: dt.datetime
    end: dt.datetime
    control: str
    confidence: float
    variants: tuple[VariantResult, ...]


def build_report(experiment: ExperimentSpec, counts: dict[str, VariantCounts]) -> ExperimentResults:
    """The report from counts per variant (pure: the numbers a reader can recompute by hand)."""
    control = control_variant(experiment.variants)
    empty = VariantCounts(0, 0, 0, 0)
    control_counts = counts.get(control.name, empty)
    rows = []
    for variant in experiment.variants:
        mine = counts.get(variant.name, empty)
        interval = wilson_interval(mine.accepted, mine.decisions)
        difference = None
        if variant.name != control.name:
            compared = difference_interval(
                mine.accepted, mine.decisions, control_counts.accepted, control_counts.decisions
            )
            if compared is not None:
                difference = RateDifference(
                    against=control.name,
                    value=compared[0],
                    interval=RateInterval(low=compared[1], high=compared[2]),
                )
        rows.append(
            VariantResult(
                name=variant.name,
                policy=variant.policy,
                weight=variant.weight,
                customers=mine.customers,
                decisions=mine.decisions,
                offers_shown=mine.offers_shown,
                accepted=mine.accepted,
                acceptance_rate=mine.accepted / mine.decisions if mine.decisions else None,
                acceptance_interval=RateInterval(low=interval[0], high=interval[1])
                if interval
                else None,
                difference=difference,
            )
        )
    return ExperimentResults(
        key=experiment.key,
        description=experiment.description,
        start=experiment.start,
        end=experiment.end,
        control=control.name,
        confidence=CONFIDENCE,
        variants=tuple(rows),
    )


class Experiments:
    """Experiments in the decision log's database; the running ones cached for the offers path."""

    def __init__(
        self,
        log: DecisionLog,
        *,
        refresh_seconds: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[Experiment, ...] = ()
        self._cached_at = -math.inf

    def create(self, spec: ExperimentSpec) -> Experiment:
        """Store a new experiment; raise :class:`ExperimentExists` for a key already taken."""
        experiment = Experiment(
            key=spec.key,
            description=spec.description,
            variants=spec.variants,
            start=spec.start,
            end=spec.end,
            created_at=dt.datetime.now(dt.UTC),
        )
        if not self._log.bounded(insert_experiment, self._log, experiment):
            raise ExperimentExists(spec.key)
        self._cached_at = -math.inf  # this process sees its own experiment at once
        return experiment

    def all(self) -> list[Experiment]:
        """All experiments, the first created first."""
        return self._log.bounded(all_experiments, self._log)

    def get(self, key: str) -> Experiment:
        """One experiment; KeyError when there is none with that key."""
        experiment = self._log.bounded(find_experiment, self._log, key)
        if experiment is None:
            raise KeyError(key)
        return experiment

    def running_on(self, day: dt.date) -> Experiment | None:
        """The experiment assigning invoices dated ``day``, from a cache refreshed every few s."""
        now = self._clock()
        if now - self._cached_at > self._refresh_seconds:
            with self._lock:
                if now - self._cached_at > self._refresh_seconds:
                    self._cached = tuple(self.all())
                    self._cached_at = now
        return next((e for e in self._cached if covers(e, day)), None)

    def challenger_policies(self, now: dt.datetime) -> list[str]:
        """``model:<version>`` policies of experiments not yet ended: the models to keep loaded."""
        return sorted(
            {
                variant.policy
                for experiment in self.all()
                if experiment.end >= now
                for variant in experiment.variants
                if variant.policy.startswith(MODEL_PREFIX)
            }
        )

    def counts(self, key: str) -> dict[str, VariantCounts]:
        """Customers, decisions, offers shown and decisions with an accepted offer, per variant."""
        return self._log.bounded_within(REPORT_DEADLINE_SECONDS, variant_counts, self._log, key)

    def report(self, key: str) -> ExperimentResults:
        """The report of an experiment; KeyError when there is none with that key."""
        return build_report(self.get(key), self.counts(key))


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def print_report(key: str) -> None:
    """Print an experiment's report as a table (``offers experiments report KEY``)."""
    from rich.console import Console
    from rich.table import Table

    log = DecisionLog.from_settings(get_settings())
    try:
        report = Experiments(log).report(key)
    finally:
        log.close()
    table = Table(
        title=f"{report.key}: {report.start:%Y-%m-%d} – {report.end:%Y-%m-%d}, "
        f"control {report.control}"
    )
    for heading in ("variant", "policy", "weight", "customers", "decisions", "accepted"):
        table.add_column(heading, justify="left" if heading in {"variant", "policy"} else "right")
    table.add_column("acceptance (95 % CI)", justify="right")
    table.add_column(f"vs {report.control} (95 % CI)", justify="right")
    for row in report.variants:
        rate = _percent(row.acceptance_rate)
        if row.acceptance_interval:
            rate += (
                f" ({_percent(row.acceptance_interval.low)}–"
                f"{_percent(row.acceptance_interval.high)})"
            )
        versus = "–"
        if row.difference:
            versus = (
                f"{100 * row.difference.value:+.1f} pp "
                f"({100 * row.difference.interval.low:+.1f} to "
                f"{100 * row.difference.interval.high:+.1f})"
            )
        table.add_row(
            row.name,
            row.policy,
            f"{row.weight:g}",
            str(row.customers),
            str(row.decisions),
            str(row.accepted),
            rate,
            versus,
        )
    Console().print(table)
