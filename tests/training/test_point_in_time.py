"""The point-in-time join of feature tables: the newest value not after the row, within the TTL."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.columns import EVENT_TIMESTAMP
from training.point_in_time import join_ttl, point_in_time_join


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


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


def test_the_join_applies_each_views_ttl_from_the_view_metadata() -> None:
    assert join_ttl("customer_usage") == pd.Timedelta(days=400)
    assert join_ttl("customer_billing") == pd.Timedelta(days=400)
    assert join_ttl("customer_consent") is None
    assert join_ttl("offer_attributes") is None
