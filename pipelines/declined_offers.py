"""The offers the engine's decline cap blocks, read from ``offer_events`` at given moments.

The batch invoice run asks once per customer (at the start of the billing day); the off-policy
evaluation once per logged decision (at the moment it was shown). Both see a customer's invoices
as their decisions shown before the moment, and a decline once it was recorded by then (or when
it has no time), as the API sees its own log while it decides. ``offer_events`` has rows only for
decisions that showed an offer, so an invoice decided without offers is not counted here, where
the API's log counts it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.columns import CUSTOMER_KEY
from serving.decision.decline_cap import DeclineCap

DECLINED = "declined"
MOMENT = "moment"


def _blocked_frame() -> pd.DataFrame:
    return pd.DataFrame({MOMENT: pd.Series(dtype="int64"), "offer_id": pd.Series(dtype=object)})


def _numbered_decisions(events: pd.DataFrame) -> pd.DataFrame:
    """Each customer's decisions oldest first, numbered from 1, with the time they were shown."""
    decisions = (
        events.groupby([CUSTOMER_KEY, "decision_id"], sort=False)["shown_at"].max().reset_index()
    )
    decisions = decisions.sort_values([CUSTOMER_KEY, "shown_at", "decision_id"], kind="stable")
    decisions["number"] = decisions.groupby(CUSTOMER_KEY, sort=False).cumcount() + 1
    return decisions


def _decisions_before(moments: pd.DataFrame, decisions: pd.DataFrame) -> pd.Series:
    """Per moment, how many of its customer's decisions were shown before it."""
    # Decisions shown at the same time count together: the highest number of each time.
    latest = (
        decisions.groupby([CUSTOMER_KEY, "shown_at"], sort=False)["number"]
        .max()
        .reset_index()
        .sort_values("shown_at", kind="stable")
    )
    points = moments.assign(as_of=moments["as_of"].astype(latest["shown_at"].dtype))
    counted = pd.merge_asof(
        points.sort_values("as_of", kind="stable"),
        latest,
        left_on="as_of",
        right_on="shown_at",
        by=CUSTOMER_KEY,
        allow_exact_matches=False,
        direction="backward",
    )
    return counted.set_index(MOMENT)["number"].fillna(0).astype("int64").sort_index()


def blocked_offers(events: pd.DataFrame, moments: pd.DataFrame, cap: DeclineCap) -> pd.DataFrame:
    """The offers the cap blocks at each moment: one row per moment and offer, in that order.

    ``events`` are ``offer_events`` rows; ``moments`` has ``customer_id`` and ``as_of`` (UTC). The
    result's ``moment`` is the position of the moment's row in ``moments``.
    """
    if cap.window == 0 or events.empty or moments.empty:
        return _blocked_frame()
    points = pd.DataFrame(
        {
            MOMENT: np.arange(len(moments), dtype="int64"),
            CUSTOMER_KEY: moments[CUSTOMER_KEY].reset_index(drop=True),
            "as_of": pd.to_datetime(moments["as_of"], utc=True).reset_index(drop=True),
        }
    )
    frame = events[events[CUSTOMER_KEY].isin(set(points[CUSTOMER_KEY]))]
    if frame.empty:
        return _blocked_frame()
    decisions = _numbered_decisions(frame)
    points["before"] = _decisions_before(points, decisions).to_numpy()
    declines = frame.loc[
        frame["outcome"] == DECLINED, [CUSTOMER_KEY, "decision_id", "offer_id", "outcome_at"]
    ].merge(decisions[[CUSTOMER_KEY, "decision_id", "number"]], on=[CUSTOMER_KEY, "decision_id"])
    pairs = points.merge(declines, on=CUSTOMER_KEY)
    invoices_ago = (pairs["before"] - pairs["number"] + 1).to_numpy()
    known = (pairs["outcome_at"].isna() | (pairs["outcome_at"] <= pairs["as_of"])).to_numpy()
    blocked = pairs.loc[cap.blocks(invoices_ago) & known, [MOMENT, "offer_id"]]
    return (
        blocked.drop_duplicates()
        .sort_values([MOMENT, "offer_id"], kind="stable")
        .reset_index(drop=True)
    )
