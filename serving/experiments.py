"""Offer experiments: define, stop and list them, assign customers, and report per customer.

A customer's variant comes from hashing (layer, experiment key, customer id), so every invoice of
that customer lands in the same variant, on every replica, without storing an assignment. An
invoice dated D belongs to an experiment when ``start <= D 00:00 UTC <= end`` and the experiment
has not been stopped. Experiments of one layer may not overlap in time; when experiments of several
layers cover one date, the one created first decides the invoice (one invoice, one policy). Only
customers with marketing consent and no objection are enrolled (``serving.decision.engine``).

The report counts customers, the unit that is randomised: rates over decisions are ratio metrics
with customer-clustered intervals, and every comparison is against the control variant
(``serving.experiment_statistics``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from serving.decision.consent import MODEL_PREFIX
from serving.decision_log import DecisionLog
from serving.decision_log.experiments import (
    all_experiments,
    customer_outcomes,
    customer_outcomes_by_day,
    find_experiment,
    insert_experiment,
    stop_experiment,
)
from serving.decision_log.records import (
    DEFAULT_LAYER,
    CustomerDay,
    CustomerOutcome,
    Experiment,
    ExperimentSpec,
    Variant,
)
from serving.experiment_statistics import (
    ALPHA,
    CONFIDENCE,
    POWER,
    Comparison,
    Estimate,
    SampleRatio,
    difference,
    mean_estimate,
    minimum_detectable_effect,
    proportion_difference,
    proportion_interval,
    ratio_estimate,
    ratio_estimates_by_column,
    sample_ratio_mismatch,
)

REFRESH_SECONDS = 5.0
# A report reads every enrolled customer's decisions and outcomes: past the request path's
# deadline on a large log, but bounded by the server's statement_timeout (10 s) when the database
# answers.
REPORT_DEADLINE_SECONDS = 15.0
# Churn is counted when the customer's last contract ends within this many days of their first
# decision in the experiment: the churn model's three-month horizon.
CHURN_WINDOW_DAYS = 90
MDE_METRIC = "acceptance_rate"
Status = Literal["scheduled", "running", "stopped", "ended"]
Period = Literal["day", "week"]
# Cumulative results are given per invoice date while the dates decided span fewer days than
# this, per ISO week (Monday to Sunday) after.
DAILY_UP_TO_DAYS = 31


class ExperimentExists(Exception):
    """An experiment with this key already exists."""


class ExperimentOverlaps(Exception):
    """Another experiment of the same layer runs during part of this one's period."""

    def __init__(self, other: Experiment) -> None:
        super().__init__(other.key)
        self.other = other


class ExperimentEnded(Exception):
    """The experiment ended before it could be stopped."""


class ChurnUnavailable(Exception):
    """The contracts table, from which churn is read, cannot be read."""


def assign_variant(
    key: str, customer_id: str, variants: Sequence[Variant], layer: str = DEFAULT_LAYER
) -> Variant:
    """The customer's variant: a uniform number from hashing (layer, key, customer), over the
    weights. The default layer hashes (key, customer) alone, as before layers existed, so that
    an experiment stored then keeps every customer in the variant they were given."""
    seed = (
        f"{key}\x1f{customer_id}"
        if layer == DEFAULT_LAYER
        else f"{layer}\x1f{key}\x1f{customer_id}"
    )
    digest = hashlib.sha256(seed.encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2.0**64
    cumulative = 0.0
    for variant in variants:
        cumulative += variant.weight
        if position < cumulative:
            return variant
    return variants[-1]  # weights sum to 1 within rounding


def control_variant(experiment: ExperimentSpec) -> Variant:
    """The variant the others are compared with: the one named, else the first ``model`` variant
    (the champion policy), else the first."""
    variants = experiment.variants
    if experiment.control is not None:
        return next(v for v in variants if v.name == experiment.control)
    return next((v for v in variants if v.policy == "model"), variants[0])


def covers(experiment: Experiment | ExperimentSpec, day: dt.date) -> bool:
    """Whether invoices dated ``day`` fall within the experiment (a stopped one covers none)."""
    if isinstance(experiment, Experiment) and experiment.stopped_at is not None:
        return False
    moment = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    return experiment.start <= moment <= experiment.end


def periods_meet(spec: ExperimentSpec, other: Experiment) -> bool:
    """Whether ``other``'s period (to its stop, if it stopped after it started) meets ``spec``'s."""
    return (
        other.start <= spec.end and spec.start <= other.closes_at and other.closes_at >= other.start
    )


def overlapping(spec: ExperimentSpec, others: Sequence[Experiment]) -> Experiment | None:
    """The first experiment of the same layer whose period meets ``spec``'s."""
    return next(
        (other for other in others if other.layer == spec.layer and periods_meet(spec, other)),
        None,
    )


def decided_first_by(experiment: Experiment, others: Sequence[Experiment]) -> list[Experiment]:
    """Experiments of other layers, created before ``experiment``, whose periods meet its own:
    they decide the invoices both cover (one invoice, one policy)."""
    return [
        other
        for other in others
        if other.key != experiment.key
        and other.created_at < experiment.created_at
        and periods_meet(experiment, other)
    ]


def status(experiment: Experiment, now: dt.datetime) -> Status:
    if experiment.stopped_at is not None and experiment.stopped_at < experiment.end:
        return "stopped"
    if now < experiment.start:
        return "scheduled"
    return "running" if now <= experiment.end else "ended"


# Churn ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CustomerExits:
    """When customers who left had their last contract end, from a contracts table complete up
    to ``known_through``."""

    exits: Mapping[str, dt.date]
    known_through: dt.date


def contract_exits(data_dir: Path) -> CustomerExits:
    """Customer exits from the contracts input table; :class:`ChurnUnavailable` when it cannot
    be read. The table is taken to be complete up to its newest start or end date."""
    from core.contract import CONTRACTS
    from core.tables import ContractError, read_table
    from training.labels import customer_exits

    try:
        contracts = read_table(data_dir, CONTRACTS)
    except (ContractError, OSError) as error:
        raise ChurnUnavailable(f"the contracts table could not be read from {data_dir}") from error
    if contracts.empty:
        raise ChurnUnavailable(f"the contracts table in {data_dir} is empty")
    exits = customer_exits(contracts)
    newest = max(contracts["valid_from"].max(), contracts["valid_to"].max(skipna=True))
    return CustomerExits(
        exits={str(k): v.date() for k, v in exits.items()},
        known_through=newest.date(),
    )


# The report ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateInterval:
    low: float
    high: float


@dataclass(frozen=True)
class RateDifference:
    """A variant's metric minus the control's, its 95 % interval and two-sided p-value."""

    against: str
    value: float
    interval: RateInterval | None
    p_value: float | None


@dataclass(frozen=True)
class ChurnResult:
    followed: int
    churned: int
    rate: float | None
    interval: RateInterval | None


@dataclass(frozen=True)
class VariantResult:
    """One variant's row of the report, per customer."""

    name: str
    policy: str
    weight: float
    customers: int
    decisions: int
    offers_shown: int
    impressions: int
    impressions_per_customer: float | None
    clicks: int
    click_rate: float | None
    click_interval: RateInterval | None
    accepted: int
    acceptance_rate: float | None
    acceptance_interval: RateInterval | None
    revenue_change_sek_per_customer: float | None
    revenue_change_interval: RateInterval | None
    churn: ChurnResult | None
    objections: int
    objection_rate: float | None
    objection_interval: RateInterval | None
    difference: RateDifference | None
    differences: dict[str, RateDifference] = field(default_factory=dict)


@dataclass(frozen=True)
class MinimumDetectable:
    metric: str
    alpha: float
    power: float
    by_variant: dict[str, float | None]


@dataclass(frozen=True)
class CumulativePoint:
    """A variant's acceptance over every invoice dated up to ``through``, as the report computes
    it: a ratio over customers with the delta-method interval, and against the control."""

    through: dt.date
    customers: int
    decisions: int
    accepted: int
    acceptance_rate: float | None
    interval: RateInterval | None
    difference: RateDifference | None


@dataclass(frozen=True)
class CumulativeSeries:
    variant: str
    points: tuple[CumulativePoint, ...]


@dataclass(frozen=True)
class CumulativeResults:
    """Cumulative acceptance per variant at the end of each day (or ISO week) with decisions,
    by invoice date: how the result moved as customers came in."""

    metric: str
    period: Period
    control: str
    series: tuple[CumulativeSeries, ...]


@dataclass(frozen=True)
class ExperimentResults:
    """An experiment's report: per variant and customer, against the control, with warnings."""

    key: str
    description: str
    layer: str
    status: Status
    start: dt.datetime
    end: dt.datetime
    stopped_at: dt.datetime | None
    control: str
    confidence: float
    customers: int
    planned_customers: int | None
    churn_window_days: int
    warnings: list[str]
    srm: SampleRatio | None
    mde: MinimumDetectable
    variants: tuple[VariantResult, ...]
    cumulative: CumulativeResults


def _interval(bounds: tuple[float, float] | None) -> RateInterval | None:
    return None if bounds is None else RateInterval(low=bounds[0], high=bounds[1])


def _compared(against: str, comparison: Comparison | None) -> RateDifference | None:
    if comparison is None:
        return None
    finite = math.isfinite(comparison.low) and math.isfinite(comparison.high)
    return RateDifference(
        against=against,
        value=comparison.value,
        interval=RateInterval(comparison.low, comparison.high) if finite else None,
        p_value=comparison.p_value,
    )


@dataclass
class _Arm:
    """One variant's customers' figures, as the statistics take them."""

    outcomes: list[CustomerOutcome]
    followed: int = 0
    churned: int = 0
    # Each column is read many times (per metric, and again as the control of every variant).
    _columns: dict[str, list[float]] = field(default_factory=dict)

    def column(self, name: str) -> list[float]:
        if name not in self._columns:
            self._columns[name] = [float(getattr(outcome, name)) for outcome in self.outcomes]
        return self._columns[name]

    def ratio(self, numerator: str) -> Estimate | None:
        return ratio_estimate(self.column(numerator), self.column("decisions"))

    def revenue(self) -> Estimate | None:
        return mean_estimate(self.column("revenue_change_sek"))

    @property
    def objections(self) -> int:
        return sum(outcome.objected_at is not None for outcome in self.outcomes)


def _churn_counts(
    outcomes: Sequence[CustomerOutcome], exits: CustomerExits, window_days: int
) -> tuple[int, int]:
    """Customers whose window after their first decision has ended in the data, and of them
    those whose last contract ended within it."""
    window = dt.timedelta(days=window_days)
    followed = churned = 0
    for outcome in outcomes:
        first = outcome.first_decided_at.date()
        if first + window > exits.known_through:
            continue
        followed += 1
        left = exits.exits.get(outcome.customer_id)
        churned += left is not None and first <= left <= first + window
    return followed, churned


def _period_end(day: dt.date, period: Period) -> dt.date:
    return day if period == "day" else day + dt.timedelta(days=6 - day.weekday())


def cumulative_results(
    variants: Sequence[str],
    control: str,
    days: Sequence[CustomerDay],
    period: Period | None = None,
) -> CumulativeResults:
    """Per variant, at the end of each period with decisions: customers, decisions, accepted,
    the acceptance rate over customers with its interval, and its difference against ``control``
    with interval and p-value. ``period`` None: per day while the invoice dates span fewer than
    ``DAILY_UP_TO_DAYS`` days, else per ISO week."""
    rows = [row for row in days if row.variant in variants]
    if period is None:
        span = (max(r.day for r in rows) - min(r.day for r in rows)).days if rows else 0
        period = "day" if span < DAILY_UP_TO_DAYS else "week"
    row_ends = {day: _period_end(day, period) for day in {row.day for row in rows}}
    ends = sorted(set(row_ends.values()))
    column = {end: index for index, end in enumerate(ends)}
    estimates: dict[str, list[Estimate | None]] = {}
    counts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for name in variants:
        mine = [row for row in rows if row.variant == name]
        customer = {cid: i for i, cid in enumerate(dict.fromkeys(r.customer_id for r in mine))}
        # Customers × period ends: decisions and accepted in each period, then up to each end.
        decided = np.zeros((len(customer), len(ends)))
        accepted = np.zeros((len(customer), len(ends)))
        at = (
            np.array([customer[r.customer_id] for r in mine], dtype=int),
            np.array([column[row_ends[r.day]] for r in mine], dtype=int),
        )
        np.add.at(decided, at, [r.decisions for r in mine])
        np.add.at(accepted, at, [r.accepted for r in mine])
        decided, accepted = decided.cumsum(axis=1), accepted.cumsum(axis=1)
        estimates[name] = ratio_estimates_by_column(accepted, decided)
        counts[name] = ((decided > 0).sum(axis=0), decided.sum(axis=0), accepted.sum(axis=0))
    points: dict[str, list[CumulativePoint]] = {name: [] for name in variants}
    for index, through in enumerate(ends):
        base = estimates[control][index]
        for name in variants:
            mine_estimate = estimates[name][index]
            compared = None
            if name != control and mine_estimate is not None and base is not None:
                compared = _compared(control, difference(mine_estimate, base))
            customers, decisions, accepted_count = counts[name]
            points[name].append(
                CumulativePoint(
                    through=through,
                    customers=int(customers[index]),
                    decisions=int(decisions[index]),
                    accepted=int(accepted_count[index]),
                    acceptance_rate=None if mine_estimate is None else mine_estimate.value,
                    interval=None if mine_estimate is None else _interval(mine_estimate.interval()),
                    difference=compared,
                )
            )
    return CumulativeResults(
        metric="acceptance_rate",
        period=period,
        control=control,
        series=tuple(CumulativeSeries(name, tuple(points[name])) for name in variants),
    )


def build_report(
    experiment: Experiment,
    outcomes: Sequence[CustomerOutcome],
    *,
    now: dt.datetime,
    exits: CustomerExits | None = None,
    churn_problem: str | None = None,
    churn_window_days: int = CHURN_WINDOW_DAYS,
    decided_first: Sequence[Experiment] = (),
    days: Sequence[CustomerDay] = (),
) -> ExperimentResults:
    """The report from each enrolled customer's outcome (pure: the numbers a reader can
    recompute by hand). ``exits`` None: churn is not reported, and ``churn_problem`` says why;
    ``decided_first``: the experiments of other layers that take the invoices both cover;
    ``days``: each customer's decisions per invoice date, for the cumulative results."""
    control = control_variant(experiment)
    arms: dict[str, _Arm] = {variant.name: _Arm([]) for variant in experiment.variants}
    for outcome in outcomes:
        if outcome.variant in arms:  # a variant renamed by hand in the database is not reported
            arms[outcome.variant].outcomes.append(outcome)
    if exits is not None:
        for arm in arms.values():
            arm.followed, arm.churned = _churn_counts(arm.outcomes, exits, churn_window_days)
    base = arms[control.name]
    rows = []
    detectable: dict[str, float | None] = {}
    for variant in experiment.variants:
        arm = arms[variant.name]
        customers = len(arm.outcomes)
        decisions = int(sum(arm.column("decisions")))
        clicks, accepted = arm.ratio("clicked"), arm.ratio("accepted")
        revenue = arm.revenue()
        differences: dict[str, RateDifference] = {}
        if variant.name != control.name:
            pairs: dict[str, tuple[Estimate | None, Estimate | None]] = {
                "click_rate": (clicks, base.ratio("clicked")),
                "acceptance_rate": (accepted, base.ratio("accepted")),
                "revenue_change_sek_per_customer": (revenue, base.revenue()),
            }
            for metric, (mine, theirs) in pairs.items():
                if mine is not None and theirs is not None:
                    compared = _compared(control.name, difference(mine, theirs))
                    if compared is not None:
                        differences[metric] = compared
            proportions = {
                "objection_rate": (arm.objections, customers, base.objections, len(base.outcomes))
            }
            if exits is not None:
                proportions["churn_rate"] = (arm.churned, arm.followed, base.churned, base.followed)
            for metric, counts in proportions.items():
                compared = _compared(control.name, proportion_difference(*counts))
                if compared is not None:
                    differences[metric] = compared
            base_accepted = base.ratio("accepted")
            detectable[variant.name] = (
                None
                if accepted is None or base_accepted is None
                else minimum_detectable_effect(accepted, base_accepted)
            )
        rows.append(
            VariantResult(
                name=variant.name,
                policy=variant.policy,
                weight=variant.weight,
                customers=customers,
                decisions=decisions,
                offers_shown=int(sum(arm.column("offers_shown"))),
                impressions=int(sum(arm.column("impressions"))),
                impressions_per_customer=sum(arm.column("impressions")) / customers
                if customers
                else None,
                clicks=int(sum(arm.column("clicked"))),
                click_rate=None if clicks is None else clicks.value,
                click_interval=None if clicks is None else _interval(clicks.interval()),
                accepted=int(sum(arm.column("accepted"))),
                acceptance_rate=None if accepted is None else accepted.value,
                acceptance_interval=None if accepted is None else _interval(accepted.interval()),
                revenue_change_sek_per_customer=None if revenue is None else revenue.value,
                revenue_change_interval=None if revenue is None else _interval(revenue.interval()),
                churn=None
                if exits is None
                else ChurnResult(
                    followed=arm.followed,
                    churned=arm.churned,
                    rate=arm.churned / arm.followed if arm.followed else None,
                    interval=_interval(proportion_interval(arm.churned, arm.followed)),
                ),
                objections=arm.objections,
                objection_rate=arm.objections / customers if customers else None,
                objection_interval=_interval(proportion_interval(arm.objections, customers)),
                difference=differences.get("acceptance_rate"),
                differences=differences,
            )
        )
    srm = sample_ratio_mismatch(
        {name: len(arm.outcomes) for name, arm in arms.items()},
        {variant.name: variant.weight for variant in experiment.variants},
    )
    total = sum(len(arm.outcomes) for arm in arms.values())
    return ExperimentResults(
        key=experiment.key,
        description=experiment.description,
        layer=experiment.layer,
        status=status(experiment, now),
        start=experiment.start,
        end=experiment.end,
        stopped_at=experiment.stopped_at,
        control=control.name,
        confidence=CONFIDENCE,
        customers=total,
        planned_customers=experiment.planned_customers,
        churn_window_days=churn_window_days,
        warnings=_warnings(
            experiment,
            rows,
            control.name,
            srm,
            total,
            exits,
            churn_problem,
            [outcome for arm in arms.values() for outcome in arm.outcomes],
            decided_first,
        ),
        srm=srm,
        mde=MinimumDetectable(metric=MDE_METRIC, alpha=ALPHA, power=POWER, by_variant=detectable),
        variants=tuple(rows),
        cumulative=cumulative_results(
            [variant.name for variant in experiment.variants], control.name, days
        ),
    )


def _warnings(
    experiment: Experiment,
    rows: Sequence[VariantResult],
    control: str,
    srm: SampleRatio | None,
    total: int,
    exits: CustomerExits | None,
    churn_problem: str | None,
    outcomes: Sequence[CustomerOutcome],
    decided_first: Sequence[Experiment],
) -> list[str]:
    """Plain warnings for the reader, the sample-ratio mismatch first: with it nothing else in
    the report can be trusted."""
    warnings = []
    if srm is not None and srm.failed:
        split = ", ".join(f"{name} {count}" for name, count in srm.observed.items())
        warnings.append(
            f"Sample ratio mismatch: customers per variant ({split}) do not follow the weights "
            f"(chi-square {srm.chi_square:.1f}, p = {srm.p_value:.2g}). The assignment or the "
            "logging is broken; no difference in this report can be trusted."
        )
    if experiment.stopped_at is not None and experiment.stopped_at < experiment.end:
        warnings.append(
            f"Stopped at {experiment.stopped_at:%Y-%m-%d %H:%M} UTC, before its planned end "
            f"({experiment.end:%Y-%m-%d %H:%M} UTC)."
        )
    for other in decided_first:
        warnings.append(
            f"Experiment {other.key} of layer {other.layer}, created earlier, runs from "
            f"{other.start:%Y-%m-%d} to {other.closes_at:%Y-%m-%d}: the invoices both cover are "
            "decided under it, so this experiment enrols nobody while it runs."
        )
    planned = experiment.planned_customers
    if planned is not None and total < planned:
        warnings.append(
            f"Read before the planned sample: {total} of {planned} customers enrolled. "
            "Differences read early and often look significant by chance; decide at the "
            "planned size."
        )
    by_name = {row.name: row for row in rows}
    if by_name[control].customers == 0:
        warnings.append(f"The control {control} has no customers yet: nothing is compared.")
    if exits is None:
        warnings.append(
            f"Churn is not reported: {churn_problem or 'no contracts table was given'}."
        )
    elif not any(row.churn and row.churn.followed for row in rows):
        warnings.append(
            "Churn: no customer has been followed for the whole window yet (the contracts "
            f"table runs to {exits.known_through:%Y-%m-%d})."
        )
    unpriced = sum(outcome.unpriced_accepts for outcome in outcomes)
    if unpriced:
        warnings.append(
            f"{unpriced} accepted offers had neither a logged saving nor a fee change "
            "(decided before fee changes were logged, or with today's plan fee unknown) and "
            "count 0 in the revenue change."
        )
    return warnings


# The service ------------------------------------------------------------------------------------


class Experiments:
    """Experiments in the decision log's database; the running ones cached for the offers path.

    ``exits`` reads customer exits for the reports' churn (None: churn is not reported)."""

    def __init__(
        self,
        log: DecisionLog,
        *,
        exits: Callable[[], CustomerExits] | None = None,
        refresh_seconds: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._log = log
        self._exits = exits
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._now = now
        self._lock = threading.Lock()
        self._cached: tuple[Experiment, ...] = ()
        self._cached_at = -math.inf

    def create(self, spec: ExperimentSpec) -> Experiment:
        """Store a new experiment. Raises :class:`ExperimentExists` for a key already taken and
        :class:`ExperimentOverlaps` when an experiment of its layer runs during its period."""
        experiment = Experiment(
            **{name: getattr(spec, name) for name in ExperimentSpec.__dataclass_fields__},
            created_at=self._now(),
        )
        refused = self._log.bounded(
            insert_experiment, self._log, experiment, lambda stored: overlapping(experiment, stored)
        )
        if refused is False:
            raise ExperimentExists(spec.key)
        if refused is not None:
            raise ExperimentOverlaps(refused)
        self._cached_at = -math.inf  # this process sees its own experiment at once
        return experiment

    def stop(self, key: str) -> Experiment:
        """Stop the experiment now: from the next refresh no invoice is assigned to it. Stopping
        it again answers the first stop; KeyError for no such experiment,
        :class:`ExperimentEnded` for one that ended already."""
        experiment = self.get(key)
        if experiment.stopped_at is not None:
            return experiment
        now = self._now()
        if now > experiment.end:
            raise ExperimentEnded(key)
        self._log.bounded(stop_experiment, self._log, key, now)
        self._cached_at = -math.inf
        return self.get(key)

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
        """The experiment assigning invoices dated ``day``, from a cache refreshed every few s:
        of those covering it (one per layer at most), the one created first."""
        now = self._clock()
        if now - self._cached_at > self._refresh_seconds:
            with self._lock:
                if now - self._cached_at > self._refresh_seconds:
                    self._cached = tuple(self.all())
                    self._cached_at = now
        return next((e for e in self._cached if covers(e, day)), None)

    def challenger_policies(self, now: dt.datetime) -> list[str]:
        """``model:<version>`` policies of experiments neither ended nor stopped: the models to
        keep loaded."""
        return sorted(
            {
                variant.policy
                for experiment in self.all()
                if experiment.end >= now and experiment.stopped_at is None
                for variant in experiment.variants
                if variant.policy.startswith(MODEL_PREFIX)
            }
        )

    def outcomes(self, key: str) -> list[CustomerOutcome]:
        """Each enrolled customer's decisions and what came back."""
        return self._log.bounded_within(REPORT_DEADLINE_SECONDS, customer_outcomes, self._log, key)

    def report(self, key: str) -> ExperimentResults:
        """The report of an experiment; KeyError when there is none with that key."""
        experiment = self.get(key)
        exits, problem = None, None
        if self._exits is None:
            problem = "no contracts table is configured for reports"
        else:
            try:
                exits = self._exits()
            except ChurnUnavailable as error:
                problem = str(error)
        outcomes, days = self._log.bounded_within(
            REPORT_DEADLINE_SECONDS, customer_outcomes_by_day, self._log, key
        )
        return build_report(
            experiment,
            outcomes,
            now=self._now(),
            exits=exits,
            churn_problem=problem,
            decided_first=decided_first_by(experiment, self.all()),
            days=days,
        )


def json_ready(value: object) -> object:
    """An experiment or a report (dataclasses) as JSON values, times as the API writes them
    (``2026-12-01T00:00:00Z``): what ``GET /v1/experiments/{key}/report`` answers."""
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    return value
