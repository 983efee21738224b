"""Candidate rows: the catalog offers a customer could have been shown in a logged decision."""

from __future__ import annotations

import pandas as pd

from core.columns import EVENT_TIMESTAMP
from training.labels import LABEL


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def test_candidates_are_the_catalog_offers_a_customer_could_be_shown() -> None:
    from pathlib import Path

    from core.catalog import load_catalog
    from training.candidates import candidate_rows
    from training.model_inputs import CUSTOMER_FEATURES

    catalog = load_catalog(Path(__file__).parents[2] / "catalog" / "offers.yaml")
    customer = {name: 1.0 for name in CUSTOMER_FEATURES if name != "segment_is_business"}
    customer.update(tenure_months=8.0, current_monthly_fee_sek=249.0, current_data_gb=15.0)
    shown = pd.DataFrame(
        [
            {
                **customer,
                "decision_id": "d1",
                "customer_id": "c1",
                "segment": "business",
                "current_plan_id": "PLAN_15GB",
                EVENT_TIMESTAMP: utc("2026-05-28 06:00"),
                "offer_id": "PLAN_30GB",
                "rank": 1,
                "propensity": 0.5,
                LABEL: 1,
            },
            {
                **customer,
                "decision_id": "d1",
                "customer_id": "c1",
                "segment": "business",
                "current_plan_id": "PLAN_15GB",
                EVENT_TIMESTAMP: utc("2026-05-28 06:00"),
                "offer_id": "ADDON_DATA_10GB",
                "rank": 2,
                "propensity": 0.3,
                LABEL: 0,
            },
        ]
    )
    candidates = candidate_rows(shown, catalog)
    offered = set(candidates["offer_id"])
    # Not the current plan, not the retired legacy plan, not consumer-only offers, and not the
    # loyalty offer that needs 12 months of tenure; one row per candidate with plan fit.
    assert offered == {
        "PLAN_5GB",
        "PLAN_30GB",
        "PLAN_60GB",
        "PLAN_UNLIMITED",
        "ADDON_DATA_10GB",
        "ADDON_EU_ROAMING",
        "ADDON_EXTRA_SIM",
        "PAY_EINVOICE",
        "PAY_AUTOGIRO",
        "PAY_INSTALMENT",
    }
    assert len(candidates) == len(offered)
    assert candidates["fit_saving_sek_per_month"].notna().all()
    assert (candidates["decision_id"] == "d1").all()
