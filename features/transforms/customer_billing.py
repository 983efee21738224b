"""The ``customer_billing`` view: billing and payment behaviour at every invoice date.

One row per invoice, at 00:00 UTC on the invoice date. Payments, reminders and collection are
counted only once they had happened by then (see the ``*_DAYS_AFTER_DUE`` constants).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.calendar import add_months
from core.columns import CUSTOMER_KEY, EVENT_TIMESTAMP
from core.trends import SlopeSums
from features.transforms.dates import days_of, utc_timestamps
from features.transforms.frames import conform, empty_table
from features.views import CUSTOMER_BILLING

# The operator's dunning: a first reminder 10 days after the due date, a second after 24, and
# collection after 45. The invoices table records how many reminders an invoice got in the end;
# a snapshot counts a reminder only once its day had passed, or it would know the future.
REMINDER_DAYS_AFTER_DUE = (10, 24)
COLLECTION_DAYS_AFTER_DUE = 45
DAYS_PER_MONTH = 365.25 / 12


def billing_features(invoices: pd.DataFrame) -> pd.DataFrame:
    """Billing and payment behaviour at every invoice date, from what was known on that day."""
    if invoices.empty:
        return empty_table(CUSTOMER_KEY, CUSTOMER_BILLING)
    codes, customers = pd.factorize(invoices[CUSTOMER_KEY], sort=True)
    order = np.lexsort((days_of(invoices["invoice_date"]), codes))
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

    invoice_day = days_of(rows["invoice_date"])
    day = dense(day_numbers(invoice_day))
    due = dense(day_numbers(days_of(rows["due_date"])))
    paid = dense(day_numbers(days_of(rows["paid_date"])))
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
    trend = SlopeSums(shape)

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
        EVENT_TIMESTAMP: utc_timestamps(invoice_day),
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
