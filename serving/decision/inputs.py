"""What a decision is made from: the request, consent, account facts and the injected edges.

The engine never reads a store itself. The API passes a :class:`FeatureSource` over Feast, the
batch invoice run one over frames, and tests a fake; the models come in behind :class:`Scorer`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from core.trends import least_squares_slope, row_slope, row_window_stats, window_stats

Locale = Literal["sv", "en"]

ADULT_AGE = 18


class UnknownCustomerError(LookupError):
    """The feature store has never seen this customer, or holds no account of theirs (the API
    answers 404)."""

    def __init__(self, customer_id: str) -> None:
        super().__init__(f"unknown customer {customer_id}")
        self.customer_id = customer_id


@dataclass(frozen=True)
class DecisionRequest:
    """One invoice to decide offers for."""

    invoice_id: str
    customer_id: str
    invoice_date: dt.date
    locale: Locale
    max_offers: int


@dataclass(frozen=True)
class ExperimentAssignment:
    """The experiment variant the caller assigned this customer to."""

    key: str
    variant: str


@dataclass(frozen=True)
class ConsentState:
    """The consent gate's inputs. ``age`` is the lowest age the birth year allows."""

    marketing: bool
    profiling: bool
    usage_insights: bool
    objected: bool
    age: int | None
    segment: str

    @property
    def is_adult(self) -> bool:
        # An unknown age is not proof of adulthood: such customers are never profiled.
        return self.age is not None and self.age >= ADULT_AGE

    @classmethod
    def from_features(
        cls, row: Mapping[str, Any], invoice_date: dt.date, today: dt.date | None = None
    ) -> ConsentState:
        """Build from ``features.views.CUSTOMER_CONSENT`` values read for one customer.

        The age is taken on the invoice date or ``today`` (default: today, UTC), whichever is
        earlier: no invoice date a caller sends can make a minor an adult.
        """
        on = min(invoice_date, today or dt.datetime.now(dt.UTC).date())
        birth_year = as_int(row.get("birth_year"))
        segment = row.get("segment")
        return cls(
            marketing=as_flag(row.get("consent_marketing")),
            profiling=as_flag(row.get("consent_profiling")),
            usage_insights=as_flag(row.get("consent_usage_insights")),
            objected=as_flag(row.get("objected_marketing")),
            age=lowest_age(birth_year, on),
            segment=segment if isinstance(segment, str) and segment else "consumer",
        )


def lowest_age(birth_year: int | None, on: dt.date) -> int | None:
    """Age on ``on`` assuming the birthday is as late in the year as possible.

    Only the birth year is known, so someone born in 2008 is treated as 17 throughout 2026
    (until 31 December): a customer who might be a minor is treated as one.
    """
    if birth_year is None:
        return None
    age = on.year - birth_year
    return age if (on.month, on.day) == (12, 31) else age - 1


class FeatureSource(Protocol):
    """The I/O edge: the API reads Feast, the batch invoice run reads frames."""

    def read_consent(self, customer_id: str) -> dict[str, Any] | None:
        """``features.views.CUSTOMER_CONSENT`` values; ``None`` for an unknown customer."""
        ...

    def read_account(self, customer_id: str) -> dict[str, Any]:
        """``CUSTOMER_USAGE`` + ``CUSTOMER_CONTRACT`` + ``CUSTOMER_BILLING`` values."""
        ...

    def read_account_and_profile(self, customer_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """What ``read_account`` reads and the ``CUSTOMER_PROFILE`` values, in one read where the
        store allows; only ever called once the consent gate allowed profiling."""
        ...


@runtime_checkable
class ManyCustomersSource(FeatureSource, Protocol):
    """A feature source that reads many customers at once (an online store in one statement or
    one pipeline); the engine uses it when it decides many invoices together."""

    def read_consents(self, customer_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """``read_consent`` of each customer, in order."""
        ...

    def read_accounts(self, customer_ids: Sequence[str]) -> list[dict[str, Any]]:
        """``read_account`` of each customer, in order."""
        ...

    def read_accounts_and_profiles(
        self, customer_ids: Sequence[str]
    ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """``read_account_and_profile`` of each customer, in order."""
        ...


class Scorer(Protocol):
    """The two LightGBM models behind one interface."""

    model_version: str

    def acceptance(self, rows: np.ndarray) -> np.ndarray:
        """Acceptance probability per row of ``training.model_inputs.ranker_matrix``."""
        ...

    def contributions(self, rows: np.ndarray) -> np.ndarray:
        """LightGBM ``pred_contrib``: shape ``(n, n_features + 1)``, the last column the bias."""
        ...

    def churn_risks(self, rows: np.ndarray) -> np.ndarray:
        """Churn probability per row of ``training.model_inputs.churn_matrix``."""
        ...

    def segment_acceptance(self, segment: str) -> Mapping[str, float]:
        """Acceptance when shown first per offer id, over everyone in ``segment`` (learnt with
        the ranker from the segment's logged answers); empty when the model has none."""
        ...


def as_float(value: Any) -> float:
    """A feature value as float; missing (None, NaN, pandas NA, empty text) becomes NaN."""
    if type(value) is float:
        return value
    if value is None or (isinstance(value, str) and not value):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def as_int(value: Any) -> int | None:
    number = as_float(value)
    return None if math.isnan(number) else int(number)


def as_flag(value: Any) -> bool:
    """A 0/1 feature; missing means not granted (docs/data-contract.md, table `consents`)."""
    number = as_float(value)
    return not math.isnan(number) and number != 0


def as_date(value: Any) -> dt.date | None:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str) and value:
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            return None
    return None


def has_account(row: Mapping[str, Any]) -> bool:
    """True when the store holds the customer's account (their plan), not only a consent row.

    The consent view is reloaded whole on every materialize; the others load what changed. A
    customer whose rows were erased and who comes back in the consent view alone (or whose
    account rows are not materialized yet) has nothing to decide from or summarise: unknown.
    """
    plan_id = row.get("current_plan_id")
    return isinstance(plan_id, str) and plan_id != ""


@dataclass(frozen=True)
class Account:
    """The account facts eligibility, guardrails and reasons read, typed once.

    ``features`` keeps every value read, for the model frame and the usage summary.
    Allowances are NaN when unlimited.
    """

    current_plan_id: str
    current_monthly_fee_sek: float
    current_new_customer_fee_sek: float
    current_data_gb: float
    current_voice_minutes: float
    current_roaming_data_gb: float
    tenure_months: int
    binding_end_date: dt.date | None
    # The day the last contract ended when no contract followed it; None while one is in force.
    contract_ended_on: dt.date | None
    in_collection: bool
    unpaid_reminders: int
    late_payments_12m: int
    invoice_fee_last_sek: float
    data_gb_avg_3m: float
    data_gb_max_3m: float
    roaming_data_gb_avg_3m: float
    roaming_data_gb_max_3m: float
    features: Mapping[str, Any]

    @classmethod
    def from_features(cls, row: Mapping[str, Any]) -> Account:
        plan_id = row.get("current_plan_id")
        fee = as_float(row.get("current_monthly_fee_sek"))
        return cls(
            current_plan_id=plan_id if isinstance(plan_id, str) else "",
            current_monthly_fee_sek=0.0 if math.isnan(fee) else fee,
            current_new_customer_fee_sek=as_float(row.get("current_new_customer_fee_sek")),
            current_data_gb=as_float(row.get("current_data_gb")),
            current_voice_minutes=as_float(row.get("current_voice_minutes")),
            current_roaming_data_gb=as_float(row.get("current_roaming_data_gb")),
            tenure_months=as_int(row.get("tenure_months")) or 0,
            binding_end_date=as_date(row.get("binding_end_date")),
            contract_ended_on=as_date(row.get("contract_ended_on")),
            in_collection=as_flag(row.get("in_collection")),
            unpaid_reminders=as_int(row.get("unpaid_reminders")) or 0,
            late_payments_12m=as_int(row.get("late_payments_12m")) or 0,
            invoice_fee_last_sek=_zero_if_nan(as_float(row.get("invoice_fee_last_sek"))),
            data_gb_avg_3m=as_float(row.get("data_gb_avg_3m")),
            data_gb_max_3m=as_float(row.get("data_gb_max_3m")),
            roaming_data_gb_avg_3m=as_float(row.get("roaming_data_gb_avg_3m")),
            roaming_data_gb_max_3m=as_float(row.get("roaming_data_gb_max_3m")),
            features=row,
        )

    @property
    def in_payment_trouble(self) -> bool:
        """In collection or with reminders unpaid: only payment help is offered."""
        return self.in_collection or self.unpaid_reminders > 0

    def is_bound_on(self, day: dt.date) -> bool:
        return self.binding_end_date is not None and self.binding_end_date > day

    def has_left_by(self, day: dt.date) -> bool:
        """The customer's contract ended before ``day`` and none followed: an invoice dated then
        is a former customer's final one. A contract is in force on the day it ends."""
        return self.contract_ended_on is not None and self.contract_ended_on < day


def _zero_if_nan(value: float) -> float:
    return 0.0 if math.isnan(value) else value


# Usage measures kept month by month (m1…m6) in the customer_usage view.
MONTHLY_MEASURES = (
    "data_gb",
    "voice_minutes",
    "roaming_data_gb",
    "overage_sek",
    "sms",
    "roaming_days",
)
# The plan that billed each month, m1…m6, moved with the months.
BILLED_PLAN_KEYS = tuple(f"plan_id_m{month}" for month in range(1, 7))
_WINDOWED = ("data_gb", "voice_minutes", "roaming_data_gb", "sms")
# Counts the view holds as integers for the newest month: a moved row gives them as the store does.
_INT_MONTH_ONE = ("sms_m1", "roaming_days_m1")
_TRENDED = ("data_gb", "voice_minutes")
USAGE_MONTHS = 6
# The month the usage row's m1 describes (ISO date of its first day).
NEWEST_USAGE_MONTH = "usage_month_m1"
_MONTH_KEYS = tuple(
    tuple(f"{measure}_m{month}" for month in range(1, USAGE_MONTHS + 1))
    for measure in MONTHLY_MEASURES
)


def billing_period_start(invoice_date: dt.date) -> dt.date:
    """The first day of the invoice's billing period: the last calendar month that ended before
    ``invoice_date`` (an invoice of 20 November describes October, so does one of 1 November)."""
    index = invoice_date.year * 12 + invoice_date.month - 2
    return dt.date(index // 12, index % 12 + 1, 1)


def usage_as_of(row: Mapping[str, Any], invoice_date: dt.date) -> Mapping[str, Any]:
    """The usage features as of the invoice's billing period.

    The online store holds the newest month whatever the invoice's date; an invoice dated before
    that month ended must not describe it. When the row's newest month (``usage_month_m1``) is
    later than the billing period, the months are moved back so that m1 is the billing period,
    and the 3- and 6-month means, maxima, trends, overage counts and roaming days are computed
    again from them, as the feature transform computes them (months before the row's sixth are
    unknown). A row whose newest month is the billing period or earlier is returned as it is. A
    row already moved back is returned as it is.
    """
    return usage_rows_as_of([row], invoice_date)[0]


def usage_rows_as_of(
    rows: Sequence[Mapping[str, Any]], invoice_dates: dt.date | Sequence[dt.date]
) -> list[Mapping[str, Any]]:
    """:func:`usage_as_of` of each row (the API moves the invoices it decides together, whatever
    their dates); each result equals the row's own. A few rows to move are moved one by one in
    plain Python, more together over arrays, to the same values. ``invoice_dates``: one date for
    every row, or each row's own."""
    dates = (
        [invoice_dates] * len(rows) if isinstance(invoice_dates, dt.date) else list(invoice_dates)
    )
    if len(dates) != len(rows):
        raise ValueError(f"{len(rows)} rows but {len(dates)} invoice dates")
    periods_by_date = {day: billing_period_start(day) for day in set(dates)}
    moving, lags, periods = _rows_to_move(
        [row.get(NEWEST_USAGE_MONTH) for row in rows], [periods_by_date[day] for day in dates]
    )
    result: list[Mapping[str, Any]] = list(rows)
    if not moving:
        return result
    if len(moving) <= _MOVED_ONE_BY_ONE:
        for position, lag, period in zip(moving, lags, periods, strict=True):
            row = dict(rows[position])
            measures = [[as_float(row.get(key)) for key in keys] for keys in _MONTH_KEYS]
            row.update(_moved_row(measures, lag, period))
            row.update(_moved_plans([row.get(key) for key in BILLED_PLAN_KEYS], lag))
            result[position] = row
        return result
    months = np.array(
        [
            [[as_float(rows[position].get(key)) for key in keys] for position in moving]
            for keys in _MONTH_KEYS
        ]
    )
    updates = _moved_usage(months, lags, periods)
    for index, (position, lag) in enumerate(zip(moving, lags, strict=True)):
        row = dict(rows[position])
        for name, values in updates.items():
            row[name] = values[index]
        row.update(_moved_plans([row.get(key) for key in BILLED_PLAN_KEYS], lag))
        result[position] = row
    return result


def usage_columns_as_of(
    columns: Mapping[str, Sequence[Any]], invoice_date: dt.date
) -> dict[str, list[Any]]:
    """:func:`usage_rows_as_of` over a usage view held column by column (one value per customer
    in each), every invoice dated ``invoice_date``: the columns the move changes, each a new list
    with the moved customers' values; empty when nobody's newest month is later than the billing
    period. The invoice run moves a slice's customers this way, with no dict per customer, and
    each moved customer reads back what :func:`usage_as_of` gives for their row."""
    missing = [name for name in _MOVE_FEATURES if name not in columns]
    if missing:
        raise KeyError(f"the usage view lacks features the move reads or sets: {missing}")
    newest = columns[NEWEST_USAGE_MONTH]
    period = billing_period_start(invoice_date)
    moving, lags, periods = _rows_to_move(newest, [period] * len(newest))
    if not moving:
        return {}
    every_row = len(moving) == len(newest)
    months = np.stack(
        [np.stack([_floats(columns[key])[moving] for key in keys], axis=1) for keys in _MONTH_KEYS]
    )
    updates = _moved_usage(months, lags, periods)
    # The billed plans as _moved_plans moves them, over the array: [rows, m1…m6, unknown].
    plans = np.full((len(moving), USAGE_MONTHS + 1), "", dtype=object)
    for month, key in enumerate(BILLED_PLAN_KEYS):
        plans[:, month] = np.asarray(columns[key], dtype=object)[moving]
    take = np.minimum(np.asarray(lags)[:, None] + np.arange(USAGE_MONTHS), USAGE_MONTHS)
    for month, key in enumerate(BILLED_PLAN_KEYS):
        updates[key] = plans[np.arange(len(moving)), take[:, month]].tolist()
    moved: dict[str, list[Any]] = {}
    for name, values in updates.items():
        if every_row:
            moved[name] = values
            continue
        column = np.asarray(columns[name], dtype=object).copy()
        column[moving] = np.asarray(values, dtype=object)
        moved[name] = column.tolist()
    return moved


# Every feature the move reads or sets (what _moved_usage returns, in its order).
_MOVE_FEATURES: tuple[str, ...] = (
    *(key for keys in _MONTH_KEYS for key in keys),
    *(
        f"{measure}_{stat}"
        for measure in _WINDOWED
        for stat in ("avg_3m", "max_3m", "avg_6m", "max_6m")
    ),
    *(f"{measure}_trend_6m" for measure in _TRENDED),
    "overage_sek_avg_3m",
    "months_over_allowance_6m",
    "roaming_days_6m",
    *BILLED_PLAN_KEYS,
    NEWEST_USAGE_MONTH,
)


def _floats(values: Sequence[Any]) -> np.ndarray:
    """A column as floats, missing values NaN, as :func:`as_float` reads each value."""
    try:
        return np.asarray(values, dtype=float)  # None becomes NaN
    except (TypeError, ValueError):  # empty or non-numeric text: as_float's NaN
        return np.array([as_float(value) for value in values])


def _rows_to_move(
    newest_months: Sequence[Any], periods: Sequence[dt.date]
) -> tuple[list[int], list[int], list[dt.date]]:
    """The positions whose newest month is later than their billing period, how many months
    later, and that period."""
    moving: list[int] = []
    lags: list[int] = []
    moved_to: list[dt.date] = []
    for position, (month, period) in enumerate(zip(newest_months, periods, strict=True)):
        newest = as_date(month)
        if newest is not None and newest > period:
            moving.append(position)
            lags.append((newest.year - period.year) * 12 + newest.month - period.month)
            moved_to.append(period)
    return moving, lags, moved_to


def _moved_usage(
    months: np.ndarray, lags: Sequence[int], periods: Sequence[dt.date]
) -> dict[str, list[Any]]:
    """Every usage feature the move sets, one list per feature with a value per moved row.

    ``months``: [measure, row, month], the ``MONTHLY_MEASURES`` of each row as ``_MONTH_KEYS``
    holds them (m1 … m6). Each row's months from its lag on are its new m1 … m6 (unknown past
    the sixth); the 3- and 6-month means, maxima, trends and overage counts are computed again
    from them, as the feature transform computes them. All measures go through each numpy step
    together: deciding one invoice, numpy's cost per call is what counts.
    """
    measures, count = len(MONTHLY_MEASURES), len(lags)
    padded = np.full((measures, count, USAGE_MONTHS + 1), math.nan)
    padded[:, :, :USAGE_MONTHS] = months
    take = np.minimum(np.asarray(lags)[:, None] + np.arange(USAGE_MONTHS)[None, :], USAGE_MONTHS)
    moved = np.take_along_axis(padded, np.broadcast_to(take, (measures, *take.shape)), 2)
    updates: dict[str, list[Any]] = {}
    for keys, measure_months in zip(_MONTH_KEYS, moved, strict=True):
        for key, values in zip(keys, measure_months.T, strict=True):
            updates[key] = _known_all(values)
    # Means and maxima of every measure in one call (the overage's and roaming days' go unused).
    stats = {
        stat: values.reshape(measures, count)
        for stat, values in window_stats(moved.reshape(measures * count, -1), (3, 6)).items()
    }
    for measure in _WINDOWED:
        for stat, values in stats.items():
            updates[f"{measure}_{stat}"] = _known_all(values[MONTHLY_MEASURES.index(measure)])
    trended = moved[[MONTHLY_MEASURES.index(measure) for measure in _TRENDED]]
    months_ago = np.broadcast_to(
        -np.arange(USAGE_MONTHS, dtype=float), (len(_TRENDED) * count, USAGE_MONTHS)
    )
    slopes = least_squares_slope(months_ago, trended.reshape(len(months_ago), -1))
    for measure, values in zip(_TRENDED, slopes.reshape(len(_TRENDED), count), strict=True):
        updates[f"{measure}_trend_6m"] = _known_all(values)
    overage = moved[MONTHLY_MEASURES.index("overage_sek")]
    updates["overage_sek_avg_3m"] = _known_all(
        stats["avg_3m"][MONTHLY_MEASURES.index("overage_sek")]
    )
    updates["months_over_allowance_6m"] = [
        int(over) for over in (np.nan_to_num(overage) > 0).sum(axis=1).tolist()
    ]
    # _roaming_days_6m over the array, to the same integers.
    roaming_days = MONTHLY_MEASURES.index("roaming_days")
    window = moved[roaming_days]
    known = (~np.isnan(window)).sum(axis=1)
    total = np.nansum(window, axis=1)
    had_sixth = ~np.isnan(months[roaming_days, :, USAGE_MONTHS - 1])
    short = had_sixth & (known < USAGE_MONTHS) & (known > 0)
    estimate = np.floor(total * USAGE_MONTHS / np.maximum(known, 1) + 0.5)
    days = np.where(short, estimate, total).astype(np.int64).astype(object)
    days[known == 0] = None
    updates["roaming_days_6m"] = days.tolist()
    for name in _INT_MONTH_ONE:
        updates[name] = [None if value is None else int(value) for value in updates[name]]
    updates[NEWEST_USAGE_MONTH] = [
        period.isoformat() if lag < USAGE_MONTHS else None
        for period, lag in zip(periods, lags, strict=True)
    ]
    return updates


# Up to this many rows are moved one by one in plain Python (the API's invoices), more over
# arrays: for one row, numpy's cost per call is some ten times the arithmetic.
_MOVED_ONE_BY_ONE = 6


def _moved_row(months: Sequence[Sequence[float]], lag: int, period: dt.date) -> dict[str, Any]:
    """:func:`_moved_usage` of one row, in plain Python (``core.trends``' one-row functions): the
    same features, each the same value to the last bit. ``months``: the row's
    ``MONTHLY_MEASURES``, each its m1 … m6 with NaN for unknown."""
    moved = [
        [
            values[month] if month < USAGE_MONTHS else math.nan
            for month in range(lag, lag + USAGE_MONTHS)
        ]
        for values in months
    ]
    updates: dict[str, Any] = {}
    for keys, values in zip(_MONTH_KEYS, moved, strict=True):
        for key, value in zip(keys, values, strict=True):
            updates[key] = _known(value)
    by_measure = dict(zip(MONTHLY_MEASURES, moved, strict=True))
    for measure in _WINDOWED:
        for stat, value in row_window_stats(by_measure[measure], (3, 6)).items():
            updates[f"{measure}_{stat}"] = _known(value)
    months_ago = [-float(month) for month in range(USAGE_MONTHS)]
    for measure in _TRENDED:
        updates[f"{measure}_trend_6m"] = _known(row_slope(months_ago, by_measure[measure]))
    overage = by_measure["overage_sek"]
    updates["overage_sek_avg_3m"] = _known(row_window_stats(overage, (3,))["avg_3m"])
    updates["months_over_allowance_6m"] = sum(1 for value in overage if value > 0)
    updates["roaming_days_6m"] = _roaming_days_6m(
        by_measure["roaming_days"],
        not math.isnan(months[MONTHLY_MEASURES.index("roaming_days")][-1]),
    )
    for name in _INT_MONTH_ONE:
        updates[name] = None if updates[name] is None else int(updates[name])
    updates[NEWEST_USAGE_MONTH] = period.isoformat() if lag < USAGE_MONTHS else None
    return updates


def _roaming_days_6m(window: Sequence[float], had_sixth: bool) -> int | None:
    """Roaming days over the moved window, as the transform sums them, unknown months counting
    nothing. When the row before the move held its sixth month, the customer had months before
    it that the window now misses: a sum of the known months would be short, so their mean
    counts for every month of the six. Unknown when no month of the window is known."""
    known = [days for days in window if not math.isnan(days)]
    if not known:
        return None
    if had_sixth and len(known) < USAGE_MONTHS:
        return math.floor(sum(known) * USAGE_MONTHS / len(known) + 0.5)
    return int(sum(known))


def _moved_plans(plans: Sequence[Any], lag: int) -> dict[str, Any]:
    """The billed plans m1…m6 of a row moved ``lag`` months back: unknown ("", as the store
    holds it) past the sixth."""
    return {
        key: plans[month] if month < USAGE_MONTHS else ""
        for key, month in zip(BILLED_PLAN_KEYS, range(lag, lag + USAGE_MONTHS), strict=True)
    }


def _known(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _known_all(values: np.ndarray) -> list[float | None]:
    """:func:`_known` of each value, over the array: the invoice run moves every customer of a
    past billing date, and a call per value was most of the move's time."""
    numbers = np.asarray(values, dtype=float)
    known = numbers.astype(object)
    known[np.isnan(numbers)] = None
    result: list[float | None] = known.tolist()
    return result
