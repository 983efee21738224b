"""The ``customer_consent`` view: the state of each consent purpose, from the moment it changed.

One row at signup and one at the exact ``updated_at`` of every consent change, so a withdrawal is
honoured from the moment it was recorded.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.columns import CUSTOMER_KEY, EVENT_TIMESTAMP
from features.transforms.dates import days_of, instants_of, utc_timestamps
from features.transforms.events import EventIndex, take_rows
from features.transforms.frames import conform, empty_table
from features.views import CUSTOMER_CONSENT


def consent_features(customers: pd.DataFrame, consents: pd.DataFrame) -> pd.DataFrame:
    """The state of each consent purpose at signup and at every change; no row = not granted."""
    if customers.empty:
        return empty_table(CUSTOMER_KEY, CUSTOMER_CONSENT)
    people = customers.drop_duplicates(CUSTOMER_KEY).reset_index(drop=True)
    ids = pd.Index(people[CUSTOMER_KEY])
    rows = consents[consents[CUSTOMER_KEY].isin(ids)].sort_values(
        [CUSTOMER_KEY, "updated_at"], kind="stable"
    )
    row_codes = ids.get_indexer(pd.Index(rows[CUSTOMER_KEY]))
    row_times = instants_of(rows["updated_at"])
    signup = days_of(people["signup_date"]).astype("datetime64[ns]")
    instant_codes = np.concatenate([np.arange(len(ids)), row_codes])
    instants = np.concatenate([signup, row_times])

    states: dict[str, np.ndarray] = {}
    purpose = rows["purpose"].to_numpy()
    granted = rows["granted"].to_numpy(dtype=bool)
    for name in ("marketing", "profiling", "usage_insights"):
        mine = purpose == name
        index = EventIndex(row_codes[mine], row_times[mine])
        latest = index.latest(instant_codes, instants)
        states[name] = take_rows(granted[mine], latest, missing=0.0)
        if name == "marketing":
            # An objection: marketing was granted once and the newest answer withdraws it.
            ever = (
                pd.Series(granted[mine].astype(np.int64)).groupby(row_codes[mine]).cummax()
            ).to_numpy()
            objected = (~granted[mine] & (ever > 0)).astype(float)
            states["objected"] = take_rows(objected, latest, missing=0.0)
    out: dict[str, Any] = {
        CUSTOMER_KEY: ids.to_numpy()[instant_codes],
        EVENT_TIMESTAMP: utc_timestamps(instants),
        "consent_marketing": states["marketing"],
        "consent_profiling": states["profiling"],
        "consent_usage_insights": states["usage_insights"],
        "objected_marketing": states["objected"],
        "birth_year": people["birth_year"].to_numpy(dtype=np.int64)[instant_codes],
        "segment": people["segment"].astype(object).to_numpy()[instant_codes],
    }
    return conform(out, CUSTOMER_KEY, CUSTOMER_CONSENT)
