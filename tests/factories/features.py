"""Small hand-made worlds for the feature tests: a few customers whose every value is known."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.catalog import Catalog, load_catalog
from core.contract import TABLES_BY_NAME

CATALOG_PATH = Path(__file__).resolve().parents[2] / "catalog" / "offers.yaml"


def catalog() -> Catalog:
    """The simulated operator's catalog from the repository."""
    return load_catalog(CATALOG_PATH)


def _frame(table: str, rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows as a frame with the dtypes ``core.tables.read_table`` hands back."""
    schema = TABLES_BY_NAME[table]
    records = list(rows)
    frame = pd.DataFrame(records, columns=schema.column_names)
    for column in schema.columns:
        values = frame[column.name]
        if column.kind == "date":
            frame[column.name] = pd.to_datetime(values)
        elif column.kind == "timestamp":
            frame[column.name] = pd.to_datetime(values, utc=True)
        elif column.kind == "float":
            frame[column.name] = values.astype(float)
        elif column.kind == "int":
            frame[column.name] = values.astype("Int64" if column.nullable else "int64")
        elif column.kind == "bool":
            frame[column.name] = values.astype(bool)
        else:
            frame[column.name] = values.astype(object)
    return frame


def customer(
    customer_id: str,
    *,
    birth_year: int = 1980,
    signup_date: str = "2025-01-15",
    region: str = "Stockholm",
    segment: str = "consumer",
    satisfaction: int | None = 4,
) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "birth_year": birth_year,
        "signup_date": signup_date,
        "region": region,
        "segment": segment,
        "satisfaction": satisfaction,
    }


def contract(
    customer_id: str,
    plan_id: str,
    valid_from: str,
    *,
    valid_to: str | None = None,
    binding_end_date: str | None = None,
    monthly_fee_sek: float = 249.0,
) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "plan_id": plan_id,
        "valid_from": valid_from,
        "valid_to": valid_to,
        "binding_end_date": binding_end_date,
        "monthly_fee_sek": monthly_fee_sek,
    }


def usage(
    customer_id: str,
    month: str,
    *,
    data_gb: float = 5.0,
    voice_minutes: float = 100.0,
    sms: int = 10,
    roaming_days: int = 0,
    roaming_data_gb: float = 0.0,
    overage_sek: float = 0.0,
) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "month": month,
        "data_gb": data_gb,
        "voice_minutes": voice_minutes,
        "sms": sms,
        "roaming_days": roaming_days,
        "roaming_data_gb": roaming_data_gb,
        "overage_sek": overage_sek,
    }


def invoice(
    customer_id: str,
    invoice_date: str,
    *,
    invoice_id: str | None = None,
    amount_sek: float = 249.0,
    invoice_fee_sek: float = 0.0,
    reminder_fee_sek: float = 0.0,
    due_in_days: int = 30,
    paid_date: str | None = "due",
    reminders: int = 0,
    sent_to_collection: bool = False,
) -> dict[str, Any]:
    """An invoice due 30 days after its date, paid on the due date unless told otherwise."""
    due = dt.date.fromisoformat(invoice_date) + dt.timedelta(days=due_in_days)
    return {
        "invoice_id": invoice_id or f"INV-{customer_id}-{invoice_date}",
        "customer_id": customer_id,
        "invoice_date": invoice_date,
        "due_date": due.isoformat(),
        "amount_sek": amount_sek,
        "invoice_fee_sek": invoice_fee_sek,
        "reminder_fee_sek": reminder_fee_sek,
        "paid_date": due.isoformat() if paid_date == "due" else paid_date,
        "reminders": reminders,
        "sent_to_collection": sent_to_collection,
    }


def consent(customer_id: str, purpose: str, granted: bool, updated_at: str) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "purpose": purpose,
        "granted": granted,
        "updated_at": updated_at,
    }


def offer_event(
    customer_id: str,
    offer_id: str,
    shown_at: str,
    *,
    outcome: str = "ignored",
    outcome_at: str | None = None,
    decision_id: str | None = None,
) -> dict[str, Any]:
    return {
        "decision_id": decision_id or f"D-{customer_id}-{shown_at}-{offer_id}",
        "invoice_id": f"INV-{customer_id}-{shown_at[:10]}",
        "customer_id": customer_id,
        "offer_id": offer_id,
        "shown_at": shown_at,
        "rank": 1,
        "policy": "rules",
        "propensity": 0.5,
        "outcome": outcome,
        "outcome_at": outcome_at,
    }


def tables(
    *,
    customers: Iterable[Mapping[str, Any]] = (),
    contracts: Iterable[Mapping[str, Any]] = (),
    usage_monthly: Iterable[Mapping[str, Any]] = (),
    invoices: Iterable[Mapping[str, Any]] = (),
    consents: Iterable[Mapping[str, Any]] = (),
    offer_events: Iterable[Mapping[str, Any]] = (),
) -> dict[str, pd.DataFrame]:
    """The six input tables as frames, like ``core.tables.read_tables`` returns them."""
    return {
        "customers": _frame("customers", customers),
        "contracts": _frame("contracts", contracts),
        "usage_monthly": _frame("usage_monthly", usage_monthly),
        "invoices": _frame("invoices", invoices),
        "consents": _frame("consents", consents),
        "offer_events": _frame("offer_events", offer_events),
    }


def months(first: str, count: int) -> list[str]:
    """``count`` month starts from ``first`` (YYYY-MM-01) as ISO dates."""
    start = pd.Timestamp(first)
    return [(start + pd.DateOffset(months=i)).date().isoformat() for i in range(count)]


def small_world() -> dict[str, pd.DataFrame]:
    """Three customers over six months (usage 2026-01…2026-06), every value chosen by hand.

    - C1: PLAN_5GB at 179 SEK since 2025-01-15, about 7 GB a month (over its allowance), pays on
      time, granted marketing and profiling, then objected to marketing on 2026-05-20 12:00.
    - C2: PLAN_UNLIMITED at 449 SEK with binding until 2027-01-01, light usage, pays late; the
      June invoice is unpaid and went to collection.
    - C3: PLAN_15GB from 2026-01-01, changed to PLAN_30GB on 2026-04-10; no consent rows.
    """
    c1_data = [6.0, 7.0, 8.0, 6.5, 7.5, 9.0]
    c1_overage = [29.0, 58.0, 87.0, 43.5, 72.5, 116.0]
    usage_rows = [
        usage("C1", month, data_gb=data, voice_minutes=200.0, sms=5, overage_sek=overage)
        for month, data, overage in zip(months("2026-01-01", 6), c1_data, c1_overage, strict=True)
    ]
    usage_rows += [
        usage("C2", month, data_gb=1.0 + i, voice_minutes=50.0, roaming_days=2 * i)
        for i, month in enumerate(months("2026-01-01", 6))
    ]
    usage_rows += [usage("C3", month, data_gb=12.0) for month in months("2026-01-01", 6)]
    invoice_rows = [
        invoice("C1", day, amount_sek=179.0 + overage, invoice_fee_sek=29.0)
        for day, overage in zip(months("2026-02-05", 6), c1_overage, strict=True)
    ]
    invoice_rows += [
        invoice("C2", "2026-02-10", amount_sek=449.0, paid_date="2026-03-20", reminders=1),
        invoice("C2", "2026-03-10", amount_sek=509.0, reminder_fee_sek=60.0),
        invoice("C2", "2026-04-10", amount_sek=449.0),
        invoice("C2", "2026-05-10", amount_sek=449.0, paid_date=None, reminders=2),
        invoice("C2", "2026-06-10", amount_sek=449.0, paid_date=None, sent_to_collection=True),
    ]
    return tables(
        customers=[
            customer("C1", birth_year=1990, signup_date="2025-01-15", satisfaction=2),
            customer("C2", birth_year=1960, signup_date="2024-06-01", region="Skåne"),
            customer("C3", birth_year=2001, signup_date="2026-01-01", satisfaction=None),
        ],
        contracts=[
            contract("C1", "PLAN_5GB", "2025-01-15", monthly_fee_sek=179.0),
            contract(
                "C2",
                "PLAN_UNLIMITED",
                "2024-06-01",
                binding_end_date="2027-01-01",
                monthly_fee_sek=449.0,
            ),
            contract("C3", "PLAN_15GB", "2026-01-01", valid_to="2026-04-09", monthly_fee_sek=249.0),
            contract("C3", "PLAN_30GB", "2026-04-10", monthly_fee_sek=299.0),
        ],
        usage_monthly=usage_rows,
        invoices=invoice_rows,
        consents=[
            consent("C1", "marketing", True, "2025-01-15T10:00:00Z"),
            consent("C1", "profiling", True, "2025-01-15T10:00:00Z"),
            consent("C1", "marketing", False, "2026-05-20T12:00:00Z"),
            consent("C2", "marketing", True, "2024-06-01T09:00:00Z"),
            consent("C2", "usage_insights", True, "2026-03-03T08:30:00Z"),
        ],
        offer_events=[
            offer_event(
                "C1",
                "PLAN_15GB",
                "2026-03-05T06:00:00Z",
                outcome="clicked",
                outcome_at="2026-03-06T10:00:00Z",
            ),
            offer_event(
                "C1",
                "PLAN_30GB",
                "2026-04-05T06:00:00Z",
                outcome="declined",
                outcome_at="2026-04-07T10:00:00Z",
            ),
            offer_event(
                "C3",
                "ADDON_DATA_10GB",
                "2026-02-05T06:00:00Z",
                outcome="accepted",
                outcome_at="2026-02-05T09:00:00Z",
            ),
        ],
    )


def write_tables(frames: Mapping[str, pd.DataFrame], folder: Path) -> Path:
    """Write the frames as the contract's Parquet files into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        schema = TABLES_BY_NAME[name].arrow_schema()
        table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
        pq.write_table(table, folder / TABLES_BY_NAME[name].file_name)
    return folder
