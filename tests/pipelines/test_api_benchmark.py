"""Which invoices the API benchmark's load sends: every customer billed in the world's newest
billing month, once, with that invoice's own date."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from benchmarks.api import billed_customers, newest_month_invoices


def _world(tmp_path: Path) -> Path:
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = [
        ("C1", dt.date(2026, 10, 20)),  # an older month: not drawn
        ("C1", dt.date(2026, 11, 20)),
        ("C2", dt.date(2026, 11, 1)),
        ("C3", dt.date(2026, 11, 10)),
        ("C3", dt.date(2026, 11, 1)),  # billed twice in the month: its later invoice
        ("C4", dt.date(2026, 9, 1)),  # left before the newest month
    ]
    frame = pd.DataFrame(rows, columns=["customer_id", "invoice_date"])
    frame.to_parquet(raw / "invoices.parquet")
    return tmp_path


def test_the_load_draws_each_customer_billed_in_the_newest_month_once_with_its_date(
    tmp_path: Path,
) -> None:
    work = _world(tmp_path)
    invoices = newest_month_invoices(work)
    assert sorted(invoices) == [("C1", "2026-11-20"), ("C2", "2026-11-01"), ("C3", "2026-11-10")]
    assert newest_month_invoices(work) == invoices  # the same order every time
    assert billed_customers(work, limit=2) == [customer for customer, _ in invoices[:2]]
