"""The labels of the two models: acceptance within the answer window, leaving within the horizon."""

from __future__ import annotations

import pandas as pd

from core.columns import EVENT_TIMESTAMP
from training.labels import LABEL, churn_rows, customer_exits, ranker_rows


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def day(text: str) -> pd.Timestamp:
    return pd.Timestamp(text)


def test_ranker_label_is_an_acceptance_within_the_answer_window() -> None:
    shown = utc("2026-03-05 06:00")
    events = pd.DataFrame(
        {
            "decision_id": ["d2", "d1", "d1", "d2"],
            "invoice_id": ["i2", "i1", "i1", "i2"],
            "customer_id": ["c2", "c1", "c1", "c2"],
            "offer_id": ["A", "B", "A", "B"],
            "shown_at": [shown] * 4,
            "rank": [1, 2, 1, 2],
            "policy": ["rules"] * 4,
            "propensity": [0.5, 0.2, 0.4, 0.3],
            "outcome": ["accepted", "accepted", "declined", "ignored"],
            "outcome_at": [
                shown + pd.Timedelta(days=2),
                shown + pd.Timedelta(days=30),
                shown,
                pd.NaT,
            ],
        }
    )
    rows = ranker_rows(events, label_days=14)
    # Each decision's rows together and in rank order (LightGBM's query groups).
    assert list(zip(rows["decision_id"], rows["rank"], strict=True)) == [
        ("d2", 1),
        ("d2", 2),
        ("d1", 1),
        ("d1", 2),
    ]
    # d1/B was accepted 30 days later: outside the window, not a label.
    assert list(rows[LABEL]) == [1, 0, 0, 0]
    assert (rows[EVENT_TIMESTAMP] == shown).all()


CONTRACTS = pd.DataFrame(
    {
        "customer_id": ["stays", "changes", "changes", "leaves", "late"],
        "valid_from": [
            day("2024-01-01"),
            day("2024-01-01"),
            day("2026-02-01"),
            day("2024-06-01"),
            day("2026-02-10"),
        ],
        "valid_to": [pd.NaT, day("2026-01-31"), pd.NaT, day("2026-03-31"), pd.NaT],
    }
)


CUSTOMERS = pd.DataFrame({"customer_id": ["stays", "changes", "leaves", "late", "never"]})


def test_customer_exits_ignore_plan_changes() -> None:
    exits = customer_exits(CONTRACTS)
    assert dict(exits) == {"leaves": day("2026-03-31")}


def test_churn_label_is_leaving_within_three_months() -> None:
    months = [utc("2025-12-01"), utc("2026-01-01"), utc("2026-03-01"), utc("2026-04-01")]
    rows = churn_rows(CUSTOMERS, CONTRACTS, months)
    label = {
        (customer, f"{moment:%Y-%m}"): value
        for customer, moment, value in zip(
            rows["customer_id"], rows[EVENT_TIMESTAMP], rows[LABEL], strict=True
        )
    }
    # Leaving on 31 March: December's horizon ends 1 March (no), January's 1 April (yes).
    assert label[("leaves", "2025-12")] == 0
    assert label[("leaves", "2026-01")] == 1
    assert label[("leaves", "2026-03")] == 1
    assert ("leaves", "2026-04") not in label  # gone by then
    assert label[("changes", "2026-03")] == 0
    assert ("late", "2026-01") not in label and label[("late", "2026-03")] == 0
    assert not any(customer == "never" for customer, _ in label)
