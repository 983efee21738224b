"""`make run` prints a working key and an example customer who may get personalised offers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from pipelines.announce import ensure_api_keys, example_customer


def test_local_keys_are_written_once_and_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OFFERS_API_KEYS", raising=False)
    (tmp_path / ".env").write_text("OFFERS_SEED=3\n", encoding="utf-8")
    key = ensure_api_keys(tmp_path / ".env")
    text = (tmp_path / ".env").read_text(encoding="utf-8")
    assert "OFFERS_SEED=3" in text
    assert f"{key}:renderer" in text and ":marketing" in text and ":admin" in text
    assert ":consent" in text
    assert ensure_api_keys(tmp_path / ".env") == key


def test_the_example_customer_is_an_adult_with_every_consent(tmp_path: Path) -> None:
    at = pd.Timestamp("2026-01-01", tz="UTC")
    later = at + pd.Timedelta(days=30)
    rows = [
        # C1 is a minor with every consent; C2 withdrew profiling later; C3 qualifies.
        *[("C1", p, True, at) for p in ("marketing", "profiling", "usage_insights")],
        *[("C2", p, True, at) for p in ("marketing", "profiling", "usage_insights")],
        ("C2", "profiling", False, later),
        *[("C3", p, True, at) for p in ("marketing", "profiling", "usage_insights")],
    ]
    pd.DataFrame(rows, columns=["customer_id", "purpose", "granted", "updated_at"]).to_parquet(
        tmp_path / "consents.parquet"
    )
    pd.DataFrame(
        {
            "customer_id": ["C1", "C2", "C3"],
            "birth_year": [2012, 1970, 1980],
            "signup_date": [dt.date(2020, 1, 1)] * 3,
        }
    ).to_parquet(tmp_path / "customers.parquet")
    assert example_customer(tmp_path) == "C3"


def test_the_example_customer_holds_a_contract_on_the_example_invoice_date(
    tmp_path: Path,
) -> None:
    """A customer who left before the example invoice's date gets no invoice: not the example."""
    at = pd.Timestamp("2026-01-01", tz="UTC")
    rows = [
        (customer, purpose, True, at)
        for customer in ("C1", "C2", "C3")
        for purpose in ("marketing", "profiling", "usage_insights")
    ]
    pd.DataFrame(rows, columns=["customer_id", "purpose", "granted", "updated_at"]).to_parquet(
        tmp_path / "consents.parquet"
    )
    pd.DataFrame(
        {
            "customer_id": ["C1", "C2", "C3"],
            "birth_year": [1970, 1975, 1980],
            "signup_date": [dt.date(2019, 1, 1)] * 3,
        }
    ).to_parquet(tmp_path / "customers.parquet")
    pd.DataFrame(
        {
            # C1 left in 2025; C2's contract starts after the example's date; C3's is open-ended.
            "customer_id": ["C1", "C2", "C3"],
            "valid_from": [dt.date(2019, 1, 1), dt.date(2026, 12, 1), dt.date(2019, 1, 1)],
            "valid_to": [dt.date(2025, 9, 30), None, None],
        }
    ).to_parquet(tmp_path / "contracts.parquet")
    assert example_customer(tmp_path, "2026-11-30") == "C3"
    # On the day C1 still held its contract, C1 (the first who qualifies) is the example.
    assert example_customer(tmp_path, "2025-09-30") == "C1"


def test_the_example_prefers_a_customer_who_paid_overage_in_the_newest_snapshot(
    tmp_path: Path,
) -> None:
    at = pd.Timestamp("2026-01-01", tz="UTC")
    rows = [
        (customer, purpose, True, at)
        for customer in ("C1", "C2", "C3")
        for purpose in ("marketing", "profiling", "usage_insights")
    ]
    pd.DataFrame(rows, columns=["customer_id", "purpose", "granted", "updated_at"]).to_parquet(
        tmp_path / "consents.parquet"
    )
    pd.DataFrame(
        {
            "customer_id": ["C1", "C2", "C3"],
            "birth_year": [1970, 1975, 1980],
            "signup_date": [dt.date(2019, 1, 1)] * 3,
        }
    ).to_parquet(tmp_path / "customers.parquet")
    features = tmp_path / "features"
    features.mkdir()
    october, november = (pd.Timestamp(day, tz="UTC") for day in ("2026-10-01", "2026-11-01"))
    pd.DataFrame(
        {
            # C1 paid overage only in an older snapshot; C3 in the newest.
            "customer_id": ["C1", "C1", "C2", "C3"],
            "event_timestamp": [october, november, november, november],
            "overage_sek_avg_3m": [45.0, 0.0, None, 12.5],
        }
    ).to_parquet(features / "customer_usage.parquet")
    assert example_customer(tmp_path, features_dir=features) == "C3"
    # Without feature tables to read, the first customer who qualifies.
    assert example_customer(tmp_path, features_dir=tmp_path / "none") == "C1"
