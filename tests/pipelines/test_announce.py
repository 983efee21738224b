"""`make run` prints a working key and an example customer who may get personalised offers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from pipelines.announce import (
    EXAMPLE_INVOICE_ID,
    ExampleInvoice,
    ensure_api_keys,
    example_customer,
    example_invoice,
)


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


CONSENTED_AT = pd.Timestamp("2026-01-01", tz="UTC")
PURPOSES = ("marketing", "profiling", "usage_insights")


def _customers(
    data_dir: Path, birth_years: dict[str, int], withdrawn: tuple[tuple[str, str], ...] = ()
) -> None:
    """The customers and consents tables: each customer of ``birth_years`` granted every purpose,
    then withdrew each (customer, purpose) of ``withdrawn`` a month later."""
    later = CONSENTED_AT + pd.Timedelta(days=30)
    rows = [
        *[
            (customer, purpose, True, CONSENTED_AT)
            for customer in birth_years
            for purpose in PURPOSES
        ],
        *[(customer, purpose, False, later) for customer, purpose in withdrawn],
    ]
    pd.DataFrame(rows, columns=["customer_id", "purpose", "granted", "updated_at"]).to_parquet(
        data_dir / "consents.parquet"
    )
    pd.DataFrame(
        {
            "customer_id": list(birth_years),
            "birth_year": list(birth_years.values()),
            "signup_date": [dt.date(2019, 1, 1)] * len(birth_years),
        }
    ).to_parquet(data_dir / "customers.parquet")


def test_the_example_customer_is_an_adult_with_every_consent(tmp_path: Path) -> None:
    # C1 is a minor with every consent; C2 withdrew profiling later; C3 qualifies.
    _customers(tmp_path, {"C1": 2012, "C2": 1970, "C3": 1980}, withdrawn=(("C2", "profiling"),))
    assert example_customer(tmp_path) == "C3"


def test_the_example_customer_holds_a_contract_on_the_example_invoice_date(
    tmp_path: Path,
) -> None:
    """A customer who left before the example invoice's date gets no invoice: not the example."""
    _customers(tmp_path, {"C1": 1970, "C2": 1975, "C3": 1980})
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
    _customers(tmp_path, {"C1": 1970, "C2": 1975, "C3": 1980})
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


def test_the_example_is_a_real_invoice_of_the_newest_billing_date(tmp_path: Path) -> None:
    """C1 qualifies first but was not billed on the newest date (20 November); C3 was: the
    example is C3's own invoice of that date, so the preview shows an invoice the world holds."""
    _customers(tmp_path, {"C1": 1970, "C2": 2012, "C3": 1980})
    pd.DataFrame(
        {
            "invoice_id": ["INV-2026-10-0001", "INV-2026-11-0002", "INV-2026-11-0003"],
            "customer_id": ["C1", "C2", "C3"],
            "invoice_date": [dt.date(2026, 10, 20), dt.date(2026, 11, 20), dt.date(2026, 11, 20)],
        }
    ).to_parquet(tmp_path / "invoices.parquet")
    assert example_invoice(tmp_path) == ExampleInvoice("INV-2026-11-0003", "C3", "2026-11-20")
    # Without invoices to read: a made-up invoice of the first customer who qualifies.
    (tmp_path / "invoices.parquet").unlink()
    assert example_invoice(tmp_path) == ExampleInvoice(EXAMPLE_INVOICE_ID, "C1", "2026-11-30")
