"""Evaluation that needs more than the training stage may see.

- :func:`eligibility_filter`: the decision engine's eligibility rules and decline cap as a
  candidate filter for the off-policy estimate, so each policy chooses among the offers a customer
  may actually get.
- :func:`oracle_check`: on a simulated world, the hidden acceptance probability (computed by the
  simulator from its ground truth) of each policy's top offer per validation decision, and of the
  logging policy's first-ranked offer. Training never reads the ground truth; this runs after it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.catalog import Catalog
from core.columns import CUSTOMER_KEY, EVENT_TIMESTAMP
from core.settings import get_settings
from pipelines.declined_offers import MOMENT, blocked_offers
from serving.decision.decline_cap import DeclineCap

log = logging.getLogger(__name__)

GROUND_TRUTH_FOLDER = "_ground_truth"
LOGGING_POLICY = "logging_policy"


def capped_candidates(
    offer_events: pd.DataFrame, candidates: pd.DataFrame, cap: DeclineCap
) -> np.ndarray:
    """Per candidate row: does the decline cap block this offer in this decision?

    Each decision is seen at the moment it was shown, as the engine would have seen it.
    """
    decisions = candidates.drop_duplicates("decision_id")
    moments = decisions[["customer_id", EVENT_TIMESTAMP]].rename(columns={EVENT_TIMESTAMP: "as_of"})
    blocked = blocked_offers(offer_events, moments, cap)
    if blocked.empty:
        return np.zeros(len(candidates), dtype=bool)
    pairs = pd.DataFrame(
        {
            "decision_id": decisions["decision_id"].to_numpy()[blocked[MOMENT].to_numpy()],
            "offer_id": blocked["offer_id"].to_numpy(),
        }
    )
    rows = candidates[["decision_id", "offer_id"]].merge(
        pairs, how="left", indicator=True, validate="many_to_one"
    )
    return (rows["_merge"] == "both").to_numpy()


def eligibility_filter(
    catalog: Catalog,
    offer_events: pd.DataFrame | None = None,
    decline_cap_invoices: int | None = None,
) -> Any:
    """A candidate filter applying ``serving.decision.candidates.eligibility`` row by row.

    ``offer_events`` (optional) supplies the declines the engine's decline cap honours, over
    ``decline_cap_invoices`` invoices (default: ``OFFERS_DECLINE_CAP_INVOICES``).
    """
    from serving.decision.candidates import eligibility
    from serving.decision.inputs import Account

    offers = catalog.by_id()
    if decline_cap_invoices is None:
        decline_cap_invoices = get_settings().decline_cap_invoices
    cap = DeclineCap(decline_cap_invoices)

    def allowed(candidates: pd.DataFrame) -> np.ndarray:
        declined = (
            capped_candidates(offer_events, candidates, cap)
            if offer_events is not None
            else np.zeros(len(candidates), dtype=bool)
        )
        mask = np.zeros(len(candidates), dtype=bool)
        accounts: dict[str, Account] = {}
        records = candidates.to_dict(orient="records")
        for position, row in enumerate(records):
            if declined[position]:
                continue
            decision = row["decision_id"]
            account = accounts.get(decision)
            if account is None:
                cleaned = {
                    str(k): (None if isinstance(v, float) and math.isnan(v) else v)
                    for k, v in row.items()
                }
                account = Account.from_features(cleaned)
                accounts[decision] = account
            reason = eligibility(
                offers[row["offer_id"]],
                account,
                segment=str(row.get("segment") or "consumer"),
                invoice_date=pd.Timestamp(row["event_timestamp"]).date(),
                recently_declined=frozenset(),
            )
            mask[position] = reason is None
        return mask

    return allowed


@dataclass(frozen=True)
class OracleCheck:
    """Mean hidden acceptance probability of each policy's first offer over the same decisions."""

    expected_acceptance: dict[str, float]
    decisions: int

    def as_dict(self) -> dict[str, Any]:
        return {"expected_acceptance": self.expected_acceptance, "decisions": self.decisions}

    def metrics(self) -> dict[str, float]:
        return {
            f"oracle_{name}_expected_acceptance": v for name, v in self.expected_acceptance.items()
        }

    def markdown(self) -> str:
        lines = [
            "# Oracle check (simulated world)",
            "",
            "Mean hidden acceptance probability of the offer each policy would put first, over "
            f"{self.decisions} validation decisions (computed by the simulator from its ground "
            "truth; training never sees it).",
            "",
            "| policy | expected acceptance |",
            "|---|---|",
        ]
        for name, value in self.expected_acceptance.items():
            lines.append(f"| {name} | {value:.4f} |")
        return "\n".join(lines) + "\n"


def has_ground_truth(data_dir: Path) -> bool:
    return (Path(data_dir) / GROUND_TRUTH_FOLDER).is_dir()


def oracle_check(
    top_offers: pd.DataFrame,
    validation_rows: pd.DataFrame,
    data_dir: Path,
    catalog: Catalog,
) -> OracleCheck:
    """Expected acceptance of each scorer's top offer and of the logged first offer.

    ``top_offers`` has decision_id, customer_id, offer_id, event_timestamp and scorer (one row per
    scorer and decision); ``validation_rows`` the logged offers of the same decisions.
    """
    from pipelines.simulation.oracle import expected_acceptance

    decisions = top_offers["decision_id"].unique()
    logged = validation_rows[validation_rows["decision_id"].isin(decisions)]
    first = logged[logged["rank"] == logged.groupby("decision_id")["rank"].transform("min")]
    first = first.drop_duplicates("decision_id").assign(scorer=LOGGING_POLICY)
    pairs = pd.concat(
        [
            top_offers[["decision_id", CUSTOMER_KEY, "offer_id", "event_timestamp", "scorer"]],
            first[["decision_id", CUSTOMER_KEY, "offer_id", "event_timestamp", "scorer"]],
        ],
        ignore_index=True,
    )
    probability = expected_acceptance(
        Path(data_dir) / GROUND_TRUTH_FOLDER,
        pairs.rename(columns={"event_timestamp": "as_of"})[["customer_id", "offer_id", "as_of"]],
        Path(data_dir),
        catalog,
    )
    pairs["p"] = probability
    means = pairs.groupby("scorer", sort=False)["p"].mean()
    return OracleCheck(
        expected_acceptance={str(k): float(v) for k, v in means.items()},
        decisions=len(decisions),
    )


def oracle_summary(checks: Mapping[str, float]) -> str:
    """One line for logs: each policy's expected acceptance."""
    return ", ".join(f"{name} {value:.4f}" for name, value in checks.items())
