"""Labelled entity rows of the two models, from the input tables.

- offer-ranker: one row per shown offer (``offer_events``), label ``accepted`` within
  :data:`RANKER_LABEL_DAYS`, dated ``shown_at``.
- churn-risk: one row per active customer and month start, label "left within the next
  :data:`CHURN_HORIZON_MONTHS` months" (from ``contracts``), dated the month start.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from core.columns import CUSTOMER_KEY, EVENT_TIMESTAMP
from core.contract import CONTRACTS, CUSTOMERS, OFFER_EVENTS, USAGE_MONTHLY, Table

LABEL = "label"
CHURN_HORIZON_MONTHS = 3
# An offer's outcome counts when it comes within this many days of the invoice (customers answer
# within ten days in the simulated world); a later answer is not an acceptance of this offer.
RANKER_LABEL_DAYS = 14


def ranker_rows(offer_events: pd.DataFrame, label_days: int = RANKER_LABEL_DAYS) -> pd.DataFrame:
    """One row per shown offer: entity keys, time, label (accepted) and the logging facts."""
    frame = offer_events[
        ["decision_id", CUSTOMER_KEY, "offer_id", "shown_at", "rank", "policy", "propensity"]
    ].copy()
    outcome_at = offer_events["outcome_at"]
    in_time = outcome_at.isna() | (
        outcome_at <= offer_events["shown_at"] + pd.Timedelta(days=label_days)
    )
    frame[LABEL] = ((offer_events["outcome"] == "accepted") & in_time).astype(np.int8)
    frame[EVENT_TIMESTAMP] = frame.pop("shown_at")
    # Rows of one decision together and in rank order: LightGBM's query groups need it.
    codes, _ = pd.factorize(frame["decision_id"])
    order = np.lexsort((frame["rank"].to_numpy(), codes))
    return frame.iloc[order].reset_index(drop=True)


def customer_exits(contracts: pd.DataFrame) -> pd.Series:
    """The day each customer who left had their last contract end (customers who stay: absent).

    A customer has left when none of their contracts is open (``valid_to`` null) and no contract
    starts after the last one ends.
    """
    grouped = contracts.groupby(CUSTOMER_KEY)
    has_open = contracts["valid_to"].isna().groupby(contracts[CUSTOMER_KEY]).any()
    last_end = grouped["valid_to"].max()
    last_start = grouped["valid_from"].max()
    left = ~has_open & (last_end >= last_start)
    return last_end[left]


def churn_rows(
    customers: pd.DataFrame,
    contracts: pd.DataFrame,
    months: Sequence[pd.Timestamp],
    horizon_months: int = CHURN_HORIZON_MONTHS,
) -> pd.DataFrame:
    """One row per customer with a contract on each month start, label = leaves within the horizon.

    ``months`` are month starts (UTC). The caller keeps only months whose horizon ends inside the
    data; this function labels every row it is given.
    """
    starts = contracts.groupby(CUSTOMER_KEY)["valid_from"].min()
    exits = customer_exits(contracts)
    base = pd.DataFrame({CUSTOMER_KEY: customers[CUSTOMER_KEY].to_numpy()})
    base["first_day"] = base[CUSTOMER_KEY].map(starts)
    base["exit_day"] = base[CUSTOMER_KEY].map(exits)
    base = base[base["first_day"].notna()]
    parts = []
    for month in months:
        day = month.tz_convert("UTC").tz_localize(None)
        horizon_end = day + pd.DateOffset(months=horizon_months)
        active = (base["first_day"] <= day) & (base["exit_day"].isna() | (base["exit_day"] >= day))
        rows = base.loc[active, [CUSTOMER_KEY, "exit_day"]]
        label = rows["exit_day"].notna() & (rows["exit_day"] < horizon_end)
        parts.append(
            pd.DataFrame(
                {
                    CUSTOMER_KEY: rows[CUSTOMER_KEY].to_numpy(),
                    EVENT_TIMESTAMP: month,
                    LABEL: label.to_numpy(dtype=np.int8),
                }
            )
        )
    if not parts:
        return pd.DataFrame(columns=[CUSTOMER_KEY, EVENT_TIMESTAMP, LABEL])
    return pd.concat(parts, ignore_index=True)


def _read(data_dir: Path, table: Table, columns: Sequence[str] | None = None) -> pd.DataFrame:
    from core.tables import read_table

    frame = read_table(data_dir, table)
    return frame if columns is None else frame[list(columns)]


def load_ranker_rows(data_dir: Path) -> pd.DataFrame:
    """The ranker's labelled rows from the offer events under ``data_dir``."""
    return ranker_rows(_read(data_dir, OFFER_EVENTS))


def load_churn_rows(data_dir: Path) -> tuple[pd.DataFrame, pd.Timestamp]:
    """Customer-month rows whose three-month label lies inside the data, and the newest month."""
    customers = _read(data_dir, CUSTOMERS, [CUSTOMER_KEY])
    contracts = _read(data_dir, CONTRACTS, [CUSTOMER_KEY, "valid_from", "valid_to"])
    usage = _read(data_dir, USAGE_MONTHLY, ["month"])
    first = pd.Timestamp(usage["month"].min()).tz_localize("UTC")
    end = pd.Timestamp(usage["month"].max()).tz_localize("UTC") + pd.DateOffset(months=1)
    # The newest month whose three months ahead are all inside the data.
    newest = end - pd.DateOffset(months=CHURN_HORIZON_MONTHS)
    # A row needs at least one complete month of usage behind it.
    months = list(pd.date_range(first + pd.DateOffset(months=1), newest, freq="MS"))
    return churn_rows(customers, contracts, months), newest
