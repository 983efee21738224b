"""Labels, the time split without leakage, the point-in-time join and candidate sets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.data import (
    EVENT_TIMESTAMP,
    LABEL,
    PURGED,
    TRAIN,
    TUNE,
    VALIDATION,
    churn_rows,
    customer_exits,
    month_split,
    point_in_time_join,
    ranker_rows,
    sample_groups,
)


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def day(text: str) -> pd.Timestamp:
    return pd.Timestamp(text)


def test_no_row_of_the_validation_period_reaches_training() -> None:
    # Monthly offers from January to December; labels are known 14 days after showing.
    times = pd.Series(
        [utc(f"2026-{month:02d}-{d:02d} 06:00") for month in range(1, 13) for d in (1, 20, 28)]
    )
    split = month_split(times, pd.Timedelta(days=14), validation_months=2, tune_months=1)
    assert split.validation_start == utc("2026-11-01")
    assert split.validation_end == utc("2027-01-01")
    period = split.assign(times)
    validation = times[period == VALIDATION]
    fitted_on = times[period.isin([TRAIN, TUNE])]
    assert (validation >= split.validation_start).all()
    assert len(validation) == 6
    # Every row used for fitting has its label known before validation starts.
    assert (fitted_on + pd.Timedelta(days=14) <= split.validation_start).all()
    # The constructed leak: shown 20 and 28 October, answered in November. Both are purged.
    assert set(times[period == PURGED]) == {utc("2026-10-20 06:00"), utc("2026-10-28 06:00")}
    assert (times[period == TUNE] >= split.tune_start).all()
    assert (times[period == TRAIN] < split.tune_start).all()


def test_churn_rows_whose_three_month_label_reaches_validation_are_purged() -> None:
    months = pd.Series(pd.date_range("2025-01-01", "2026-06-01", freq="MS", tz="UTC"))
    split = month_split(months, pd.DateOffset(months=3), validation_months=2, tune_months=1)
    period = split.assign(months)
    assert list(months[period == VALIDATION]) == [utc("2026-05-01"), utc("2026-06-01")]
    for moment in months[period.isin([TRAIN, TUNE])]:
        assert moment + pd.DateOffset(months=3) <= utc("2026-05-01")
    assert set(months[period == PURGED]) == {utc("2026-03-01"), utc("2026-04-01")}


def test_a_split_without_training_months_is_refused() -> None:
    months = pd.Series(pd.date_range("2026-01-01", "2026-05-01", freq="MS", tz="UTC"))
    with pytest.raises(ValueError, match="too few months"):
        month_split(months, pd.DateOffset(months=3), validation_months=2)


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


def test_point_in_time_join_takes_the_newest_value_not_after_the_row() -> None:
    entities = pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c1", "c2", "c3"],
            EVENT_TIMESTAMP: [
                utc("2026-02-01"),  # exactly at a snapshot: that snapshot counts
                utc("2026-02-15"),
                utc("2026-01-15"),  # before any snapshot: missing
                utc("2026-03-10"),  # the snapshot is 500 days old: beyond the TTL
                utc("2026-03-10"),  # unknown customer
            ],
        }
    )
    table = pd.DataFrame(
        {
            "customer_id": ["c1", "c1", "c1", "c2"],
            EVENT_TIMESTAMP: [
                utc("2026-02-01"),
                utc("2026-03-01"),
                utc("2026-01-20"),
                utc("2024-10-26"),
            ],
            "tenure_months": [10, 11, 9, 3],
        }
    )
    joined = point_in_time_join(
        entities,
        {"customer_contract": table},
        {"customer_contract": pd.Timedelta(days=400)},
    )
    assert list(joined["customer_id"]) == list(entities["customer_id"])
    values = joined["tenure_months"].tolist()
    assert values[:2] == [10, 10]
    assert np.isnan(values[2]) and np.isnan(values[3]) and np.isnan(values[4])
    without_ttl = point_in_time_join(entities, {"customer_contract": table})
    assert without_ttl["tenure_months"].iloc[3] == 3


def test_sampling_keeps_whole_decisions() -> None:
    frame = pd.DataFrame({"decision_id": np.repeat(np.arange(1000), 3), "x": np.arange(3000)})
    sample = sample_groups(frame, "decision_id", 900, seed=1)
    sizes = sample.groupby("decision_id").size()
    assert (sizes == 3).all()
    assert 600 <= len(sample) <= 1200
    assert sample_groups(frame, "decision_id", None, seed=1) is frame


def test_candidates_are_the_catalog_offers_a_customer_could_be_shown() -> None:
    from pathlib import Path

    from core.catalog import load_catalog
    from training.data import candidate_rows
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


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_point_in_time_join_agrees_with_merge_asof(seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = utc("2026-01-01")
    days = pd.to_timedelta(rng.integers(0, 60, 400), unit="D")
    entities = pd.DataFrame(
        {"customer_id": rng.choice([f"c{i}" for i in range(40)], 400), EVENT_TIMESTAMP: base + days}
    )
    table = pd.DataFrame(
        {
            "customer_id": rng.choice([f"c{i}" for i in range(30)], 300),
            EVENT_TIMESTAMP: base + pd.to_timedelta(rng.integers(0, 60, 300), unit="D"),
            "value": np.arange(300, dtype=float),
        }
    ).drop_duplicates(["customer_id", EVENT_TIMESTAMP])
    joined = point_in_time_join(entities, {"customer_profile": table})
    expected = (
        pd.merge_asof(
            entities.reset_index().sort_values(EVENT_TIMESTAMP),
            table.sort_values(EVENT_TIMESTAMP),
            on=EVENT_TIMESTAMP,
            by="customer_id",
            direction="backward",
        )
        .set_index("index")
        .sort_index()
    )
    assert np.allclose(joined["value"], expected["value"], equal_nan=True)
