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


def _billed_plans(
    customers: np.ndarray, months: np.ndarray, contracts: pd.DataFrame | None
) -> np.ndarray:
    """The plan each usage month was billed on: the contract in force on the month's last day
    (a contract that ended within the month, the customer leaving, still billed it). ``None``
    where no contract had begun by then, or without a contracts table."""
    plans = np.full(len(customers), None, dtype=object)
    if contracts is None or contracts.empty:
        return plans
    month_end = month_start(months + 1) - np.timedelta64(1, "D")
    wanted = pd.DataFrame(
        {"position": np.arange(len(customers)), "key": customers, "day": month_end}
    ).sort_values("day", kind="stable")
    known = pd.DataFrame(
        {
            "key": contracts[CUSTOMER_KEY].to_numpy(),
            "day": days_of(contracts["valid_from"]),
            "plan_id": contracts["plan_id"].astype(object).to_numpy(),
        }
    ).sort_values("day", kind="stable")
    found = pd.merge_asof(wanted, known, on="day", by="key", direction="backward")
    plans[found["position"].to_numpy()] = found["plan_id"].to_numpy(dtype=object)
    plans[pd.isna(plans)] = None
    return plans


def usage_features(usage: pd.DataFrame, contracts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Usage per customer and month: the last six months, 3- and 6-month means, maxima, trends;
    with ``contracts``, the plan that billed each of the six months."""
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
    for name in ("sms", "roaming_days"):
        for lag in range(USAGE_WINDOW_MONTHS):
            out[f"{name}_m{lag + 1}"] = histories[name][:, lag]
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
    # The plan each month was billed on, moved as the months are: [rows, 6], m1 first.
    billed = np.full(shape, None, dtype=object)
    billed[codes, column] = _billed_plans(customers.to_numpy()[codes], month, contracts)
    for lag in range(USAGE_WINDOW_MONTHS):
        plan_lag = np.full(len(codes), None, dtype=object)
        ok = column >= lag
        plan_lag[ok] = billed[codes[ok], column[ok] - lag]
        out[f"plan_id_m{lag + 1}"] = plan_lag
    out["overage_sek_avg_3m"] = window_stats(histories["overage_sek"], (3,))["avg_3m"]
    out["months_over_allowance_6m"] = (np.nan_to_num(histories["overage_sek"]) > 0).sum(axis=1)
    out["roaming_days_6m"] = np.nansum(histories["roaming_days"], axis=1)
    return conform(out, CUSTOMER_KEY, CUSTOMER_USAGE)
