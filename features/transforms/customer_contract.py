"""The ``customer_contract`` view: the contract in force, every month and at every change.

One row per customer at the first contract (signup) and at 00:00 UTC on the first day of every
month after it, plus one at every contract change, and one on the day after a contract ended
with none after it (the customer left: ``contract_ended_on`` says when, the other values are the
last contract's); for customers who signed before the data begin (see
:func:`features.transforms.span.data_start`), from that month on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.calendar import add_months, months_between, months_until
from core.catalog import Catalog
from core.columns import CUSTOMER_KEY, EVENT_TIMESTAMP
from features.transforms.dates import day_of, days_of, utc_timestamps
from features.transforms.events import EventIndex, monthly_grid
from features.transforms.frames import conform, empty_table
from features.transforms.plans import plan_table
from features.views import CUSTOMER_CONTRACT


def contract_features(
    contracts: pd.DataFrame,
    customers: pd.DataFrame,
    catalog: Catalog,
    end: pd.Timestamp,
    start: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """The contract in force at every month start and contract change while the customer stays,
    and on the day after they left (``contract_ended_on``).

    With ``start`` (a month start), snapshots begin there for customers who signed earlier.
    """
    if contracts.empty:
        return empty_table(CUSTOMER_KEY, CUSTOMER_CONTRACT)
    rows = contracts.sort_values([CUSTOMER_KEY, "valid_from"], kind="stable").reset_index(drop=True)
    ids = pd.Index(pd.unique(rows[CUSTOMER_KEY]))
    codes = ids.get_indexer(pd.Index(rows[CUSTOMER_KEY]))
    valid_from = days_of(rows["valid_from"])
    valid_to = days_of(rows["valid_to"])
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
    start_day = day_of(start)
    grid_first = first_day if start_day is None else np.maximum(first_day, start_day)
    grid_codes, grid_days = monthly_grid(np.arange(len(ids)), grid_first, last_day)
    in_time = valid_from <= end_day
    if start_day is not None:
        in_time &= valid_from >= start_day
    # The day after a contract that no other one follows at once ended: the customer left, and
    # the store's latest row says so to a final invoice dated after it. Also when that day is
    # after the tables' end (a notice given ahead): an incremental materialize loads only rows
    # dated after its last end, and a customer who left has no later monthly row to bring it.
    left_day = valid_to + np.timedelta64(1, "D")
    next_from = np.r_[valid_from[1:], np.datetime64("NaT", "D")]
    followed = ~last_row & (next_from <= left_day)
    left = ~np.isnat(valid_to) & ~followed
    if start_day is not None:
        left &= left_day >= start_day
    grid_codes = np.concatenate([grid_codes, codes[in_time], codes[left]])
    grid_days = np.concatenate([grid_days, valid_from[in_time], left_day[left]])

    index = EventIndex(codes, valid_from)
    current = index.latest(grid_codes, grid_days)
    before = index.latest(grid_codes, add_months(grid_days, -24))
    changes = changes_so_far[current] - np.where(before >= 0, changes_so_far[before], 0)

    plans = plan_table(catalog).reindex(plan[current])
    signup = (
        customers.drop_duplicates(CUSTOMER_KEY)
        .set_index(CUSTOMER_KEY)["signup_date"]
        .reindex(ids[grid_codes])
    )
    signup_day = np.where(signup.isna(), first_day[grid_codes], days_of(signup))
    binding_end = days_of(rows["binding_end_date"])[current]
    bound = ~np.isnat(binding_end) & (binding_end > grid_days)
    ended_on = valid_to[current]
    ended = ~np.isnat(ended_on) & (ended_on < grid_days)
    ended_text = np.datetime_as_string(ended_on, unit="D")
    out: dict[str, Any] = {
        CUSTOMER_KEY: ids.to_numpy()[grid_codes],
        EVENT_TIMESTAMP: utc_timestamps(grid_days),
        "current_plan_id": plan[current],
        "current_monthly_fee_sek": rows["monthly_fee_sek"].to_numpy(dtype=float)[current],
        "current_new_customer_fee_sek": plans["new_customer_fee_sek"].to_numpy(),
        "current_data_gb": plans["data_gb"].to_numpy(),
        "current_voice_minutes": plans["voice_minutes"].to_numpy(),
        "current_roaming_data_gb": plans["roaming_data_gb"].to_numpy(),
        "tenure_months": months_between(signup_day.astype("datetime64[D]"), grid_days),
        # The binding's end whenever the contract has one, also once it has passed: an invoice
        # dated before the row (read from the store's newest row) may still fall inside it, and
        # the engine compares it with the invoice's date. The months left count from the row.
        "binding_end_date": np.where(
            np.isnat(binding_end), "", np.datetime_as_string(binding_end, unit="D")
        ).astype(object),
        "months_to_binding_end": np.where(bound, months_until(grid_days, binding_end), 0),
        "plan_changes_24m": changes,
        "contract_ended_on": np.where(ended, ended_text, "").astype(object),
    }
    return conform(out, CUSTOMER_KEY, CUSTOMER_CONTRACT)
