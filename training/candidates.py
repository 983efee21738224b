"""Candidate rows: every offer a policy could have put first in a logged decision.

Off-policy evaluation scores a new policy on these, not only on the offers the logging policy
happened to show.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from core.catalog import Catalog
from core.columns import EVENT_TIMESTAMP
from training.data import sample_groups
from training.labels import LABEL
from training.point_in_time import add_plan_fit

OFFER_LEVEL_COLUMNS = frozenset(
    {"offer_id", "rank", "propensity", "policy", LABEL, "offer_new_customer_discount_sek"}
)
CANDIDATE_SET = (
    "every catalog offer valid on the decision date for the customer's segment, other than the "
    "current plan, whose minimum tenure the customer meets"
)


def candidate_rows(
    shown: pd.DataFrame, catalog: Catalog, max_decisions: int | None = None, seed: int = 7
) -> pd.DataFrame:
    """Every offer a policy could have put first in each decision of ``shown``, with features.

    Customer features are taken from the decision's shown rows (they are the same for every offer
    of a decision); offer attributes come from the catalog and plan fit is recomputed, exactly as
    the on-demand view does. The set is described by :data:`CANDIDATE_SET`; the finer eligibility
    rules of the decision engine are not applied here.
    """
    from core.plan_fit import PLAN_FIT_OUTPUTS
    from features.transforms.offer_attributes import offer_features
    from features.views import OFFER_ATTRIBUTES

    offer_level = OFFER_LEVEL_COLUMNS | set(OFFER_ATTRIBUTES) | set(PLAN_FIT_OUTPUTS)
    decisions = shown.drop_duplicates("decision_id")
    decisions = sample_groups(decisions, "decision_id", max_decisions, seed)
    customer = decisions[[c for c in decisions.columns if c not in offer_level]]
    offers = offer_features(catalog).drop(columns=[EVENT_TIMESTAMP])
    by_id = catalog.by_id()
    offers["valid_from"] = pd.to_datetime(
        [by_id[o].valid_from for o in offers["offer_id"]], utc=True
    )
    offers["valid_to"] = pd.to_datetime(
        [by_id[o].valid_to or pd.Timestamp.max.date() for o in offers["offer_id"]], utc=True
    )
    offers["for_consumer"] = ["consumer" in by_id[o].segments for o in offers["offer_id"]]
    offers["for_business"] = ["business" in by_id[o].segments for o in offers["offer_id"]]
    pairs = customer.merge(offers, how="cross")
    day = pairs[EVENT_TIMESTAMP].dt.normalize()
    business = pairs["segment"].astype(str).eq("business") if "segment" in pairs else False
    keep = (
        (pairs["valid_from"] <= day)
        & (day <= pairs["valid_to"])
        & np.where(business, pairs["for_business"], pairs["for_consumer"])
        & (pairs["offer_id"] != pairs.get("current_plan_id", ""))
        & (pairs["tenure_months"].fillna(0) >= pairs["offer_min_tenure_months"])
    )
    pairs = pairs[keep].drop(columns=["valid_from", "valid_to", "for_consumer", "for_business"])
    pairs = pairs.sort_values(["decision_id", "offer_id"], kind="stable").reset_index(drop=True)
    for name in OFFER_ATTRIBUTES:
        pairs[name] = pairs[name].astype(np.float32)
    return add_plan_fit(pairs)
