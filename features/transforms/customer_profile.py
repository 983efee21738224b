"""The ``customer_profile`` view: age, region, survey answer and offer history, every month.

One row per customer at signup and at 00:00 UTC on the first day of every month after it; for
customers who signed before the data begin, from that month on. Offers count only when shown or
answered strictly before the snapshot.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.calendar import add_months
from core.columns import CUSTOMER_KEY, EVENT_TIMESTAMP
from features.transforms.dates import day_of, days_of, instants_of, utc_timestamps
from features.transforms.events import EventIndex, monthly_grid
from features.transforms.frames import conform, empty_table
from features.views import CUSTOMER_PROFILE


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
        return empty_table(CUSTOMER_KEY, CUSTOMER_PROFILE)
    people = customers.drop_duplicates(CUSTOMER_KEY).reset_index(drop=True)
    ids = pd.Index(people[CUSTOMER_KEY])
    end_day = np.datetime64(end.tz_convert("UTC").tz_localize(None).date(), "D")
    signup = days_of(people["signup_date"])
    start_day = day_of(start)
    first = signup if start_day is None else np.maximum(signup, start_day)
    grid_codes, grid_days = monthly_grid(np.arange(len(ids)), first, np.full(len(ids), end_day))
    grid_codes, grid_days = grid_codes[grid_days <= end_day], grid_days[grid_days <= end_day]
    instants = grid_days.astype("datetime64[ns]")

    events = offer_events[offer_events[CUSTOMER_KEY].isin(ids)]
    event_codes = ids.get_indexer(pd.Index(events[CUSTOMER_KEY]))

    def in_window(times: np.ndarray, mask: np.ndarray, months: int) -> np.ndarray:
        """Events (where ``mask``) in [instant - months, instant): strictly before the snapshot."""
        index = EventIndex(event_codes[mask], times[mask])
        start = add_months(grid_days, -months).astype("datetime64[ns]")
        return index.count(grid_codes, instants) - index.count(grid_codes, start)

    shown_at = instants_of(events["shown_at"])
    outcome_at = instants_of(events["outcome_at"])
    outcome = events["outcome"].to_numpy()
    answered = ~np.isnat(outcome_at)
    birth_year = people["birth_year"].to_numpy(dtype=np.int64)
    satisfaction = pd.to_numeric(people["satisfaction"], errors="coerce").to_numpy(dtype=float)
    out: dict[str, Any] = {
        CUSTOMER_KEY: ids.to_numpy()[grid_codes],
        EVENT_TIMESTAMP: utc_timestamps(grid_days),
        "age": grid_days.astype("datetime64[Y]").astype(np.int64) + 1970 - birth_year[grid_codes],
        "region": people["region"].astype(object).to_numpy()[grid_codes],
        "satisfaction": satisfaction[grid_codes],
        "offers_shown_6m": in_window(shown_at, np.ones(len(events), dtype=bool), 6),
        "offers_clicked_6m": in_window(outcome_at, answered & (outcome == "clicked"), 6),
        "offers_accepted_12m": in_window(outcome_at, answered & (outcome == "accepted"), 12),
        "offers_declined_6m": in_window(outcome_at, answered & (outcome == "declined"), 6),
    }
    return conform(out, CUSTOMER_KEY, CUSTOMER_PROFILE)
