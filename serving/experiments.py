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

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from core.settings import get_settings
from serving.api.schemas import (
    Difference,
    ExperimentCreate,
    ExperimentPublic,
    ExperimentReport,
    Interval,
    VariantReport,
    VariantSpec,
)
from serving.decision.consent import MODEL_PREFIX
from serving.decision_log import DecisionLog

Z_95 = 1.959963984540054  # two-sided 95 % normal quantile
CONFIDENCE = 0.95
REFRESH_SECONDS = 5.0


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


def assign_variant(key: str, customer_id: str, variants: Sequence[VariantSpec]) -> VariantSpec:
    """The customer's variant: a uniform number from hashing (key, customer), over the weights."""
    digest = hashlib.sha256(f"{key}\x1f{customer_id}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2.0**64
    cumulative = 0.0
    for variant in variants:
        cumulative += variant.weight
        if position < cumulative:
            return variant
    return variants[-1]  # weights sum to 1 within rounding


def control_variant(variants: Sequence[VariantSpec]) -> VariantSpec:
    """The holdout variant, or the first."""
    return next((variant for variant in variants if variant.policy == "holdout"), variants[0])


def covers(experiment: ExperimentCreate, day: dt.date) -> bool:
    moment = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return experiment.start <= moment <= experiment.end


@dataclass(frozen=True)
class VariantCounts:
    customers: int
    decisions: int
    offers_shown: int
    accepted: int


def build_report(
    experiment: ExperimentCreate, counts: dict[str, VariantCounts]
) -> ExperimentReport:
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
                difference = Difference(
                    against=control.name,
                    value=compared[0],
                    interval=Interval(low=compared[1], high=compared[2]),
                )
        rows.append(
            VariantReport(
                name=variant.name,
                policy=variant.policy,
                weight=variant.weight,
                customers=mine.customers,
                decisions=mine.decisions,
                offers_shown=mine.offers_shown,
                accepted=mine.accepted,
                acceptance_rate=mine.accepted / mine.decisions if mine.decisions else None,
                acceptance_interval=Interval(low=interval[0], high=interval[1])
                if interval
                else None,
                difference=difference,
            )
        )
    return ExperimentReport(
        key=experiment.key,
        description=experiment.description,
        start=experiment.start,
        end=experiment.end,
        control=control.name,
        confidence=CONFIDENCE,
        variants=rows,
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
        self._table = log.tables.experiments
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[ExperimentPublic, ...] = ()
        self._cached_at = -math.inf

    def create(self, spec: ExperimentCreate) -> ExperimentPublic:
        """Store a new experiment; raise :class:`ExperimentExists` for a key already taken."""
        experiment = ExperimentPublic(**spec.model_dump(), created_at=dt.datetime.now(dt.UTC))
        try:
            with self._log.engine.begin() as connection:
                connection.execute(
                    self._table.insert(),
                    {
                        "key": experiment.key,
                        "description": experiment.description,
                        "variants": [variant.model_dump() for variant in experiment.variants],
                        "starts_at": experiment.start,
                        "ends_at": experiment.end,
                        "created_at": experiment.created_at,
                    },
                )
        except IntegrityError as error:
            raise ExperimentExists(spec.key) from error
        self._cached_at = -math.inf  # this process sees its own experiment at once
        return experiment

    def all(self) -> list[ExperimentPublic]:
        """All experiments, the first created first."""
        query = sa.select(self._table).order_by(self._table.c.created_at, self._table.c.key)
        with self._log.engine.connect() as connection:
            return [self._from_row(row._mapping) for row in connection.execute(query)]

    def get(self, key: str) -> ExperimentPublic:
        """One experiment; KeyError when there is none with that key."""
        with self._log.engine.connect() as connection:
            row = connection.execute(sa.select(self._table).where(self._table.c.key == key)).first()
        if row is None:
            raise KeyError(key)
        return self._from_row(row._mapping)

    def running_on(self, day: dt.date) -> ExperimentPublic | None:
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
        tables = self._log.tables
        decisions, offers, events = tables.decisions, tables.decision_offers, tables.events
        shown = (
            sa.select(offers.c.decision_id, sa.func.count().label("shown"))
            .group_by(offers.c.decision_id)
            .subquery()
        )
        accepted = (
            sa.select(events.c.decision_id).where(events.c.type == "accept").distinct().subquery()
        )
        query = (
            sa.select(
                decisions.c.experiment_variant,
                sa.func.count(sa.distinct(decisions.c.customer_id)),
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(shown.c.shown), 0),
                sa.func.count(accepted.c.decision_id),
            )
            .select_from(
                decisions.outerjoin(
                    shown, shown.c.decision_id == decisions.c.decision_id
                ).outerjoin(accepted, accepted.c.decision_id == decisions.c.decision_id)
            )
            .where(decisions.c.experiment_key == key)
            .group_by(decisions.c.experiment_variant)
        )
        with self._log.engine.connect() as connection:
            return {
                row[0]: VariantCounts(int(row[1]), int(row[2]), int(row[3]), int(row[4]))
                for row in connection.execute(query)
            }

    def report(self, key: str) -> ExperimentReport:
        """The report of an experiment; KeyError when there is none with that key."""
        return build_report(self.get(key), self.counts(key))

    @staticmethod
    def _from_row(row: sa.RowMapping) -> ExperimentPublic:
        return ExperimentPublic(
            key=row["key"],
            description=row["description"],
            variants=row["variants"],
            start=row["starts_at"],
            end=row["ends_at"],
            created_at=row["created_at"],
        )


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
