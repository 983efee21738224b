"""Feature tables from the input tables: pure DataFrame → DataFrame, one function per feature view.

Each output row is a snapshot of one entity at ``event_timestamp``, the moment its values became
known, so a point-in-time join never sees a value before it was true:

- usage: one row per customer and usage month, at 00:00 UTC on the first day of the next month
  (a month's usage is complete only when the month is over);
- contract and profile: one row per customer at the first contract (signup) and at 00:00 UTC on
  the first day of every month after it, plus one at every contract change; for customers who
  signed before the data begin (the month of the oldest usage, invoice or offer shown), from
  that month on;
- billing: one row per invoice, at 00:00 UTC on the invoice date. Payments, reminders and
  collection are counted only once they had happened by then (see the ``*_DAYS_AFTER_DUE``
  constants);
- consent: one row at signup and one at the exact ``updated_at`` of every consent change, so a
  withdrawal is honoured from the moment it was recorded;
- offers: one row per catalog entry at 00:00 UTC on its ``valid_from``.

Every frame has the key column, ``event_timestamp`` (UTC) and exactly the features of
:mod:`features.views`, in that order and with those types.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from core.calendar import (
    add_months,
    month_index,
    month_start,
    months_between,
    months_until,
)
from core.catalog import Catalog
from core.columns import CUSTOMER_KEY, EVENT_TIMESTAMP, OFFER_KEY
from core.plan_fit import OFFER_KIND_CODES
from features.views import (
    CUSTOMER_BILLING,
    CUSTOMER_CONSENT,
    CUSTOMER_CONTRACT,
    CUSTOMER_PROFILE,
    CUSTOMER_USAGE,
    OFFER_ATTRIBUTES,
    FeatureType,
)

# The operator's dunning: a first reminder 10 days after the due date, a second after 24, and
# collection after 45. The invoices table records how many reminders an invoice got in the end;
# a snapshot counts a reminder only once its day had passed, or it would know the future.
REMINDER_DAYS_AFTER_DUE = (10, 24)
COLLECTION_DAYS_AFTER_DUE = 45
DAYS_PER_MONTH = 365.25 / 12
USAGE_WINDOW_MONTHS = 6

_USAGE_MEASURES = ("data_gb", "voice_minutes", "roaming_data_gb")


# --- calendar -------------------------------------------------------------------------------------


def _days(values: pd.Series | np.ndarray) -> np.ndarray:
    """Dates or timestamps (naive or UTC) as ``datetime64[D]``; NaT stays NaT."""
    series = pd.Series(values)
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    return pd.to_datetime(series).to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")


def _instants(values: pd.Series | np.ndarray) -> np.ndarray:
    """Timestamps (naive = UTC) as naive UTC ``datetime64[ns]``."""
    series = pd.Series(values)
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC").dt.tz_localize(None)
    return pd.to_datetime(series).to_numpy(dtype="datetime64[ns]")


def _utc(values: np.ndarray) -> pd.Series:
    return pd.Series(pd.DatetimeIndex(values.astype("datetime64[ns]")).tz_localize("UTC"))


# --- per-customer event lookups -------------------------------------------------------------------


class _EventIndex:
    """Events of many customers, sorted by (customer, time), queried for many instants at once."""

    def __init__(self, codes: np.ndarray, times: np.ndarray) -> None:
        stamps = np.asarray(times).astype("datetime64[ns]").astype(np.int64)
        self._times = np.unique(stamps)
        self._span = len(self._times) + 1
        keys = codes.astype(np.int64) * self._span + np.searchsorted(self._times, stamps)
        self._order = np.argsort(keys, kind="stable")
        self._keys = keys[self._order]

    def _bounds(
        self, codes: np.ndarray, times: np.ndarray, inclusive: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        stamps = np.asarray(times).astype("datetime64[ns]").astype(np.int64)
        rank = np.searchsorted(self._times, stamps, side="right" if inclusive else "left")
        base = codes.astype(np.int64) * self._span
        start = np.searchsorted(self._keys, base, side="left")
        end = np.searchsorted(self._keys, base + rank, side="left")
        return start, end

    def count(self, codes: np.ndarray, times: np.ndarray, inclusive: bool = False) -> np.ndarray:
        """Events of each customer before each time (or at it, when ``inclusive``)."""
        start, end = self._bounds(codes, times, inclusive)
        return end - start

    def latest(self, codes: np.ndarray, times: np.ndarray, inclusive: bool = True) -> np.ndarray:
        """Row of each customer's latest event at (or before) each time; -1 when there is none."""
        start, end = self._bounds(codes, times, inclusive)
        found = end > start
        rows = np.full(len(start), -1, dtype=np.int64)
        rows[found] = self._order[end[found] - 1]
        return rows


def _take(values: np.ndarray, rows: np.ndarray, missing: float = np.nan) -> np.ndarray:
    """``values[rows]`` as floats, with ``missing`` where ``rows`` is -1."""
    if len(values) == 0:
        return np.full(len(rows), missing)
    return np.where(rows >= 0, values[np.maximum(rows, 0)].astype(float), missing)


def _monthly_grid(
    codes: np.ndarray, first: np.ndarray, last: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each customer at ``first`` and at the first day of every later month up to ``last``."""
    first_month = month_index(first) + 1
    count = np.maximum(month_index(last) - first_month + 1, 0)
    count = np.where(np.isnat(first) | np.isnat(last), 0, count)
    repeated = np.repeat(np.arange(len(codes)), count)
    offsets = np.arange(len(repeated)) - np.repeat(np.cumsum(count) - count, count)
    starts = month_start(first_month[repeated] + offsets)
    keep = ~np.isnat(first)
    grid_codes = np.concatenate([codes[keep], codes[repeated]])
    grid_days = np.concatenate([first[keep], starts])
    return grid_codes, grid_days


class _SlopeSums:
    """Running sums for a least-squares slope, one per snapshot."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.n, self.x, self.y, self.xx, self.xy = (np.zeros(shape) for _ in range(5))

    def add(self, where: tuple[slice, ...], x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> None:
        x, y = np.where(mask, x, 0.0), np.where(mask, y, 0.0)
        self.n[where] += mask
        self.x[where] += x
        self.y[where] += y
        self.xx[where] += x * x
        self.xy[where] += x * y

    def slope(self, at: tuple[np.ndarray, ...] | tuple[slice, ...] = (slice(None),)) -> np.ndarray:
        """The slope; NaN with fewer than two points or no spread in x."""
        n, sx, sy = self.n[at], self.x[at], self.y[at]
        denominator = n * self.xx[at] - sx * sx
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = (n * self.xy[at] - sx * sy) / denominator
        return np.where((n >= 2) & (denominator > 1e-9), slope, np.nan)


def _lsq_slope(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares slope per row over the points where both are known; NaN below two points."""
    sums = _SlopeSums((x.shape[0],))
    for column in range(x.shape[1]):
        known = ~(np.isnan(x[:, column]) | np.isnan(y[:, column]))
        sums.add((slice(None),), x[:, column], y[:, column], known)
    return sums.slope()


def _window_stats(history: np.ndarray, windows: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Mean and max over the first ``w`` columns (months) of each row, for each window ``w``.

    Only known values count; NaN when none in the window is known.
    """
    known = ~np.isnan(history)
    count = known.cumsum(axis=1)
    total = np.where(known, history, 0.0).cumsum(axis=1)
    largest = np.fmax.accumulate(history, axis=1)
    stats = {}
    for window in windows:
        n = count[:, window - 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            stats[f"avg_{window}m"] = np.where(n > 0, total[:, window - 1] / n, np.nan)
        stats[f"max_{window}m"] = largest[:, window - 1]
    return stats


def conform(
    columns: Mapping[str, Any], key: str, schema: Mapping[str, FeatureType]
) -> pd.DataFrame:
    """Key, ``event_timestamp`` (UTC) and the features in ``schema`` order with their types.

    ``columns`` is a frame or a mapping of equally long columns. Rows come out sorted by key and
    time; when one entity has two rows at the same instant the last one holds, as it would in the
    online store.
    """
    keys = np.asarray(columns[key], dtype=object)
    stamps = pd.DatetimeIndex(pd.to_datetime(columns[EVENT_TIMESTAMP], utc=True))
    data: dict[str, Any] = {}
    for name, kind in schema.items():
        values = columns[name]
        if kind == "float":
            data[name] = np.asarray(values, dtype=np.float64)
        elif kind == "int":
            numbers = np.asarray(values)
            if numbers.dtype.kind == "f" and np.isnan(numbers).any():
                raise ValueError(f"feature {name} has missing values but is an integer")
            data[name] = numbers.astype(np.int64, copy=False)
        else:
            texts = np.asarray(values, dtype=object)
            data[name] = np.where(pd.isna(texts), "", texts)
    codes, _ = pd.factorize(keys, sort=True)
    nanos = stamps.asi8
    order = np.lexsort((nanos, codes))
    if not (order == np.arange(len(order))).all():
        keys, stamps, codes, nanos = keys[order], stamps[order], codes[order], nanos[order]
        data = {name: values[order] for name, values in data.items()}
    # Keep the last row of each (key, time).
    last = np.r_[(codes[1:] != codes[:-1]) | (nanos[1:] != nanos[:-1]), True]
    if not last.all():
        keys, stamps = keys[last], stamps[last]
        data = {name: values[last] for name, values in data.items()}
    return pd.DataFrame({key: keys, EVENT_TIMESTAMP: stamps, **data})


def _empty(key: str, schema: Mapping[str, FeatureType]) -> pd.DataFrame:
    dtypes = {"float": np.float64, "int": np.int64, "str": object}
    columns: dict[str, Any] = {
        key: np.array([], dtype=object),
        EVENT_TIMESTAMP: pd.DatetimeIndex([], tz="UTC"),
    }
    for name, kind in schema.items():
        columns[name] = np.array([], dtype=dtypes[kind])
    return conform(columns, key, schema)


# --- the views ------------------------------------------------------------------------------------


def data_start(tables: Mapping[str, pd.DataFrame]) -> pd.Timestamp | None:
    """The first day of the month of the oldest usage, invoice or offer shown; None without any.

    Monthly snapshots start there: before it nothing happened that a model could learn from, and
    the snapshot on that day already holds the contract and profile as they were then.
    """
    candidates = [
        _days(frame[column]).min()
        for name, column in (
            ("usage_monthly", "month"),
            ("invoices", "invoice_date"),
            ("offer_events", "shown_at"),
        )
        if (frame := tables.get(name)) is not None and len(frame)
    ]
    if not candidates:
        return None
    oldest = min(candidates)
    return pd.Timestamp(month_start(month_index(np.array([oldest])))[0], tz="UTC")


def _day(moment: pd.Timestamp | None) -> np.datetime64 | None:
    if moment is None:
        return None
    return np.datetime64(moment.tz_convert("UTC").tz_localize(None).date(), "D")


def data_end(tables: Mapping[str, pd.DataFrame]) -> pd.Timestamp:
    """The moment the newest usage month became known: the first day of the following month.

    Monthly snapshots run up to it. Without usage, the month after the newest date of any table.
    """
    usage = tables.get("usage_monthly")
    if usage is not None and len(usage):
        newest = _days(usage["month"]).max()
    else:
        candidates = [
            _days(frame[column]).max()
            for name, column in (
                ("contracts", "valid_from"),
                ("invoices", "invoice_date"),
                ("customers", "signup_date"),
            )
            if (frame := tables.get(name)) is not None and len(frame)
        ]
        if not candidates:
            raise ValueError("no dated rows in the input tables: nothing to build features from")
        newest = max(candidates)
    return pd.Timestamp(month_start(month_index(np.array([newest])) + 1)[0], tz="UTC")


def usage_features(usage: pd.DataFrame) -> pd.DataFrame:
    """Usage per customer and month: the last six months, 3- and 6-month means, maxima, trends."""
    if usage.empty:
        return _empty(CUSTOMER_KEY, CUSTOMER_USAGE)
    codes, customers = pd.factorize(usage[CUSTOMER_KEY], sort=True)
    month = month_index(_days(usage["month"]))
    # Rows in (customer, month) order: the output comes out sorted as the feature table wants.
    order = np.lexsort((month, codes))
    codes, month = codes[order], month[order]
    column = month - month.min()
    shape = (len(customers), int(column.max()) + 1)

    def history(name: str) -> np.ndarray:
        """``[rows, 6]``: the measure this month (m1) and the five before it (m2…m6)."""
        dense = np.full(shape, np.nan)
        dense[codes, column] = usage[name].to_numpy(dtype=float)[order]
        result = np.full((len(codes), USAGE_WINDOW_MONTHS), np.nan)
        for lag in range(USAGE_WINDOW_MONTHS):
            ok = column >= lag
            result[ok, lag] = dense[codes[ok], column[ok] - lag]
        return result

    out: dict[str, object] = {
        CUSTOMER_KEY: customers.to_numpy()[codes],
        EVENT_TIMESTAMP: _utc(month_start(month + 1)),
    }
    histories = {
        name: history(name) for name in (*_USAGE_MEASURES, "sms", "roaming_days", "overage_sek")
    }
    for name in (*_USAGE_MEASURES, "overage_sek"):
        for lag in range(USAGE_WINDOW_MONTHS):
            out[f"{name}_m{lag + 1}"] = histories[name][:, lag]
    out["sms_m1"] = histories["sms"][:, 0]
    out["roaming_days_m1"] = histories["roaming_days"][:, 0]
    month_codes, months = pd.factorize(month)
    out["usage_month_m1"] = np.datetime_as_string(month_start(months), unit="D").astype(object)[
        month_codes
    ]
    for name in (*_USAGE_MEASURES, "sms"):
        for stat, values in _window_stats(histories[name], (3, 6)).items():
            out[f"{name}_{stat}"] = values
    # x runs from -5 (six months ago) to 0 (this month): the slope is per month.
    months_ago = -np.arange(USAGE_WINDOW_MONTHS, dtype=float)
    for name in ("data_gb", "voice_minutes"):
        x = np.broadcast_to(months_ago, histories[name].shape)
        out[f"{name}_trend_6m"] = _lsq_slope(x, histories[name])
    out["overage_sek_avg_3m"] = _window_stats(histories["overage_sek"], (3,))["avg_3m"]
    out["months_over_allowance_6m"] = (np.nan_to_num(histories["overage_sek"]) > 0).sum(axis=1)
    out["roaming_days_6m"] = np.nansum(histories["roaming_days"], axis=1)
    return conform(out, CUSTOMER_KEY, CUSTOMER_USAGE)


def _plan_table(catalog: Catalog) -> pd.DataFrame:
    """Allowances (NaN = unlimited) and the new-customer price of every catalog entry."""

    def number(value: float | None) -> float:
        return np.nan if value is None else float(value)

    return pd.DataFrame(
        {
            "offer_id": [offer.offer_id for offer in catalog.offers],
            "data_gb": [number(offer.data_gb) for offer in catalog.offers],
            "voice_minutes": [number(offer.voice_minutes) for offer in catalog.offers],
            "roaming_data_gb": [number(offer.roaming_data_gb) for offer in catalog.offers],
            "new_customer_fee_sek": [offer.price_for_new_customers for offer in catalog.offers],
        }
    ).set_index("offer_id")


def contract_features(
    contracts: pd.DataFrame,
    customers: pd.DataFrame,
    catalog: Catalog,
    end: pd.Timestamp,
    start: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """The contract in force at every month start and contract change, while the customer stays.

    With ``start`` (a month start), snapshots begin there for customers who signed earlier.
    """
    if contracts.empty:
        return _empty(CUSTOMER_KEY, CUSTOMER_CONTRACT)
    rows = contracts.sort_values([CUSTOMER_KEY, "valid_from"], kind="stable").reset_index(drop=True)
    ids = pd.Index(pd.unique(rows[CUSTOMER_KEY]))
    codes = ids.get_indexer(pd.Index(rows[CUSTOMER_KEY]))
    valid_from = _days(rows["valid_from"])
    valid_to = _days(rows["valid_to"])
    plan = rows["plan_id"].astype(object).to_numpy()
    # A change of plan, not a renewal: the first contract of a customer is not a change.
    first_row = np.r_[True, codes[1:] != codes[:-1]]
    changed = ~first_row & np.r_[False, plan[1:] != plan[:-1]]
    changes_so_far = pd.Series(changed.astype(np.int64)).groupby(codes).cumsum().to_numpy()

    end_day = np.datetime64(end.tz_convert("UTC").tz_localize(None).date(), "D")
    last_row = np.r_[codes[1:] != codes[:-1], True]
    first_day = valid_from[first_row]
    # A customer who left has no contract after the last row's valid_to (the day it ended).
    leave_day = valid_to[last_row]
    last_day = np.where(np.isnat(leave_day), end_day, np.minimum(leave_day, end_day))
    start_day = _day(start)
    grid_first = first_day if start_day is None else np.maximum(first_day, start_day)
    grid_codes, grid_days = _monthly_grid(np.arange(len(ids)), grid_first, last_day)
    in_time = valid_from <= end_day
    if start_day is not None:
        in_time &= valid_from >= start_day
    grid_codes = np.concatenate([grid_codes, codes[in_time]])
    grid_days = np.concatenate([grid_days, valid_from[in_time]])

    index = _EventIndex(codes, valid_from)
    current = index.latest(grid_codes, grid_days)
    before = index.latest(grid_codes, add_months(grid_days, -24))
    changes = changes_so_far[current] - np.where(before >= 0, changes_so_far[before], 0)

    plans = _plan_table(catalog).reindex(plan[current])
    signup = (
        customers.drop_duplicates(CUSTOMER_KEY)
        .set_index(CUSTOMER_KEY)["signup_date"]
        .reindex(ids[grid_codes])
    )
    signup_day = np.where(signup.isna(), first_day[grid_codes], _days(signup))
    binding_end = _days(rows["binding_end_date"])[current]
    bound = ~np.isnat(binding_end) & (binding_end > grid_days)
    out: dict[str, Any] = {
        CUSTOMER_KEY: ids.to_numpy()[grid_codes],
        EVENT_TIMESTAMP: _utc(grid_days),
        "current_plan_id": plan[current],
        "current_monthly_fee_sek": rows["monthly_fee_sek"].to_numpy(dtype=float)[current],
        "current_new_customer_fee_sek": plans["new_customer_fee_sek"].to_numpy(),
        "current_data_gb": plans["data_gb"].to_numpy(),
        "current_voice_minutes": plans["voice_minutes"].to_numpy(),
        "current_roaming_data_gb": plans["roaming_data_gb"].to_numpy(),
        "tenure_months": months_between(signup_day.astype("datetime64[D]"), grid_days),
        "binding_end_date": np.where(
            bound, np.datetime_as_string(binding_end, unit="D"), ""
        ).astype(object),
        "months_to_binding_end": np.where(bound, months_until(grid_days, binding_end), 0),
        "plan_changes_24m": changes,
    }
    return conform(out, CUSTOMER_KEY, CUSTOMER_CONTRACT)


def billing_features(invoices: pd.DataFrame) -> pd.DataFrame:
    """Billing and payment behaviour at every invoice date, from what was known on that day."""
    if invoices.empty:
        return _empty(CUSTOMER_KEY, CUSTOMER_BILLING)
    codes, customers = pd.factorize(invoices[CUSTOMER_KEY], sort=True)
    order = np.lexsort((_days(invoices["invoice_date"]), codes))
    rows = invoices.take(order).reset_index(drop=True)
    codes = codes[order]
    position = rows.groupby(codes, sort=False).cumcount().to_numpy()
    shape = (len(customers), int(position.max()) + 1)
    width = shape[1]

    def dense(values: np.ndarray) -> np.ndarray:
        result = np.full(shape, np.nan)
        result[codes, position] = values
        return result

    def day_numbers(values: np.ndarray) -> np.ndarray:
        numbers = values.astype("datetime64[D]").astype(np.int64).astype(float)
        return np.where(np.isnat(values), np.nan, numbers)

    invoice_day = _days(rows["invoice_date"])
    day = dense(day_numbers(invoice_day))
    due = dense(day_numbers(_days(rows["due_date"])))
    paid = dense(day_numbers(_days(rows["paid_date"])))
    amount = dense(rows["amount_sek"].to_numpy(dtype=float))
    invoice_fee = dense(rows["invoice_fee_sek"].to_numpy(dtype=float))
    reminder_fee = dense(rows["reminder_fee_sek"].to_numpy(dtype=float))
    reminders = dense(rows["reminders"].to_numpy(dtype=float))
    collection = dense(rows["sent_to_collection"].to_numpy(dtype=float))
    present = ~np.isnan(day)
    window_start = {
        months: dense(day_numbers(add_months(invoice_day, -months))) for months in (3, 6, 12)
    }

    zeros = np.zeros(shape)
    sum_3m, count_3m = zeros.copy(), zeros.copy()
    fees_12m, reminder_fees_12m, late_12m = zeros.copy(), zeros.copy(), zeros.copy()
    unpaid_reminders, days_past_due, in_collection = zeros.copy(), zeros.copy(), zeros.copy()
    trend = _SlopeSums(shape)

    # Compare each snapshot (invoice k) with every earlier invoice j = k - lag of the customer.
    for lag in range(width):
        now = (slice(None), slice(lag, None))
        then = (slice(None), slice(0, width - lag))
        both = present[now] & present[then]
        today, then_day = day[now], day[then]
        in_3m = both & (then_day > window_start[3][now])
        sum_3m[now] += np.where(in_3m, amount[then], 0.0)
        count_3m[now] += in_3m
        in_6m = both & (then_day > window_start[6][now])
        trend.add(now, (then_day - today) / DAYS_PER_MONTH, amount[then], in_6m)
        in_12m = both & (then_day > window_start[12][now])
        fees_12m[now] += np.where(in_12m, invoice_fee[then], 0.0)
        reminder_fees_12m[now] += np.where(in_12m, reminder_fee[then], 0.0)

        due_then, paid_then = due[then], paid[then]
        past_due = both & (due_then < today)
        # Paid on a day is known from the next day: unpaid at a snapshot unless paid before it.
        late = past_due & (due_then > window_start[12][now]) & ~(paid_then <= due_then)
        late_12m[now] += late
        unpaid = past_due & ~(paid_then < today)
        overdue = np.where(unpaid, today - due_then, 0.0)
        days_past_due[now] = np.maximum(days_past_due[now], overdue)
        known = sum(
            (reminders[then] >= number + 1) & (overdue > after)
            for number, after in enumerate(REMINDER_DAYS_AFTER_DUE)
        )
        unpaid_reminders[now] += np.where(unpaid, known, 0)
        in_collection[now] = np.maximum(
            in_collection[now],
            unpaid & (collection[then] > 0) & (overdue > COLLECTION_DAYS_AFTER_DUE),
        )

    at = (codes, position)
    with np.errstate(divide="ignore", invalid="ignore"):
        average_3m = sum_3m[at] / count_3m[at]
    out: dict[str, Any] = {
        CUSTOMER_KEY: customers.to_numpy()[codes],
        EVENT_TIMESTAMP: _utc(invoice_day),
        "invoice_amount_last_sek": amount[at],
        "invoice_amount_avg_3m": average_3m,
        "invoice_amount_trend_6m": trend.slope(at),
        "invoice_fee_last_sek": invoice_fee[at],
        "reminder_fee_last_sek": reminder_fee[at],
        "invoice_fees_12m_sek": fees_12m[at],
        "reminder_fees_12m_sek": reminder_fees_12m[at],
        "late_payments_12m": late_12m[at],
        "unpaid_reminders": unpaid_reminders[at],
        "in_collection": in_collection[at],
        "days_past_due": days_past_due[at],
    }
    return conform(out, CUSTOMER_KEY, CUSTOMER_BILLING)


def profile_features(
    customers: pd.DataFrame,
    offer_events: pd.DataFrame,
    end: pd.Timestamp,
    start: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Age, region, the survey answer and how the customer met earlier offers, every month.

    With ``start`` (a month start), snapshots begin there for customers who signed earlier.
    """
    if customers.empty:
        return _empty(CUSTOMER_KEY, CUSTOMER_PROFILE)
    people = customers.drop_duplicates(CUSTOMER_KEY).reset_index(drop=True)
    ids = pd.Index(people[CUSTOMER_KEY])
    end_day = np.datetime64(end.tz_convert("UTC").tz_localize(None).date(), "D")
    signup = _days(people["signup_date"])
    start_day = _day(start)
    first = signup if start_day is None else np.maximum(signup, start_day)
    grid_codes, grid_days = _monthly_grid(np.arange(len(ids)), first, np.full(len(ids), end_day))
    grid_codes, grid_days = grid_codes[grid_days <= end_day], grid_days[grid_days <= end_day]
    instants = grid_days.astype("datetime64[ns]")

    events = offer_events[offer_events[CUSTOMER_KEY].isin(ids)]
    event_codes = ids.get_indexer(pd.Index(events[CUSTOMER_KEY]))

    def in_window(times: np.ndarray, mask: np.ndarray, months: int) -> np.ndarray:
        """Events (where ``mask``) in [instant - months, instant): strictly before the snapshot."""
        index = _EventIndex(event_codes[mask], times[mask])
        start = add_months(grid_days, -months).astype("datetime64[ns]")
        return index.count(grid_codes, instants) - index.count(grid_codes, start)

    shown_at = _instants(events["shown_at"])
    outcome_at = _instants(events["outcome_at"])
    outcome = events["outcome"].to_numpy()
    answered = ~np.isnat(outcome_at)
    birth_year = people["birth_year"].to_numpy(dtype=np.int64)
    satisfaction = pd.to_numeric(people["satisfaction"], errors="coerce").to_numpy(dtype=float)
    out: dict[str, Any] = {
        CUSTOMER_KEY: ids.to_numpy()[grid_codes],
        EVENT_TIMESTAMP: _utc(grid_days),
        "age": grid_days.astype("datetime64[Y]").astype(np.int64) + 1970 - birth_year[grid_codes],
        "region": people["region"].astype(object).to_numpy()[grid_codes],
        "satisfaction": satisfaction[grid_codes],
        "offers_shown_6m": in_window(shown_at, np.ones(len(events), dtype=bool), 6),
        "offers_clicked_6m": in_window(outcome_at, answered & (outcome == "clicked"), 6),
        "offers_accepted_12m": in_window(outcome_at, answered & (outcome == "accepted"), 12),
        "offers_declined_6m": in_window(outcome_at, answered & (outcome == "declined"), 6),
    }
    return conform(out, CUSTOMER_KEY, CUSTOMER_PROFILE)


def consent_features(customers: pd.DataFrame, consents: pd.DataFrame) -> pd.DataFrame:
    """The state of each consent purpose at signup and at every change; no row = not granted."""
    if customers.empty:
        return _empty(CUSTOMER_KEY, CUSTOMER_CONSENT)
    people = customers.drop_duplicates(CUSTOMER_KEY).reset_index(drop=True)
    ids = pd.Index(people[CUSTOMER_KEY])
    rows = consents[consents[CUSTOMER_KEY].isin(ids)].sort_values(
        [CUSTOMER_KEY, "updated_at"], kind="stable"
    )
    row_codes = ids.get_indexer(pd.Index(rows[CUSTOMER_KEY]))
    row_times = _instants(rows["updated_at"])
    signup = _days(people["signup_date"]).astype("datetime64[ns]")
    instant_codes = np.concatenate([np.arange(len(ids)), row_codes])
    instants = np.concatenate([signup, row_times])

    states: dict[str, np.ndarray] = {}
    purpose = rows["purpose"].to_numpy()
    granted = rows["granted"].to_numpy(dtype=bool)
    for name in ("marketing", "profiling", "usage_insights"):
        mine = purpose == name
        index = _EventIndex(row_codes[mine], row_times[mine])
        latest = index.latest(instant_codes, instants)
        states[name] = _take(granted[mine], latest, missing=0.0)
        if name == "marketing":
            # An objection: marketing was granted once and the newest answer withdraws it.
            ever = (
                pd.Series(granted[mine].astype(np.int64)).groupby(row_codes[mine]).cummax()
            ).to_numpy()
            objected = (~granted[mine] & (ever > 0)).astype(float)
            states["objected"] = _take(objected, latest, missing=0.0)
    out: dict[str, Any] = {
        CUSTOMER_KEY: ids.to_numpy()[instant_codes],
        EVENT_TIMESTAMP: _utc(instants),
        "consent_marketing": states["marketing"],
        "consent_profiling": states["profiling"],
        "consent_usage_insights": states["usage_insights"],
        "objected_marketing": states["objected"],
        "birth_year": people["birth_year"].to_numpy(dtype=np.int64)[instant_codes],
        "segment": people["segment"].astype(object).to_numpy()[instant_codes],
    }
    return conform(out, CUSTOMER_KEY, CUSTOMER_CONSENT)


def offer_features(catalog: Catalog) -> pd.DataFrame:
    """Each catalog entry's attributes from its ``valid_from``; NaN allowance = unlimited."""
    plans = _plan_table(catalog)
    out: dict[str, Any] = {
        OFFER_KEY: [offer.offer_id for offer in catalog.offers],
        EVENT_TIMESTAMP: _utc(
            np.array([offer.valid_from for offer in catalog.offers], dtype="datetime64[D]")
        ),
        "offer_kind_code": [OFFER_KIND_CODES[offer.kind] for offer in catalog.offers],
        "offer_monthly_fee_sek": [offer.monthly_fee_sek for offer in catalog.offers],
        "offer_new_customer_fee_sek": plans["new_customer_fee_sek"].to_numpy(),
        "offer_data_gb": plans["data_gb"].to_numpy(),
        "offer_voice_minutes": plans["voice_minutes"].to_numpy(),
        "offer_roaming_data_gb": plans["roaming_data_gb"].to_numpy(),
        "offer_binding_months": [offer.binding_months for offer in catalog.offers],
        "offer_min_tenure_months": [offer.min_tenure_months for offer in catalog.offers],
    }
    return conform(out, OFFER_KEY, OFFER_ATTRIBUTES)


# Each feature table: the input tables it reads, and how it is built from them.
TableBuilder = Callable[
    [Mapping[str, pd.DataFrame], Catalog, "pd.Timestamp | None", pd.Timestamp], pd.DataFrame
]
FEATURE_TABLES: dict[str, tuple[tuple[str, ...], TableBuilder]] = {
    "customer_usage": (("usage_monthly",), lambda t, c, s, e: usage_features(t["usage_monthly"])),
    "customer_billing": (("invoices",), lambda t, c, s, e: billing_features(t["invoices"])),
    "customer_contract": (
        ("contracts", "customers"),
        lambda t, c, s, e: contract_features(t["contracts"], t["customers"], c, e, s),
    ),
    "customer_profile": (
        ("customers", "offer_events"),
        lambda t, c, s, e: profile_features(t["customers"], t["offer_events"], e, s),
    ),
    "customer_consent": (
        ("customers", "consents"),
        lambda t, c, s, e: consent_features(t["customers"], t["consents"]),
    ),
    "offer_attributes": ((), lambda t, c, s, e: offer_features(c)),
}


def build_feature_tables(
    tables: Mapping[str, pd.DataFrame], catalog: Catalog
) -> dict[str, pd.DataFrame]:
    """Every feature table by feature view name, from the input tables and the catalog."""
    start, end = data_start(tables), data_end(tables)
    return {view: build(tables, catalog, start, end) for view, (_, build) in FEATURE_TABLES.items()}
