"""The comparison baseline of ``offers evaluate``: a straightforward argmax-acceptance peer.

What a competent team would build first, without this project's engine: one LightGBM binary
classifier over the logged offer events, (customer's usage, contract and billing features, the
offer's identity and catalog attributes, its position on the invoice) → accepted, and a policy
that shows the offer with the highest predicted acceptance. It knows no objective, no floors and
no guardrails, so ``offers evaluate`` reports its captured lift beside the served policy's and
beside what the guardrails cost when lifted together.

What the peer respects, and nothing else:

- consent: it shows an offer only where the served engine may show one; for a customer without
  profiling consent (the engine decides without personal features) it shows what the served
  model policy shows, since the peer's features are personal;
- eligibility: it chooses among the offers the engine's eligibility rules let through (validity
  on the date, a former customer's final invoice, segment, current plan, tenure, payment help
  only for payment trouble, good standing, no downgrade while bound, loyalty gap, declined
  recently), whatever the guardrails
  (``GUARDRAILS_IGNORED``) and the objective then made of them.

Point in time: it learns only from events shown before the evaluated month whose outcome was
known by then (``cutoff``), with each customer's newest feature rows at or before ``shown_at``;
it scores a decision with the rows known at 00:00 UTC of the invoice's day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from core.catalog import Catalog
from core.columns import CUSTOMER_KEY, EVENT_TIMESTAMP
from features.views import (
    CUSTOMER_BILLING,
    CUSTOMER_CONTRACT,
    CUSTOMER_USAGE,
    USAGE_HISTORY_ONLY,
)
from serving.decision.arbitration import BELOW_ACCEPTANCE_FLOOR, BELOW_VALUE_FLOOR, NO_VALUE
from serving.decision.candidates import offer_attributes
from serving.decision.guardrails import (
    ABOVE_NEW_CUSTOMER_PRICE,
    COSTS_MORE_FOR_USAGE,
    UPGRADE_NOT_JUSTIFIED,
)

# Blocks the peer does not know: the guardrails and the objective's floors. Together, as a lifted
# set, they are the "cost of the guardrails" the peer is compared with.
GUARDRAILS_IGNORED = (
    ABOVE_NEW_CUSTOMER_PRICE,
    UPGRADE_NOT_JUSTIFIED,
    COSTS_MORE_FOR_USAGE,
    BELOW_ACCEPTANCE_FLOOR,
    BELOW_VALUE_FLOOR,
)
PEER_CHOOSES_FROM = (None, NO_VALUE, *GUARDRAILS_IGNORED)
VIEWS = {
    "customer_usage": CUSTOMER_USAGE,
    "customer_contract": CUSTOMER_CONTRACT,
    "customer_billing": CUSTOMER_BILLING,
}
CATEGORIES = ("offer_id", "current_plan_id")
PARAMS = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 50,
    "verbose": -1,
    "seed": 0,
    "num_threads": 1,  # one thread: several threads contend on a shared machine
    "force_col_wise": True,
}
ROUNDS = 200


def _utc(values: pd.Series) -> pd.Series:
    stamps = pd.to_datetime(values)
    stamps = stamps.dt.tz_localize("UTC") if stamps.dt.tz is None else stamps.dt.tz_convert("UTC")
    return stamps.astype("datetime64[ns, UTC]")


def feature_rows(
    pairs: pd.DataFrame, features_dir: Path, catalog: Catalog, offers: Sequence[str]
) -> pd.DataFrame:
    """``pairs`` (``customer_id``, ``offer_id``, ``at``, ``rank``) with the peer's features: each
    customer's newest row of every view at or before ``at``, and the offer's attributes."""
    frame = pairs[[CUSTOMER_KEY, "offer_id", "rank", "at"]].reset_index(drop=True)
    frame = frame.assign(at=_utc(frame["at"])).reset_index(names="_row").sort_values("at")
    for view, columns in VIEWS.items():
        kept = [
            c
            for c, kind in columns.items()
            if (kind != "str" or c == "current_plan_id") and c not in USAGE_HISTORY_ONLY
        ]
        table = pd.read_parquet(Path(features_dir) / f"{view}.parquet")
        table = table[[CUSTOMER_KEY, EVENT_TIMESTAMP, *kept]]
        table = table.assign(at=_utc(table[EVENT_TIMESTAMP])).drop(columns=EVENT_TIMESTAMP)
        frame = pd.merge_asof(
            frame, table.sort_values("at"), on="at", by=CUSTOMER_KEY, direction="backward"
        )
    by_id = {offer.offer_id: offer for offer in catalog.offers}
    attributes = pd.DataFrame(
        [offer_attributes(by_id[o]) for o in frame["offer_id"]], index=frame.index
    ).drop(columns="offer_identity_code")
    frame = pd.concat([frame, attributes], axis=1).sort_values("_row").set_index("_row")
    frame["fee_change_sek"] = frame["offer_monthly_fee_sek"] - frame["current_monthly_fee_sek"]
    frame["offer_id"] = pd.Categorical(frame["offer_id"], categories=sorted(offers))
    plans = sorted(o.offer_id for o in catalog.offers if o.kind == "plan")
    frame["current_plan_id"] = pd.Categorical(frame["current_plan_id"], categories=plans)
    return frame.drop(columns=[CUSTOMER_KEY, "at"]).rename_axis(None)


def training_rows(events: pd.DataFrame, cutoff: dt.datetime) -> pd.DataFrame:
    """Events shown before ``cutoff`` whose outcome was known by then, labelled accepted."""
    shown = _utc(events["shown_at"])
    outcome_at = _utc(events["outcome_at"])
    known = (shown < cutoff) & (outcome_at.isna() | (outcome_at < cutoff))
    rows = events.loc[known, [CUSTOMER_KEY, "offer_id", "rank"]].assign(at=shown[known])
    return rows.assign(accepted=(events.loc[known, "outcome"] == "accepted").astype(int))


@dataclass(frozen=True)
class ArgmaxPeer:
    """The trained peer: predicted acceptance of (customer as of a moment, offer)."""

    booster: lgb.Booster
    features_dir: Path
    catalog: Catalog
    cutoff: dt.datetime
    rows: int

    @classmethod
    def train(
        cls, events: pd.DataFrame, features_dir: Path, catalog: Catalog, cutoff: dt.datetime
    ) -> ArgmaxPeer:
        """Fit on the events shown (and answered) before ``cutoff`` only."""
        offers = [offer.offer_id for offer in catalog.offers]
        rows = training_rows(events, cutoff)
        rows = rows[rows["offer_id"].isin(offers)]
        if rows.empty or rows["accepted"].nunique() < 2:
            raise ValueError(f"no accepted and unaccepted offer events before {cutoff:%Y-%m-%d}")
        frame = feature_rows(rows.drop(columns="accepted"), features_dir, catalog, offers)
        data = lgb.Dataset(frame, label=rows["accepted"].to_numpy(), categorical_feature="auto")
        booster = lgb.train(PARAMS, data, num_boost_round=ROUNDS)
        return cls(booster, Path(features_dir), catalog, cutoff, len(rows))

    def acceptance(self, pairs: pd.DataFrame) -> np.ndarray:
        """Predicted acceptance of ``pairs`` (``customer_id``, ``offer_id``, ``at``) shown first."""
        if pairs.empty:
            return np.empty(0)
        offers = [offer.offer_id for offer in self.catalog.offers]
        frame = feature_rows(pairs.assign(rank=1), self.features_dir, self.catalog, offers)
        return np.asarray(self.booster.predict(frame), dtype=float)

    def choose(self, pairs: pd.DataFrame) -> dict[str, str]:
        """Per ``decision_id`` of ``pairs``, the offer with the highest predicted acceptance."""
        return likeliest_offers(pairs.assign(p=self.acceptance(pairs)))


def likeliest_offers(scored: pd.DataFrame) -> dict[str, str]:
    """Per ``decision_id`` of ``scored``, the ``offer_id`` with the highest ``p``; on a tie the
    first offer id."""
    if scored.empty:
        return {}
    ordered = scored.sort_values(["decision_id", "p", "offer_id"], ascending=[True, False, True])
    best = ordered.drop_duplicates("decision_id")
    return dict(zip(best["decision_id"].astype(str), best["offer_id"].astype(str), strict=True))
