"""The ``customer_usage`` view: one row per customer and usage month.

A month's usage is complete only when the month is over, so its row is dated 00:00 UTC on the first
day of the next month.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.calendar import month_index, month_start
from core.columns import CUSTOMER_KEY, EVENT_TIMESTAMP
from core.trends import least_squares_slope, window_stats
from features.transforms.dates import days_of, utc_timestamps
from features.transforms.frames import conform, empty_table
from features.views import CUSTOMER_USAGE

USAGE_WINDOW_MONTHS = 6

_USAGE_MEASURES = ("data_gb", "voice_minutes", "roaming_data_gb")


def usage_features(usage: pd.DataFrame) -> pd.DataFrame:
    """Usage per customer and month: the last six months, 3- and 6-month means, maxima, trends."""
    if usage.empty:
        return empty_table(CUSTOMER_KEY, CUSTOMER_USAGE)
    codes, customers = pd.factorize(usage[CUSTOMER_KEY], sort=True)
    month = month_index(days_of(usage["month"]))
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
        EVENT_TIMESTAMP: utc_timestamps(month_start(month + 1)),
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
        for stat, values in window_stats(histories[name], (3, 6)).items():
            out[f"{name}_{stat}"] = values
    # x runs from -5 (six months ago) to 0 (this month): the slope is per month.
    months_ago = -np.arange(USAGE_WINDOW_MONTHS, dtype=float)
    for name in ("data_gb", "voice_minutes"):
        x = np.broadcast_to(months_ago, histories[name].shape)
        out[f"{name}_trend_6m"] = least_squares_slope(x, histories[name])
    out["overage_sek_avg_3m"] = window_stats(histories["overage_sek"], (3,))["avg_3m"]
    out["months_over_allowance_6m"] = (np.nan_to_num(histories["overage_sek"]) > 0).sum(axis=1)
    out["roaming_days_6m"] = np.nansum(histories["roaming_days"], axis=1)
    return conform(out, CUSTOMER_KEY, CUSTOMER_USAGE)
